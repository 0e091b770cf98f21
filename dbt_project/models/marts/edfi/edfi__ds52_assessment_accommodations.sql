-- The Ed-Fi Data Standard 5.2 core resource studentEducationOrganizationAssessmentAccommodations
-- (EdFi_StudentEducationOrganizationAssessmentAccommodation), for the districts whose `edfi.profile` is
-- `ds52`: one record per connection, school year, student and education organization, its
-- generalAccommodations the accommodations sent for them (each once, sorted, so an unchanged set is an
-- unchanged payload). DS 5.2 has no assessment or subject on this resource: what the Indiana profile
-- sends per assessment and subject is one accommodation here.
with sent as (
    select
        {{ edfi_student_organization_key() }},
        min(person_id) as person_id,
        list_sort(list_distinct(list(accommodation_descriptor))) as accommodation_descriptors
    from {{ ref('int_edfi__assessment_accommodations') }}
    where sent and profile = 'ds52'
    group by all
)

select
    *,
    json_object(
        {{ edfi_payload_references() }},
        'generalAccommodations', to_json(
            list_transform(accommodation_descriptors, lambda d: {'accommodationDescriptor': d})
        )
    )::varchar as payload
from sent
