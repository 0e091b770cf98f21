-- orgs.csv: the district (from the schools export's District Number and Name) and each school, a child of
-- the district. Bulk mode: status and dateLastModified blank.
-- A district whose bundle comes from its own OneRoster export (seed 001 §2.2) has it re-exported instead.
with powerschool as (
    with schools as (
        select * from {{ ref('stg_powerschool__schools') }}
    ),

    districts as (
        select district_id, min(district_number) as district_number, min(district_name) as district_name
        from schools
        group by district_id
    )

    select
        district_id,
        {{ oneroster_id('district', 'district_number') }} as "sourcedId",
        null::varchar as status,
        null::varchar as "dateLastModified",
        district_name as name,
        'district' as type,
        district_number as identifier,
        null::varchar as "parentSourcedId"
    from districts
    union all
    select
        s.district_id,
        {{ oneroster_id('school', 's.school_number') }},
        null,
        null,
        s.school_name,
        'school',
        s.school_number,
        {{ oneroster_id('district', 'd.district_number') }}
    from schools s
    join districts d on d.district_id = s.district_id
)

select * from powerschool where {{ oneroster_from_powerschool() }}
union all by name
{{ oneroster_input('orgs') }}
