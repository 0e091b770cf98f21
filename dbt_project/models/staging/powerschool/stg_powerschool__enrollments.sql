-- Generated from sg_orchestration/catalog.py by `python -m sg_orchestration.transform.staging`.
select
    _district_id as district_id,
    "Section Id" as section_id,
    "Student Local Id" as student_local_id,
    {{ sg_date('"Start Date"') }} as start_date,
    {{ sg_date('"End Date"') }} as end_date,
    _extra as extra_columns,
    _load_id as load_id,
    _loaded_at as loaded_at,
    _source_row as source_row,
    _row_hash as row_hash
from {{ source('raw', 'powerschool__enrollments') }}
where _error is null  -- malformed rows stay in raw and ops.error_log
  and {{ latest_snapshot('powerschool__enrollments') }}
