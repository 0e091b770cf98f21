"""The run summary printed by `sg-orch run` and the demo: counts only, never student data."""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg

from sg_orchestration.config import District
from sg_orchestration.warehouse import connect


@dataclass
class AssetLine:
    asset: str
    metadata: dict = field(default_factory=dict)
    checks_passed: int = 0
    checks_warned: int = 0
    checks_failed: int = 0


@dataclass
class Summary:
    success: bool
    assets: dict[str, AssetLine]
    failed_steps: list[str]
    open_errors: list[tuple[str, str, int]]

    @property
    def checks_failed(self) -> int:
        return sum(a.checks_failed for a in self.assets.values())

    @property
    def ok(self) -> bool:
        return self.success and not self.failed_steps and self.checks_failed == 0


def _value(entry) -> object:
    return getattr(entry, "value", entry)


def collect(result: dg.ExecuteInProcessResult, district_id: str) -> Summary:
    assets: dict[str, AssetLine] = {}
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            mat = event.event_specific_data.materialization
            name = mat.asset_key.to_user_string()
            assets.setdefault(name, AssetLine(name)).metadata = {
                k: _value(v) for k, v in mat.metadata.items()
            }
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            ev = event.event_specific_data
            line = assets.setdefault(ev.asset_key.to_user_string(), AssetLine(ev.asset_key.to_user_string()))
            if ev.passed:
                line.checks_passed += 1
            elif ev.severity == dg.AssetCheckSeverity.WARN:
                line.checks_warned += 1
            else:
                line.checks_failed += 1
    failed = [e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    with connect() as con:
        open_errors = con.execute(
            "select stage, target, count(*) from ops.error_log where district_id = ? and resolved_at is null "
            "group by all order by stage, target",
            [district_id],
        ).fetchall()
    return Summary(result.success, assets, failed, open_errors)


def render(summary: Summary, district: District, dry_run: bool = False) -> str:
    out = [
        f"\n== sg_orchestration summary: {district.name} ({district.id}){' [dry run]' if dry_run else ''} =="
    ]
    ingest = [a for a in summary.assets.values() if a.asset.startswith("raw/")]
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
    publishes = [a for a in summary.assets.values() if a.asset.startswith("publish/")]
    models = [a for a in summary.assets.values() if not a.asset.startswith(("raw/", "validate/", "publish/"))]
    if models:
        tests = sum(a.checks_passed + a.checks_warned + a.checks_failed for a in models)
        warned = sum(a.checks_warned for a in models)
        failed = sum(a.checks_failed for a in models)
        out.append(
            f"\ndbt: {len(models)} models and seeds built; {tests} tests: {tests - warned - failed} passed, "
            f"{warned} warned, {failed} failed"
        )
    for a in sorted(validations, key=lambda a: a.asset):
        counts = ", ".join(f"{k} {v:,}" for k, v in a.metadata.items() if isinstance(v, int) and "/" not in k)
        check = "FAILED" if a.checks_failed else "warning (see ops.error_log)" if a.checks_warned else "ok"
        out.append(f"{a.asset}: {counts or 'done'}; checks {check}")
    for a in sorted(publishes, key=lambda a: a.asset):
        out.append(_publish_table(a, dry_run))
    if summary.open_errors:
        out.append("\nopen errors in ops.error_log (fix at the source; they resolve on the next run):")
        out += [f"  {stage:8} {target:44} {n:>7,}" for stage, target, n in summary.open_errors]
    if summary.failed_steps:
        out.append("\nFAILED steps: " + ", ".join(summary.failed_steps))
    out.append("\nresult: " + ("OK" if summary.ok else "FAILED"))
    return "\n".join(out)


PUBLISH_COUNTS = ("created", "updated", "deleted", "unchanged", "failed")


def _publish_table(line: AssetLine, dry_run: bool) -> str:
    """Per-resource counts from the publish metadata (`<resource>/<count>`)."""
    m = line.metadata
    if not m.get("configured", True):
        return f"\n{line.asset}: not configured for this district"
    if "reason" in m:
        return f"\n{line.asset}: nothing sent: {m['reason']}"
    prefix = "planned_" if dry_run else ""
    names = ("create", "update", "delete", "unchanged", "failed") if dry_run else PUBLISH_COUNTS
    resources = sorted({k.split("/")[0] for k in m if "/" in k})
    rows = [f"\n{line.asset}{' (dry run: planned, nothing sent)' if dry_run else ''}"]
    rows.append(f"  {'resource':34}" + "".join(f"{n:>10}" for n in names))
    for r in resources:
        values = [m.get(f"{r}/{prefix}{n}", m.get(f"{r}/{n}", 0)) for n in names]
        rows.append(f"  {r:34}" + "".join(f"{int(v):>10,}" for v in values))
    check = "FAILED" if line.checks_failed else "warning" if line.checks_warned else "ok"
    rows.append(f"  checks: {check}")
    return "\n".join(rows)
