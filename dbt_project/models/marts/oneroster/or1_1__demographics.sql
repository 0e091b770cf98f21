-- demographics.csv: one row per student sent, its sourcedId the student's (OneRoster: a user's demographics
-- share its sourcedId). PowerSchool's Gender F/M is OneRoster's `female`/`male`; the export carries no race,
-- ethnicity or birthplace, so those cells are blank; a column the attribute mapping deletes is blank too.
-- Bulk mode.
-- A district whose bundle comes from its own OneRoster export (seed 001 §2.2) has it re-exported instead.
with powerschool as (
    select
        u.district_id,
        u."sourcedId",
        null::varchar as status,
        null::varchar as "dateLastModified",
        strftime({{ oneroster_kept('s', 'birth_date') }}, '%Y-%m-%d') as "birthDate",
        case upper({{ oneroster_kept('s', 'gender') }}) when 'F' then 'female' when 'M' then 'male' end as sex,
        null::varchar as "americanIndianOrAlaskaNative",
        null::varchar as asian,
        null::varchar as "blackOrAfricanAmerican",
        null::varchar as "nativeHawaiianOrOtherPacificIslander",
        null::varchar as white,
        null::varchar as "demographicRaceTwoOrMoreRaces",
        null::varchar as "hispanicOrLatinoEthnicity",
        null::varchar as "countryOfBirthCode",
        null::varchar as "stateOfBirthAbbreviation",
        null::varchar as "cityOfBirth",
        null::varchar as "publicSchoolResidenceStatus"
    from {{ ref('int_oneroster__users') }} u
    join {{ ref('int_oneroster__students') }} s on s.district_id = u.district_id and s.local_id = u.record_key
    left join ({{ oneroster_deleted_columns() }}) deleted
        on deleted.district_id = u.district_id and deleted.entity = 'students'
    where u.entity = 'students'
)

select * from powerschool where {{ oneroster_from_powerschool() }}
union all by name
{{ oneroster_input('demographics') }}
