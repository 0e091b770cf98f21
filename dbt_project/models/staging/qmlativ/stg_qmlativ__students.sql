-- Generated from sg_orchestration/catalog.py by `python -m sg_orchestration.transform.staging`.
select
    _district_id as district_id,
    {{ sg_int('"StudentID"') }} as student_id,
    {{ sg_int('"NameID"') }} as name_id,
    "StudentNumber" as student_number,
    "StateID" as state_id,
    "FirstName" as first_name,
    "LastName" as last_name,
    {{ sg_date('"BirthDate"') }} as birth_date,
    {{ sg_int('"EntityID"') }} as entity_id,
    _extra as extra_columns,
    _load_id as load_id,
    _loaded_at as loaded_at,
    _source_row as source_row,
    _row_hash as row_hash
from {{ source('raw', 'qmlativ__students') }}
where _error is null  -- malformed rows stay in raw and ops.error_log
  and {{ latest_snapshot('qmlativ__students') }}
