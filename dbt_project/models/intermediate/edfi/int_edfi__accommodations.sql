-- Each current test accommodation with what seed 002 sends for it, from data the district maintains:
-- the Ed-Fi assessment its state test maps to (seeds/edfi_assessment_mapping.csv: a test whose name
-- contains ILEARN, I AM or ISTAR, IREAD, WIDA; compared without regard to case), the Indiana academic
-- subject and accommodation descriptors as `{namespace}#{codeValue}` (null: the code is not in the
-- seed's table), and whether (assessment, accommodation) is a valid combination
-- (seeds/edfi_valid_combinations.csv, the district's rows and those for every district).

with accommodations as (
    select * from {{ ref('stg_campus__test_accommodations') }}
),

mapping as (
    select * from {{ ref('edfi_assessment_mapping') }}
),

mapped as (
    -- A name matching two different assessments maps to none: it is not guessed.
    select
        a.district_id,
        a.accommodation_id,
        count(distinct m.assessment_identifier) as assessment_matches,
        case when count(distinct m.assessment_identifier) = 1 then min(m.assessment_identifier) end
            as assessment_identifier,
        case when count(distinct m.assessment_identifier) = 1 then min(m.namespace) end as assessment_namespace
    from accommodations a
    left join mapping m on contains(upper(a.assessment), upper(m.state_test_contains))
    group by all
)

select
    a.district_id,
    a.accommodation_id,
    a.person_id,
    a.assessment,
    a.subject,
    a.accommodation,
    a.start_date,
    a.end_date,
    a.modified_at,
    m.assessment_matches,
    m.assessment_identifier,
    m.assessment_namespace,
    s.namespace || '#' || s.code_value as academic_subject_descriptor,
    d.namespace || '#' || d.code_value as accommodation_descriptor,
    case
        when m.assessment_identifier is not null and d.code_value is not null then exists (
            select 1 from {{ ref('edfi_valid_combinations') }} v
            where v.assessment_identifier = m.assessment_identifier
              and v.accommodation_code = d.code_value
              and (v.district_id is null or v.district_id = a.district_id)
        )
    end as valid_combination
from accommodations a
join mapped m on m.district_id = a.district_id and m.accommodation_id = a.accommodation_id
left join {{ ref('edfi_academic_subject_descriptors') }} s on s.code_value = a.subject
left join {{ ref('edfi_accommodation_descriptors') }} d on d.code_value = a.accommodation
