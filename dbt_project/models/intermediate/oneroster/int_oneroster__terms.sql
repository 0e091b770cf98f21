-- The academic sessions the bundle sends: the terms of the district's current school year, the latest
-- `School Year` its terms export holds (GG4L takes no history; the export's previous year is left out).
-- Its type: PowerSchool numbers a year's terms from its year-long term (3600 = 2026-27: its year term;
-- 3601, 3602: its semesters, ...), so a term id ending in 00 is the `schoolYear`, a term named S1, S2 a
-- `semester`, Q1..Q4 or T1..T3 a `gradingPeriod`, any other a `term`; each belongs to its year term.
with terms as (
    select
        *,
        max(school_year) over (partition by district_id) as current_school_year,
        term_id like '%00' as year_long
    from {{ ref('stg_powerschool__terms') }}
)

select
    district_id,
    term_id,
    {{ oneroster_id('session', 'term_id') }} as sourced_id,
    name,
    case
        when year_long then 'schoolYear'
        when regexp_matches(name, '^S[0-9]+$') then 'semester'
        when regexp_matches(name, '^[QT][0-9]+$') then 'gradingPeriod'
        else 'term'
    end as session_type,
    start_date,
    end_date,
    case when not year_long
        then {{ oneroster_id('session', "left(term_id, length(term_id) - 2) || '00'") }}
    end as parent_sourced_id,
    school_year
from terms
where school_year = current_school_year
