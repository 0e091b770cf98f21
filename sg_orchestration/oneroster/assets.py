"""The OneRoster target's steps (seed 001, SPEC §4.3): the bundle and its gate, then its delivery.

- `validate/oneroster_bundle` writes the district's bundle from the `or1_1__*` marts into
  `<state>/oneroster/<district>/bundle/`, runs the data-quality gate on it (`gate`), writes the report
  beside it (`gate_report.md`), records the findings in `ops.error_log` and reports the gate as a
  blocking asset check: a blocked bundle fails the step, saying why and how to fix it, and is not
  delivered.
- `publish/oneroster_bundle` zips a bundle that passed and delivers it (`delivery`: a directory or SFTP,
  atomically); a bundle with the content last delivered is not sent again.
"""

import hashlib
import json
import shutil
from pathlib import Path

import dagster as dg

from sg_orchestration.config import District, current_districts
from sg_orchestration.oneroster import HEADERS
from sg_orchestration.oneroster.bundle import mart, write_bundle
from sg_orchestration.oneroster.delivery import bundle_name, deliver, zip_bundle
from sg_orchestration.oneroster.gate import check_bundle, record_findings
from sg_orchestration.paths import state_dir
from sg_orchestration.warehouse import WAREHOUSE_POOL, connect

BUNDLE_KEY = dg.AssetKey(["validate", "oneroster_bundle"])
PUBLISH_KEY = dg.AssetKey(["publish", "oneroster_bundle"])
GATE_CHECK = "oneroster_gate"
MART_KEYS = [dg.AssetKey(mart(name).split(".")) for name in HEADERS]
VERDICT_FILE = "gate.json"


def district_folder(district_id: str) -> Path:
    return state_dir() / "oneroster" / district_id


def _fingerprint(con, district: District) -> str | None:
    """What the bundle is made from: the OneRoster dbt step's last clean build (its inputs, the
    mapping, the project, and the run that built it: load ids start again in another warehouse), this
    package's writer and gate, and the gate's threshold. None when that step
    has no clean build (then the bundle is always written again)."""
    built = con.execute(
        "select fingerprint, project_digest, run_id from ops.dbt_builds "
        "where district_id = ? and step = 'dbt_oneroster'",
        [district.id],
    ).fetchone()
    if built is None:
        return None
    code = b"".join(p.read_bytes() for p in sorted(Path(__file__).parent.glob("*.py")))
    parts = [*built, hashlib.sha256(code).hexdigest(), repr(district.oneroster.gate.model_dump())]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _verdict(folder: Path) -> dict | None:
    path = folder / VERDICT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _refuse_delta(con, district: District) -> None:
    """A district's own OneRoster export is re-exported whole (bulk): one whose manifest says `delta` for
    a file holds only that day's changes, and sending it as the whole roster would drop every student it
    does not list. Refused, naming the files, until delta bundles are applied to the last bulk one."""
    (files,) = con.execute(
        "select list(substr(property_name, 6) order by property_name) from staging.stg_oneroster__manifest "
        "where district_id = ? and property_name like 'file.%' and lower(value) = 'delta'",
        [district.id],
    ).fetchone()
    if files:
        raise dg.Failure(
            description=f"the OneRoster export of {district.id} is a delta bundle (manifest.csv: "
            f"{', '.join(f'file.{f}=delta' for f in files)}); only a bulk export is re-exported: have the "
            "SIS export a bulk bundle (every file.<name> `bulk` or `absent`) to inputs.oneroster_dir",
            allow_retries=False,
        )


def build_bundle(district: District) -> dict:
    """The district's bundle written afresh (beside, then swapped in) and judged, or the last one when
    nothing it is made from changed (`reused`). Returns the verdict kept beside the bundle for the
    delivery step: records per file, the gate's verdict, reasons and report."""
    folder = district_folder(district.id)
    fresh, bundle = folder / "bundle.new", folder / "bundle"
    with connect() as con:
        fingerprint = _fingerprint(con, district)
        if district.oneroster_source == "oneroster":
            _refuse_delta(con, district)
    last = _verdict(folder)
    if fingerprint and last and last.get("fingerprint") == fingerprint and bundle.is_dir():
        return {**last, "reused": True}
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    with connect() as con:
        counts = write_bundle(con, district.id, fresh)
    report = check_bundle(fresh, district.oneroster.gate.max_missing_critical_share)
    (folder / VERDICT_FILE).unlink(missing_ok=True)  # a run killed from here on leaves no verdict
    shutil.rmtree(bundle, ignore_errors=True)
    fresh.rename(bundle)
    markdown = report.markdown()
    (folder / "gate_report.md").write_text(markdown + "\n", encoding="utf-8")
    with connect() as con:
        record_findings(con, district.id, report)
    verdict = {
        "fingerprint": fingerprint,
        "records": counts,
        "verdict": report.verdict,
        "blocked": report.blocked,
        "reasons": report.blocking_reasons,
        "findings": len(report.findings),
        "report": markdown,
    }
    (folder / VERDICT_FILE).write_text(json.dumps(verdict), encoding="utf-8")
    return {**verdict, "reused": False}


