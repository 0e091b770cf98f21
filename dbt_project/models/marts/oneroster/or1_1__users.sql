-- users.csv: the students, teachers and contacts (int_oneroster__users), users.csv's columns in the spec's
-- order, then `metadata`: the district's metadata extensions by column name (`metadata.homeroom` -> value),
-- which the bundle writer (sg_orchestration/oneroster/bundle.py) makes columns to the right, in the order
-- of the district's attribute mapping. A map, not columns: which extensions there are is the district's
-- data, and a view's columns are fixed when dbt builds it. Bulk mode.
-- A district whose bundle comes from its own OneRoster export (seed 001 §2.2) has it re-exported instead.
with powerschool as (
    select
        district_id,
        "sourcedId",
        null::varchar as status,
        null::varchar as "dateLastModified",
        "enabledUser",
        "orgSourcedIds",
        role,
        username,
        "userIds",
        "givenName",
        "familyName",
        "middleName",
        identifier,
        email,
        sms,
        phone,
        "agentSourcedIds",
        grades,
        password,
        metadata
    from {{ ref('int_oneroster__users') }}
)

select * from powerschool where {{ oneroster_from_powerschool() }}
union all by name
{{ oneroster_input('users') }}
