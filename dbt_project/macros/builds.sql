{#- A post-hook of every table the project builds: a new build id for it in ops.relation_builds. A table's
    content changes only when dbt builds it, so what reads only tables (the Qmlativ screens' desired state,
    through the mart views) knows by these ids whether it can have changed (publish.engine `settle`).
    Appended, never updated: parallel models never write the same row. -#}
{% macro record_build() %}
insert into ops.relation_builds values ('{{ this.schema }}.{{ this.identifier }}', uuid()::varchar, now())
{% endmacro %}

{#- Created once before any node runs (`on-run-start`): nodes building side by side in a new warehouse
    each creating it conflicted ("write-write conflict on create"). -#}
{% macro relation_builds_table() %}
create schema if not exists ops;
create table if not exists ops.relation_builds (
    relation varchar not null, build_id varchar not null, built_at timestamptz not null
)
{% endmacro %}
