"""`ops.run_history`: every run gets a row, a failed one with its step and a one-line cause, and the
run-failure sensor records it and alerts a webhook (a local server here) without ever failing itself.

One nightly of `demo` (~30 s) and one that fails at ingest (a few seconds), in the project's instance and a
warehouse of this module.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest

from sg_orchestration import run_history
from sg_orchestration.cli import main
from sg_orchestration.runner import project_instance
from sg_orchestration.warehouse import connect

SECRET_LINE = "second line naming a student"  # replaced by a real student's name in the failing run


@pytest.fixture(scope="module")
def module_warehouse(tmp_path_factory, districts_file, defs):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SG_WAREHOUSE_PATH", str(tmp_path_factory.mktemp("history") / "warehouse.duckdb"))
        mp.setenv("SG_DISTRICTS_FILE", os.environ["SG_DISTRICTS_FILE"])  # `sg-orch run` repoints it
        yield


@pytest.fixture(scope="module")
def nightly(module_warehouse, districts_file):
    """One successful `sg-orch run` of demo: its exit code and console output."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["run", "--districts-file", str(districts_file), "--district", "demo"])
    return code, out.getvalue()


def _rows(where: str = "true", params: list | None = None) -> list[dict]:
    with connect() as con:
        cursor = con.execute(
            f"select * from ops.run_history where {where} order by recorded_at", params or []
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]


def test_a_successful_cli_run_writes_its_row_with_the_publish_counts(nightly, capsys):
    code, out = nightly
    assert code == 0, out[-3000:]
    [row] = _rows("district_id = 'demo'")
    assert row["status"] == "success" and row["job"] == "nightly" and row["dry_run"] is False
    assert row["started_at"] <= row["finished_at"]
    targets = json.loads(row["target_counts"])
    assert set(targets) == {"publish/qmlativ_writeback"}  # demo has the writeback only
    writeback = targets["publish/qmlativ_writeback"]
    assert writeback["created"] > 0 and writeback["failed"] == 0  # a fresh warehouse: all new
    assert row["created"] == writeback["created"]
    assert row["failed_step"] is None and row["cause"] is None
    with connect() as con:
        (opened,) = con.execute("select count(*) from ops.error_log where district_id = 'demo'").fetchone()
    assert row["errors_opened"] == opened  # a fresh warehouse: every error of it was opened by this run
    assert f"run history: ops.run_history row {row['run_id']} (success; created {row['created']:,}" in out

    assert main(["history", "--district", "demo", "--limit", "5"]) == 0
    listed = capsys.readouterr().out
    assert row["run_id"] in listed and "success" in listed


@pytest.fixture(scope="module")
def failed_run(nightly, districts_file, district_inputs):
    """`sg-orch run` of demo whose ingest fails with a two-line error, the second naming a student: the
    row written and the student's last name."""
    from sg_orchestration.ingest import assets

    student = (district_inputs / "powerschool" / "students.csv").read_text().splitlines()[1].split(",")
    last_name = student[4]

    def broken():
        raise RuntimeError(f"the districts service is down\n{SECRET_LINE}: {last_name}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(assets, "current_districts", broken)
        code = main(["run", "--districts-file", str(districts_file), "--district", "demo"])
    assert code == 1
    [row] = _rows("status = 'failure'")
    return row, last_name


def test_a_failed_cli_run_writes_its_failing_step_and_a_one_line_cause_without_student_data(failed_run):
    row, last_name = failed_run
    assert row["district_id"] == "demo" and row["job"] == "nightly"
    assert row["failed_step"].startswith("raw"), row["failed_step"]
    assert row["cause"] == "RuntimeError: the districts service is down"
    assert row["created"] == 0 and json.loads(row["target_counts"]) == {}  # the publish never ran
    assert not any(last_name in str(v) or SECRET_LINE in str(v) for v in row.values())


class _Webhook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append({"content_type": self.headers["Content-Type"], **json.loads(body)})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture
def webhook():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    _Webhook.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/alerts", _Webhook.received
    server.shutdown()
    server.server_close()


def _evaluate_failure_sensor(run_id: str) -> None:
    """The registered run-failure sensor, evaluated on the failed run as the daemon would hand it over."""
    from sg_orchestration.definitions import defs

    instance = project_instance()
    run = instance.get_run_by_id(run_id)
    [failure] = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    sensor = defs.resolve_sensor_def("run_history_failure")
    context = dg.build_run_status_sensor_context(
        sensor_name=sensor.name,
        dagster_event=failure.dagster_event,
        dagster_instance=instance,
        dagster_run=run,
    ).for_run_failure()
    sensor(context)


def test_the_run_failure_sensor_records_the_failed_run_and_posts_it_to_the_webhook(
    failed_run, webhook, monkeypatch
):
    row, last_name = failed_run
    url, received = webhook
    monkeypatch.setenv(run_history.WEBHOOK_ENV, url)
    with connect() as con:
        con.execute("delete from ops.run_history where run_id = ?", [row["run_id"]])

    _evaluate_failure_sensor(row["run_id"])
    _evaluate_failure_sensor(row["run_id"])  # the daemon after the CLI, or a retried tick: one row still

    [again] = _rows("run_id = ?", [row["run_id"]])
    assert {k: again[k] for k in ("status", "failed_step", "cause", "started_at", "finished_at")} == {
        k: row[k] for k in ("status", "failed_step", "cause", "started_at", "finished_at")
    }
    assert len(received) == 2
    assert received[0] == {
        "content_type": "application/json",
        "district": "demo",
        "job": "nightly",
        "run_id": row["run_id"],
        "step": row["failed_step"],
        "cause": "RuntimeError: the districts service is down",
        "dagster_run_url_path": f"/runs/{row['run_id']}",
    }
    assert last_name not in json.dumps(received)


def test_a_webhook_that_is_down_does_not_fail_the_sensor(failed_run, monkeypatch, capfd):
    row, _ = failed_run
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv(run_history.WEBHOOK_ENV, f"http://127.0.0.1:{port}/alerts")
    with connect() as con:
        con.execute("delete from ops.run_history where run_id = ?", [row["run_id"]])

    _evaluate_failure_sensor(row["run_id"])

    [again] = _rows("run_id = ?", [row["run_id"]])
    assert again["status"] == "failure" and again["cause"] == row["cause"]
    monkeypatch.setenv(run_history.WEBHOOK_ENV, "hooks.example/services/secret-token")  # no scheme
    _evaluate_failure_sensor(row["run_id"])

    captured = capfd.readouterr()
    warnings = [line for line in (captured.out + captured.err).splitlines() if "alert webhook" in line]
    assert len(warnings) == 2 and all(run_history.WEBHOOK_ENV in w for w in warnings), warnings
    assert not any(str(port) in w or "secret-token" in w for w in warnings)  # the URL may hold a token


def test_the_catch_up_sensor_records_an_ended_run_that_has_no_row(nightly):
    """A run-status sensor's tick that could not write is not evaluated again: the catch-up sensor finds
    the run missing and records it."""
    from sg_orchestration.definitions import defs

    [row] = _rows("district_id = 'demo' and status = 'success'")
    with connect() as con:
        con.execute("delete from ops.run_history where run_id = ?", [row["run_id"]])
    sensor = defs.resolve_sensor_def("run_history_catch_up")
    with project_instance() as instance:
        first = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
        second = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))

    [again] = _rows("run_id = ?", [row["run_id"]])
    assert {k: v for k, v in again.items() if k != "recorded_at"} == {
        k: v for k, v in row.items() if k != "recorded_at"
    }
    assert "recorded 0 run(s)" not in first.skip_message and "recorded 0 run(s)" in second.skip_message


