-- The Qmlativ students a SameGoal document can be mapped to (seed 000: the demographics integration),
-- once per build: every form's rules (macros/samegoal.sql) join it, instead of grouping the whole student
-- object again for each of the ten forms. Match on local id, then state id; an id that names two Qmlativ
-- students maps no one: guessing would write to the wrong child.
{{ config(materialized='table') }}
with students as (
    select * from {{ ref('stg_qmlativ__students') }}
)
select district_id, 'local_id' as matched_on, student_number as id, min(student_id) as student_id
from students where student_number is not null
group by district_id, student_number having count(distinct student_id) = 1
union all
select district_id, 'state_id' as matched_on, state_id as id, min(student_id) as student_id
from students where state_id is not null
group by district_id, state_id having count(distinct student_id) = 1
