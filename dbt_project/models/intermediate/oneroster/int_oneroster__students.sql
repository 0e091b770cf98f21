-- The students the bundle sends: the active ones only (GG4L accepts only active records, SPEC §4.3).
-- PowerSchool's Enroll Status 0 is active; 2 (transferred out), 3 (graduated), -1 (pre-registered) and the
-- rest are not.
select *
from {{ ref('stg_powerschool__students') }}
where enroll_status = 0
