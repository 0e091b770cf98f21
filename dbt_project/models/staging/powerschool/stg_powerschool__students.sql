-- Generated from sg_orchestration/catalog.py by `python -m sg_orchestration.transform.staging`.
select
    _district_id as district_id,
    "Local Id" as local_id,
    "State Province Id" as state_province_id,
    "First Name" as first_name,
    "Middle Name" as middle_name,
    "Last Name" as last_name,
    "Grade Level" as grade_level,
    "School Number" as school_number,
    {{ sg_int('"Enroll Status"') }} as enroll_status,
    "Email" as email,
    "Gender" as gender,
    {{ sg_date('"Birth Date"') }} as birth_date,
    "Street" as street,
    "City" as city,
    "State" as state,
    "Postal Code" as postal_code,
    "Home Room" as home_room,
    "Alert Other" as alert_other,
    "Alert Other Expires" as alert_other_expires,
    "Doctor Phone" as doctor_phone,
    "Alert MedicalExpires" as alert_medical_expires,
    "Alert Guardian" as alert_guardian,
    "Alert Medical" as alert_medical,
    "Doctor Name" as doctor_name,
    _extra as extra_columns,
    _load_id as load_id,
    _loaded_at as loaded_at,
    _source_row as source_row,
    _row_hash as row_hash
from {{ source('raw', 'powerschool__students') }}
where _error is null  -- malformed rows stay in raw and ops.error_log
  and {{ latest_snapshot('powerschool__students') }}
