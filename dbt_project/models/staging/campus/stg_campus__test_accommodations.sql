-- Generated from sg_orchestration/catalog.py by `python -m sg_orchestration.transform.staging`.
select
    _district_id as district_id,
    "accommodation_id" as accommodation_id,
    "person_id" as person_id,
    "assessment" as assessment,
    "subject" as subject,
    "accommodation" as accommodation,
    {{ sg_date('"start_date"') }} as start_date,
    {{ sg_date('"end_date"') }} as end_date,
    {{ sg_datetime('"modified_at"') }} as modified_at,
    _extra as extra_columns,
    _load_id as load_id,
    _loaded_at as loaded_at,
    _source_row as source_row,
    _row_hash as row_hash
from {{ source('raw', 'campus__test_accommodations') }}
where _error is null  -- malformed rows stay in raw and ops.error_log
  and {{ latest_snapshot('campus__test_accommodations') }}
