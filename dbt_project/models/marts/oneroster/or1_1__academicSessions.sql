-- academicSessions.csv: the terms of the current school year (int_oneroster__terms). Bulk mode.
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
