"""Publish assets: one per target, partitioned by district, in the warehouse pool (the ledger is DuckDB)."""

from datetime import date

import dagster as dg

from sg_orchestration.config import current_districts
from sg_orchestration.edfi.names import TARGET as EDFI_TARGET
from sg_orchestration.publish.edfi import publish_accommodations, toggled_off
from sg_orchestration.publish.engine import CONFIRM_DELETES_TAG, PublishResult, confirm_hint
from sg_orchestration.publish.qmlativ import access_expiry_status, publish_writeback
from sg_orchestration.validate.edfi import KEY as EDFI_VALIDATION
from sg_orchestration.validate.edfi import MART_KEYS as EDFI_MART_KEYS
from sg_orchestration.validate.qmlativ import KEY as VALIDATION
from sg_orchestration.validate.qmlativ import MART_KEYS
from sg_orchestration.validate.student_mapping import MAPPING_HINT, demographics_loaded
from sg_orchestration.warehouse import WAREHOUSE_POOL, connect

QMLATIV_KEY = dg.AssetKey(["publish", "qmlativ_writeback"])
EXPIRY_CHECK = "qmlativ_access_expiry"
DRY_RUN_TAG = "sg/dry_run"
COUNTS = ("created", "updated", "deleted", "unchanged", "skipped", "pending", "failed", "refused")


def _report(results: list[PublishResult], dry_run: bool, label=lambda r: r.resource) -> dict:
    """Per-screen counts and the top error causes: counts and causes only, never student data.

    Whether the publish is complete: `<screen>/failed`, `<screen>/pending` (outcome unknown, looked up on
    the next run), `<screen>/refused` (deletes of a plan the mass-delete guard refused) and
    `<screen>/incomplete` (their sum) per screen; `incomplete` is the total and `complete` its negation.
    In a dry run they are what the plan would leave (refused: what the guard would refuse). A screen is
    named `label(result)`: the resource, or for Ed-Fi `connection/resource`."""

    def count(r: PublishResult, c: str) -> int:
        source = r.counts if c == "refused" or not dry_run else r.planned
        return int(source.get(c, 0))

    header = "| screen | " + " | ".join(COUNTS) + " |\n|---|" + "---:|" * len(COUNTS)
    rows = [f"| {label(r)} | " + " | ".join(str(count(r, c)) for c in COUNTS) + " |" for r in results]
    causes = [(label(r), cause, n) for r in results for cause, n in r.errors.most_common(10)]
    causes.sort(key=lambda c: -c[2])
    cause_table = "| screen | cause | count |\n|---|---|---:|\n" + "\n".join(
        f"| {screen} | {cause.replace('|', '/')} | {n} |" for screen, cause, n in causes[:15]
    )
    incomplete = sum(r.incomplete for r in results)
    metadata: dict = {
        "dry_run": dry_run,
        "incomplete": incomplete,
        "complete": incomplete == 0,
        "refusals": "; ".join(r.refusal for r in results if r.refusal) or "none",
        "per_screen": dg.MetadataValue.md(header + "\n" + "\n".join(rows)),
        "top_error_causes": dg.MetadataValue.md(cause_table if causes else "No errors."),
    }
    for r in results:
        metadata.update({k: v for k, v in r.metadata(label(r)).items() if not k.endswith("top_error_causes")})
    return metadata


def _fail_on_refusals(context, results: list[PublishResult], metadata: dict, dry_run: bool) -> None:
    """A resource the mass-delete guard refused fails the step (with the counts) once the others have
    published and their ledger rows are written; a dry run only warns."""
    refused = [r for r in results if r.refusal]
    for r in refused:
        context.log.warning(f"{r.refusal}; {confirm_hint(r.name)}")
    if refused and not dry_run:
        names = ",".join(r.name for r in refused)
        description = "; ".join(r.refusal for r in refused) + f"; {confirm_hint(names)}"
        raise dg.Failure(description=description, metadata=metadata, allow_retries=False)


