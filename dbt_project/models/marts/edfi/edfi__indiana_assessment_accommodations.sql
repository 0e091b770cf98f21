-- The Indiana v3.6 Student Education Organization Assessment Accommodations resource (seed 002's Object
-- Data Elements), for the districts whose `edfi.profile` is `indiana`: one record per connection, school
-- year, student, school, assessment, subject and accommodation, every element of it part of its key.
select
    {{ edfi_student_organization_key() }},
    assessment_identifier,
    assessment_namespace,
    academic_subject_descriptor,
    accommodation_descriptor,
    person_id,
    json_object(
        {{ edfi_payload_references() }},
        'assessmentReference', json_object(
            'assessmentIdentifier', assessment_identifier, 'namespace', assessment_namespace
        ),
        'academicSubjectDescriptor', academic_subject_descriptor,
        'accommodationDescriptor', accommodation_descriptor
    )::varchar as payload
from {{ ref('int_edfi__assessment_accommodations') }}
where sent and profile = 'indiana'
