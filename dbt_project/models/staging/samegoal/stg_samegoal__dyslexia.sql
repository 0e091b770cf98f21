-- Generated from sg_orchestration/catalog.py by `python -m sg_orchestration.transform.staging`.
select
    _district_id as district_id,
    "document_id" as document_id,
    "document_status" as document_status,
    {{ sg_datetime('"completed_at"') }} as completed_at,
    "samegoal_student_id" as samegoal_student_id,
    "student_local_id" as student_local_id,
    "student_state_id" as student_state_id,
    "campus_id" as campus_id,
    {{ sg_date('"start_date"') }} as start_date,
    {{ sg_date('"end_date"') }} as end_date,
    "state_dyslexia_services_codes" as state_dyslexia_services_codes,
    _extra as extra_columns,
    _load_id as load_id,
    _loaded_at as loaded_at,
    _source_row as source_row,
    _row_hash as row_hash
from {{ source('raw', 'samegoal__dyslexia') }}
where _error is null  -- malformed rows stay in raw and ops.error_log
