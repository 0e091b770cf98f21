{#- Casts from raw text to the catalog's types. Raw rows that break these types never reach staging:
    ingest keeps them in raw with the reason and lists them in ops.error_log. -#}
{% macro sg_cast(col, type) -%}
{%- if type == 'date' -%} cast({{ col }} as date)
{%- elif type == 'datetime' -%} cast({{ col }} as timestamptz)
{%- elif type == 'int' -%} cast({{ col }} as bigint)
{%- elif type == 'decimal' -%} cast({{ col }} as decimal(18, 4))
{%- elif type == 'bool' -%} (case when {{ col }} in {{ sg_true_values() }} then true when {{ col }} is not null then false end)
{%- else -%} {{ col }}
{%- endif -%}
{%- endmacro %}

{#- A snapshot source's current state for each district: the rows its latest applied load has. Ingest
    stores a row once, by the load that first had it, and marks it retired by the first load without it. -#}
{% macro latest_snapshot(source_name) %}_retired_load is null{%- endmacro %}

{#- Models go to <schema> exactly (staging, intermediate, marts), not <target>_<schema>. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ custom_schema_name or target.schema }}
{%- endmacro %}
