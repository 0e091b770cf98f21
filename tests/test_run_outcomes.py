"""A run says OK only when it is; one bad source stops only what reads it; runs do not collide.

Each test runs the real nightly job (ingest, dbt, validation, publish) against its own sandbox and its
own warehouse, through `sg-orch run` in process or as a separate process.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sg_orchestration.cli import main
from sg_orchestration.paths import DBT_PROJECT_DIR
from sg_orchestration.sandbox import Sandbox
from sg_orchestration.warehouse import connect, run_lock


@pytest.fixture
def own_sandbox(tmp_path, sandbox, district_inputs, request):
    """A sandbox of this test only (its own Qmlativ store), with the session's credentials."""
    faults = getattr(request, "param", None)
    with Sandbox(
        district_inputs, credentials=sandbox.credentials, state_dir=tmp_path / "store", qmlativ_faults=faults
    ) as sb:
        yield sb


def _districts_file(
    tmp_path: Path, sb: Sandbox, inputs: dict[str, str | None] | None = None, sections: dict | None = None
) -> Path:
    """A districts file with the `demo` district on this sandbox; `inputs` replaces input folders;
    `sections` adds sections (e.g. more targets)."""
    path = tmp_path / "districts.yaml"
    sb.write_districts_file(path)
    doc = yaml.safe_load(path.read_text())
    doc["districts"][0].update(sections or {})
    for key, value in (inputs or {}).items():
        if value is None:
            doc["districts"][0]["inputs"].pop(key, None)
        else:
            doc["districts"][0]["inputs"][key] = value
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _run(districts_file: Path, capsys, *extra: str) -> tuple[int, str]:
    code = main(["run", "--districts-file", str(districts_file), "--district", "demo", *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _sent(target: str = "qmlativ") -> int:
    with connect() as con:
        return con.execute(
            "select count(*) from ops.publish_ledger where target = ? and last_status = 'sent'", [target]
        ).fetchone()[0]


def test_a_broken_powerschool_file_and_a_missing_campus_folder_stop_only_what_reads_them(
    defs, tmp_path, own_sandbox, district_inputs, warehouse, capsys, monkeypatch, every_target
):
    """Issue: a PowerSchool file with a missing required column, or a districts file naming a folder that
    is not there, failed its ingest step, then the single dbt step was skipped and the Qmlativ writeback
    sent 0 of its records although none of its sources was touched."""
    monkeypatch.setenv("SG_DISTRICTS_FILE", os.environ["SG_DISTRICTS_FILE"])
    powerschool = tmp_path / "powerschool"
    shutil.copytree(district_inputs / "powerschool", powerschool)
    students = powerschool / "students.csv"
    lines = students.read_text().splitlines(keepends=True)
    students.write_text(lines[0].replace("Local Id", "Local Number") + "".join(lines[1:]))
    districts_file = _districts_file(
        tmp_path,
        own_sandbox,
        {"powerschool_dir": str(powerschool), "campus_dir": str(tmp_path / "no-such-folder")},
        sections=every_target(tmp_path / "outbox"),  # so the Ed-Fi and OneRoster steps are in the run
    )
    for old in (DBT_PROJECT_DIR / "target").glob("dbt_models-*"):
        shutil.rmtree(old)

    code, out = _run(districts_file, capsys)

    assert code == 1
    assert "result: FAILED" in out
    targets = out.split("targets:")[1].splitlines()
    assert any("publish/qmlativ_writeback" in line and "published" in line for line in targets), out
    assert _sent() > 0, "the Qmlativ writeback reads neither PowerSchool nor campus: it must go out"
    failed = out.split("FAILED:")[1]
    assert "raw/powerschool__students" in failed and "Local Id" in failed
    assert "raw/campus__" in failed
    assert "dbt_oneroster" in out and "dbt_edfi" in out, out  # not run: their inputs failed
    # Every run reuses one dbt target folder per step and district: nothing piles up.
    assert not list((DBT_PROJECT_DIR / "target").glob("dbt_models-*"))
    assert (DBT_PROJECT_DIR / "target" / "runs" / "dbt_qmlativ" / "demo").is_dir()


@pytest.mark.parametrize("own_sandbox", [{"error_rate": 1.0, "statuses": [422]}], indirect=True)
def test_a_run_whose_records_failed_to_publish_says_incomplete_and_exits_non_zero(
    defs, tmp_path, own_sandbox, warehouse, capsys, monkeypatch
):
    """Issue: `Summary.ok` ignored publish failures: a run with failed records exited 0 with `result: OK`."""
    monkeypatch.setenv("SG_DISTRICTS_FILE", os.environ["SG_DISTRICTS_FILE"])
    code, out = _run(_districts_file(tmp_path, own_sandbox), capsys)

    assert code == 1
    assert "result: INCOMPLETE" in out
    assert "NOT PUBLISHED: publish/qmlativ_writeback" in out
    assert "causes:" in out and "422" in out.split("causes:")[1]
    assert _sent() == 0


def test_a_second_run_on_the_same_warehouse_waits_for_the_first_or_is_refused_naming_it(
    defs, tmp_path, own_sandbox, warehouse, capsys
):
    """Issue: two `sg-orch run`s on one warehouse at once both failed with DuckDB lock errors. Also run as
    cron would: `.venv/bin/sg-orch` with the virtual environment not on PATH (dbt was "not found")."""
    districts_file = _districts_file(tmp_path, own_sandbox)
    sg_orch = Path(sys.executable).with_name("sg-orch")
    env = {
        "HOME": os.environ.get("HOME", "/root"),
        "PATH": "/usr/bin:/bin",
        "SG_STATE_DIR": str(tmp_path / "state"),
        "SG_WAREHOUSE_PATH": str(warehouse),
        "SG_DISTRICTS_FILE": str(districts_file),
        **own_sandbox.credentials,
    }
    command = [str(sg_orch), "run", "--districts-file", str(districts_file), "--district", "demo"]
    with run_lock("the test's own run"):
        refused = subprocess.run(
            [*command, "--no-wait"], env=env, capture_output=True, text=True, timeout=120
        )
        assert refused.returncode == 3, refused.stderr[-2000:]
        assert "the test's own run" in refused.stderr and "not started" in refused.stderr

        waiting = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        line = waiting.stderr.readline()
        assert "the test's own run" in line and "waiting" in line, line
        time.sleep(1)
        assert waiting.poll() is None  # still waiting, not failed half-way
    out, err = waiting.communicate(timeout=600)
    assert waiting.returncode == 0, (out + err)[-4000:]
    assert "result: OK" in out

    # The run is in the project's persistent instance (the one the UI shows).
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(tmp_path / "state" / "dagster_home"))
    runs = instance.get_runs(dg.RunsFilter(job_name="nightly"))
    assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS]


