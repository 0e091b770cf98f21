"""The run summary printed by `sg-orch run` and the demo: counts only, never student data.

`result: OK` only when every step ran, every check passed, every input was applied and every record is in
its target; `INCOMPLETE` when records failed to publish or are still pending, or an input was held back;
`FAILED` when a step or a check failed. Each target says `published`, `not configured` or
`did not run: <asset> failed: <cause>`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg

from sg_orchestration.config import District
from sg_orchestration.transform.reuse import REUSED, VIEW_KEPT
from sg_orchestration.warehouse import connect

PUBLISH_PREFIX = "publish/"
CAUSE_CHARS = 240


@dataclass
class AssetLine:
    asset: str
    metadata: dict = field(default_factory=dict)
    checks_passed: int = 0
    checks_warned: int = 0
    checks_failed: int = 0
    materialized: bool = False  # else only checks of it ran (a dbt test of a model this run did not build)


@dataclass
class Summary:
    success: bool
    assets: dict[str, AssetLine]
    failures: dict[str, str]  # asset that failed -> one-line cause
    targets: dict[str, str]  # publish asset -> published | not configured | did not run: ...
    open_errors: list[tuple[str, str, int]]
    skipped: list[str] = field(default_factory=list)  # steps not run because an input of theirs failed
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per step

    @property
    def checks_failed(self) -> int:
        return sum(a.checks_failed for a in self.assets.values())

    @property
    def held_inputs(self) -> list[str]:
        return sorted(a.asset for a in self.assets.values() if a.metadata.get("status") == "held")

    @property
    def unpublished(self) -> dict[str, int]:
        """Per publish asset: records that failed, are pending or were refused (a guarded mass delete)."""
        out = {}
        for a in self.assets.values():
            if a.asset.startswith(PUBLISH_PREFIX) and not a.metadata.get("dry_run"):
                n = _incomplete(a.metadata)
                if n:
                    out[a.asset] = n
        return out

    @property
    def result(self) -> str:
        if not self.success or self.failures or self.checks_failed:
            return "FAILED"
        if self.unpublished or self.held_inputs:
            return "INCOMPLETE"
        return "OK"

    @property
    def ok(self) -> bool:
        return self.result == "OK"


def _incomplete(metadata: dict) -> int:
    """The engine's own count of records a publish left not as desired (`PublishResult.incomplete`)."""
    return int(metadata.get("incomplete") or 0)


def _value(entry) -> object:
    return getattr(entry, "value", entry)


def failure_cause(event, default: str = "unknown error") -> str:
    """One line: a `dagster.Failure`'s description, else the error's first line (else `default`)."""
    data = event.event_specific_data
    described = getattr(getattr(data, "user_failure_data", None), "description", None)
    error = data.error if data else None
    while error is not None and error.cause is not None:  # the step error wraps the code's own
        error = error.cause
    message = described or (error.message if error else "") or default
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    line = lines[0] if lines else default
    if not described:  # `package.module.SomeError: text` -> `SomeError: text`
        name, sep, text = line.partition(": ")
        line = f"{name.rsplit('.', 1)[-1]}{sep}{text}" if sep and " " not in name else line
    return line[:CAUSE_CHARS]


def _failed_assets(event) -> dict[str, str] | None:
    """A failed step of several assets that names which failed (an ingest step: its sources), asset ->
    cause; else None."""
    from sg_orchestration.ingest.assets import FAILED_SOURCES  # late: its assets read the districts file

    data = getattr(event.event_specific_data, "user_failure_data", None)
    entry = (data.metadata or {}).get(FAILED_SOURCES) if data else None
    return {k: str(v)[:CAUSE_CHARS] for k, v in entry.data.items()} if entry is not None else None


