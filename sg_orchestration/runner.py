"""Running the nightly job without the UI (`sg-orch run`), the demo (`make demo`) and the UI (`make dev`)."""

from __future__ import annotations

import atexit
import gc
import json
import os
import shutil
import socket
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from datetime import date, datetime
from pathlib import Path

from sg_orchestration.config import load_districts
from sg_orchestration.paths import PROJECT_ROOT, state_dir

PID_TAG = "sg/pid"
HOST_TAG = "sg/host"


def project_instance():
    """The project's persistent Dagster instance (the one `make dev` shows, so CLI runs are in the UI's
    history and share its pool: one warehouse writer at a time)."""
    import dagster as dg

    return dg.DagsterInstance.from_config(str(dagster_home()))


def reap_dead_runs(instance) -> int:
    """A killed `sg-orch run` leaves its run STARTED with its pool slot claimed, and the next run would wait
    for that slot forever: mark the runs of this host's dead CLI processes failed and free their slots."""
    import dagster as dg

    host = socket.gethostname()
    live = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.NOT_STARTED]
    reaped = 0
    for run in instance.get_runs(dg.RunsFilter(statuses=live, tags={HOST_TAG: host})):
        pid = int(run.tags.get(PID_TAG) or 0)
        if pid and pid != os.getpid() and not _alive(pid):
            instance.report_run_failed(run, message=f"the sg-orch process (pid {pid}) running it ended")
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            reaped += 1
    return reaped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _collect_less() -> None:
    """What is loaded by now (Dagster, dbt, the definitions: ~350,000 objects) lives as long as the process:
    take it out of the cyclic collector, whose every full collection scanned all of it (~0.7 s of a small
    night's ~1 s of collections, measured with gc.callbacks on a 50-student cold night). The thresholds
    stay Python's: collected late, the cycles of a load's pandas frames raised a 200,000-student night's
    peak by ~500 MiB. Unfrozen at exit, so the interpreter frees it as before (DuckDB's bindings report
    what is never freed as leaked)."""
    gc.freeze()
    atexit.register(gc.unfreeze)


def run_district(
    districts_file: Path,
    district_id: str,
    dry_run: bool = False,
    accept_shrink: str | None = None,
    confirm_deletes: str | None = None,
    wait: bool = True,
    as_of: date | None = None,
) -> int:
    """Materialize the nightly job for one district in process and print the summary; 0 only when the
    result is OK. One run at a time per warehouse: a second waits for the first (or, `wait=False`, is
    refused naming it). `as_of`: the day the run's date rules stand for (default: today in the district's
    timezone)."""
    districts = load_districts(districts_file)  # refuse a bad file before any work
    district = districts.get(district_id)
    os.environ["SG_DISTRICTS_FILE"] = str(Path(districts_file).resolve())

    import duckdb

    from sg_orchestration import run_history
    from sg_orchestration.analyst import how_to_open, publish_snapshot
    from sg_orchestration.automation import nightly_selection
    from sg_orchestration.definitions import defs
    from sg_orchestration.ingest.assets import ACCEPT_SHRINK_TAG
    from sg_orchestration.publish.assets import DRY_RUN_TAG
    from sg_orchestration.publish.engine import CONFIRM_DELETES_TAG
    from sg_orchestration.summary import collect, render
    from sg_orchestration.transform.edfi import AS_OF_TAG
    from sg_orchestration.warehouse import run_lock

    job = defs.resolve_job_def("nightly")
    _collect_less()
    tags = {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}
    if dry_run:
        tags[DRY_RUN_TAG] = "true"
    if accept_shrink:
        tags[ACCEPT_SHRINK_TAG] = accept_shrink
    if confirm_deletes:
        tags[CONFIRM_DELETES_TAG] = confirm_deletes
    if as_of:
        tags[AS_OF_TAG] = as_of.isoformat()
    with run_lock(f"sg-orch run --district {district.id}", wait=wait, on_wait=_say):
        instance = project_instance()
        if reaped := reap_dead_runs(instance):
            _say(f"marked {reaped} run(s) of killed sg-orch processes as failed and freed their pool slots")
        log_path = run_log_path(district.id)
        print(f"running the nightly job for {district.id}; Dagster's and dbt's log: {log_path}", flush=True)
        # The console gets one line per stage and the summary; the full logs (~540 lines) go to the file.
        with open(log_path, "w") as log, redirect_stdout(log), redirect_stderr(log):
            result = job.execute_in_process(
                partition_key=district.id,
                asset_selection=nightly_selection(defs.resolve_asset_graph(), district),
                instance=instance,
                raise_on_error=False,
                tags=tags,
                run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
            )
        summary = collect(result, district.id, defs, step_seconds(instance, result.run_id))
        # Written here as well as by the daemon's sensors: a CLI night is recorded with no daemon running.
        try:
            history = run_history.describe(run_history.record(instance, result.run_id))
        except Exception as exc:  # the night's result stands; the catch-up sensor records it later
            history = None
            _say(f"run history not recorded ({type(exc).__name__}); the run_history_catch_up sensor adds it")
        # Still under the run lock, whether the run succeeded or failed: no other run writes meanwhile. A
        # snapshot that cannot be written (a full disk) is said, and leaves the run's result as it is.
        try:
            publish_snapshot()
        except (OSError, duckdb.Error) as exc:
            _say(f"analyst snapshot not published: {exc}")
    print(render(summary, district, dry_run=dry_run))
    if history:
        print(history)
    print(how_to_open())
    return 0 if summary.ok else 1


