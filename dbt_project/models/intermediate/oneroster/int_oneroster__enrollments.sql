-- The section enrollments the bundle sends: an active student's, in a section of a term the bundle sends
-- (int_oneroster__terms), with the section and its term's dates.
select
    e.district_id,
    e.section_id,
    e.student_local_id,
    e.start_date,
    e.end_date,
    s.grade_level
from {{ ref('stg_powerschool__enrollments') }} e
join {{ ref('int_oneroster__students') }} s
    on s.district_id = e.district_id and s.local_id = e.student_local_id
join {{ ref('stg_powerschool__sections') }} c
    on c.district_id = e.district_id and c.section_id = e.section_id
join {{ ref('int_oneroster__terms') }} t
    on t.district_id = c.district_id and t.term_id = c.term_id
