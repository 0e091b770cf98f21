-- academicSessions.csv: the terms of the current school year (int_oneroster__terms). Bulk mode.
-- A district whose bundle comes from its own OneRoster export (seed 001 §2.2) has it re-exported instead.
with powerschool as (
    select
        district_id,
        sourced_id as "sourcedId",
        null::varchar as status,
        null::varchar as "dateLastModified",
        name as title,
        session_type as type,
        strftime(start_date, '%Y-%m-%d') as "startDate",
        strftime(end_date, '%Y-%m-%d') as "endDate",
        parent_sourced_id as "parentSourcedId",
        school_year::varchar as "schoolYear"
    from {{ ref('int_oneroster__terms') }}
)

select * from powerschool where {{ oneroster_from_powerschool() }}
union all by name
{{ oneroster_input('academicSessions') }}
