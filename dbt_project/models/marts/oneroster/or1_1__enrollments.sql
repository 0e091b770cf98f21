-- enrollments.csv: each active student's enrollment in a class sent (role `student`, not primary), and each
-- class's teacher (role `teacher`, primary), for the dates of the section's term. Bulk mode.
-- A district whose bundle comes from its own OneRoster export (seed 001 §2.2) has it re-exported instead.
with powerschool as (
    with students as (
        select district_id, record_key as local_id, "sourcedId" as user_sourced_id
        from {{ ref('int_oneroster__users') }}
        where entity = 'students'
    ),

    sections as (
        select * from {{ ref('int_oneroster__sections') }}
    )

    select
        e.district_id,
        {{ oneroster_id('enrollment', "e.section_id || '-' || s.user_sourced_id") }} as "sourcedId",
        null::varchar as status,
        null::varchar as "dateLastModified",
        {{ oneroster_id('class', 'e.section_id') }} as "classSourcedId",
        {{ oneroster_id('school', 'c.school_number') }} as "schoolSourcedId",
        s.user_sourced_id as "userSourcedId",
        'student' as role,
        'false' as "primary",
        strftime(coalesce(e.start_date, c.term_start_date), '%Y-%m-%d') as "beginDate",
        strftime(coalesce(e.end_date, c.term_end_date), '%Y-%m-%d') as "endDate"
    from {{ ref('int_oneroster__enrollments') }} e
    join students s on s.district_id = e.district_id and s.local_id = e.student_local_id
    join sections c on c.district_id = e.district_id and c.section_id = e.section_id
    union all
    select
        district_id,
        {{ oneroster_id('enrollment', "section_id || '-' || " ~ oneroster_id('teacher', 'teacher_id')) }},
        null,
        null,
        {{ oneroster_id('class', 'section_id') }},
        {{ oneroster_id('school', 'school_number') }},
        {{ oneroster_id('teacher', 'teacher_id') }},
        'teacher',
        'true',
        strftime(term_start_date, '%Y-%m-%d'),
        strftime(term_end_date, '%Y-%m-%d')
    from sections
    where teacher_id is not null
)

select * from powerschool where {{ oneroster_from_powerschool() }}
union all by name
{{ oneroster_input('enrollments') }}
