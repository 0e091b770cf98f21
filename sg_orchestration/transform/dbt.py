"""The dbt project as Dagster assets: one run of `dbt build` per district partition, in the warehouse pool."""

import json
import os
from collections.abc import Mapping
from functools import cache
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets

from sg_orchestration.catalog import SAMEGOAL_PROGRAMS
from sg_orchestration.config import District, current_districts
from sg_orchestration.paths import DBT_PROJECT_DIR, warehouse_path
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
    from dbt.cli.main import dbtRunner

    warehouse_env()
    project = project or DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
    args = [
        "parse",
        "--project-dir",
        str(project.project_dir),
        "--profiles-dir",
        str(project.profiles_dir),
        "--quiet",
    ]
    result = dbtRunner().invoke(args)
    if not result.success:
        raise RuntimeError(f"dbt parse failed for {project.project_dir}: {result.exception}")


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


def build_args(district_id: str) -> list[str]:
    return ["build", "--vars", json.dumps({"district_id": district_id})]


class Translator(DagsterDbtTranslator):
    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        # models/<layer>/...: the folder is the layer (staging, intermediate, marts)
        fqn = dbt_resource_props.get("fqn") or []
        return f"dbt_{fqn[1]}" if dbt_resource_props["resource_type"] == "model" and len(fqn) > 2 else None


@cache
def build_dbt_assets() -> dg.AssetsDefinition:
    # Imported here so that `prepare()` can run before the districts file exists (the partitions read it).
    from sg_orchestration.partitions import DISTRICTS

    warehouse_env()

    @dbt_assets(
        manifest=dbt_project().manifest_path,
        project=dbt_project(),
        dagster_dbt_translator=Translator(),
        partitions_def=DISTRICTS,
        pool=WAREHOUSE_POOL,
        name="dbt_models",
    )
    def dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource):
        with connect() as con:
            record_cutover_dates(con, current_districts().get(context.partition_key))
        yield from dbt.cli(build_args(context.partition_key), context=context).stream()

    return dbt_models


def dbt_resource() -> DbtCliResource:
    warehouse_env()
    return DbtCliResource(project_dir=dbt_project())
