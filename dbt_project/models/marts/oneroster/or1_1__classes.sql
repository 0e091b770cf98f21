-- classes.csv: each section of the current school year's terms. PowerSchool's homeroom sections have the
-- period `HR` (classType `homeroom`, no period); the others are `scheduled`. Bulk mode.
-- A district whose bundle comes from its own OneRoster export (seed 001 §2.2) has it re-exported instead.
with powerschool as (
    select
        district_id,
        {{ oneroster_id('class', 'section_id') }} as "sourcedId",
        null::varchar as status,
        null::varchar as "dateLastModified",
        course_name as title,
        grades,
        {{ oneroster_id('course', 'course_number') }} as "courseSourcedId",
        section_id as "classCode",
        case when period = 'HR' then 'homeroom' else 'scheduled' end as "classType",
        null::varchar as location,
        {{ oneroster_id('school', 'school_number') }} as "schoolSourcedId",
        term_sourced_id as "termSourcedIds",
        null::varchar as subjects,
        null::varchar as "subjectCodes",
        case when period <> 'HR' then period end as periods
    from {{ ref('int_oneroster__sections') }}
)

select * from powerschool where {{ oneroster_from_powerschool() }}
union all by name
{{ oneroster_input('classes') }}
