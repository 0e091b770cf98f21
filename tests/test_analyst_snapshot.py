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
    seen: dict = {"snapshot": snapshot}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SG_WAREHOUSE_PATH", str(folder / "warehouse.duckdb"))
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
