-- Generated from sg_orchestration/catalog.py by `python -m sg_orchestration.transform.staging`.
select
    _district_id as district_id,
    "School Number" as school_number,
    "School Name" as school_name,
    "District Number" as district_number,
    "District Name" as district_name,
    _extra as extra_columns,
    _load_id as load_id,
    _loaded_at as loaded_at,
    _source_row as source_row,
    _row_hash as row_hash
from {{ source('raw', 'powerschool__schools') }}
where _error is null  -- malformed rows stay in raw and ops.error_log
  and {{ latest_snapshot('powerschool__schools') }}
