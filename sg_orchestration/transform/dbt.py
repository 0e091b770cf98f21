"""The dbt project as Dagster assets: one `dbt build` step per target and district, in the warehouse pool.

Each target's models build in their own step, so a source that fails to ingest stops only the models and
the target that read it: a broken PowerSchool file never keeps the Qmlativ writeback from going out.
A step builds only for a district that has its target (the Ed-Fi and OneRoster steps need the district's
`edfi` / `oneroster` section), and only when something it reads changed since its last clean build
(`transform.reuse`); otherwise it reports its models as reused.
"""

import json
import os
import shutil
from collections.abc import Iterator, Mapping
from functools import cache
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtProject, dbt_assets

from sg_orchestration.catalog import SAMEGOAL_PROGRAMS, SOURCES_BY_NAME
from sg_orchestration.config import District, current_districts
from sg_orchestration.paths import DBT_PROJECT_DIR, warehouse_path
from sg_orchestration.transform import edfi, oneroster, reuse
from sg_orchestration.warehouse import WAREHOUSE_POOL, connect


@cache
def dbt_project() -> DbtProject:
    project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
    project.prepare_if_dev()
    if not project.manifest_path.exists():
        prepare(project)
    return project


def prepare(project: DbtProject | None = None) -> None:
    """Parse the dbt project into target/manifest.json (tests, CI and `sg-orch` need it outside `dagster dev`)."""
    invoke("parse", project_dir=project.project_dir if project else DBT_PROJECT_DIR)
    reuse.mark_parsed()


def invoke(*args: str, project_dir: Path = DBT_PROJECT_DIR, callbacks=(), quiet: bool = True):
    """A dbt command in this process (`dbtRunner`) on the project: `prepare`, the bench, the tests and the
    nightly's steps (`build_in_process`). A command that fails raises, naming the nodes that failed (never
    dbt's messages, which may quote a row; those are in dbt's log)."""
    from dbt.cli.main import dbtRunner

    warehouse_env()
    _parse_once_for_every_warehouse()
    where = ["--project-dir", str(project_dir), "--profiles-dir", str(project_dir), *(["--quiet"] * quiet)]
    try:
        result = dbtRunner(callbacks=list(callbacks)).invoke([*args, *where])
    finally:
        release_warehouse()
    if not result.success:
        results = getattr(result.result, "results", None) or []
        failed = [f"{r.node.name} ({r.status})" for r in results if r.status in ("error", "fail")]
        # A node's error can quote a row; one before any node ran (profile, connection, parse) cannot.
        more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
        cause = ", ".join(failed[:3]) + more if failed else " ".join(str(result.exception).split())[:300]
        logs = Path(args[args.index("--log-path") + 1]) if "--log-path" in args else project_dir / "logs"
        raise DbtFailed(f"dbt {args[0]} failed: {cause} (dbt's log: {logs / 'dbt.log'})")
    return result


class DbtFailed(RuntimeError):
    pass


@cache
def _parse_once_for_every_warehouse() -> None:
    """dbt reuses its last parse only when the profile's connection keys are those it parsed with, and
    dbt-duckdb counts the file's `path` among them: every new warehouse (each district's, each test run's,
    a bench's cold night) paid a whole parse of the project (~3.5 s here) for a path no model reads. The
    parse depends on the `database` (the file's name, which node relations are qualified with), and that
    stays a key: only where the file lives is left out of the comparison."""
    from dbt.adapters.duckdb.credentials import DuckDBCredentials

    keys = DuckDBCredentials._connection_keys

    def _connection_keys(self) -> tuple[str, ...]:
        return tuple(k for k in keys(self) if k != "path")

    DuckDBCredentials._connection_keys = _connection_keys