def build_oneroster_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=BUNDLE_KEY,
        group_name="validate",
        partitions_def=partitions_def,
        pool=WAREHOUSE_POOL,
        deps=MART_KEYS,
        kinds={"oneroster", "duckdb"},
        description="Writes the district's OneRoster 1.1 bundle from the or1_1__* marts and runs the "
        "data-quality gate on it (header, format, required fields, duplicate sourcedIds, enumerations, "
        "references across files, dates, the seed's critical homeless fields); the report is beside the "
        "bundle (gate_report.md) and findings are ops.error_log rows. A blocked bundle is not delivered.",
        check_specs=[
            dg.AssetCheckSpec(
                GATE_CHECK,
                asset=BUNDLE_KEY,
                blocking=True,
                description="The bundle passes the data-quality gate before it is shared (seed 001 §2).",
            )
        ],
    )
    def oneroster_bundle(context: dg.AssetExecutionContext):
        district = current_districts().get(context.partition_key)
        if district.oneroster is None:
            yield dg.MaterializeResult(
                metadata={"configured": False},
                check_results=[dg.AssetCheckResult(check_name=GATE_CHECK, passed=True)],
            )
            return
        verdict = build_bundle(district)
        folder = district_folder(district.id)
        report_md = dg.MetadataValue.md(verdict["report"])
        check = dg.AssetCheckResult(
            check_name=GATE_CHECK,
            passed=not verdict["findings"],
            severity=dg.AssetCheckSeverity.ERROR if verdict["blocked"] else dg.AssetCheckSeverity.WARN,
            description=f"{verdict['verdict']}: " + ("; ".join(verdict["reasons"]) or "see the report"),
            metadata={"report": report_md, "findings": verdict["findings"]},
        )
        yield dg.MaterializeResult(
            metadata={
                **{f"{name} records": n for name, n in verdict["records"].items()},
                "gate": verdict["verdict"],
                "reused": verdict["reused"],
                "gate_report": dg.MetadataValue.path(str(folder / "gate_report.md")),
                "report": report_md,
            },
            check_results=[check],
        )
        if verdict["blocked"]:
            raise dg.Failure(
                description="the OneRoster bundle is not delivered: "
                + "; ".join(verdict["reasons"])
                + f" (report: {folder / 'gate_report.md'})",
                allow_retries=False,
            )

    @dg.asset(
        key=PUBLISH_KEY,
        group_name="publish",
        partitions_def=partitions_def,
        pool=WAREHOUSE_POOL,
        deps=[BUNDLE_KEY],
        kinds={"oneroster", "sftp"},
        description="Delivers the bundle that passed the gate, zipped, to the district's School Passport "
        "SFTP folder (host key checked) or directory: uploaded under a temporary name, then renamed. The "
        "ledger (ops.publish_ledger, target oneroster) keeps what was delivered; the same content again "
        "is not sent.",
    )
    def oneroster_delivery(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        district = current_districts().get(context.partition_key)
        if district.oneroster is None:
            return dg.MaterializeResult(metadata={"configured": False})
        folder = district_folder(district.id)
        verdict = _verdict(folder)
        if verdict is None or verdict["blocked"]:
            first = f"no bundle has passed the gate (materialize {BUNDLE_KEY.to_user_string()} first)"
            why = "; ".join(verdict["reasons"]) if verdict else first
            raise dg.Failure(description=f"the OneRoster bundle is not delivered: {why}", allow_retries=False)
        zip_path, zipped_from = folder / bundle_name(district.id), folder / "zipped_from"
        made = zipped_from.read_text() if zipped_from.is_file() and zip_path.is_file() else None
        if not verdict["fingerprint"] or made != verdict["fingerprint"]:  # the same bundle: the same zip
            zipped_from.unlink(missing_ok=True)
            zip_bundle(folder / "bundle", zip_path)
            if verdict["fingerprint"]:
                zipped_from.write_text(verdict["fingerprint"])
        with connect() as con:
            result = deliver(con, district, zip_path, run_id=context.run.run_id)
        delivered = result.status == "delivered"
        context.log.info(f"oneroster: {result.name} {result.status} ({result.destination})")
        return dg.MaterializeResult(
            metadata={
                "status": result.status,
                "bundle/updated": int(delivered),
                "bundle/unchanged": int(not delivered),
                "bundle/sent": int(delivered),
                "destination": result.destination,
                "zip_sha256": result.zip_hash,
                "bytes": result.size,
            }
        )

    return [oneroster_bundle, oneroster_delivery]
