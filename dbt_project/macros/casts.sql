{#- Casts from raw text to types. Raw rows that break these types never reach staging: ingest keeps them
    in raw with the reason and ops.error_log lists them. -#}
{% macro sg_date(col) %}cast({{ col }} as date){% endmacro %}
{% macro sg_datetime(col) %}cast({{ col }} as timestamptz){% endmacro %}
{% macro sg_int(col) %}cast({{ col }} as bigint){% endmacro %}
{% macro sg_decimal(col) %}cast({{ col }} as decimal(18, 4)){% endmacro %}
{% macro sg_bool(col) %}(case when {{ col }} in ('Y', 'y', 'true', 'TRUE', 'True', '1') then true
    when {{ col }} is not null then false end){% endmacro %}

{#- A snapshot source's current state is its latest completed load for each district. -#}
{% macro latest_snapshot(source_name) %}_load_id = (
    select max(l.load_id) from {{ source('ops', 'loads') }} l
    where l.source = '{{ source_name }}' and l.district_id = _district_id and l.status = 'loaded')
{%- endmacro %}

{#- Models go to <schema> exactly (staging, intermediate, marts), not <target>_<schema>. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ custom_schema_name or target.schema }}
{%- endmacro %}
