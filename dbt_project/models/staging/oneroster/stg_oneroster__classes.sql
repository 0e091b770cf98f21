-- Generated from sg_orchestration/catalog.py by `python -m sg_orchestration.transform.staging`.
select
    _district_id as district_id,
    "sourcedId" as sourced_id,
    "status" as status,
    {{ sg_datetime('"dateLastModified"') }} as date_last_modified,
    "title" as title,
    "grades" as grades,
    "courseSourcedId" as course_sourced_id,
    "classCode" as class_code,
    "classType" as class_type,
    "location" as location,
    "schoolSourcedId" as school_sourced_id,
    "termSourcedIds" as term_sourced_ids,
    "subjects" as subjects,
    "subjectCodes" as subject_codes,
    "periods" as periods,
    _extra as extra_columns,
    _load_id as load_id,
    _loaded_at as loaded_at,
    _source_row as source_row,
    _row_hash as row_hash
from {{ source('raw', 'oneroster__classes') }}
where _error is null  -- malformed rows stay in raw and ops.error_log
  and {{ latest_snapshot('oneroster__classes') }}
