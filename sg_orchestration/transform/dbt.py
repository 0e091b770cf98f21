"""The dbt project as Dagster assets: one `dbt build` step per target and district, in the warehouse pool.

Each target's models build in their own step, so a source that fails to ingest stops only the models and
the target that read it: a broken PowerSchool file never keeps the Qmlativ writeback from going out.
A step builds only for a district that has its target (the Ed-Fi and OneRoster steps need the district's
`edfi` / `oneroster` section), and only when something it reads changed since its last clean build
(`transform.reuse`); otherwise it reports its models as reused.
"""

import importlib.metadata
import json
import os
import shutil
import sys
from collections.abc import Mapping
from functools import cache, cached_property
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets
from packaging import version

from sg_orchestration.catalog import SAMEGOAL_PROGRAMS, SOURCES_BY_NAME
from sg_orchestration.config import District, current_districts
from sg_orchestration.paths import DBT_PROJECT_DIR, warehouse_path
from sg_orchestration.transform import reuse
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


def invoke(*args: str, project_dir: Path = DBT_PROJECT_DIR):
    """A dbt command in this process (`dbtRunner`) on the project, quiet: `prepare`, the bench and the
    tests. The nightly's steps run dbt through dagster-dbt instead. A command that fails raises, naming
    the nodes that failed."""
    from dbt.cli.main import dbtRunner

    warehouse_env()
    where = ["--project-dir", str(project_dir), "--profiles-dir", str(project_dir), "--quiet"]
    result = dbtRunner().invoke([*args, *where])
    if not result.success:
        results = getattr(result.result, "results", None) or []
        failed = [r.node.name for r in results if r.status in ("error", "fail")]
        raise RuntimeError(f"dbt {args[0]} failed in {project_dir}: {result.exception or failed}")
    return result


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


# The dbt selection of each target's models (dbt fqn selectors: models/<layer>/<system>/, and seeds).
TARGET_MODELS: dict[str, str] = {
    "qmlativ": "staging.samegoal staging.qmlativ intermediate.samegoal marts.qmlativ teds_codes",
    "edfi": "staging.campus",
    "oneroster": "staging.powerschool staging.oneroster",
}


PARTIAL_PARSE = "partial_parse.msgpack"


def target_path(step: str, district_id: str) -> Path:
    """One dbt target folder per step and district, reused run after run: artifacts stay bounded (a fresh
    folder per invocation grew by ~10 MB a run) and two steps never share one (the pool runs one at a time)."""
    return DBT_PROJECT_DIR / "target" / "runs" / step / district_id


def keep_parse(run_target: Path) -> None:
    """dbt re-parses the whole project when the profile changed (the DuckDB path is in it, and differs per
    warehouse): keep the parse a step just made, so the next steps and runs on this warehouse reuse it."""
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
    def _models(context: dg.AssetExecutionContext, dbt: DbtCliResource):
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
            if target == "qmlativ":
                record_cutover_dates(con, district)
            written = district.samegoal.cutover_dates if target == "qmlativ" and district.samegoal else None
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
        if plan.action in ("reuse", "test"):
            deps = context.assets_def.asset_deps
            selected = context.selected_asset_keys
            order = TopologicalSorter({k: deps.get(k, set()) & selected for k in selected}).static_order()
            for key in order:  # Dagster wants a multi-asset's outputs upstream first
                yield dg.MaterializeResult(
                    asset_key=key,
                    data_version=dg.DataVersion(current[:16]),
                    metadata={
                        reuse.REUSED if plan.action == "reuse" else reuse.VIEW_KEPT: dg.MetadataValue.text(
                            plan.built_by
                        )
                    },
                )
            if plan.action == "reuse":
                return
        path = target_path(name, district.id)
        shutil.rmtree(path, ignore_errors=True)
        # No --vars: the models cover every district, and a changed var makes dbt re-parse the project.
        invocation = dbt.cli(
            ["build" if plan.action == "build" else "test"], context=context, target_path=path
        )
        yield from invocation.stream()
        keep_parse(path)
        results = invocation.get_artifact("run_results.json")["results"]
        if not context.is_subset and all(r["status"] in ("success", "pass") for r in results):
            with connect() as con:
                reuse.record_clean_build(con, district.id, name, current, context.run.run_id, project)

    return _models


@cache
def _seeds() -> frozenset[str]:
    """The project's seeds (`schema.name`): tables of the project's own files, so a step with one can still
    run just its tests."""
    nodes = json.loads(dbt_project().manifest_path.read_text())["nodes"].values()
    return frozenset(f"{n['schema']}.{n['alias']}" for n in nodes if n["resource_type"] == "seed")


def needed(target: str, district: District) -> bool:
    """The writeback's models serve every district; the others only a district with that target."""
    return target == "qmlativ" or getattr(district, target) is not None


@cache
def build_dbt_assets() -> tuple[dg.AssetsDefinition, ...]:
    # Imported late so that `prepare()` can run before the districts file exists (the partitions read it).
    warehouse_env()
    return tuple(_build_target_assets(t) for t in TARGET_MODELS)


def dbt_executable() -> str:
    """dbt from the environment this process runs in: cron and systemd call `.venv/bin/sg-orch` without the
    virtual environment on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "dbt")
    return beside if os.access(beside, os.X_OK) else shutil.which("dbt") or "dbt"


class DbtCli(DbtCliResource):
    """dagster-dbt's resource, without two costs per process that this project does not use: `dbt --version`
    in a subprocess (~3 s; the dbt beside this interpreter is the installed dbt-core) and a dbt adapter in
    the Dagster process (only for row counts and column metadata, which no asset fetches)."""

    @cached_property
    def _cli_version(self) -> version.Version:
        if self.dbt_executable == os.path.join(os.path.dirname(sys.executable), "dbt"):
            return version.parse(importlib.metadata.version("dbt-core"))
        return DbtCliResource._cli_version.func(self)

    def _initialize_dbt_core_adapter(self, args):
        return None


def dbt_resource() -> DbtCliResource:
    warehouse_env()
    return DbtCli(project_dir=dbt_project(), dbt_executable=dbt_executable())
