-- Generated from sg_orchestration/catalog.py by `python -m sg_orchestration.transform.staging`.
select
    _district_id as district_id,
    "Term Id" as term_id,
    "Name" as name,
    {{ sg_date('"Start Date"') }} as start_date,
    {{ sg_date('"End Date"') }} as end_date,
    {{ sg_int('"School Year"') }} as school_year,
    _extra as extra_columns,
    _load_id as load_id,
    _loaded_at as loaded_at,
    _source_row as source_row,
    _row_hash as row_hash
from {{ source('raw', 'powerschool__terms') }}
where _error is null  -- malformed rows stay in raw and ops.error_log
  and {{ latest_snapshot('powerschool__terms') }}
