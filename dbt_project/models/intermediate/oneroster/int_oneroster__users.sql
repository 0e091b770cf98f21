-- Every user of the bundle (seed 001, SPEC §4.3), one row each: the active students, the teachers, and the
-- students' contacts as guardians, parents and relatives (role from `Contact Relationship`, the seed
-- oneroster_contact_roles), linked both ways through agentSourcedIds (a student lists its contacts, a
-- contact its students). Where the district's attribute mapping fills a users.csv column it wins over the
-- column's default below; its userIds entries and metadata columns come from it alone. A default never
-- reads a column the mapping deletes (`oneroster_kept`).
{%- set student_defaults = [
    ('sourcedId', oneroster_id('student', 's.local_id')),
    ('enabledUser', "'true'"),
    ('orgSourcedIds', oneroster_id('school', 's.school_number')),
    ('role', "'student'"),
    ('username', 'coalesce(' ~ oneroster_kept('s', 'email') ~ ', s.local_id)'),
    ('userIds', 'null'),
    ('givenName', oneroster_kept('s', 'first_name')),
    ('familyName', oneroster_kept('s', 'last_name')),
    ('middleName', oneroster_kept('s', 'middle_name')),
    ('identifier', 'null'),
    ('email', oneroster_kept('s', 'email')),
    ('sms', 'null'),
    ('phone', 'null'),
    ('grades', oneroster_grade(oneroster_kept('s', 'grade_level'))),
    ('password', 'null'),
] %}
{%- set relationship = oneroster_kept('c', 'contact_relationship') %}
{%- set contact_defaults = [
    ('sourcedId', oneroster_id('contact', 'c.contact_id')),
    ('enabledUser', "'true'"),
    ('role', "coalesce(own.role, shared.role, 'guardian')"),
    ('username', 'coalesce(' ~ oneroster_kept('c', 'contact_email') ~ ', ' ~ oneroster_id('contact', 'c.contact_id') ~ ')'),
    ('userIds', 'null'),
    ('givenName', oneroster_kept('c', 'first_name')),
    ('familyName', oneroster_kept('c', 'last_name')),
    ('middleName', 'null'),
    ('identifier', 'null'),
    ('email', oneroster_kept('c', 'contact_email')),
    ('sms', oneroster_kept('c', 'cell_phone')),
    ('phone', oneroster_kept('c', 'contact_phone')),
    ('grades', 'null'),
    ('password', 'null'),
] %}


-- Per student and contact, what its mapping rows give: `fields`, the users.csv columns by name; `user_ids`,
-- the `{type:value}` entries in mapping order; `metadata`, the extensions by column name (the writer makes
-- them columns, in mapping order, so the maps need no order).
with attributes as (
    select
        district_id,
        entity,
        record_key,
        map_from_entries(
            list((target, value)) filter (where target not like 'metadata.%' and target not like 'userIds:%')
        ) as fields,
        string_agg('{' || substr(target, length('userIds:') + 1) || ':' || value || '}', ',' order by ordinal)
            filter (where target like 'userIds:%') as user_ids,
        map_from_entries(list((target, value)) filter (where target like 'metadata.%')) as metadata
    from {{ ref('int_oneroster__mapped_attributes') }}
    group by all
),

deleted as (
    {{ oneroster_deleted_columns() }}
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
    left join deleted on deleted.district_id = s.district_id and deleted.entity = 'students'
),

contact_students as (
    select district_id, contact_id, unnest(student_local_ids) as student_local_id
    from {{ ref('int_oneroster__contacts') }}
),

roles as (
    -- a district's own row for a relationship replaces the shared one (two joins: one with an `or` in its
    -- condition and a window to pick the row took four times as long)
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
    left join deleted on deleted.district_id = c.district_id and deleted.entity = 'contacts'
    left join roles own
        on own.relationship = lower(replace({{ relationship }}, ' ', '')) and own.district_id = c.district_id
    left join roles shared
        on shared.relationship = lower(replace({{ relationship }}, ' ', '')) and shared.district_id is null
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
),

student_agents as (
    select district_id, student_local_id, {{ oneroster_list('contact_sourced_id') }} as agents
    from links
    group by all
),

contact_agents as (
    select
        district_id,
        contact_id,
        {{ oneroster_list('student_org') }} as orgs,
        {{ oneroster_list('student_sourced_id') }} as agents
    from links
    group by all
)

select s.* exclude (metadata), a.agents as "agentSourcedIds", s.metadata
from students s
left join student_agents a on a.district_id = s.district_id and a.student_local_id = s.record_key
union all by name
select c.* exclude (metadata), a.orgs as "orgSourcedIds", a.agents as "agentSourcedIds", c.metadata
from contacts c
left join contact_agents a on a.district_id = c.district_id and a.contact_id = c.record_key
union all by name
select * from teachers
