"""One ingest asset per catalog source, partitioned by district, each with its pandera check.

A file that cannot be used fails the asset with a one-line `dagster.Failure` (file and problem; the
details are in `ops.error_log`). A held snapshot (only a header, or sharply shrunk) materializes with
status `held` and a failing WARN check, so downstream runs on the last good load.
"""

import dagster as dg

from sg_orchestration.catalog import SOURCES, Source
from sg_orchestration.config import current_districts
from sg_orchestration.ingest.pipeline import ingest_source, transport
from sg_orchestration.ingest.readers import SourceFileError
from sg_orchestration.partitions import DISTRICTS
from sg_orchestration.warehouse import WAREHOUSE_POOL

CHECK = "raw_schema"
APPLIED_CHECK = "load_applied"
ACCEPT_SHRINK_TAG = "sg/accept_shrink"  # `all` or source names, comma-separated (CLI --accept-shrink)


def ingest_key(source: Source) -> dg.AssetKey:
    return dg.AssetKey(["raw", source.name])


def _markdown(counts: dict[str, int]) -> str:
    rows = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
    return "| field: problem | rows |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def build_ingest_asset(source: Source) -> dg.AssetsDefinition:
    key = ingest_key(source)

    @dg.asset(
        key=key,
        group_name="ingest",
        partitions_def=DISTRICTS,
        pool=WAREHOUSE_POOL,
        kinds={"duckdb", source.system},
        description=source.description or f"Raw `{source.file}` from {source.system}, every load stamped.",
        check_specs=[
            dg.AssetCheckSpec(
                CHECK,
                asset=key,
                description="pandera: every field of this load has its catalog type; required keys are present.",
            ),
            dg.AssetCheckSpec(
                APPLIED_CHECK,
                asset=key,
                description="The load was applied: not held back as a header-only or sharply shrunk snapshot "
                "(accept one with the run tag sg/accept_shrink).",
            ),
        ],
        metadata={"dagster/table_name": f"raw.{source.name}"},
    )
    def _ingest(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        district = current_districts().get(context.partition_key)
        try:
            result, failures = ingest_source(
                source, district, accept_shrink=context.run.tags.get(ACCEPT_SHRINK_TAG)
            )
        except SourceFileError as exc:  # recorded: a failed load and its ops.error_log row
            context.log.error(f"{source.name}: {exc.cause}")
            raise dg.Failure(
                description=exc.cause,
                metadata={"status": "failed", "cause": exc.cause, "rows_read": exc.rows_read},
            ) from None
        if result is None:
            context.log.info(f"{source.name}: not configured for this district")
            return dg.MaterializeResult(
                metadata={"configured": False},
                check_results=[
                    dg.AssetCheckResult(check_name=name, passed=True, metadata={"configured": False})
                    for name in (CHECK, APPLIED_CHECK)
                ],
            )
        metadata = {**result.metadata, "configured": True, "transport": transport(source, district)}
        if result.errors_by_field:
            metadata["malformed rows (kept in raw, see ops.error_log)"] = dg.MetadataValue.md(
                _markdown(dict(result.errors_by_field))
            )
        context.log.info(
            f"{source.name}: {result.status}, {result.rows_read} read, {result.rows_added} added, "
            f"{result.rows_retired} retired, {result.rows_with_errors} with errors"
        )
        if result.status == "held":
            context.log.warning(f"{source.name}: {result.cause}")
        applied = dg.AssetCheckResult(
            check_name=APPLIED_CHECK,
            passed=result.status != "held",
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"status": result.status, "cause": result.cause or "none"},
        )
        check = dg.AssetCheckResult(
            check_name=CHECK,
            passed=not failures,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "failed_checks": sum(failures.values()),
                "failures": dg.MetadataValue.md(_markdown(failures) if failures else "none"),
            },
        )
        return dg.MaterializeResult(metadata=metadata, check_results=[check, applied])

    return _ingest


INGEST_ASSETS = [build_ingest_asset(s) for s in SOURCES]
