-- Seed 002's Object Triggering Logic: every test accommodation, for each configured school year of each
-- Ed-Fi connection and each of the student's enrollments that applies, with why it is not sent
-- (`not_sent_reason`, null: it is sent). Both payload marts select the rows sent from here.
--
-- The enrollments that apply to a school year are the student's enrollments in that year's calendars
-- whose dates overlap the accommodation's (a blank date is open): each gives the school the record
-- reports for, so a student in two schools that year sends a record for each. A year without one keeps a
-- row (enrollment null) saying so.
--
-- The first reason that applies is kept, in this order: the record's dates against the as-of date, the
-- scope year, the enrollment (seed 002's "do not send" rules: `kind` excluded), then the data errors the
-- district fixes (`kind` error: they go to ops.error_log with their field, value and fix); last, a row
-- whose record another row already sends (the same key through a second enrollment or SIS row).

with accommodations as (
    select * from {{ ref('int_edfi__accommodations') }}
),

school_years as (
    select * from {{ ref('int_edfi__school_years') }}
),

persons as (
    select district_id, person_id, nullif(trim(edfi_id), '') as edfi_id from {{ ref('stg_campus__persons') }}
),

enrollments as (
    select
        e.district_id,
        e.enrollment_id,
        e.person_id,
        e.calendar_id,
        e.start_date as enrollment_start_date,
        e.end_date as enrollment_end_date,
        coalesce(e.no_show, false) as no_show,
        c.school_year,
        coalesce(c.state_exclude, false) as calendar_state_exclude,
        c.school_id,
        nullif(trim(s.state_school_number), '') as state_school_number,
        coalesce(s.state_exclude, false) as school_state_exclude
    from {{ ref('stg_campus__enrollments') }} e
    join {{ ref('stg_campus__calendars') }} c on c.district_id = e.district_id and c.calendar_id = e.calendar_id
    left join {{ ref('stg_campus__schools') }} s on s.district_id = c.district_id and s.school_id = c.school_id
),

candidates as (
    select
        a.*,
        y.connection,
        y.district_number,
        y.school_year,
        y.scope as school_year_scope,
        y.start_date as school_year_start_date,
        y.end_date as school_year_end_date,
        y.as_of,
        y.profile,
        -- A record with one of its two dates is a single-date record (seed 002: "data in Campus that has
        -- a single date"); an end date left blank is the usual case: the accommodation has no end yet.
        (a.start_date is null) <> (a.end_date is null) as single_date,
        case
            when a.start_date is not null and a.end_date is not null
                then {{ edfi_dates_in_scope_year('a.start_date', 'a.end_date', 'y') }}
            else {{ edfi_date_in_scope_year('coalesce(a.start_date, a.end_date)', 'y') }}
        end as in_scope_year,
        {{ edfi_scope_year_rule('(a.start_date is null) <> (a.end_date is null)', 'y') }} as scope_year_rule
    from accommodations a
    join school_years y on y.district_id = a.district_id
),

placed as (
    select
        c.*,
        p.edfi_id as student_unique_id,
        e.enrollment_id,
        e.calendar_id,
        e.school_id,
        e.state_school_number,
        e.calendar_state_exclude,
        e.school_state_exclude,
        e.no_show,
        -- seed 002: 10 + District + School; the district number is the connection's own.
        try_cast('10' || c.district_number || e.state_school_number as bigint) as education_organization_id
    from candidates c
    left join persons p on p.district_id = c.district_id and p.person_id = c.person_id
    left join enrollments e
        on e.district_id = c.district_id
        and e.person_id = c.person_id
        and e.school_year = c.school_year
        and coalesce(e.enrollment_start_date, '-infinity'::date) <= coalesce(c.end_date, 'infinity'::date)
        and coalesce(e.enrollment_end_date, 'infinity'::date) >= coalesce(c.start_date, '-infinity'::date)
),

reasons as (
    select
        *,
        case
            when start_date is null and end_date is null then {{ edfi_reason(
                'no_dates', 'error', "'the accommodation has neither a start date nor an end date'",
                "'start_date'", 'null',
                "'Enter the Start Date of the accommodation (Student Information > General > Test Accommodations).'") }}
            when as_of < start_date then {{ edfi_reason(
                'not_started', 'excluded',
                "'not started: the current date ' || as_of || ' is prior to the start date ' || start_date") }}
            when as_of > end_date then {{ edfi_reason(
                'ended', 'excluded',
                "'ended: the current date ' || as_of || ' is after the end date ' || end_date") }}
            when not in_scope_year then {{ edfi_reason(
                'outside_scope_year', 'excluded',
                "'outside school year ' || school_year || ', ' || scope_year_rule") }}
            when enrollment_id is null then {{ edfi_reason(
                'not_enrolled', 'excluded',
                "'no enrollment in a school year ' || school_year || ' calendar overlaps the accommodation'") }}
            when calendar_state_exclude then {{ edfi_reason(
                'calendar_state_exclude', 'excluded',
                "'the enrollment is in calendar ' || calendar_id || ', marked as State Exclude'") }}
            when school_state_exclude then {{ edfi_reason(
                'school_state_exclude', 'excluded',
                "'the enrollment is in school ' || school_id || ', marked as State Exclude'") }}
            when no_show then {{ edfi_reason(
                'no_show', 'excluded', "'the enrollment ' || enrollment_id || ' is marked No Show'") }}
            when student_unique_id is null then {{ edfi_reason(
                'no_edfi_id', 'error', "'the student has no Ed-Fi ID'", "'edfi_id'", 'null',
                "'Enter the student''s Ed-Fi ID (Census > Demographics > Ed-Fi ID), then resync.'") }}
            when assessment_identifier is null then {{ edfi_reason(
                'assessment_not_mapped', 'error',
                "'state test ''' || coalesce(assessment, '') || ''' ' || case when assessment_matches > 1
                    then 'matches more than one Ed-Fi assessment' else 'maps to no Ed-Fi assessment' end
                    || ' (edfi_assessment_mapping.csv: ILEARN, I AM or ISTAR, IREAD, WIDA)'",
                "'assessment'", 'assessment',
                "'Only ILEARN, I AM (ISTAR), IREAD-3 and WIDA accommodations are reported: correct the state test of the Assessment, or remove the accommodation.'") }}
            when academic_subject_descriptor is null then {{ edfi_reason(
                'unknown_subject', 'error',
                "'academicSubjectDescriptor: subject ''' || coalesce(subject, '') || ''' is not in the Indiana Academic Subject Descriptor table (edfi_academic_subject_descriptors.csv)'",
                "'subject'", 'subject',
                "'Choose a Subject whose code is in the Indiana Academic Subject Descriptor table, then resync.'") }}
            when accommodation_descriptor is null then {{ edfi_reason(
                'unknown_accommodation', 'error',
                "'accommodationDescriptor: accommodation ''' || coalesce(accommodation, '') || ''' is not in the Indiana Accommodation Descriptor table (edfi_accommodation_descriptors.csv)'",
                "'accommodation'", 'accommodation',
                "'Choose a Test Accommodation whose code is in the Indiana Accommodation Descriptor table, then resync.'") }}
            when not valid_combination then {{ edfi_reason(
                'invalid_combination', 'error',
                "'Assessment and Accommodation are not a valid combination.'",
                "'accommodation'", "assessment_identifier || ' / ' || accommodation",
                "'IDOE has specific accommodations per assessment. If this error is generated, the Assessment the student is reporting has an invalid accommodation. 1. Verify that the Accommodation is a valid selection for the Assessment on the student''s record. 2. If not valid, change to a valid accommodation and resync. 3. If you believe it is valid, please contact IDOE for further assistance. (Valid pairs: edfi_valid_combinations.csv.)'") }}
            when education_organization_id is null then {{ edfi_reason(
                'no_school_number', 'error',
                "'school ' || school_id || ' has no numeric State School Number: no educationOrganizationId'",
                "'state_school_number'", 'state_school_number',
                "'Enter the school''s State School Number (System Administration > Resources > School), then resync.'") }}
        end as reason
    from placed
),

deduplicated as (
    select
        *,
        reason is null and row_number() over (
            partition by
                district_id, connection, school_year, student_unique_id, education_organization_id,
                assessment_identifier, academic_subject_descriptor, accommodation_descriptor, reason is null
            order by accommodation_id, enrollment_id
        ) > 1 as sent_elsewhere
    from reasons
)

select
    district_id,
    connection,
    district_number,
    school_year,
    school_year_scope,
    school_year_start_date,
    school_year_end_date,
    as_of,
    profile,
    accommodation_id,
    person_id,
    student_unique_id,
    enrollment_id,
    calendar_id,
    school_id,
    state_school_number,
    education_organization_id,
    assessment,
    assessment_identifier,
    assessment_namespace,
    subject,
    academic_subject_descriptor,
    accommodation,
    accommodation_descriptor,
    start_date,
    end_date,
    single_date,
    in_scope_year,
    modified_at,
    coalesce(reason.rule, case when sent_elsewhere then 'sent_elsewhere' end) as not_sent_rule,
    coalesce(reason.kind, case when sent_elsewhere then 'excluded' end) as not_sent_kind,
    coalesce(
        reason.reason,
        case when sent_elsewhere then 'the same record is already sent from another enrollment or accommodation row' end
    ) as not_sent_reason,
    reason.field as not_sent_field,
    reason.value as not_sent_value,
    reason.fix as not_sent_fix,
    reason is null and not sent_elsewhere as sent
from deduplicated