def release_warehouse() -> None:
    """dbt-duckdb keeps its DuckDB database open in the process after a command (a class attribute): close
    it, so the warehouse is this process's to open again with its own settings, and its memory is freed."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    with DuckDBConnectionManager._LOCK:
        env, DuckDBConnectionManager._ENV = DuckDBConnectionManager._ENV, None
        if env is not None:
            env.close()


PARTIAL_PARSE = "partial_parse.msgpack"
# The dbt events that carry a node's result: what dagster-dbt turns into materializations and checks.
RESULT_EVENTS = frozenset({"LogSeedResult", "LogModelResult", "LogSnapshotResult", "LogTestResult"})


def build_in_process(
    context: dg.AssetExecutionContext, command: str, target: Path, select: list[str] | None = None
):
    """`dbt <command>` of the step's selection (or of `select`'s nodes) in this process, its results as
    dagster-dbt's events.

    dbt runs where the step runs: the modules dagster-dbt already imported are reused, which saves the ~2.5
    s a dbt subprocess takes to start. The step's selection is dagster-dbt's own (the same arguments its
    `DbtCliResource.cli` passes), and its results go through dagster-dbt's event translation."""
    from dagster_dbt.asset_utils import get_updated_cli_invocation_params_for_context
    from dagster_dbt.core.dbt_cli_event import DbtCoreCliEventMessage
    from dbt_common.events.functions import msg_to_dict

    params = get_updated_cli_invocation_params_for_context(
        context=context, manifest={}, dagster_dbt_translator=Translator()
    )
    indirect = ["--indirect-selection", params.indirect_selection] if params.indirect_selection else []
    results: list[dict] = []

    def keep(msg) -> None:
        if msg.info.name in RESULT_EVENTS:
            results.append(msg_to_dict(msg))

    project = params.dbt_project or dbt_project()
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    shared = Path(project.project_dir) / "target" / PARTIAL_PARSE
    if shared.is_file():  # the last parse, which dbt reuses when nothing it depends on changed
        shutil.copyfile(shared, target / PARTIAL_PARSE)
    args = [
        command,
        *(["--select", *select] if select else params.selection_args),
        *indirect,
        "--target-path",
        str(target),
        "--log-path",
        str(target),
        # dbt writes the whole manifest.json (and run_results.json) after every command by default: ~1 s of
        # each step's serializing a manifest nothing reads (the definitions read the project's, from
        # `prepare`; dagster-dbt's events come from the callbacks); its parse for the next step is kept apart
        "--no-write-json",
    ]
    failed = None
    try:
        invoke(*args, project_dir=Path(project.project_dir), callbacks=[keep], quiet=False)
    except DbtFailed as exc:
        failed = exc  # what finished is still reported, then the step fails
    for raw in results:
        yield from DbtCoreCliEventMessage(raw_event=raw, event_history_metadata={}).to_default_asset_events(
            manifest=params.manifest,
            dagster_dbt_translator=params.dagster_dbt_translator,
            context=context,
            target_path=target,
            project=project,
        )
    if failed:
        raise failed


def warehouse_env() -> None:
    """The dbt profile reads the DuckDB path from SG_WAREHOUSE_PATH; default it to the project's file."""
    os.environ.setdefault("SG_WAREHOUSE_PATH", str(warehouse_path()))


def record_cutover_dates(con, district: District) -> None:
    """The district's SameGoal cutover dates, from districts.yaml, as the table the dbt rules join."""
    dates = district.samegoal.cutover_dates if district.samegoal else dict.fromkeys(SAMEGOAL_PROGRAMS)
    con.execute("delete from ops.samegoal_cutover where district_id = ?", [district.id])
    con.executemany(
        "insert into ops.samegoal_cutover values (?, ?, ?)",
        [[district.id, program, dates.get(program)] for program in SAMEGOAL_PROGRAMS],
    )


class Translator(DagsterDbtTranslator):
    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        # models/<layer>/...: the folder is the layer (staging, intermediate, marts)
        fqn = dbt_resource_props.get("fqn") or []
        return f"dbt_{fqn[1]}" if dbt_resource_props["resource_type"] == "model" and len(fqn) > 2 else None

    def get_metadata(self, dbt_resource_props: Mapping[str, Any]) -> Mapping[str, Any]:
        # The node's page in dbt's documentation as `make docs` serves it (sg_orchestration.docs).
        from sg_orchestration.docs import DOCS_PORT

        kind, unique_id = dbt_resource_props["resource_type"], dbt_resource_props["unique_id"]
        url = f"http://127.0.0.1:{DOCS_PORT}/#!/{kind}/{unique_id}"
        return {**super().get_metadata(dbt_resource_props), "dbt docs": dg.MetadataValue.url(url)}


