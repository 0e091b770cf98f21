"""Jobs, schedules and sensors: when each district's pipeline runs."""

import re

import dagster as dg

from sg_orchestration.automation.resync import resync_job, resync_scheduled
from sg_orchestration.automation.samegoal_sensor import build_samegoal_sensor
from sg_orchestration.config import District, current_districts

NIGHTLY_CRON = "0 2 * * *"  # 02:00 in the district's own timezone: data is there the next morning (seed 000)

nightly_job = dg.define_asset_job(
    "nightly",
    selection=dg.AssetSelection.all(),
    description="Ingest, transform, validate and publish one district.",
)


def _identifier(district_id: str) -> str:
    return re.sub(r"[^0-9a-zA-Z_]", "_", district_id)


def nightly_selection(asset_graph, district: District) -> list[dg.AssetKey] | None:
    """The nightly job's assets that the district needs: all but the dbt steps of targets it does not have
    (their assets and checks are not even planned); None when it needs all."""
    from sg_orchestration.transform.dbt import build_dbt_assets, needed

    skip = {
        key
        for a in build_dbt_assets()
        if not needed(a.op.name.removeprefix("dbt_"), district)
        for key in a.keys
    }
    if not skip:
        return None
    return sorted(set(asset_graph.materializable_asset_keys) - skip, key=lambda k: k.to_user_string())


def nightly_schedule(district: District) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=f"nightly_{_identifier(district.id)}",
        job=nightly_job,
        cron_schedule=NIGHTLY_CRON,
        execution_timezone=district.timezone,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=f"Nightly run for {district.name} ({district.timezone}).",
    )
    def _nightly(context: dg.ScheduleEvaluationContext):
        return dg.RunRequest(
            partition_key=district.id,
            run_key=f"{district.id}:{context.scheduled_execution_time:%Y-%m-%d}",
            asset_selection=nightly_selection(context.repository_def.asset_graph, district),
        )

    return _nightly


JOBS = [nightly_job, resync_job]
SCHEDULES = [nightly_schedule(d) for d in current_districts().districts]
SENSORS = [build_samegoal_sensor(nightly_job), resync_scheduled]
