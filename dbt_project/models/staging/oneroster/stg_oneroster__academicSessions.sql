-- Generated from sg_orchestration/catalog.py by `python -m sg_orchestration.transform.staging`.
select
    _district_id as district_id,
    "sourcedId" as sourced_id,
    "status" as status,
    {{ sg_datetime('"dateLastModified"') }} as date_last_modified,
    "title" as title,
    "type" as type,
    {{ sg_date('"startDate"') }} as start_date,
    {{ sg_date('"endDate"') }} as end_date,
    "parentSourcedId" as parent_sourced_id,
    {{ sg_int('"schoolYear"') }} as school_year,
    _extra as extra_columns,
    _load_id as load_id,
    _loaded_at as loaded_at,
    _source_row as source_row,
    _row_hash as row_hash
from {{ source('raw', 'oneroster__academicSessions') }}
where _error is null  -- malformed rows stay in raw and ops.error_log
  and {{ latest_snapshot('oneroster__academicSessions') }}
