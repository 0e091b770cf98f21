{#- The SameGoal integration rules (seed 000, SPEC §3.1–3.2), applied to one form. Every current
    document is kept, with `not_integrated_reason` saying why it is not sent (null: it is sent):
    - only `complete` documents are integrated; a document whose latest version is `voided` (or back in
      draft or review) drops out, so what it had sent is withdrawn;
    - a later complete document for the same student, form and record date supersedes an earlier one;
    - a record dated before its program's cutover is not integrated; a blank cutover date means the
      program is not integrated at all;
    - the student is mapped to Qmlativ's StudentID by local id, then by state id
      (int_samegoal__student_ids); an unmapped student is not sent ("student not mapped: run the
      demographics integration"). -#}
{% macro samegoal_current(source_name) %}
{%- set documents = ref('stg_' ~ source_name) -%}
{%- set students = ref('int_samegoal__student_ids') -%}
{%- set cutover = source('ops', 'samegoal_cutover') -%}
{%- if execute -%}
{%- set meta = graph.sources['source.' ~ project_name ~ '.raw.' ~ source_name].meta -%}
{%- set record_date = meta.record_date -%}
{%- set supersession = ['district_id', 'samegoal_student_id', record_date] + meta.supersession_key -%}
with latest_version as (
    select * from {{ documents }}
    qualify row_number() over (
        partition by district_id, document_id order by load_id desc, source_row desc) = 1
),
complete as (
    select * from latest_version where document_status = 'complete'
),
current_documents as (
    select * from complete
    qualify row_number() over (
        partition by {{ supersession | join(', ') }} order by completed_at desc, document_id desc) = 1
),
mapped as (
    select d.*,
        coalesce(l.student_id, s.student_id) as qmlativ_student_id,
        case when l.student_id is not null then 'local_id' when s.student_id is not null then 'state_id' end
            as mapped_by
    from current_documents d
    left join {{ students }} l
        on l.district_id = d.district_id and l.matched_on = 'local_id' and l.id = d.student_local_id
    left join {{ students }} s
        on s.district_id = d.district_id and s.matched_on = 'state_id' and s.id = d.student_state_id
),
reasons as (
    select m.*, c.cutover_date,
        case
            when c.cutover_date is null then 'program not integrated (blank cutover date)'
            when m.{{ record_date }} is null then 'no {{ record_date }}: cannot compare with the cutover date'
            when m.{{ record_date }} < c.cutover_date then 'before the program''s cutover date'
            when m.qmlativ_student_id is null then 'student not mapped: run the demographics integration'
        end as not_integrated_reason
    from mapped m
    left join {{ cutover }} c on c.district_id = m.district_id and c.program = '{{ meta.program }}'
)
select *, '{{ meta.program }}' as program, not_integrated_reason is null as integrated
from reasons
{%- else -%}
select 1 from {{ documents }}, {{ students }}, {{ cutover }}
{%- endif -%}
{% endmacro %}
