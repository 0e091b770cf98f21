-- Generated from sg_orchestration/catalog.py by `python -m sg_orchestration.transform.staging`.
select
    _district_id as district_id,
    "sourcedId" as sourced_id,
    "status" as status,
    {{ sg_datetime('"dateLastModified"') }} as date_last_modified,
    {{ sg_bool('"enabledUser"') }} as enabled_user,
    "orgSourcedIds" as org_sourced_ids,
    "role" as role,
    "username" as username,
    "userIds" as user_ids,
    "givenName" as given_name,
    "familyName" as family_name,
    "middleName" as middle_name,
    "identifier" as identifier,
    "email" as email,
    "sms" as sms,
    "phone" as phone,
    "agentSourcedIds" as agent_sourced_ids,
    "grades" as grades,
    "password" as password,
    _extra as extra_columns,
    _load_id as load_id,
    _loaded_at as loaded_at,
    _source_row as source_row,
    _row_hash as row_hash
from {{ source('raw', 'oneroster__users') }}
where _error is null  -- malformed rows stay in raw and ops.error_log
  and {{ latest_snapshot('oneroster__users') }}