def test_a_killed_cli_run_leaves_no_pool_slot_that_blocks_the_next(tmp_path, monkeypatch):
    """A `kill -9` of `sg-orch run` leaves its run STARTED and its warehouse pool slot claimed in the
    persistent instance; the next run must not wait for it forever."""
    import dagster as dg

    from sg_orchestration.runner import HOST_TAG, PID_TAG, project_instance, reap_dead_runs
    from sg_orchestration.warehouse import WAREHOUSE_POOL

    monkeypatch.setenv("SG_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    instance = project_instance()
    run = instance.add_run(
        dg.DagsterRun(
            job_name="nightly",
            run_id="deadbeef-0000-0000-0000-000000000000",
            status=dg.DagsterRunStatus.STARTED,
            tags={PID_TAG: str(dead.pid), HOST_TAG: socket.gethostname()},
        )
    )
    storage = instance.event_log_storage
    storage.initialize_concurrency_limit_to_default(WAREHOUSE_POOL)
    assert storage.claim_concurrency_slot(WAREHOUSE_POOL, run.run_id, "raw__x").is_claimed

    assert reap_dead_runs(instance) == 1
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    assert storage.claim_concurrency_slot(WAREHOUSE_POOL, "another-run", "raw__x").is_claimed


def test_an_error_the_cli_does_not_handle_ends_in_one_line_with_the_cause_and_the_log(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("SG_STATE_DIR", str(tmp_path))

    def broken(*args, **kwargs):
        raise RuntimeError("the warehouse disk is full")

    monkeypatch.setattr("sg_orchestration.runner.run_district", broken)
    assert main(["run", "--districts-file", "x.yaml", "--district", "demo"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "RuntimeError: the warehouse disk is full" in err
    log = Path(err.rsplit("details: ", 1)[1].rstrip(")"))
    assert log.is_file() and "Traceback" in log.read_text()


def test_the_result_is_ok_only_when_every_input_was_applied_and_every_record_is_in_its_target():
    from sg_orchestration.summary import AssetLine, Summary

    def summary(**assets) -> Summary:
        lines = {name: AssetLine(name, metadata) for name, metadata in assets.items()}
        return Summary(True, lines, failures={}, targets={}, open_errors=[])

    published = {"incomplete": 0, "disability/created": 3}
    assert summary(**{"publish/qmlativ_writeback": published}).result == "OK"
    left = {"incomplete": 2, "disability/failed": 1, "disability/pending": 1}
    assert summary(**{"publish/qmlativ_writeback": left}).result == "INCOMPLETE"
    assert summary(**{"publish/qmlativ_writeback": {**left, "dry_run": True}}).result == "OK"
    held = {"raw/campus__enrollments": {"status": "held"}, "publish/qmlativ_writeback": published}
    assert summary(**held).result == "INCOMPLETE"
    failed = summary(**{"publish/qmlativ_writeback": published})
    failed.failures["raw/powerschool__students"] = "missing column"
    assert failed.result == "FAILED" and not failed.ok