def collect(
    result: dg.ExecuteInProcessResult,
    district_id: str,
    defs: dg.Definitions,
    seconds: dict[str, float] | None = None,
) -> Summary:
    assets: dict[str, AssetLine] = {}
    step_failures: dict[str, str] = {}
    asset_failures: dict[str, dict[str, str]] = {}  # step -> the assets of it that failed, and why
    started: set[str] = set()
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            mat = event.event_specific_data.materialization
            name = mat.asset_key.to_user_string()
            line = assets.setdefault(name, AssetLine(name))
            line.metadata = {k: _value(v) for k, v in mat.metadata.items()}
            line.materialized = True
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            ev = event.event_specific_data
            line = assets.setdefault(ev.asset_key.to_user_string(), AssetLine(ev.asset_key.to_user_string()))
            if ev.passed:
                line.checks_passed += 1
            elif ev.severity == dg.AssetCheckSeverity.WARN:
                line.checks_warned += 1
            else:
                line.checks_failed += 1
        elif event.event_type == dg.DagsterEventType.STEP_FAILURE:
            step_failures[event.step_key] = failure_cause(event)
            if (named := _failed_assets(event)) is not None:
                asset_failures[event.step_key] = named
        elif event.event_type == dg.DagsterEventType.STEP_START:
            started.add(event.step_key)

    graph = defs.resolve_asset_graph()
    keys_of_step = {
        a.op.name: a.keys for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.is_executable
    }
    job_steps = {node.name for node in result.job_def.nodes}
    skipped = sorted(job_steps & set(keys_of_step) - started)  # their inputs failed: never started
    # A step of one asset is named by its asset; an ingest step by the sources that failed; another
    # multi-asset step (dbt) once, by its step, and all its assets failed.
    failures: dict[str, str] = {}
    failed_keys: dict[dg.AssetKey, str] = {}
    for step, cause in step_failures.items():
        keys = keys_of_step.get(step, ())
        if step in asset_failures:
            failures.update(asset_failures[step])
            failed_keys.update({dg.AssetKey.from_user_string(k): c for k, c in asset_failures[step].items()})
            continue
        failures[next(iter(keys)).to_user_string() if len(keys) == 1 else step] = cause
        failed_keys.update(dict.fromkeys(keys, cause))

    targets = {}
    for key in sorted(graph.materializable_asset_keys, key=lambda k: k.to_user_string()):
        name = key.to_user_string()
        if not name.startswith(PUBLISH_PREFIX):
            continue
        line = assets.get(name)
        if not any(key in keys_of_step.get(step, ()) for step in job_steps):
            targets[name] = "not configured for this district"  # not planned: the district lacks the target
        elif key in failed_keys:
            targets[name] = f"failed: {failed_keys[key]}"
        elif line is not None:
            targets[name] = "not configured" if line.metadata.get("configured") is False else "published"
        else:
            upstream = set(graph.upstream_key_iterator(key))
            roots = sorted((k.to_user_string(), c) for k, c in failed_keys.items() if k in upstream)
            targets[name] = (
                "did not run: " + "; ".join(f"{k} failed: {c}" for k, c in roots[:3])
                if roots
                else "did not run"
            )
    with connect() as con:
        open_errors = con.execute(
            "select stage, target, count(*) from ops.error_log where district_id = ? and resolved_at is null "
            "group by all order by stage, target",
            [district_id],
        ).fetchall()
    return Summary(result.success, assets, failures, targets, open_errors, skipped, seconds or {})


def render(summary: Summary, district: District, dry_run: bool = False) -> str:
    out = [
        f"\n== sg_orchestration summary: {district.name} ({district.id}){' [dry run]' if dry_run else ''} =="
    ]
    ingest = [a for a in summary.assets.values() if a.asset.startswith("raw/")]
    if summary.seconds:
        out.append(_stages(summary, ingest))
    if ingest:
        out.append(f"\n{'ingest':44} {'status':>10} {'read':>9} {'added':>9} {'errors':>7} {'check':>6}")
        for a in sorted(ingest, key=lambda a: a.asset):
            m = a.metadata
            status = m.get("status", "not used") if m.get("configured", True) else "not used"
            check = "fail" if a.checks_failed else "warn" if a.checks_warned else "ok"
            out.append(
                f"{a.asset:44} {status:>10} {m.get('rows_read', 0):>9,} {m.get('rows_added', 0):>9,} "
                f"{m.get('rows_with_errors', 0):>7,} {check:>6}"
            )
    validations = [a for a in summary.assets.values() if a.asset.startswith("validate/")]
    publishes = [a for a in summary.assets.values() if a.asset.startswith(PUBLISH_PREFIX)]
    models = [
        a for a in summary.assets.values() if not a.asset.startswith(("raw/", "validate/", PUBLISH_PREFIX))
    ]
    if models:
        tests = sum(a.checks_passed + a.checks_warned + a.checks_failed for a in models)
        warned = sum(a.checks_warned for a in models)
        failed = sum(a.checks_failed for a in models)
        reused = sum(REUSED in a.metadata for a in models)
        kept = sum(VIEW_KEPT in a.metadata for a in models)
        built = sum(a.materialized for a in models) - reused - kept
        out.append(
            f"\ndbt: {built} models and seeds built, {kept} kept and tested on new data, "
            f"{reused} reused (nothing they read changed); "
            f"{tests} tests: {tests - warned - failed} passed, {warned} warned, {failed} failed"
        )
    for a in sorted(validations, key=lambda a: a.asset):
        counts = ", ".join(
            f"{k} {v:,}"
            for k, v in a.metadata.items()
            if isinstance(v, int) and not isinstance(v, bool) and "/" not in k
        )
        check = "FAILED" if a.checks_failed else "warning (see ops.error_log)" if a.checks_warned else "ok"
        out.append(f"{a.asset}: {counts or 'done'}; checks {check}")
        if isinstance(a.metadata.get("not_sent"), str):
            out.append(_indented_table(a.metadata["not_sent"]))
        if isinstance(a.metadata.get("gate"), str):  # the OneRoster bundle's data-quality gate
            out.append(f"  gate: {a.metadata['gate']}; report: {a.metadata.get('gate_report')}")
    for a in sorted(publishes, key=lambda a: a.asset):
        out.append(_publish_table(a, dry_run))
    if summary.targets:
        out.append("\ntargets:")
        out += [f"  {name:34} {status}" for name, status in summary.targets.items()]
    if summary.open_errors:
        out.append("\nopen errors in ops.error_log (fix at the source; they resolve on the next run):")
        out += [f"  {stage:8} {target:44} {n:>7,}" for stage, target, n in summary.open_errors]
    if summary.held_inputs:
        out.append(
            "\nHELD inputs (the last good load stays current; see ops.error_log, accept with "
            "`--accept-shrink SOURCE`): " + ", ".join(summary.held_inputs)
        )
    if summary.unpublished:
        out.append(
            "\nNOT PUBLISHED: "
            + ", ".join(
                f"{name} {n:,} record(s) failed or pending" for name, n in summary.unpublished.items()
            )
        )
    if summary.failures:
        out.append("\nFAILED:")
        out += [f"  {name}: {cause}" for name, cause in summary.failures.items()]
    if summary.skipped:
        out.append("not run (an input of theirs failed): " + ", ".join(summary.skipped))
    out.append("\nresult: " + summary.result)
    return "\n".join(out)


