"""Jobs, schedules and sensors: when each district's pipeline runs."""

import re

import dagster as dg

from sg_orchestration.automation.resync import resync_job, resync_scheduled
from sg_orchestration.automation.samegoal_sensor import build_samegoal_sensor
from sg_orchestration.automation.selection import nightly_selection
from sg_orchestration.config import District, current_districts
from sg_orchestration.run_history import SENSORS as RUN_HISTORY_SENSORS

NIGHTLY_CRON = "0 2 * * *"  # 02:00 in the district's own timezone: data is there the next morning (seed 000)

nightly_job = dg.define_asset_job(
    "nightly",
    selection=dg.AssetSelection.all(),
    description="Ingest, transform, validate and publish one district.",
)


def _identifier(district_id: str) -> str:
    return re.sub(r"[^0-9a-zA-Z_]", "_", district_id)


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
        # The district as the districts file says now (its targets decide the steps), not as it was when
        # the code location loaded.
        current = {d.id: d for d in current_districts().districts}.get(district.id)
        if current is None:
            return dg.SkipReason(f"district {district.id} is no longer in the districts file")
        return dg.RunRequest(
            partition_key=current.id,
            run_key=f"{current.id}:{context.scheduled_execution_time:%Y-%m-%d}",
            asset_selection=nightly_selection(context.repository_def.asset_graph, current),
        )

    return _nightly


JOBS = [nightly_job, resync_job]
SCHEDULES = [nightly_schedule(d) for d in current_districts().districts]
SENSORS = [build_samegoal_sensor(nightly_job), resync_scheduled, *RUN_HISTORY_SENSORS]
