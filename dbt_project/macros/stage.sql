{#- A staging model: the raw source renamed and cast, nothing else. Column names and types come from the
    source's column `meta` in models/staging/_sources.yml, which is generated from the catalog.
    Rows ingest found malformed stay in raw and ops.error_log; a snapshot source shows its current rows
    (`load_id`, `loaded_at`: of the load that first had the row). -#}
{% macro stage(source_name) %}
{%- set relation = source('raw', source_name) -%}
{%- if execute -%}
{%- set node = graph.sources['source.' ~ project_name ~ '.raw.' ~ source_name] -%}
select
    _district_id as district_id,
{%- for column in node.columns.values() %}
    {{ sg_cast('"' ~ column.name ~ '"', column.meta.type) }} as {{ column.meta.staged_name }},
{%- endfor %}
    _extra as extra_columns,
    _load_id as load_id,
    _loaded_at as loaded_at,
    _source_row as source_row,
    _row_hash as row_hash
from {{ relation }}
where _error is null
{%- if node.meta.mode == 'snapshot' %}
  and {{ latest_snapshot(source_name) }}
{%- endif %}
{%- else -%}
select 1 from {{ relation }}
{%- endif -%}
{% endmacro %}
