-- Generated from sg_orchestration/catalog.py by `python -m sg_orchestration.transform.staging`.
select
    _district_id as district_id,
    "Contact Id" as contact_id,
    "Student Local Id" as student_local_id,
    "First Name" as first_name,
    "Last Name" as last_name,
    "Contact Email" as contact_email,
    "Contact Phone" as contact_phone,
    "Cell Phone" as cell_phone,
    "Contact Relationship" as contact_relationship,
    _extra as extra_columns,
    _load_id as load_id,
    _loaded_at as loaded_at,
    _source_row as source_row,
    _row_hash as row_hash
from {{ source('raw', 'powerschool__contacts') }}
where _error is null  -- malformed rows stay in raw and ops.error_log
  and {{ latest_snapshot('powerschool__contacts') }}
