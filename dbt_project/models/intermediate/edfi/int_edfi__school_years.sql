-- Each configured school year of each Ed-Fi connection, with its dates and where it stands against the
-- run's as-of date (seed 002, Scope Year Logic): the School Years editor's start and end dates, the
-- defaults 07/01 and 06/30 when blank (2026 = 2025-07-01 .. 2026-06-30). The current year is the one
-- whose dates hold the as-of date; a year that ended before it is a previous year, one that starts after
-- it a future year (in a summer between two years, none is current).
{{ config(pre_hook="{{ run_input_tables(['edfi_run_inputs', 'edfi_connections']) }}") }}

with connections as (
    select * from {{ source('ops', 'edfi_connections') }}
),

run_inputs as (
    select * from {{ source('ops', 'edfi_run_inputs') }}
),

editor as (
    select * from {{ ref('stg_campus__school_years') }}
),

years as (
    select
        c.district_id,
        c.connection,
        c.district_number,
        c.school_year,
        r.as_of,
        r.profile,
        coalesce(e.start_date, make_date(c.school_year - 1, 7, 1)) as start_date,
        coalesce(e.end_date, make_date(c.school_year, 6, 30)) as end_date,
        e.start_date is null as start_date_defaulted,
        e.end_date is null as end_date_defaulted
    from connections c
    join run_inputs r on r.district_id = c.district_id
    left join editor e on e.district_id = c.district_id and e.school_year = c.school_year
)

select
    *,
    case
        when as_of < start_date then 'future'
        when as_of > end_date then 'previous'
        else 'current'
    end as scope
from years
