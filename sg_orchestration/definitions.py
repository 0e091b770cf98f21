"""The Dagster code location: ingest → dbt → validate → publish → automation."""

import dagster as dg

from sg_orchestration import instance_storage
from sg_orchestration.analyst import SNAPSHOT_SENSORS
from sg_orchestration.automation import JOBS, SCHEDULES, SENSORS
from sg_orchestration.ingest.assets import INGEST_ASSETS
from sg_orchestration.oneroster.assets import build_oneroster_assets
from sg_orchestration.partitions import DISTRICTS
from sg_orchestration.publish.assets import build_edfi_publish_asset, build_qmlativ_publish_asset
from sg_orchestration.transform.dbt import build_dbt_assets
from sg_orchestration.validate.edfi import build_edfi_validation_asset
from sg_orchestration.validate.qmlativ import build_qmlativ_validation_asset

instance_storage.install()  # every process that runs this code location's steps or runs

defs = dg.Definitions(
    assets=[
        *INGEST_ASSETS,
        *build_dbt_assets(),
        build_qmlativ_validation_asset(DISTRICTS),
        build_qmlativ_publish_asset(DISTRICTS),
        build_edfi_validation_asset(DISTRICTS),
        build_edfi_publish_asset(DISTRICTS),
        *build_oneroster_assets(DISTRICTS),
    ],
    jobs=JOBS,
    schedules=SCHEDULES,
    sensors=[*SENSORS, *SNAPSHOT_SENSORS],
)
