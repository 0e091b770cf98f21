"""`ops.run_history`: one row per run that reached a final state, and the alert of a failed one.

Every row is made by `record` from what the Dagster instance holds of the run (its stats and event log), so
a run of `sg-orch run` (which records its own row) and one of a schedule or sensor (recorded by the sensors
below, in the daemon) get the same row; the write is an insert-or-replace per run id, so both writing one
run is harmless. Counts, step names and one-line causes only: never student data.
"""

from __future__ import annotations

import json
import os
import urllib.request
from datetime import UTC, datetime, timedelta

import dagster as dg
import duckdb

from sg_orchestration.publish.assets import DRY_RUN_TAG
from sg_orchestration.summary import PUBLISH_PREFIX, failure_cause
from sg_orchestration.warehouse import connect

WEBHOOK_ENV = "SG_ALERT_WEBHOOK_URL"
WEBHOOK_TIMEOUT_S = 5.0
CATCH_UP_WINDOW = timedelta(days=1)
CATCH_UP_INTERVAL_S = 600
HISTORY_COUNTS = ("created", "updated", "deleted", "failed", "held")
STATUS = {
    dg.DagsterRunStatus.SUCCESS: "success",
    dg.DagsterRunStatus.FAILURE: "failure",
    dg.DagsterRunStatus.CANCELED: "canceled",
}
_EVENTS = {
    dg.DagsterEventType.ASSET_MATERIALIZATION,
    dg.DagsterEventType.STEP_FAILURE,
    dg.DagsterEventType.RUN_FAILURE,
}


def _counts(metadata) -> dict[str, int]:
    """A publish's `<resource>/<count>` metadata summed over its resources (Ed-Fi's `<connection>/<resource>`)."""
    totals = dict.fromkeys(HISTORY_COUNTS, 0)
    for key, entry in metadata.items():
        name = key.rsplit("/", 1)[-1]
        value = getattr(entry, "value", entry)
        if "/" in key and name in totals and isinstance(value, int | float) and not isinstance(value, bool):
            totals[name] += int(value)
    return totals


def _when(seconds: float | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, UTC) if seconds else None


def record(instance: dg.DagsterInstance, run_id: str) -> dict:
    """Write (insert or replace) the run's row of `ops.run_history` and return it."""
    return write(run_row(instance, run_id))


def run_row(instance: dg.DagsterInstance, run_id: str) -> dict:
    """The run's row as the Dagster instance tells it (all but the error-log counts, which `write` adds)."""
    run = instance.get_run_by_id(run_id)
    stats = instance.get_run_stats(run_id)
    targets: dict[str, dict[str, int]] = {}
    failed_step = cause = None
    for entry in instance.all_logs(run_id, of_type=_EVENTS):
        event = entry.dagster_event
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            mat = event.event_specific_data.materialization
            if mat.asset_key.to_user_string().startswith(PUBLISH_PREFIX):
                targets[mat.asset_key.to_user_string()] = _counts(mat.metadata)
        elif event.event_type == dg.DagsterEventType.STEP_FAILURE:
            if failed_step is None:  # the first step that failed: what the others' skipping follows from
                failed_step, cause = event.step_key, failure_cause(event)
            data = event.event_specific_data.user_failure_data
            # A publish that failed after sending (a refused mass delete) carries its counts; its step is
            # named by its asset key (`publish__x` for `publish/x`).
            if data is not None and data.metadata and event.step_key.startswith("publish__"):
                targets[event.step_key.replace("__", "/", 1)] = _counts(data.metadata)
        elif cause is None:  # a run that failed without a step failing (e.g. its process was killed)
            cause = failure_cause(event, default=(event.message or "run failed").splitlines()[0])
    status = STATUS.get(run.status, run.status.value.lower())
    return {
        "run_id": run_id,
        "district_id": run.tags.get("dagster/partition"),
        "job": run.job_name,
        "started_at": _when(stats.start_time),
        "finished_at": _when(stats.end_time),
        "status": status,
        "dry_run": run.tags.get(DRY_RUN_TAG) == "true",
        **{c: sum(t[c] for t in targets.values()) for c in HISTORY_COUNTS},
        "target_counts": json.dumps(targets, sort_keys=True),
        "failed_step": failed_step if status == "failure" else None,
        "cause": cause if status == "failure" else None,
    }


def write(row: dict) -> dict:
    """Insert or replace `row` with the district's error-log rows opened and resolved during the run."""
    district = row["district_id"]
    with connect() as con:
        row["errors_opened"], row["errors_resolved"] = con.execute(
            "select count(*) filter (where first_seen_at between $start and $end), "
            "count(*) filter (where resolved_at between $start and $end) "
            "from ops.error_log where district_id = $district",
            {
                "start": row["started_at"] or datetime.now(UTC),
                "end": row["finished_at"] or datetime.now(UTC),
                "district": district,
            },
        ).fetchone()
        names = list(row)
        con.execute(
            f"insert or replace into ops.run_history ({', '.join(names)}, recorded_at) "
            f"values ({', '.join('$' + n for n in names)}, now())",
            row,
        )
    return row


