-- The classes the bundle sends: the sections of the terms it sends, each with the grades of the active
-- students enrolled in it (OneRoster's `grades`, CEDS codes, lowest first; the export has no grades of its
-- own for a section).
select
    c.*,
    t.sourced_id as term_sourced_id,
    t.start_date as term_start_date,
    t.end_date as term_end_date,
    (
        select {{ oneroster_list(oneroster_grade('e.grade_level'), "try_cast(e.grade_level as integer)") }}
        from {{ ref('int_oneroster__enrollments') }} e
        where e.district_id = c.district_id and e.section_id = c.section_id
    ) as grades
from {{ ref('stg_powerschool__sections') }} c
join {{ ref('int_oneroster__terms') }} t
    on t.district_id = c.district_id and t.term_id = c.term_id
