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
