{#- A step's run inputs (ops tables the step writes before it builds: the Ed-Fi as-of date and connections,
    the OneRoster attribute mapping), created empty when missing: a build of every mart (the SameGoal rules'
    tests, the bench) may run where the step never did. The columns are those of the sources' `data_type`
    (the step's `_*.yml` beside its models), the tables' one definition. -#}
{% macro run_input_tables(names) %}
{%- if execute %}
create schema if not exists ops;
{%- for name in names %}
{%- set columns = graph.sources['source.' ~ project_name ~ '.ops.' ~ name].columns.values() %}
create table if not exists {{ source('ops', name) }} (
    {%- for c in columns %} {{ c.name }} {{ c.data_type }}{{ "," if not loop.last }}{% endfor %}
);
{%- endfor %}
{%- endif %}
{% endmacro %}
