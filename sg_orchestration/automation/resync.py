"""The resync (SPEC: "a resync sensor reconciles each target"): the `resync` job compares what each target
holds with the ledger and the desired state and fixes every difference (`publish.engine.resync`); the
`resync_scheduled` sensor starts it for each district on the district's own `resync.cron`, in its timezone,
and when the district's Ed-Fi mapping changed in its configuration (seed 002: "If a mapping is changed in
Resource Preferences, a resync will need to be done").

The job is partitioned by district like everything else and runs in the warehouse pool (it writes the
ledger). Each run records a materialization per target the district has:
- `publish/qmlativ_resync`: per screen, what the target held (`<screen>/listed`, `<screen>/not_ours`) and
  what was fixed, by cause (`<screen>/adopted`, `deleted_orphan`, `recreated_missing`,
  `overwritten_changed`, `cleared_missing`, `failed`, `refused`), and the totals per cause;
- `publish/edfi_resync`: the same per `<connection>/<resource>` (a year-specific ODS: `.../<year>`), plus
  `mapping_deleted` (identity-mapping rows whose record the ODS no longer holds) and `read` (`changes`:
  read by the ODS's change queries, `full`: paged through), and `mapping_digest`, the digest of the Ed-Fi
  mapping configuration it reconciled (`publish.edfi.mapping_digest`; only when it fixed everything).
Run tags: `sg/dry_run=true` reports what it would fix and changes nothing; `sg/confirm_deletes` confirms
orphan deletes the mass-delete guard refused; `sg/full_resync=true` pages through every Ed-Fi resource
instead of reading its changes (a run the mapping trigger starts always does).
"""

import json
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime

import dagster as dg
from dagster._utils.schedules import reverse_cron_string_iterator

from sg_orchestration.config import District, Resync, current_districts
from sg_orchestration.partitions import DISTRICTS
from sg_orchestration.publish.engine import CONFIRM_DELETES_TAG, RESYNC_CAUSES, ResyncResult, confirm_hint
from sg_orchestration.warehouse import WAREHOUSE_POOL

QMLATIV_RESYNC_KEY = dg.AssetKey(["publish", "qmlativ_resync"])
EDFI_RESYNC_KEY = dg.AssetKey(["publish", "edfi_resync"])
DRY_RUN_TAG = "sg/dry_run"  # as for the publish assets
TRIGGER_TAG = "sg/trigger"
FULL_RESYNC_TAG = "sg/full_resync"
MAPPING_CHANGED = "resync_mapping_changed"  # the trigger tag of a run a mapping change starts
MAPPING_DIGEST = "mapping_digest"  # the Ed-Fi resync's metadata: the configuration it reconciled
EDFI_COUNTS = ("mapping_deleted",)


def resync_report(
    results: list[ResyncResult],
    dry_run: bool,
    label: Callable[[ResyncResult], str] = lambda r: r.resource,
    extra: tuple[str, ...] = (),
) -> dict:
    """Counts per resource (`label`: its name in the metadata) and cause, and totals per cause: never a
    key or a record. `extra`: the target's own fixes besides `RESYNC_CAUSES`."""
    fixes = (*RESYNC_CAUSES, *extra)
    names = ("listed", "not_ours", *fixes, "failed", "refused")
    header = "| screen | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names)
    rows = [
        f"| {label(r)} | " + " | ".join(str(int(r.counts.get(n, 0))) for n in names) + " |" for r in results
    ]
    totals: Counter = Counter()
    for r in results:
        totals.update({n: int(r.counts.get(n, 0)) for n in names})
    metadata: dict = {
        "dry_run": dry_run,
        "per_screen": dg.MetadataValue.md(header + "\n" + "\n".join(rows)),
        "refusals": "; ".join(r.refusal for r in results if r.refusal) or "none",
        **{f"total_{n}": totals[n] for n in names},
        "fixed": sum(totals[c] for c in fixes) if not dry_run else 0,
    }
    for r in results:
        metadata.update(r.metadata(label(r)))
        metadata.update({f"{label(r)}/{n}": int(r.counts.get(n, 0)) for n in extra})
    return metadata


def _edfi_label(result: ResyncResult) -> str:
    return f"{result.target.split('/', 1)[1]}/{result.resource}"  # `edfi/{connection}`: the connection


def _resync_qmlativ(context: dg.OpExecutionContext, district: District, dry_run: bool) -> list[str]:
    """Resync the Qmlativ screens and record `publish/qmlativ_resync`; the refusals (why it failed)."""
    from sg_orchestration.publish.qmlativ import resync_writeback
    from sg_orchestration.validate.student_mapping import MAPPING_HINT, demographics_loaded
    from sg_orchestration.warehouse import connect

    with connect() as con:
        mapped = demographics_loaded(con, district.id)
    if not mapped:
        # No students: every document is unmapped, and every object in Qmlativ would look like an orphan.
        return [f"nothing resynced in Qmlativ: no Qmlativ students loaded: {MAPPING_HINT}"]
    results = resync_writeback(
        district, dry_run=dry_run, confirm_deletes=context.run.tags.get(CONFIRM_DELETES_TAG)
    )
    metadata = resync_report(results, dry_run)
    context.log_event(dg.AssetMaterialization(QMLATIV_RESYNC_KEY, partition=district.id, metadata=metadata))
    return _refusals(results, dry_run)


