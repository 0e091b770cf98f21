-- Every user of the bundle (seed 001, SPEC §4.3), one row each: the active students, the teachers, and the
-- students' contacts as guardians, parents and relatives (role from `Contact Relationship`, the seed
-- oneroster_contact_roles), linked both ways through agentSourcedIds (a student lists its contacts, a
-- contact its students). Where the district's attribute mapping fills a users.csv column it wins over the
-- column's default below; its userIds entries and metadata columns come from it alone.
{%- set student_defaults = [
    ('sourcedId', oneroster_id('student', 's.local_id')),
    ('enabledUser', "'true'"),
    ('orgSourcedIds', oneroster_id('school', 's.school_number')),
    ('role', "'student'"),
    ('username', 'coalesce(s.email, s.local_id)'),
    ('userIds', 'null'),
    ('givenName', 's.first_name'),
    ('familyName', 's.last_name'),
    ('middleName', 's.middle_name'),
    ('identifier', 'null'),
    ('email', 's.email'),
    ('sms', 'null'),
    ('phone', 'null'),
    ('grades', oneroster_grade('s.grade_level')),
    ('password', 'null'),
] %}
{%- set contact_defaults = [
    ('sourcedId', oneroster_id('contact', 'c.contact_id')),
    ('enabledUser', "'true'"),
    ('role', "coalesce(r.role, 'guardian')"),
    ('username', 'coalesce(c.contact_email, ' ~ oneroster_id('contact', 'c.contact_id') ~ ')'),
    ('userIds', 'null'),
    ('givenName', 'c.first_name'),
    ('familyName', 'c.last_name'),
    ('middleName', 'null'),
    ('identifier', 'null'),
    ('email', 'c.contact_email'),
    ('sms', 'c.cell_phone'),
    ('phone', 'c.contact_phone'),
    ('grades', 'null'),
    ('password', 'null'),
] %}


with attributes as (
    select * from {{ ref('int_oneroster__mapped_attributes') }}
),

students as (
    select
        s.district_id,
        'students' as entity,
        s.local_id as record_key,
        {{ oneroster_mapped_columns(student_defaults) }}
        a.metadata
    from {{ ref('int_oneroster__students') }} s
    left join attributes a
        on a.district_id = s.district_id and a.entity = 'students' and a.record_key = s.local_id
),

contact_students as (
    select district_id, contact_id, unnest(student_local_ids) as student_local_id
    from {{ ref('int_oneroster__contacts') }}
),

roles as (
    -- a district's own row for a relationship replaces the shared one
    select district_id, lower(replace(relationship, ' ', '')) as relationship, role
    from {{ ref('oneroster_contact_roles') }}
),

contacts as (
    select
        c.district_id,
        'contacts' as entity,
        c.contact_id as record_key,
        {{ oneroster_mapped_columns(contact_defaults) }}
        a.metadata
    from {{ ref('int_oneroster__contacts') }} c
    left join attributes a
        on a.district_id = c.district_id and a.entity = 'contacts' and a.record_key = c.contact_id
    left join roles r
        on lower(replace(c.contact_relationship, ' ', '')) = r.relationship
        and (r.district_id = c.district_id or r.district_id is null)
    qualify row_number() over (partition by c.district_id, c.contact_id order by r.district_id nulls last) = 1
),

-- A contact's students, by the students' sourcedIds and schools (a contact belongs to its students' orgs).
links as (
    select
        cs.district_id,
        cs.contact_id,
        cs.student_local_id,
        st."sourcedId" as student_sourced_id,
        st."orgSourcedIds" as student_org,
        ct."sourcedId" as contact_sourced_id
    from contact_students cs
    join students st on st.district_id = cs.district_id and st.record_key = cs.student_local_id
    join contacts ct on ct.district_id = cs.district_id and ct.record_key = cs.contact_id
),

teachers as (
    select
        t.district_id,
        'teachers' as entity,
        t.teacher_id as record_key,
        {{ oneroster_id('teacher', 't.teacher_id') }} as "sourcedId",
        'true' as "enabledUser",
        {{ oneroster_id('school', 't.school_number') }} as "orgSourcedIds",
        'teacher' as role,
        coalesce(t.email, {{ oneroster_id('teacher', 't.teacher_id') }}) as username,
        null as "userIds",
        t.first_name as "givenName",
        t.last_name as "familyName",
        null as "middleName",
        t.teacher_id as identifier,
        t.email,
        null as sms,
        null as phone,
        null as "agentSourcedIds",
        null as grades,
        null as password,
        null::map(varchar, varchar) as metadata
    from {{ ref('stg_powerschool__teachers') }} t
)

select
    s.* exclude (metadata),
    (
        select {{ oneroster_list('l.contact_sourced_id') }}
        from links l where l.district_id = s.district_id and l.student_local_id = s.record_key
    ) as "agentSourcedIds",
    s.metadata
from students s
union all by name
select
    c.* exclude (metadata),
    (
        select {{ oneroster_list('l.student_org') }}
        from links l where l.district_id = c.district_id and l.contact_id = c.record_key
    ) as "orgSourcedIds",
    (
        select {{ oneroster_list('l.student_sourced_id') }}
        from links l where l.district_id = c.district_id and l.contact_id = c.record_key
    ) as "agentSourcedIds",
    c.metadata
from contacts c
union all by name
select * from teachers