def run_log_path(district_id: str) -> Path:
    folder = state_dir() / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"run-{district_id}-{datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}.log"


def step_seconds(instance, run_id: str) -> dict[str, float]:
    """Wall time of each step of a run, from the instance's event log."""
    import dagster as dg

    started: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            started[event.step_key] = record.timestamp
        elif event.is_step_success or event.is_step_failure:
            seconds[event.step_key] = record.timestamp - started.get(event.step_key, record.timestamp)
    return seconds


def _say(message: str) -> None:
    print(f"sg-orch: {message}", file=sys.stderr, flush=True)


def _prepare_state(students: int, seed: int) -> Path:
    from sg_orchestration.generate import generate_district

    inputs = state_dir() / "demo" / "inputs"
    generate_district(inputs, students=students, seed=seed)
    return inputs


def demo(students: int, seed: int) -> int:
    """Synthetic district → sandbox servers → the whole nightly job of each district of the sandbox's
    districts file (the Texas one's Qmlativ writeback, then the Indiana one's Ed-Fi accommodations) →
    a summary each; the sandbox stops after. 0 only when every district's result is OK."""
    from sg_orchestration.sandbox import Sandbox

    inputs = _prepare_state(students, seed)
    print(f"generated a synthetic district of {students:,} students in {inputs}")
    districts_file = state_dir() / "districts.yaml"
    with Sandbox(inputs) as sandbox:
        sandbox.write_districts_file(districts_file)
        os.environ.update(sandbox.credentials)
        for name, url in sandbox.urls.items():
            print(f"sandbox {name}: {url}")
        # The generated data is dated from its own as-of day: the runs judge it as of that day too.
        as_of = date.fromisoformat(json.loads((inputs / "district.json").read_text())["as_of"])
        codes = [
            run_district(districts_file, district.id, as_of=as_of)
            for district in load_districts(districts_file).districts
        ]
    from sg_orchestration.docs import DOCS_PORT

    print(
        f"dbt docs of every model: `make docs` (or `sg-orch docs`) serves them on http://127.0.0.1:{DOCS_PORT}"
    )
    return max(codes)


def dagster_home() -> Path:
    """DAGSTER_HOME when set (its own dagster.yaml is kept; the repo's is copied only where there is none),
    else a project-local one holding the repo's dagster.yaml (SQLite storage, run queue, pools)."""
    given = os.environ.get("DAGSTER_HOME")
    home = Path(given or state_dir() / "dagster_home")
    home.mkdir(parents=True, exist_ok=True)
    if not given or not (home / "dagster.yaml").exists():
        shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def dev(students: int, seed: int, port: int) -> int:
    """The Dagster UI on the demo district, with the sandbox running in the background until it exits."""
    from sg_orchestration import sandbox

    inputs = state_dir() / "demo" / "inputs"
    if not (inputs / "manifest.json").exists():
        _prepare_state(students, seed)
    districts_file = state_dir() / "districts.yaml"
    state = sandbox.up(inputs, districts_file)
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home()), "SG_DISTRICTS_FILE": str(districts_file)}
    env.update(_read_env_file(Path(state["env_file"])))
    print(f"Dagster UI: http://127.0.0.1:{port}  (Ctrl-C stops it and the sandbox)")
    try:
        return subprocess.call(
            [
                sys.executable,
                "-m",
                "dagster",
                "dev",
                "-w",
                str(PROJECT_ROOT / "workspace.yaml"),
                "-p",
                str(port),
            ],
            env=env,
            cwd=PROJECT_ROOT,
        )
    except KeyboardInterrupt:
        return 0
    finally:
        sandbox.down()


def _read_env_file(path: Path) -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    return {k.strip(): v.strip() for k, v in pairs}