def _resync_edfi(context: dg.OpExecutionContext, district: District, dry_run: bool) -> list[str]:
    """Resync every Ed-Fi connection's routes and record `publish/edfi_resync`; the refusals."""
    from sg_orchestration.publish.edfi import mapping_digest, resync_accommodations, toggled_off

    if toggled_off(district):
        context.log.info(f"{district.id}: Ed-Fi toggled off: nothing resynced (sent data stays in the ODS)")
        return []
    tags = context.run.tags
    full = tags.get(FULL_RESYNC_TAG) == "true" or tags.get(TRIGGER_TAG) == MAPPING_CHANGED
    results = resync_accommodations(
        district, dry_run=dry_run, confirm_deletes=tags.get(CONFIRM_DELETES_TAG), full=full
    )
    metadata = resync_report(results, dry_run, _edfi_label, EDFI_COUNTS)
    if not dry_run and not any(r.refusal or r.counts["failed"] for r in results):
        metadata[MAPPING_DIGEST] = mapping_digest(district)
    context.log_event(dg.AssetMaterialization(EDFI_RESYNC_KEY, partition=district.id, metadata=metadata))
    return _refusals(results, dry_run)


def _refusals(results: list[ResyncResult], dry_run: bool) -> list[str]:
    """Why the run fails: the mass-delete guard's refusals (a dry run only reports them)."""
    refused = [r for r in results if r.refusal]
    if not refused or dry_run:
        return []
    names = ",".join(r.name for r in refused)
    return ["; ".join(r.refusal for r in refused) + f"; {confirm_hint(names)}"]


@dg.op(
    pool=WAREHOUSE_POOL,
    description="Reconciles the district's Qmlativ screens and Ed-Fi resources with what the targets hold: "
    "adopts our records the ledger lost, deletes orphans, recreates records deleted by hand, overwrites "
    "records changed by hand, drops Ed-Fi identity-mapping rows whose record the ODS no longer holds.",
)
def resync_targets(context: dg.OpExecutionContext) -> None:
    district = current_districts().get(context.partition_key)
    dry_run = context.run.tags.get(DRY_RUN_TAG) == "true"
    problems: list[str] = []
    if district.qmlativ is not None and district.qmlativ.base_url:
        problems += _resync_qmlativ(context, district, dry_run)
    if district.edfi is not None:
        problems += _resync_edfi(context, district, dry_run)
    if not has_target(district):
        context.log.info(f"{district.id}: no target to resync (neither Qmlativ nor Ed-Fi configured)")
    if problems:
        raise dg.Failure(description="; ".join(problems), allow_retries=False)


@dg.job(
    name="resync",
    partitions_def=DISTRICTS,
    description="Reconcile one district's targets with what they hold (see the `resync_scheduled` sensor).",
)
def resync_job():
    resync_targets()


def has_target(district: District) -> bool:
    return bool(district.qmlativ is not None and district.qmlativ.base_url) or district.edfi is not None


def resync_settings(district: District) -> Resync | None:
    """The district's resync schedule, or None when it has no target or turned it off."""
    if not has_target(district):
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


def mapping_changes(
    districts: list[District], reconciled: Callable[[District], str | None]
) -> list[dg.RunRequest]:
    """A run request per district (resync on) whose Ed-Fi mapping configuration differs from the one its
    last complete Ed-Fi resync reconciled (`reconciled`: its `mapping_digest`, None before the first: the
    scheduled resync makes the first). The run key names the digest: one run per change."""
    from sg_orchestration.publish.edfi import mapping_digest

    requests = []
    for district in districts:
        if district.edfi is None or resync_settings(district) is None:
            continue
        digest, last = mapping_digest(district), reconciled(district)
        if last is not None and digest != last:
            requests.append(
                dg.RunRequest(
                    partition_key=district.id,
                    run_key=f"resync:{district.id}:mapping:{digest}",
                    tags={TRIGGER_TAG: MAPPING_CHANGED},
                )
            )
    return requests


def reconciled_digest(instance: dg.DagsterInstance, district: District) -> str | None:
    """The `mapping_digest` of the district's latest Ed-Fi resync that recorded one (newest first, page by
    page: however many runs since recorded none)."""
    records_filter = dg.AssetRecordsFilter(asset_key=EDFI_RESYNC_KEY, asset_partitions=[district.id])
    cursor = None
    while True:
        page = instance.fetch_materializations(records_filter, limit=20, cursor=cursor)
        for record in page.records:
            value = record.asset_materialization.metadata.get(MAPPING_DIGEST)
            if value is not None:
                return value.value
        if not page.has_more:
            return None
        cursor = page.cursor


def _now() -> float:
    return time.time()


@dg.sensor(
    name="resync_scheduled",
    job=resync_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Starts each district's `resync` run on its `resync.cron` (default Sundays 04:00, district "
    "time), and when its Ed-Fi mapping configuration changed since its last Ed-Fi resync.",
)
def resync_scheduled(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    cursor: dict[str, str] = json.loads(context.cursor or "{}")
    districts = current_districts().districts
    changed = mapping_changes(districts, lambda d: reconciled_digest(context.instance, d))
    requests, cursor = due_resyncs(districts, cursor, _now())
    # a mapping change's run pages through everything: it does what the scheduled one would
    starting = {r.partition_key for r in changed}
    requests = changed + [r for r in requests if r.partition_key not in starting]
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor, sort_keys=True))
