-- The district's GG4L attribute mapping (seed 001 §2.1, ops.oneroster_mapping) applied to each student and
-- contact the bundle sends: one row per record and `create` row, the PowerSchool column's value and the
-- row's target (a users.csv column, `userIds:<type>` or `metadata.<name>`; int_oneroster__users puts it
-- there). A blank value sends nothing. The first row of the file wins when two name the same target. A
-- `delete` row sends nothing at all: the repurposed field leaves only under the GG4L name its create row
-- gives it (and no users.csv column reads it otherwise). Long, not a map per record: the users table
-- builds the maps once.
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

select * from mapped
