"""One ingest asset per catalog source, partitioned by district, each with its pandera check; one step
per source system.

A file that cannot be used fails the step, after its system's other sources are loaded, with a one-line
`dagster.Failure` (file and problem; the details are in `ops.error_log`). A held snapshot (only a header, or sharply shrunk) materializes with
status `held` and a failing WARN check, so downstream runs on the last good load.
"""

from contextlib import ExitStack

import dagster as dg

from sg_orchestration.catalog import SOURCES, Source
from sg_orchestration.config import current_districts
from sg_orchestration.ingest.pipeline import ingest_source, transport
from sg_orchestration.ingest.readers import SourceFileError
from sg_orchestration.partitions import DISTRICTS
from sg_orchestration.warehouse import WAREHOUSE_POOL, connect

CHECK = "raw_schema"
APPLIED_CHECK = "load_applied"
ACCEPT_SHRINK_TAG = "sg/accept_shrink"  # `all` or source names, comma-separated (CLI --accept-shrink)
FAILED_SOURCES = "failed sources"  # metadata of a failed ingest step: asset -> one-line cause


def ingest_key(source: Source) -> dg.AssetKey:
    return dg.AssetKey(["raw", source.name])


def _markdown(counts: dict[str, int]) -> str:
    rows = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
    return "| field: problem | rows |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def _specs(source: Source) -> tuple[dg.AssetSpec, list[dg.AssetCheckSpec]]:
    key = ingest_key(source)
    spec = dg.AssetSpec(
        key,
        group_name="ingest",
        kinds={"duckdb", source.system},
        description=source.description or f"Raw `{source.file}` from {source.system}, every load stamped.",
        metadata={"dagster/table_name": f"raw.{source.name}"},
        skippable=True,  # a source that fails is not materialized; the others of its system are
    )
    checks = [
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
    ]
    return spec, checks


# A load that added this many rows lets the step's warehouse connection go: DuckDB keeps its memory
# high-water mark until the connection closes (a 1,000,000-student night needs it back), while opening
# and checkpointing the file again costs ~40 ms, 1.2 s of a small district's 32 sources.
RECONNECT_AFTER_ROWS = 100_000


def build_ingest_assets(system: str) -> dg.AssetsDefinition:
    """One step per source system (SameGoal, Qmlativ, PowerSchool, OneRoster, campus) and district, with one
    warehouse connection: each source is read and loaded on its own, and one that cannot be used fails the
    step after the others are loaded (each target's dbt step reads whole systems, so it would not run
    anyway). A step per source cost ~100 ms each of Dagster's and DuckDB's own work: 3 s of every night."""
    sources = [s for s in SOURCES if s.system == system]
    specs = [_specs(s) for s in sources]

    @dg.multi_asset(
        name=f"raw__{system}",
        specs=[spec for spec, _ in specs],
        check_specs=[check for _, checks in specs for check in checks],
        can_subset=True,
        partitions_def=DISTRICTS,
        pool=WAREHOUSE_POOL,
    )
    def _ingest(context: dg.AssetExecutionContext):
        district = current_districts().get(context.partition_key)
        accept_shrink = context.run.tags.get(ACCEPT_SHRINK_TAG)
        failed: dict[str, str] = {}  # asset -> one-line cause
        rows_read = 0  # by the failed sources before they were refused
        with ExitStack() as held:
            con = None
            for source in sources:
                if ingest_key(source) not in context.selected_asset_keys:
                    continue
                if con is None:
                    con = held.enter_context(connect())
                try:
                    materialized, added = _ingest_one(context, source, district, accept_shrink, con)
                except SourceFileError as exc:  # recorded: a failed load and its ops.error_log row
                    context.log.error(f"{source.name}: {exc.cause}")
                    failed[ingest_key(source).to_user_string()] = exc.cause
                    rows_read += exc.rows_read or 0
                    continue
                except Exception as exc:  # not foreseen: this source fails, the others still load
                    context.log.exception(f"{source.name}: {type(exc).__name__}")
                    cause = f"{source.file}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
                    failed[ingest_key(source).to_user_string()] = cause
                    continue
                yield materialized
                if added >= RECONNECT_AFTER_ROWS:  # DuckDB stays at a large load's memory high-water mark
                    held.close()
                    con = None
        if failed:
            raise _failure(failed, rows_read)

    return _ingest


def _failure(causes: dict[str, str], rows_read: int) -> dg.Failure:
    """The step's failure: one source's one-line cause, or each failed source's; `FAILED_SOURCES` maps
    each failed asset to its cause, so the summary names the sources, not the step."""
    only = next(iter(causes.values())) if len(causes) == 1 else None
    return dg.Failure(
        description=only or "; ".join(f"{k}: {c}" for k, c in causes.items()),
        metadata={
            "status": "failed",
            "cause": only or f"{len(causes)} sources failed",
            "rows_read": rows_read,
            FAILED_SOURCES: dg.MetadataValue.json(causes),
        },
    )


def _ingest_one(
    context: dg.AssetExecutionContext, source: Source, district, accept_shrink: str | None, con
) -> tuple[dg.MaterializeResult, int]:
    """The source's materialization, and how many rows its load added."""
    key = ingest_key(source)
    result, failures = ingest_source(source, district, accept_shrink=accept_shrink, con=con)
    if result is None:
        context.log.info(f"{source.name}: not configured for this district")
        return dg.MaterializeResult(
            asset_key=key,
            metadata={"configured": False},
            check_results=_selected(
                context,
                *(
                    dg.AssetCheckResult(
                        asset_key=key, check_name=name, passed=True, metadata={"configured": False}
                    )
                    for name in (CHECK, APPLIED_CHECK)
                ),
            ),
        ), 0
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
        asset_key=key,
        check_name=APPLIED_CHECK,
        passed=result.status != "held",
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"status": result.status, "cause": result.cause or "none"},
    )
    check = dg.AssetCheckResult(
        asset_key=key,
        check_name=CHECK,
        passed=not failures,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "failed_checks": sum(failures.values()),
            "failures": dg.MetadataValue.md(_markdown(failures) if failures else "none"),
        },
    )
    materialized = dg.MaterializeResult(
        asset_key=key, metadata=metadata, check_results=_selected(context, check, applied)
    )
    return materialized, result.rows_added


def _selected(context: dg.AssetExecutionContext, *results: dg.AssetCheckResult) -> list[dg.AssetCheckResult]:
    selected = context.selected_asset_check_keys
    return [r for r in results if dg.AssetCheckKey(r.asset_key, r.check_name) in selected]


INGEST_ASSETS = [build_ingest_assets(system) for system in dict.fromkeys(s.system for s in SOURCES)]
