-- Generated from sg_orchestration/catalog.py by `python -m sg_orchestration.transform.staging`.
select
    _district_id as district_id,
    "propertyName" as property_name,
    "value" as value,
    _extra as extra_columns,
    _load_id as load_id,
    _loaded_at as loaded_at,
    _source_row as source_row,
    _row_hash as row_hash
from {{ source('raw', 'oneroster__manifest') }}
where _error is null  -- malformed rows stay in raw and ops.error_log
  and {{ latest_snapshot('oneroster__manifest') }}
