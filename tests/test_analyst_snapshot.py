"""The analyst snapshot (SPEC §6): published after each run, opened read-only while the next run writes the
warehouse, replaced whole; and `sg-orch docs` generating and serving dbt's documentation."""

import subprocess
import sys

import duckdb

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


def test_a_reader_on_the_snapshot_never_blocks_the_next_run_and_then_sees_the_new_one(
    defs, districts_file, warehouse, tmp_path, monkeypatch, capsys
):
    snapshot = tmp_path / "analyst" / "warehouse.duckdb"
    monkeypatch.setenv("SG_ANALYST_SNAPSHOT_PATH", str(snapshot))
    run = ["run", "--districts-file", str(districts_file), "--district", "demo"]
    assert main(run) == 0
    out = capsys.readouterr().out
    assert f"analyst snapshot: {snapshot}" in out and f"duckdb -readonly {snapshot}" in out
    first = _loads(snapshot)
    assert first > 0

    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(snapshot)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert int(reader.stdout.readline()) == first  # open, and holding the file
        assert main(run) == 0, capsys.readouterr().out[-4000:]
        reader.stdin.write("\n")
        reader.stdin.flush()
        assert int(reader.stdout.readline()) == first  # the old copy, whole, under the reader
    finally:
        reader.communicate(timeout=30)
    assert reader.returncode == 0
    assert _loads(snapshot) > first  # a new connection sees the second run's loads
    # Published whole: no temporary file left beside it, and the snapshot is read-only.
    assert sorted(p.name for p in snapshot.parent.iterdir() if ".tmp-" in p.name) == []
    assert not snapshot.stat().st_mode & 0o222


def test_an_unchanged_warehouse_is_not_copied_again(defs, districts_file, warehouse, tmp_path, monkeypatch):
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
