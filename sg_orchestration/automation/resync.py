"""The resync (SPEC: "a resync sensor reconciles each target"): the `resync` job compares what each target
holds with the ledger and the desired state and fixes every difference (`publish.engine.resync`); the
`resync_scheduled` sensor starts it for each district on the district's own `resync.cron`, in its timezone.

The job is partitioned by district like everything else and runs in the warehouse pool (it writes the
ledger). Each run records a materialization of `publish/qmlativ_resync` whose metadata has, per screen,
what the target held (`<screen>/listed`, `<screen>/not_ours`) and what was fixed, by cause
(`<screen>/adopted`, `deleted_orphan`, `recreated_missing`, `overwritten_changed`, `cleared_missing`,
`failed`, `refused`), and the totals per cause. Run tags: `sg/dry_run=true` reports what it would fix and
changes nothing; `sg/confirm_deletes` confirms orphan deletes the mass-delete guard refused.
"""

import json
import time
from collections import Counter
from datetime import datetime

import dagster as dg
from dagster._utils.schedules import reverse_cron_string_iterator

from sg_orchestration.config import District, Resync, current_districts
from sg_orchestration.partitions import DISTRICTS
from sg_orchestration.publish.engine import CONFIRM_DELETES_TAG, RESYNC_CAUSES, ResyncResult, confirm_hint
from sg_orchestration.warehouse import WAREHOUSE_POOL

QMLATIV_RESYNC_KEY = dg.AssetKey(["publish", "qmlativ_resync"])
DRY_RUN_TAG = "sg/dry_run"  # as for the publish assets
TRIGGER_TAG = "sg/trigger"


def resync_report(results: list[ResyncResult], dry_run: bool) -> dict:
    """Counts per screen and cause, and totals per cause: never a key or a record."""
    names = ("listed", "not_ours", *RESYNC_CAUSES, "failed", "refused")
    header = "| screen | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names)
    rows = [
        f"| {r.resource} | " + " | ".join(str(int(r.counts.get(n, 0))) for n in names) + " |" for r in results
    ]
    totals: Counter = Counter()
    for r in results:
        totals.update({n: int(r.counts.get(n, 0)) for n in names})
    metadata: dict = {
        "dry_run": dry_run,
        "per_screen": dg.MetadataValue.md(header + "\n" + "\n".join(rows)),
        "refusals": "; ".join(r.refusal for r in results if r.refusal) or "none",
        **{f"total_{n}": totals[n] for n in names},
        "fixed": sum(totals[c] for c in RESYNC_CAUSES) if not dry_run else 0,
    }
    for r in results:
        metadata.update(r.metadata())
    return metadata


@dg.op(
    pool=WAREHOUSE_POOL,
    description="Reconciles the district's Qmlativ screens with what Qmlativ holds: adopts our objects the "
    "ledger lost, deletes orphans, recreates records deleted by hand, overwrites records changed by hand.",
)
def resync_targets(context: dg.OpExecutionContext) -> None:
    from sg_orchestration.publish.qmlativ import resync_writeback
    from sg_orchestration.validate.student_mapping import MAPPING_HINT, demographics_loaded
    from sg_orchestration.warehouse import connect

    district = current_districts().get(context.partition_key)
    cfg = district.qmlativ
    if cfg is None or not cfg.base_url:
        context.log.info(f"{district.id}: no target to resync (Qmlativ not configured)")
        return
    with connect() as con:
        mapped = demographics_loaded(con, district.id)
    if not mapped:
        # No students: every document is unmapped, and every object in Qmlativ would look like an orphan.
        raise dg.Failure(description=f"nothing resynced: no Qmlativ students loaded: {MAPPING_HINT}")
    dry_run = context.run.tags.get(DRY_RUN_TAG) == "true"
    results = resync_writeback(
        district, dry_run=dry_run, confirm_deletes=context.run.tags.get(CONFIRM_DELETES_TAG)
    )
    metadata = resync_report(results, dry_run)
    context.log_event(dg.AssetMaterialization(QMLATIV_RESYNC_KEY, partition=district.id, metadata=metadata))
    refused = [r for r in results if r.refusal]
    if refused and not dry_run:
        names = ",".join(r.name for r in refused)
        description = "; ".join(r.refusal for r in refused) + f"; {confirm_hint(names)}"
        raise dg.Failure(description=description, metadata=metadata, allow_retries=False)


@dg.job(
    name="resync",
    partitions_def=DISTRICTS,
    description="Reconcile one district's targets with what they hold (see the `resync_scheduled` sensor).",
)
def resync_job():
    resync_targets()


def resync_settings(district: District) -> Resync | None:
    """The district's resync schedule, or None when it has no target or turned it off."""
    if district.qmlativ is None or not district.qmlativ.base_url:
        return None
    settings = district.resync
    return settings if settings.enabled else None


def due_resyncs(
    districts: list[District], cursor: dict[str, str], now: float
) -> tuple[list[dg.RunRequest], dict[str, str]]:
    """A run request per district whose latest scheduled time (its cron, in its timezone) is after the one
    the cursor holds; the cursor maps district id -> the last scheduled time handled (ISO). A district seen
    for the first time only sets its cursor: the sensor does not start a resync the moment it is turned on.
    Several missed times make one run."""
    requests = []
    cursor = dict(cursor)
    for district in districts:
        settings = resync_settings(district)
        if settings is None:
            continue
        latest: datetime = next(reverse_cron_string_iterator(now, settings.cron, district.timezone))
        last = cursor.get(district.id)
        cursor[district.id] = latest.isoformat()
        if last is not None and latest > datetime.fromisoformat(last):
            requests.append(
                dg.RunRequest(
                    partition_key=district.id,
                    run_key=f"resync:{district.id}:{latest.isoformat()}",
                    tags={TRIGGER_TAG: "resync_scheduled"},
                )
            )
        elif last is not None and latest < datetime.fromisoformat(last):
            cursor[district.id] = last  # a cron changed to earlier times: keep what was handled
    return requests, cursor


def _now() -> float:
    return time.time()


@dg.sensor(
    name="resync_scheduled",
    job=resync_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Starts each district's `resync` run on its `resync.cron` (default Sundays 04:00, district time).",
)
def resync_scheduled(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    cursor: dict[str, str] = json.loads(context.cursor or "{}")
    requests, cursor = due_resyncs(current_districts().districts, cursor, _now())
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor, sort_keys=True))
