"""The analyst snapshot (SPEC §6): published after each run, opened read-only while the next run writes the
warehouse, replaced whole; and `sg-orch docs` generating and serving dbt's documentation from it."""

import io
import json
import subprocess
import sys
import urllib.request
from contextlib import redirect_stdout

import duckdb
import pytest

from sg_orchestration.cli import main

# An analyst's session in its own process: opens the snapshot read-only, says how many loads it sees, and
# keeps the file open until told to go, then reads again (still its old copy).
READER = """
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
count = lambda: con.execute("select count(*) from ops.loads").fetchone()[0]
print(count(), flush=True)
sys.stdin.readline()
print(count(), flush=True)
"""


def _loads(path) -> int:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute("select count(*) from ops.loads").fetchone()[0]


@pytest.fixture(scope="module")
def two_nights(defs, districts_file, tmp_path_factory):
    """Two nightly runs of `demo` on a fresh warehouse, an analyst holding the first night's snapshot open
    in another process during the second: what each saw."""
    folder = tmp_path_factory.mktemp("analyst")
    snapshot = folder / "analyst" / "warehouse.duckdb"
    run = ["run", "--districts-file", str(districts_file), "--district", "demo"]
    seen: dict = {"snapshot": snapshot, "warehouse": folder / "warehouse.duckdb"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SG_WAREHOUSE_PATH", str(seen["warehouse"]))
        mp.setenv("SG_ANALYST_SNAPSHOT_PATH", str(snapshot))
        mp.setenv("SG_DISTRICTS_FILE", str(districts_file))
        out = io.StringIO()
        with redirect_stdout(out):
            seen["first_code"] = main(run)
        seen["first_out"] = out.getvalue()
        seen["first"] = _loads(snapshot)
        reader = subprocess.Popen(
            [sys.executable, "-c", READER, str(snapshot)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            seen["reader_before"] = int(reader.stdout.readline())  # open, and holding the file
            out = io.StringIO()
            with redirect_stdout(out):
                seen["second_code"] = main(run)
            seen["second_out"] = out.getvalue()
            reader.stdin.write("\n")
            reader.stdin.flush()
            seen["reader_after"] = int(reader.stdout.readline())
        finally:
            reader.communicate(timeout=30)
        seen["reader_code"] = reader.returncode
        seen["second"] = _loads(snapshot)
        yield seen


def test_a_reader_on_the_snapshot_never_blocks_the_next_run_and_then_sees_the_new_one(two_nights):
    seen, snapshot = two_nights, two_nights["snapshot"]
    assert seen["first_code"] == 0, seen["first_out"][-4000:]
    out = seen["first_out"]
    assert f"analyst snapshot: {snapshot}" in out and f"duckdb -readonly {snapshot}" in out
    assert seen["first"] > 0 and seen["reader_before"] == seen["first"]
    assert seen["second_code"] == 0, seen["second_out"][-4000:]  # the reader did not block the run
    assert seen["reader_after"] == seen["first"] and seen["reader_code"] == 0  # its old copy, whole
    assert seen["second"] > seen["first"]  # a new connection sees the second night's loads
    # Published whole: no temporary file left beside it; and read-only.
    assert [p.name for p in snapshot.parent.iterdir() if ".tmp-" in p.name] == []
    assert not snapshot.stat().st_mode & 0o222


def test_an_unchanged_warehouse_is_not_copied_again(defs, warehouse, tmp_path, monkeypatch):
    from sg_orchestration.analyst import publish_snapshot
    from sg_orchestration.warehouse import connect

    monkeypatch.setenv("SG_ANALYST_SNAPSHOT_PATH", str(tmp_path / "snap.duckdb"))
    with connect() as con:
        con.execute("select 1")
    assert publish_snapshot() is not None
    assert publish_snapshot() is None  # nothing written since
    with connect() as con:
        con.execute("create table ops.touched as select 1 as x")
    assert publish_snapshot() is not None
    with duckdb.connect(str(tmp_path / "snap.duckdb"), read_only=True) as con:
        assert con.execute("select x from ops.touched").fetchone() == (1,)


def test_sg_orch_docs_generates_from_the_snapshot_and_serves_it(two_nights, tmp_path, monkeypatch):
    from sg_orchestration.docs import generate, serving

    monkeypatch.setenv("SG_ANALYST_SNAPSHOT_PATH", str(two_nights["snapshot"]))
    folder = generate(tmp_path / "docs")
    with serving(folder, 0) as url:
        with urllib.request.urlopen(url + "index.html", timeout=10) as response:
            assert response.status == 200 and b"dbt" in response.read()
        manifest, catalog = (
            json.load(urllib.request.urlopen(url + name, timeout=10))
            for name in ("manifest.json", "catalog.json")
        )
    # The catalog was read from the snapshot: the night's marts are there with their columns.
    assert "model.sg_orchestration.qmlativ__disability" in catalog["nodes"]
    marts = [
        n for n in manifest["nodes"].values() if n["resource_type"] == "model" and n["fqn"][1] == "marts"
    ]
    assert marts
    for node in marts:
        assert node["description"].strip(), node["name"]
        listed = {name: column["description"] for name, column in node["columns"].items()}
        assert listed and all(d.strip() for d in listed.values()), node["name"]
        # Every column the mart has (the catalog, for the night's marts) is described.
        built = catalog["nodes"].get(node["unique_id"], {}).get("columns", {})
        assert {c.lower() for c in built} <= {c.lower() for c in listed}, node["name"]


def test_the_run_status_sensors_publish_after_a_run_the_daemon_launched(two_nights, monkeypatch):
    """For runs of schedules and sensors (not `sg-orch run`): the sensor of the run's end publishes, and
    one with nothing new copies nothing."""
    import dagster as dg

    from sg_orchestration.analyst import SNAPSHOT_SENSORS
    from sg_orchestration.runner import project_instance
    from sg_orchestration.warehouse import connect

    monkeypatch.setenv("SG_WAREHOUSE_PATH", str(two_nights["warehouse"]))
    monkeypatch.setenv("SG_ANALYST_SNAPSHOT_PATH", str(two_nights["snapshot"]))
    instance = project_instance()
    run = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS]), limit=1)[0]
    event = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS)[0].dagster_event
    sensor = next(s for s in SNAPSHOT_SENSORS if s.name == "analyst_snapshot_on_success")

    def tick() -> str:
        context = dg.build_run_status_sensor_context(
            sensor_name=sensor.name, dagster_instance=instance, dagster_run=run, dagster_event=event
        )
        return sensor(context).skip_message

    assert tick() == "warehouse unchanged since the last snapshot"  # `sg-orch run` published already
    with connect() as con:
        con.execute("create table ops.after_the_run as select 1 as x")
    assert tick() == f"published {two_nights['snapshot']}"
    with duckdb.connect(str(two_nights["snapshot"]), read_only=True) as con:
        assert con.execute("select x from ops.after_the_run").fetchone() == (1,)


def test_the_dbt_assets_link_to_their_page_in_the_docs(defs):
    import dagster as dg

    key = dg.AssetKey(["marts", "qmlativ__disability"])
    url = defs.resolve_assets_def(key).specs_by_key[key].metadata["dbt docs"].url
    assert url.endswith("/#!/model/model.sg_orchestration.qmlativ__disability")


def test_sg_orch_docs_without_any_night_says_to_run_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SG_WAREHOUSE_PATH", str(tmp_path / "warehouse.duckdb"))
    monkeypatch.setenv("SG_ANALYST_SNAPSHOT_PATH", str(tmp_path / "analyst" / "warehouse.duckdb"))
    assert main(["docs", "--port", "0"]) == 2
    assert "run a night first" in capsys.readouterr().err