# The dbt selection of each target's models (dbt fqn selectors: models/<layer>/<system>/, and seeds).
TARGET_MODELS: dict[str, str] = {
    "qmlativ": "staging.samegoal staging.qmlativ intermediate.samegoal marts.qmlativ teds_codes",
    "edfi": "staging.campus intermediate.edfi marts.edfi edfi_academic_subject_descriptors "
    "edfi_accommodation_descriptors edfi_assessment_mapping edfi_valid_combinations",
    "oneroster": "staging.powerschool staging.oneroster intermediate.oneroster marts.oneroster "
    "oneroster_contact_roles",
}


def target_path(step: str, district_id: str) -> Path:
    """One dbt target folder per step and district, reused run after run: artifacts stay bounded (a fresh
    folder per invocation grew by ~10 MB a run) and two steps never share one (the pool runs one at a time)."""
    return DBT_PROJECT_DIR / "target" / "runs" / step / district_id


def keep_parse(run_target: Path) -> None:
    """Keep the parse a step just made in the project's target folder, where the next step (each has a
    target folder of its own) and the next run start from it."""
    parsed = run_target / PARTIAL_PARSE
    if parsed.is_file():
        shared = DBT_PROJECT_DIR / "target" / PARTIAL_PARSE
        staging = shared.with_name(f".{PARTIAL_PARSE}.{os.getpid()}")
        shutil.copyfile(parsed, staging)
        os.replace(staging, shared)  # atomic: another process never reads half a file


def _build_target_assets(target: str) -> dg.AssetsDefinition:
    from sg_orchestration.partitions import DISTRICTS

    name = f"dbt_{target}"

    @dbt_assets(
        manifest=dbt_project().manifest_path,
        project=dbt_project(),
        select=TARGET_MODELS[target],
        dagster_dbt_translator=Translator(),
        partitions_def=DISTRICTS,
        pool=WAREHOUSE_POOL,
        name=name,
    )
    def _models(context: dg.AssetExecutionContext):
        district = current_districts().get(context.partition_key)
        if not needed(target, district):
            # Nothing is yielded, so this target's later steps do not run for the district either.
            context.log.info(f"{name}: not needed, district {district.id} has no `{target}` section")
            return
        sources = [
            SOURCES_BY_NAME[k.path[-1]] for k in context.assets_def.dependency_keys if k.path[0] == "raw"
        ]
        relations = [".".join(k.path) for k in context.selected_asset_keys]
        with connect() as con:
            written = None  # what the step writes for its models to read: part of its fingerprint
            if target == "qmlativ":
                record_cutover_dates(con, district)
                written = district.samegoal.cutover_dates if district.samegoal else None
            elif target == "edfi":
                written = edfi.record_run_inputs(con, district, edfi.as_of_date(district, context.run.tags))
            elif target == "oneroster":
                written = [oneroster.record_source(con, district), oneroster.record_mapping(con, district)]
            project = reuse.project_digest()
            current = reuse.fingerprint(con, district.id, sources, written, project)
            models = [r for r in relations if r not in _seeds()]
            plan = reuse.plan(con, district.id, name, current, relations, models, project)
            if context.is_subset:
                plan = reuse.Plan("build")
            if plan.action != "reuse":
                reuse.forget(con, district.id, name)
        if plan.action == "reuse":
            context.log.info(f"{name}: nothing it reads changed since run {plan.built_by}; models reused")

        def kept(keys) -> Iterator[dg.MaterializeResult]:
            label = reuse.REUSED if plan.action == "reuse" else reuse.VIEW_KEPT
            for key in _upstream_first(context, keys):  # Dagster wants a multi-asset's outputs upstream first
                yield dg.MaterializeResult(
                    asset_key=key,
                    data_version=dg.DataVersion(current[:16]),
                    metadata={label: dg.MetadataValue.text(plan.built_by)},
                )

        if plan.action in ("reuse", "test"):
            yield from kept(context.selected_asset_keys)
            if plan.action == "reuse":
                return
        path = target_path(name, district.id)
        # No --vars: the models cover every district, and a changed var makes dbt re-parse the project.
        if plan.action == "tables":
            yield from _build_tables(context, plan, path, kept)
        else:
            yield from build_in_process(context, "build" if plan.action == "build" else "test", path)
        keep_parse(path)
        if not context.is_subset:  # build_in_process raised if a node failed
            with connect() as con:
                reuse.record_clean_build(con, district.id, name, current, context.run.run_id, project)

    return _models


