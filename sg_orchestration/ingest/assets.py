"""One ingest asset per catalog source, partitioned by district, each with its pandera check."""

import dagster as dg

from sg_orchestration.catalog import SOURCES, Source
from sg_orchestration.config import current_districts
from sg_orchestration.ingest.pipeline import ingest_source, transport
from sg_orchestration.partitions import DISTRICTS
from sg_orchestration.warehouse import WAREHOUSE_POOL

CHECK = "raw_schema"


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
            )
        ],
        metadata={"dagster/table_name": f"raw.{source.name}"},
    )
    def _ingest(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        district = current_districts().get(context.partition_key)
        result, failures = ingest_source(source, district)
        if result is None:
            context.log.info(f"{source.name}: not configured for this district")
            return dg.MaterializeResult(
                metadata={"configured": False},
                check_results=[dg.AssetCheckResult(passed=True, metadata={"configured": False})],
            )
        metadata = {**result.metadata, "configured": True, "transport": transport(source, district)}
        if result.errors_by_field:
            metadata["malformed rows (kept in raw, see ops.error_log)"] = dg.MetadataValue.md(
                _markdown(dict(result.errors_by_field))
            )
        context.log.info(
            f"{source.name}: {result.status}, {result.rows_read} read, {result.rows_added} added, "
            f"{result.rows_with_errors} with errors"
        )
        check = dg.AssetCheckResult(
            passed=not failures,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "failed_checks": sum(failures.values()),
                "failures": dg.MetadataValue.md(_markdown(failures) if failures else "none"),
            },
        )
        return dg.MaterializeResult(metadata=metadata, check_results=[check])

    return _ingest


INGEST_ASSETS = [build_ingest_asset(s) for s in SOURCES]
