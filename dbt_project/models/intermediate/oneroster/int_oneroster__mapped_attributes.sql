-- The district's GG4L attribute mapping (seed 001 §2.1, ops.oneroster_mapping) applied to each student and
-- contact the bundle sends: every `create` row puts its PowerSchool column's value where its target says.
--   fields:   users.csv columns the mapping fills (`sourcedId`, `identifier`, ...), by name;
--   user_ids: the `userIds:<type>` rows as `{type:value}` entries, comma-separated, in mapping order;
--   metadata: the `metadata.<name>` rows, by their full column name (the bundle writer makes each a column
--             to the right of users.csv's own, in mapping order).
-- A blank value sends nothing. The first row of the file wins when two name the same target. A `delete`
-- row sends nothing at all: the repurposed field leaves only under the GG4L name its create row gives it
-- (and no users.csv column reads it otherwise).
{{ config(pre_hook="{{ run_input_tables(['oneroster_mapping']) }}") }}

{%- set not_sent = 'district_id, extra_columns, load_id, loaded_at, source_row, row_hash' %}

with cells as (
    unpivot (
        select 'students' as entity, district_id, local_id as record_key,
               columns(* exclude ({{ not_sent }}))::varchar
        from {{ ref('int_oneroster__students') }}
    )
    on columns(* exclude (entity, district_id, record_key)) into name source_column value value
    union all by name
    unpivot (
        select 'contacts' as entity, district_id, contact_id as record_key,
               columns(* exclude ({{ not_sent }}, student_local_ids))::varchar
        from {{ ref('int_oneroster__contacts') }}
    )
    on columns(* exclude (entity, district_id, record_key)) into name source_column value value
),

-- the first create row of the file for each target (deduplicated here, on the mapping, not on the cells)
targets as (
    select *
    from {{ source('ops', 'oneroster_mapping') }}
    where action = 'create'
    qualify row_number() over (partition by district_id, entity, target order by ordinal) = 1
),

mapped as (
    select c.district_id, c.entity, c.record_key, m.ordinal, m.target, c.value
    from cells c
    join targets m
        on m.district_id = c.district_id and m.entity = c.entity and m.source_column = c.source_column
)

-- The maps are built unordered (an ordered aggregate per record cost twice the build); the writer orders
-- the metadata columns by the mapping.
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
from mapped
group by all
