-- Generated from sg_orchestration/catalog.py by `python -m sg_orchestration.transform.staging`.
select
    _district_id as district_id,
    "person_id" as person_id,
    "edfi_id" as edfi_id,
    "student_number" as student_number,
    "first_name" as first_name,
    "last_name" as last_name,
    _extra as extra_columns,
    _load_id as load_id,
    _loaded_at as loaded_at,
    _source_row as source_row,
    _row_hash as row_hash
from {{ source('raw', 'campus__persons') }}
where _error is null  -- malformed rows stay in raw and ops.error_log
  and {{ latest_snapshot('campus__persons') }}
