"""The Dagster code location: ingest → dbt → validate → publish → automation."""

import dagster as dg

from sg_orchestration.automation import JOBS, SCHEDULES, SENSORS
from sg_orchestration.ingest.assets import INGEST_ASSETS
from sg_orchestration.partitions import DISTRICTS
from sg_orchestration.publish.assets import build_qmlativ_publish_asset
from sg_orchestration.transform.dbt import build_dbt_assets, dbt_resource
from sg_orchestration.validate.student_mapping import build_student_mapping_asset

defs = dg.Definitions(
    assets=[
        *INGEST_ASSETS,
        build_dbt_assets(),
        build_student_mapping_asset(DISTRICTS),
        build_qmlativ_publish_asset(DISTRICTS),
    ],
    jobs=JOBS,
    schedules=SCHEDULES,
    sensors=SENSORS,
    resources={"dbt": dbt_resource()},
)
