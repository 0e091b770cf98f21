{#- A OneRoster sourcedId: a fixed prefix per entity and the PowerSchool id, so the same record has the same
    sourcedId on every run and machine, and two entities' ids never collide (teacher 5001 vs student 5001).
    A student's sourcedId is what the attribute mapping's `sourcedId` row says (the seed: SIS ID = Local
    Id), this prefix only when the mapping has none. -#}
{% macro oneroster_id(entity, key) -%}
{%- set prefixes = {
    'district': 'dst-', 'school': 'sch-', 'session': 'ses-', 'course': 'crs-', 'class': 'cls-',
    'student': 'stu-', 'teacher': 'tch-', 'contact': 'ctc-', 'enrollment': 'enr-'} -%}
'{{ prefixes[entity] }}' || {{ key }}
{%- endmacro %}

{#- PowerSchool's Grade Level (-1 pre-kindergarten, 0 kindergarten, 1..12) as the CEDS code OneRoster 1.1
    grades carry: PK, KG, 01..12 (13 for a thirteenth year); anything else is `Other`. -#}
{% macro oneroster_grade(level) -%}
case
    when try_cast({{ level }} as integer) = -1 then 'PK'
    when try_cast({{ level }} as integer) = 0 then 'KG'
    when try_cast({{ level }} as integer) between 1 and 13 then lpad(try_cast({{ level }} as integer)::varchar, 2, '0')
    when {{ level }} is not null then 'Other'
end
{%- endmacro %}

{#- A list-valued cell (an aggregate): the distinct values, comma-separated in one field (the writer quotes
    it), sorted, or in the order of `order_by` (a key that is one per value); null when there is none. -#}
{% macro oneroster_list(value, order_by=none) -%}
{%- if order_by -%}
nullif(array_to_string(list_transform(list_sort(list_distinct(
    list({'k': {{ order_by }}, 'v': {{ value }}}) filter (where {{ value }} is not null)
)), lambda e: e.v), ','), '')
{%- else -%}
nullif(array_to_string(list_sort(list_distinct(list({{ value }}) filter (where {{ value }} is not null))), ','), '')
{%- endif %}
{%- endmacro %}

{#- users.csv's columns of a student or contact (`a`: its mapped attributes, int_oneroster__users): the
    value the district's attribute mapping gives the column, else `defaults`' (column, SQL) default;
    userIds is the mapping's `{type:value}` entries. -#}
{% macro oneroster_mapped_columns(defaults) -%}
{%- for column, default in defaults %}
        {%- if column == 'userIds' %}
        coalesce(a.user_ids, {{ default }}) as "userIds",
        {%- else %}
        coalesce(a.fields['{{ column }}'], {{ default }}) as "{{ column }}",
        {%- endif %}
{%- endfor %}
{%- endmacro %}

{#- A `delete` row of the district's attribute mapping: its PowerSchool column never leaves under its own
    meaning, so no default of users.csv or demographics.csv reads it either. `oneroster_deleted_columns`
    is the district's deleted columns per entity (join it as `deleted`); `oneroster_kept(alias, column)`
    is the column, or null when deleted. The keys that link the files (Local Id, Contact Id, School
    Number) are the records' identity and stay. -#}
{% macro oneroster_deleted_columns() -%}
select district_id, entity, list(source_column) as columns
from {{ source('ops', 'oneroster_mapping') }}
where action = 'delete'
group by all
{%- endmacro %}

{% macro oneroster_kept(alias, column) -%}
case when list_contains(deleted.columns, '{{ column }}') then null else {{ alias }}.{{ column }} end
{%- endmacro %}

{#- The other-SIS path (seed 001 §2.2): a file of the district's own OneRoster 1.1 bundle
    (stg_oneroster__<file>), re-exported the same way as the PowerSchool one, for the districts whose
    bundle comes from it (int_oneroster__districts): only active records (a blank status counts as active;
    a `tobedeleted` one is not sent: GG4L accepts only active records), bulk mode (status and
    dateLastModified blank), every value as the bundle's text (booleans `true`/`false`, dates
    YYYY-MM-DD). users.csv's `metadata.*` extension columns (kept by ingest in `extra_columns`) become the
    `metadata` map the PowerSchool path's users mart has. -#}
{% macro oneroster_input(file) -%}
{#- the refs outside `execute`, so that dbt's parse records them -#}
{%- set staged = ref('stg_oneroster__' ~ file) %}
{%- set districts = ref('int_oneroster__districts') %}
{%- if execute %}
{%- set node = graph.sources['source.' ~ project_name ~ '.raw.oneroster__' ~ file] %}
{%- set meta = {} %}
{%- for c in node.columns.values() %}{% do meta.update({c.name: c.meta}) %}{% endfor %}
select
    s.district_id
{%- for name in meta %}
{%- set m = meta[name] %}
{%- set col = 's.' ~ m.staged_name %}
    {%- if name in ('status', 'dateLastModified') %}, null::varchar
    {%- elif m.type == 'bool' %}, case when {{ col }} then 'true' when not {{ col }} then 'false' end
    {%- elif m.type == 'date' %}, strftime({{ col }}, '%Y-%m-%d')
    {%- else %}, {{ col }}::varchar
    {%- endif %} as "{{ name }}"
{%- endfor %}
{%- if file == 'users' %},
    map_from_entries([
        (k, nullif(json_extract_string(s.extra_columns, '$."' || k || '"'), ''))
        for k in coalesce(json_keys(s.extra_columns), []) if k like 'metadata.%'
    ])::map(varchar, varchar) as metadata
{%- endif %}
from {{ staged }} s
join {{ districts }} d on d.district_id = s.district_id and d.source = 'oneroster'
where coalesce(lower(s.status), 'active') = 'active'
{%- endif %}
{%- endmacro %}

{#- Every mart's PowerSchool branch: the districts whose bundle does not come from a OneRoster export. -#}
{% macro oneroster_from_powerschool(alias='') -%}
{{ alias }}district_id not in (select district_id from {{ ref('int_oneroster__districts') }} where source = 'oneroster')
{%- endmacro %}
