"""The code location loads, every source and staging model is an asset, and the keys do not drift."""

import os
import shutil
import subprocess
import sys

import dagster as dg

from sg_orchestration.catalog import SOURCES
from sg_orchestration.paths import PROJECT_ROOT
from sg_orchestration.transform.dbt import TARGET_MODELS
from sg_orchestration.transform.staging import model_name
from sg_orchestration.warehouse import WAREHOUSE_POOL


def test_every_source_has_an_ingest_asset_with_its_pandera_check_and_a_staging_model(defs):
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    for source in SOURCES:
        assert f"raw/{source.name}" in keys
        assert f"staging/{model_name(source)}" in keys
        assert dg.AssetCheckKey(dg.AssetKey(["raw", source.name]), "raw_schema") in graph.asset_check_keys


def test_dbt_tests_surface_as_asset_checks(defs):
    checks = defs.resolve_asset_graph().asset_check_keys
    assert any(c.name.startswith("not_null_columns_stg_powerschool__students") for c in checks)
    assert any(c.name.startswith("unique_per_district_stg_powerschool__students") for c in checks)


def test_every_asset_is_partitioned_by_district_and_every_warehouse_writer_is_in_the_pool(defs, districts):
    graph = defs.resolve_asset_graph()
    for key in graph.materializable_asset_keys:
        node = graph.get(key)
        assert node.partitions_def is not None, key
        assert set(node.partitions_def.get_partition_keys()) == {d.id for d in districts.districts}
    writers = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)]
    # one ingest step per source system, one dbt step per target, the Qmlativ validation and the writeback
    systems = {s.system for s in SOURCES}
    assert len(writers) >= len(systems) + len(TARGET_MODELS) + 2
    ingest = [a for a in writers if a.op.name.startswith("raw__")]
    assert sorted(a.op.name for a in ingest) == sorted(f"raw__{s}" for s in systems)
    assert sum(len(a.keys) for a in ingest) == len(SOURCES) and all(a.can_subset for a in ingest)
    for assets_def in writers:
        assert assets_def.op.pool == WAREHOUSE_POOL, assets_def.op.name


def test_a_nightly_schedule_per_district_in_its_timezone(defs, districts):
    schedules = {s.name: s for s in defs.schedules}
    for district in districts.districts:
        schedule = schedules[f"nightly_{district.id.replace('-', '_')}"]
        assert schedule.execution_timezone == district.timezone
        assert schedule.job_name == "nightly"


def test_dagster_definitions_validate_passes_with_the_project_instance(
    districts_file, dbt_manifest, tmp_path
):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")  # the instance settings load too
    env = {**os.environ, "SG_DISTRICTS_FILE": str(districts_file), "DAGSTER_HOME": str(home)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "definitions",
            "validate",
            "-w",
            str(PROJECT_ROOT / "workspace.yaml"),
        ],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_each_target_builds_its_dbt_models_in_its_own_step_reading_only_its_own_sources(defs):
    """Issue: one dbt step for every model meant a broken PowerSchool file skipped the Qmlativ marts."""
    graph = defs.resolve_asset_graph()
    steps = {
        a.op.name: a
        for a in defs.assets
        if isinstance(a, dg.AssetsDefinition) and a.op.name.startswith("dbt_")
    }
    assert set(steps) == {f"dbt_{t}" for t in TARGET_MODELS}
    systems = {
        "dbt_qmlativ": {"samegoal", "qmlativ"},
        "dbt_edfi": {"campus"},
        "dbt_oneroster": {"powerschool", "oneroster"},
    }
    for step, assets_def in steps.items():
        raw_inputs = {
            parent.path[1].split("__")[0]
            for key in assets_def.keys
            for parent in graph.get(key).parent_keys
            if parent.path[0] == "raw"
        }
        assert raw_inputs == systems[step], step
    publish_inputs = {
        k
        for k in graph.get(dg.AssetKey(["publish", "qmlativ_writeback"])).parent_keys
        if k.path[0] == "staging"
    }
    assert not publish_inputs


def test_dagster_sqlite_storage_commits_without_an_fsync_per_event(tmp_path):
    import sqlalchemy

    import sg_orchestration.definitions  # noqa: F401  (installs the setting for this process)

    instance = dg.DagsterInstance.local_temp(str(tmp_path))
    try:
        engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'probe.db'}")
        with engine.connect() as con:
            assert con.exec_driver_sql("pragma synchronous").scalar() == 1  # NORMAL, not FULL (2)
        run = instance.create_run_for_job(dg.GraphDefinition("g").to_job())
        assert instance.get_run_by_id(run.run_id) is not None
    finally:
        instance.dispose()


def test_a_districts_nightly_plans_only_the_dbt_steps_of_its_targets(defs, districts):
    from datetime import UTC, datetime

    from sg_orchestration.automation import nightly_selection

    graph = defs.resolve_asset_graph()
    demo = nightly_selection(graph, districts.get("demo"))  # the Qmlativ writeback only
    other_targets = ("stg_campus", "stg_powerschool", "stg_oneroster")
    assert demo and not [k for k in demo if k.path[-1].startswith(other_targets)]
    assert {dg.AssetKey(["marts", "qmlativ__restraint"]), dg.AssetKey(["raw", "campus__schools"])} <= set(
        demo
    )
    assert nightly_selection(graph, districts.get("filedrop")) is None  # every target
    # An Indiana district (campus and Ed-Fi only) plans no writeback step: no dbt, validation or publish
    indiana = districts.get("filedrop").model_copy(
        update={"samegoal": None, "qmlativ": None, "oneroster": None}
    )
    planned = set(nightly_selection(graph, indiana))
    assert dg.AssetKey(["publish", "edfi_accommodations"]) in planned
    writeback = [
        k for k in planned if k.path[0] != "raw" and ("qmlativ" in k.path[-1] or "samegoal" in k.path[-1])
    ]
    assert not writeback, writeback
    schedule = next(s for s in defs.schedules if s.name == "nightly_demo")
    context = dg.build_schedule_context(
        repository_def=defs.get_repository_def(),
        scheduled_execution_time=datetime(2026, 12, 1, 8, tzinfo=UTC),
    )
    (request,) = schedule.evaluate_tick(context).run_requests
    assert request.partition_key == "demo" and list(request.asset_selection) == demo