@pytest.fixture
def ephemeral_run(warehouse):
    """A run of a one-op job in an in-memory instance, tagged as demo's, and its instance."""

    @dg.op
    def noop():
        pass

    instance = dg.DagsterInstance.ephemeral()
    job = dg.GraphDefinition("g", node_defs=[noop]).to_job(name="nightly")
    run = instance.create_run_for_job(job, tags={"dagster/partition": "demo"})
    yield instance, run
    instance.dispose()


def test_a_canceled_run_is_recorded_by_its_sensor(ephemeral_run):
    from sg_orchestration.definitions import defs

    instance, run = ephemeral_run
    instance.report_run_canceling(run)
    instance.report_run_canceled(run)
    [canceled] = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_CANCELED)
    sensor = defs.resolve_sensor_def("run_history_canceled")
    sensor(
        dg.build_run_status_sensor_context(
            sensor_name=sensor.name,
            dagster_event=canceled.dagster_event,
            dagster_instance=instance,
            dagster_run=instance.get_run_by_id(run.run_id),
        )
    )
    [row] = _rows("run_id = ?", [run.run_id])
    assert (row["status"], row["district_id"], row["failed_step"], row["cause"]) == (
        "canceled",
        "demo",
        None,
        None,
    )


def test_a_run_that_failed_without_a_step_failing_has_the_runs_own_cause(ephemeral_run):
    """A killed `sg-orch run` is marked failed by the next one (`reap_dead_runs`): no step failed."""
    instance, run = ephemeral_run
    instance.report_run_failed(run, message="the sg-orch process (pid 4242) running it ended")

    row = run_history.record(instance, run.run_id)

    assert (row["status"], row["failed_step"]) == ("failure", None)
    assert row["cause"] == "the sg-orch process (pid 4242) running it ended"
    assert _rows("run_id = ?", [run.run_id])[0]["cause"] == row["cause"]


def test_a_targets_counts_sum_its_resources_of_every_metadata_shape():
    """Qmlativ's `<resource>/<count>`, Ed-Fi's `<connection>/<resource>/<count>`, OneRoster's `bundle/...`;
    other keys (sent, planned, incomplete, flags) are not counts of the history."""
    metadata = {
        "idoe/studentSectionAssociations/created": 3,
        "idoe/studentProgramAssociations/created": dg.MetadataValue.int(2),
        "idoe/studentProgramAssociations/held": 4,
        "idoe/studentProgramAssociations/sent": 9,
        "bundle/updated": 1,
        "disability/planned_create": 7,
        "incomplete": 5,
        "complete/failed": True,
    }
    assert run_history._counts(metadata) == {"created": 5, "updated": 1, "deleted": 0, "failed": 0, "held": 4}
