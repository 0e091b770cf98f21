-- The contacts the bundle sends as users (seed 001; SPEC §4.3): one per PowerSchool Contact Id, however
-- many of the district's active students it is a contact of (a parent of two siblings is one user). The
-- export repeats the contact on each student's row: the row of the student with the lowest Local Id gives
-- the contact's name, phones and relationship (and its `student_local_id`), so the choice is the same on
-- every run; `student_local_ids` are all of its students.
with rows as (
    select c.*
    from {{ ref('stg_powerschool__contacts') }} c
    join {{ ref('int_oneroster__students') }} s
        on s.district_id = c.district_id and s.local_id = c.student_local_id
)

select
    *,
    list(student_local_id order by student_local_id) over contact as student_local_ids
from rows
window contact as (partition by district_id, contact_id)
qualify row_number() over (partition by district_id, contact_id order by student_local_id) = 1
