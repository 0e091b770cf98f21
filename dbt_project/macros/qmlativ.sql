{#- One Qmlativ object per SameGoal form (SPEC §4.1): the integrated documents with exactly the seed's
    fields under their Qmlativ names, plus StudentID and SourceDocumentID. The field list is data
    (sg_orchestration/config/qmlativ_fields.yaml), carried here through the source's `meta`. -#}
{% macro qmlativ_mart(source_name) %}
{%- set current = ref('int_' ~ source_name) -%}
{%- if execute -%}
{%- set fields = graph.sources['source.' ~ project_name ~ '.raw.' ~ source_name].meta.qmlativ_fields -%}
select
    district_id,
    document_id,
    qmlativ_student_id as "StudentID",
    document_id as "SourceDocumentID",
{%- for pair in fields %}
    {{ pair[0] }} as "{{ pair[1] }}"{{ "," if not loop.last }}
{%- endfor %}
from {{ current }}
where integrated
{%- else -%}
select 1 from {{ current }}
{%- endif -%}
{% endmacro %}