def build_qmlativ_publish_asset(partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        key=QMLATIV_KEY,
        group_name="publish",
        partitions_def=partitions_def,
        pool=WAREHOUSE_POOL,
        deps=[*MART_KEYS, VALIDATION],
        kinds={"qmlativ", "duckdb"},
        description="Sends the Qmlativ screens' changes (creates, updates, deletes) and records them in "
        "ops.publish_ledger. Run tag `sg/dry_run=true` plans without sending. A screen whose plan deletes "
        "more than the district's `publish.max_delete_share` (and at least `publish.min_deletes_guarded` "
        f"records) is not sent and the asset fails after the others publish; run tag `{CONFIRM_DELETES_TAG}` "
        "(`all` or `qmlativ/<screen>`, comma-separated) confirms it.",
        check_specs=[
            dg.AssetCheckSpec(
                EXPIRY_CHECK,
                asset=QMLATIV_KEY,
                description="The Qmlativ Integration Access expires: a warning 30 days ahead, a failure after.",
            )
        ],
    )
    def qmlativ_writeback(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        district = current_districts().get(context.partition_key)
        cfg = district.qmlativ
        if cfg is None or not cfg.base_url:
            return dg.MaterializeResult(
                metadata={"configured": False},
                check_results=[dg.AssetCheckResult(check_name=EXPIRY_CHECK, passed=True)],
            )
        passed, warning = access_expiry_status(cfg.access_expires, date.today())
        check = dg.AssetCheckResult(
            check_name=EXPIRY_CHECK,
            passed=passed and warning is None,
            severity=dg.AssetCheckSeverity.ERROR if not passed else dg.AssetCheckSeverity.WARN,
            description=warning,
            metadata={"access_expires": cfg.access_expires.isoformat()},
        )
        if not passed:
            context.log.error(warning)
            return dg.MaterializeResult(metadata={"sent": 0, "reason": warning}, check_results=[check])
        with connect() as con:
            mapped = demographics_loaded(con, district.id)
        if not mapped:
            # With no Qmlativ students every document is unmapped, and the diff would withdraw everything
            # Qmlativ holds: send nothing until the demographics integration has run.
            reason = f"no Qmlativ students loaded: {MAPPING_HINT}"
            context.log.error(reason)
            return dg.MaterializeResult(metadata={"sent": 0, "reason": reason}, check_results=[check])
        dry_run = context.run.tags.get(DRY_RUN_TAG) == "true"
        results = publish_writeback(
            district, dry_run=dry_run, confirm_deletes=context.run.tags.get(CONFIRM_DELETES_TAG)
        )
        context.log.info(
            "qmlativ writeback: "
            + ", ".join(f"{r.resource} {dict(r.planned if dry_run else r.counts)}" for r in results)
        )
        metadata = _report(results, dry_run)
        _fail_on_refusals(context, results, metadata, dry_run)
        return dg.MaterializeResult(metadata=metadata, check_results=[check])

    return qmlativ_writeback


EDFI_KEY = dg.AssetKey(["publish", "edfi_accommodations"])


def build_edfi_publish_asset(partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        key=EDFI_KEY,
        group_name="publish",
        partitions_def=partitions_def,
        pool=WAREHOUSE_POOL,
        deps=[*EDFI_MART_KEYS, EDFI_VALIDATION],
        kinds={"edfi", "duckdb"},
        description="Sends the district's Ed-Fi assessment accommodations (seed 002) to each connection's "
        "ODS: posts, puts (If-Match) and deletes of what changed, recorded in ops.publish_ledger and "
        "ops.edfi_identity_mapping. A resource toggled off sends nothing and deletes nothing. Run tag "
        "`sg/dry_run=true` plans without sending; the mass-delete guard and its confirmation tag as for "
        f"the Qmlativ writeback (`{CONFIRM_DELETES_TAG}`: `all` or `edfi/<connection>/<resource>`).",
    )
    def edfi_accommodations(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        district = current_districts().get(context.partition_key)
        if district.edfi is None:
            return dg.MaterializeResult(metadata={"configured": False})
        if toggled_off(district):
            context.log.info("edfi: the resource is toggled off: nothing sent, nothing deleted")
            return dg.MaterializeResult(metadata={"toggled_off": True, "sent": 0})
        dry_run = context.run.tags.get(DRY_RUN_TAG) == "true"
        results = publish_accommodations(
            district, dry_run=dry_run, confirm_deletes=context.run.tags.get(CONFIRM_DELETES_TAG)
        )
        # each connection's routes apart: two connections publish resources of the same names
        metadata = _report(results, dry_run, label=lambda r: r.name.removeprefix(f"{EDFI_TARGET}/"))
        _fail_on_refusals(context, results, metadata, dry_run)
        return dg.MaterializeResult(metadata=metadata)

    return edfi_accommodations