def describe(row: dict) -> str:
    """The one line `sg-orch run` prints about the row it wrote."""
    counts = ", ".join(f"{c} {row[c]:,}" for c in HISTORY_COUNTS)
    failed = f"; failed at {row['failed_step']}" if row["failed_step"] else ""
    return f"run history: ops.run_history row {row['run_id']} ({row['status']}; {counts}{failed})"


def history(district: str | None = None, limit: int = 20) -> str:
    """The last `limit` runs, newest first, as console lines (`sg-orch history`)."""
    columns = (
        "started_at",
        "district_id",
        "job",
        "status",
        *HISTORY_COUNTS,
        "errors_opened",
        "errors_resolved",
    )
    try:
        with connect(read_only=True) as con:
            rows = con.execute(
                f"select strftime(started_at at time zone 'UTC', '%Y-%m-%d %H:%M:%SZ'), "
                f"{', '.join(columns[1:])}, run_id, failed_step, cause from ops.run_history "
                "where $district is null or district_id = $district order by started_at desc nulls last limit $n",
                {"district": district, "n": limit},
            ).fetchall()
    except duckdb.Error:  # no warehouse yet, or one from before the table
        rows = []
    if not rows:
        return "no runs recorded in ops.run_history"
    headers = [c.removesuffix("_at").removesuffix("_id").replace("_", " ") for c in columns] + ["run id"]
    lines = [[str(v) for v in (*values, run_id)] for *values, run_id, _, _ in rows]
    widths = [max(len(r[i]) for r in [headers, *lines]) for i in range(len(headers))]
    counts = range(4, len(columns))  # right-aligned; the text columns before and the run id after are not

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in counts else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(headers)]
    for cells, (*_, step, cause) in zip(lines, rows, strict=True):
        out.append(line(cells))
        if step or cause:
            out.append(f"    failed at {step}: {cause}")
    return "\n".join(out)


def notify(row: dict, log) -> bool:
    """POST the failed run to SG_ALERT_WEBHOOK_URL when set; a webhook that fails is logged (not its URL,
    which may hold a token) and never raised. True when it was delivered."""
    url = os.environ.get(WEBHOOK_ENV)
    if not url:
        return False
    body = {
        "district": row["district_id"],
        "job": row["job"],
        "run_id": row["run_id"],
        "step": row["failed_step"],
        "cause": row["cause"],
        "dagster_run_url_path": f"/runs/{row['run_id']}",
    }
    try:
        request = urllib.request.Request(
            url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as response:
            response.read()
        return True
    except Exception as exc:  # an alert that cannot go out must not stop the run's row being recorded
        # The HTTP status or the socket's reason only: other errors' text may quote the URL (a bad one).
        detail = getattr(exc, "code", None) or getattr(exc, "reason", None) or "see the URL's form"
        log.warning(f"the alert webhook ({WEBHOOK_ENV}) failed: {type(exc).__name__}: {detail}"[:300])
        return False


def _recorder(status: dg.DagsterRunStatus) -> dg.SensorDefinition:
    """The sensor writing the row of each run that ended in `status` (a failure has its own, which alerts)."""

    @dg.run_status_sensor(
        run_status=status,
        name=f"run_history_{STATUS[status]}",
        default_status=dg.DefaultSensorStatus.RUNNING,  # it launches nothing: on unless turned off
        description=f"Records each run that ended in {STATUS[status]} in ops.run_history.",
    )
    def _record(context: dg.RunStatusSensorContext):
        record(context.instance, context.dagster_run.run_id)

    return _record


@dg.run_failure_sensor(
    name="run_history_failure",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=f"Records each failed run in ops.run_history (failing step, one-line cause) and POSTs it "
    f"to the webhook in {WEBHOOK_ENV} when set.",
)
def run_history_failure(context: dg.RunFailureSensorContext):
    row = run_row(context.instance, context.dagster_run.run_id)
    notify(row, context.log)  # first: the alert goes out even while a run holds the warehouse
    write(row)


@dg.sensor(
    name="run_history_catch_up",
    minimum_interval_seconds=CATCH_UP_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Records the runs of the last day that ended with no row in ops.run_history (the tick of "
    "a run-status sensor that could not write: it is not evaluated again).",
)
def run_history_catch_up(context: dg.SensorEvaluationContext):
    since = datetime.now(UTC) - CATCH_UP_WINDOW
    ended = context.instance.get_runs(dg.RunsFilter(statuses=list(STATUS), updated_after=since), limit=500)
    with connect() as con:
        known = {
            run_id
            for (run_id,) in con.execute(
                "select run_id from ops.run_history where list_contains($ids, run_id)",
                {"ids": [r.run_id for r in ended]},
            ).fetchall()
        }
    missing = [r.run_id for r in ended if r.run_id not in known]
    for run_id in missing:
        record(context.instance, run_id)
    return dg.SkipReason(f"recorded {len(missing)} run(s) missing from ops.run_history")


SENSORS = [
    _recorder(dg.DagsterRunStatus.SUCCESS),
    _recorder(dg.DagsterRunStatus.CANCELED),
    run_history_failure,
    run_history_catch_up,
]
