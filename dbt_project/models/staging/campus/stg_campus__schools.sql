-- Generated from sg_orchestration/catalog.py by `python -m sg_orchestration.transform.staging`.
select
    _district_id as district_id,
    "school_id" as school_id,
    "state_school_number" as state_school_number,
    "name" as name,
    {{ sg_bool('"state_exclude"') }} as state_exclude,
    _extra as extra_columns,
    _load_id as load_id,
    _loaded_at as loaded_at,
    _source_row as source_row,
    _row_hash as row_hash
from {{ source('raw', 'campus__schools') }}
where _error is null  -- malformed rows stay in raw and ops.error_log
  and {{ latest_snapshot('campus__schools') }}
