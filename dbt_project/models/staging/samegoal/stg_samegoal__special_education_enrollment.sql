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
    "state_instructional_setting" as state_instructional_setting,
    "state_child_count_fund" as state_child_count_fund,
    {{ sg_bool('"multiply_disabled"') }} as multiply_disabled,
    "state_disability" as state_disability,
    _extra as extra_columns,
    _load_id as load_id,
    _loaded_at as loaded_at,
    _source_row as source_row,
    _row_hash as row_hash
from {{ source('raw', 'samegoal__special_education_enrollment') }}
where _error is null  -- malformed rows stay in raw and ops.error_log
