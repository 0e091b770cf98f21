-- courses.csv: each course number of the classes sent, in the district's course catalog (the district org)
-- for the current school year; its grades are those of its classes. Bulk mode.
-- A district whose bundle comes from its own OneRoster export (seed 001 §2.2) has it re-exported instead.
with powerschool as (
    with sections as (
        select * from {{ ref('int_oneroster__sections') }}
    ),

    years as (
        select district_id, sourced_id
        from {{ ref('int_oneroster__terms') }}
        where session_type = 'schoolYear'
    ),

    districts as (
        select district_id, min(district_number) as district_number
        from {{ ref('stg_powerschool__schools') }}
        group by district_id
    ),

    grades as (
        select district_id, course_number, unnest(string_split(grades, ',')) as grade
        from sections
        where grades is not null
    )

    select
        c.district_id,
        {{ oneroster_id('course', 'c.course_number') }} as "sourcedId",
        null::varchar as status,
        null::varchar as "dateLastModified",
        min(y.sourced_id) as "schoolYearSourcedId",
        min(c.course_name) as title,
        c.course_number as "courseCode",
        (
            select {{ oneroster_list('g.grade', "case g.grade when 'PK' then -1 when 'KG' then 0 else try_cast(g.grade as integer) end") }}
            from grades g where g.district_id = c.district_id and g.course_number = c.course_number
        ) as grades,
        {{ oneroster_id('district', 'min(d.district_number)') }} as "orgSourcedId",
        null::varchar as subjects,
        null::varchar as "subjectCodes"
    from sections c
    left join years y on y.district_id = c.district_id
    left join districts d on d.district_id = c.district_id
    where c.course_number is not null
    group by c.district_id, c.course_number
)

select * from powerschool where {{ oneroster_from_powerschool() }}
union all by name
{{ oneroster_input('courses') }}
