-- manifest.csv: OneRoster 1.1's manifest of a bulk bundle, for each district with a PowerSchool export or
-- (seed 001 §2.2) its own OneRoster export: the versions, each of the 13 OneRoster 1.1 files as `bulk`
-- (sent) or `absent`, and the source system (an export's own `source.*` rows, when it has them).
with districts as (
    select distinct district_id, 'powerschool' as source from {{ ref('stg_powerschool__schools') }}
    where {{ oneroster_from_powerschool() }}
    union all
    select district_id, source from {{ ref('int_oneroster__districts') }} where source = 'oneroster'
),

exported as (
    select district_id, property_name, value from {{ ref('stg_oneroster__manifest') }}
    where property_name like 'source.%'
),

properties ("propertyName", value) as (
    values
        ('manifest.version', '1.0'),
        ('oneroster.version', '1.1'),
        ('file.academicSessions', 'bulk'),
        ('file.categories', 'absent'),
        ('file.classes', 'bulk'),
        ('file.classResources', 'absent'),
        ('file.courses', 'bulk'),
        ('file.courseResources', 'absent'),
        ('file.demographics', 'bulk'),
        ('file.enrollments', 'bulk'),
        ('file.lineItems', 'absent'),
        ('file.orgs', 'bulk'),
        ('file.resources', 'absent'),
        ('file.results', 'absent'),
        ('file.users', 'bulk'),
        ('source.systemName', 'PowerSchool'),
        ('source.systemCode', 'powerschool')
)

select d.district_id, p."propertyName", coalesce(e.value, p.value) as value
from districts d
cross join properties p
left join exported e
    on d.source = 'oneroster' and e.district_id = d.district_id and e.property_name = p."propertyName"
