"""A dbt step is reused only when nothing it reads changed: the fingerprint of `transform.reuse`."""

import pytest

from sg_orchestration.catalog import SOURCES_BY_NAME
from sg_orchestration.transform import reuse
from sg_orchestration.warehouse import connect

SNAPSHOT = SOURCES_BY_NAME["qmlativ__students"]
DOCUMENTS = SOURCES_BY_NAME["samegoal__restraint"]
OTHER = SOURCES_BY_NAME["campus__schools"]


def _load(con, district: str, source, status: str, added: int) -> None:
    con.execute(
        "insert into ops.loads values (nextval('ops.load_id_seq'), ?, ?, 'test', null, now(), now(), ?, ?, 0, ?)",
        [district, source.name, added, added, status],
    )


@pytest.fixture
def con(warehouse):
    assert SNAPSHOT.mode == "snapshot" and DOCUMENTS.mode == "documents"
    with connect() as con:
        yield con


def test_the_fingerprint_changes_with_each_load_that_changes_what_the_step_reads(con):
    step = [SNAPSHOT, DOCUMENTS]

    def now() -> str:
        return reuse.fingerprint(con, "demo", step, {"restraint": "2025-08-01"})

    first = now()
    _load(con, "demo", SNAPSHOT, "unchanged", 0)
    _load(con, "demo", SNAPSHOT, "held", 0)
    _load(con, "demo", SNAPSHOT, "failed", 0)
    _load(con, "demo", DOCUMENTS, "loaded", 0)  # an API read with no new version
    _load(con, "other-isd", SNAPSHOT, "loaded", 10)
    _load(con, "demo", OTHER, "loaded", 10)  # a source this step does not read
    assert now() == first
    _load(con, "demo", DOCUMENTS, "loaded", 1)
    second = now()
    assert second != first
    _load(con, "demo", SNAPSHOT, "loaded", 0)  # an applied snapshot, even an empty one, is new data
    assert now() != second
    third = now()
    assert reuse.fingerprint(con, "demo", step, {"restraint": "2026-08-01"}) != third  # the cutover dates


def test_a_step_is_reused_after_a_clean_build_of_the_same_inputs_and_only_tested_when_only_loads_changed(
    con, monkeypatch
):
    con.execute("create schema if not exists marts")
    con.execute("create or replace view marts.m as select 1 as x")
    con.execute("create or replace table marts.t as select 1 as x")
    current = reuse.fingerprint(con, "demo", [DOCUMENTS])

    def plan(relations=("marts.m",), models=("marts.m",), district="demo", fingerprint=current):
        return reuse.plan(con, district, "dbt_qmlativ", fingerprint, list(relations), list(models))

    assert plan().action == "build"  # never built
    reuse.record_clean_build(con, "demo", "dbt_qmlativ", current, "run-1")
    assert plan() == reuse.Plan("reuse", "run-1")
    assert plan(district="other-isd").action == "build"
    assert plan(relations=["marts.m", "marts.gone"]).action == "build"
    table = {"relations": ["marts.m", "marts.t"], "models": ["marts.m", "marts.t"]}
    assert plan(**table) == reuse.Plan("reuse", "run-1")  # nothing changed: a table is current too
    _load(con, "demo", DOCUMENTS, "loaded", 3)  # new data: the views show it, their tests must run
    changed = reuse.fingerprint(con, "demo", [DOCUMENTS])
    assert plan(fingerprint=changed) == reuse.Plan("test", "run-1")
    # A table must be built again; the views are kept and every test runs.
    assert plan(fingerprint=changed, **table) == reuse.Plan("tables", "run-1", ("marts.t",))
    # A table that is a seed (the project's own file, unchanged) still lets the models be just tested.
    assert plan(fingerprint=changed, relations=["marts.m", "marts.t"]) == reuse.Plan("test", "run-1")
    monkeypatch.setattr(reuse, "project_digest", lambda: "an edited model")
    assert plan(fingerprint=reuse.fingerprint(con, "demo", [DOCUMENTS])).action == "build"
    assert plan(fingerprint=reuse.fingerprint(con, "demo", [DOCUMENTS]), **table).action == "build"
    monkeypatch.undo()
    reuse.forget(con, "demo", "dbt_qmlativ")  # a step that starts
    assert plan().action == "build"


def test_a_warehouse_in_another_folder_reuses_the_last_dbt_parse_and_one_of_another_name_does_not(
    dbt_manifest, tmp_path, monkeypatch
):
    """Where the DuckDB file lives is no input to dbt's parse (its name is: relations are qualified with it),
    so a new district's or run's warehouse starts from the last parse instead of parsing the whole project."""
    from sg_orchestration.transform.dbt import invoke

    def parse(path) -> list[str]:
        monkeypatch.setenv("SG_WAREHOUSE_PATH", str(path))
        events: list = []
        invoke("parse", callbacks=[events.append])
        return [e.info.name for e in events]

    parse(tmp_path / "a" / "warehouse.duckdb")
    elsewhere = parse(tmp_path / "b" / "warehouse.duckdb")
    assert "UnableToPartialParse" not in elsewhere and "PartialParsingEnabled" in elsewhere
    renamed = parse(tmp_path / "c" / "district.duckdb")
    assert "UnableToPartialParse" in renamed  # the database name changed: parsed again
    parse(tmp_path / "d" / "warehouse.duckdb")  # leave the parse as the other tests expect it
