-- manifest.csv: OneRoster 1.1's manifest of a bulk bundle, for each district with a PowerSchool export:
-- the versions, each of the 13 OneRoster 1.1 files as `bulk` (sent) or `absent`, and the source system.
with districts as (
    select distinct district_id from {{ ref('stg_powerschool__schools') }}
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

select d.district_id, p."propertyName", p.value
from districts d
cross join properties p
