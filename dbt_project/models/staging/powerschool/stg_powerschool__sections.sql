-- Generated from sg_orchestration/catalog.py by `python -m sg_orchestration.transform.staging`.
select
    _district_id as district_id,
    "Section Id" as section_id,
    "Course Number" as course_number,
    "Course Name" as course_name,
    "School Number" as school_number,
    "Term Id" as term_id,
    "Teacher Id" as teacher_id,
    "Period" as period,
    _extra as extra_columns,
    _load_id as load_id,
    _loaded_at as loaded_at,
    _source_row as source_row,
    _row_hash as row_hash
from {{ source('raw', 'powerschool__sections') }}
where _error is null  -- malformed rows stay in raw and ops.error_log
  and {{ latest_snapshot('powerschool__sections') }}