def _stages(summary: Summary, ingest: list[AssetLine]) -> str:
    """One line per stage: its wall time and what it did (counts only)."""
    seconds = summary.seconds
    stage_of = {"raw": "ingest", "validate": "validate", "publish": "publish"}
    totals: dict[str, float] = {}
    for step, s in seconds.items():
        name = stage_of.get(step.split("__", 1)[0], step)
        totals[name] = totals.get(name, 0.0) + s
    rows_added = sum(int(a.metadata.get("rows_added", 0)) for a in ingest)
    sent = sum(
        int(v)
        for a in summary.assets.values()
        if a.asset.startswith(PUBLISH_PREFIX)
        for k, v in a.metadata.items()
        if k.endswith("/sent") and isinstance(v, int | float)
    )
    what = {
        "ingest": f"{len(ingest)} sources, {rows_added:,} rows added",
        "publish": f"{sent:,} requests sent",
    }
    lines = ["\nstages (wall time):"]
    lines += [f"  {name:16} {s:7.1f} s  {what.get(name, '')}".rstrip() for name, s in totals.items()]
    return "\n".join(lines)


def _indented_table(markdown: str) -> str:
    """A metadata markdown table as aligned console lines."""
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in markdown.splitlines()
        if line.strip() and not set(line.strip()) <= set("|-: ")
    ]
    widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(max(map(len, rows)))]
    return "\n".join("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) for r in rows)


PUBLISH_COUNTS = ("created", "updated", "deleted", "unchanged", "held", "pending", "failed")


def _publish_table(line: AssetLine, dry_run: bool) -> str:
    """Per-resource counts from the publish metadata (`<resource>/<count>`, a resource of a target with
    connections `<connection>/<resource>`), and the causes of failures."""
    m = line.metadata
    if not m.get("configured", True):
        return f"\n{line.asset}: not configured for this district"
    if "reason" in m:
        return f"\n{line.asset}: nothing sent: {m['reason']}"
    if m.get("toggled_off"):
        return f"\n{line.asset}: toggled off: nothing sent, nothing deleted (what was sent stays)"
    prefix = "planned_" if dry_run else ""
    names = ("create", "update", "delete", "unchanged", "failed") if dry_run else PUBLISH_COUNTS
    resources = sorted({k.rsplit("/", 1)[0] for k in m if "/" in k})
    width = max([34, *map(len, resources)])
    rows = [f"\n{line.asset}{' (dry run: planned, nothing sent)' if dry_run else ''}"]
    rows.append(f"  {'resource':{width}}" + "".join(f"{n:>10}" for n in names))
    for r in resources:
        values = [m.get(f"{r}/{prefix}{n}", m.get(f"{r}/{n}", 0)) for n in names]
        rows.append(f"  {r:{width}}" + "".join(f"{int(v):>10,}" for v in values))
    check = "FAILED" if line.checks_failed else "warning" if line.checks_warned else "ok"
    rows.append(f"  checks: {check}")
    causes = m.get("top_error_causes")
    if not dry_run and _incomplete(m) and isinstance(causes, str) and causes != "No errors.":
        rows.append("  causes:\n" + "\n".join(f"    {c}" for c in causes.splitlines()))
    return "\n".join(rows)