def _upstream_first(context: dg.AssetExecutionContext, keys) -> list[dg.AssetKey]:
    deps = context.assets_def.asset_deps
    keys = set(keys)
    return list(TopologicalSorter({k: deps.get(k, set()) & keys for k in keys}).static_order())


def _build_tables(context: dg.AssetExecutionContext, plan: reuse.Plan, path: Path, kept):
    """The `tables` plan: dbt builds the step's tables and runs every test of the step; the views and seeds
    are kept (a view shows its inputs' new rows as it is). Events upstream first: the kept relations the
    tables read, the tables, the kept relations that read the tables, then the tests' results."""
    nodes = _nodes()
    by_relation = {f"{n['schema']}.{n['alias']}": n for n in nodes.values() if n["resource_type"] != "test"}
    rebuilt = {k for k in context.selected_asset_keys if ".".join(k.path) in plan.tables}
    others = set(context.selected_asset_keys) - rebuilt
    kept_ids = {by_relation[".".join(k.path)]["unique_id"] for k in others}
    tests = [
        n for n in nodes.values() if n["resource_type"] == "test" and kept_ids & set(n["depends_on"]["nodes"])
    ]
    select = [".".join(by_relation[t]["fqn"]) for t in sorted(plan.tables)] + [
        ".".join(n["fqn"]) for n in tests
    ]
    deps = context.assets_def.asset_deps
    downstream: set[dg.AssetKey] = set()
    for key in _upstream_first(context, context.selected_asset_keys):
        if deps.get(key, set()) & (rebuilt | downstream):
            downstream.add(key)
    yield from kept(others - downstream)
    events, failed = [], None
    try:
        for event in build_in_process(context, "build", path, select):
            events.append(event)
    except DbtFailed as exc:
        failed = exc
    built = (dg.Output, dg.MaterializeResult, dg.AssetMaterialization)
    yield from (e for e in events if isinstance(e, built))
    if not failed:  # what reads a table that failed was not built on it
        yield from kept(downstream & others)
    yield from (e for e in events if not isinstance(e, built))
    if failed:
        raise failed


@cache
def _nodes() -> dict[str, dict]:
    return json.loads(dbt_project().manifest_path.read_text())["nodes"]


@cache
def _seeds() -> frozenset[str]:
    """The project's seeds (`schema.name`): tables of the project's own files, so a step with one can still
    run just its tests."""
    return frozenset(f"{n['schema']}.{n['alias']}" for n in _nodes().values() if n["resource_type"] == "seed")


def needed(target: str, district: District) -> bool:
    """A target's models serve only a district with that target; the writeback's, one with SameGoal or
    Qmlativ (its documents, their mapping to the students and the error log of both)."""
    if target == "qmlativ":
        return district.samegoal is not None or district.qmlativ is not None
    return getattr(district, target) is not None


@cache
def build_dbt_assets() -> tuple[dg.AssetsDefinition, ...]:
    # Imported late so that `prepare()` can run before the districts file exists (the partitions read it).
    warehouse_env()
    return tuple(_build_target_assets(t) for t in TARGET_MODELS)
