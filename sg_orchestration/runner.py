"""Running the nightly job without the UI (`sg-orch run`), the demo (`make demo`) and the UI (`make dev`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from sg_orchestration.config import load_districts
from sg_orchestration.paths import PROJECT_ROOT, state_dir


def _instance():
    import dagster as dg

    home = os.environ.get("DAGSTER_HOME")
    return (
        dg.DagsterInstance.get()
        if home and Path(home, "dagster.yaml").exists()
        else dg.DagsterInstance.ephemeral()
    )


def run_district(districts_file: Path, district_id: str, dry_run: bool = False) -> int:
    """Materialize the nightly job for one district in process and print the summary; 0 when all went well."""
    districts = load_districts(districts_file)  # refuse a bad file before any work
    district = districts.get(district_id)
    os.environ["SG_DISTRICTS_FILE"] = str(Path(districts_file).resolve())

    from sg_orchestration.definitions import defs
    from sg_orchestration.publish.assets import DRY_RUN_TAG
    from sg_orchestration.summary import collect, render

    job = defs.resolve_job_def("nightly")
    tags = {DRY_RUN_TAG: "true"} if dry_run else {}
    result = job.execute_in_process(
        partition_key=district.id,
        instance=_instance(),
        raise_on_error=False,
        tags=tags,
        run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
    )
    summary = collect(result, district.id)
    print(render(summary, district, dry_run=dry_run))
    return 0 if summary.ok else 1


def _prepare_state(students: int, seed: int) -> Path:
    from sg_orchestration.generate import generate_district

    inputs = state_dir() / "demo" / "inputs"
    generate_district(inputs, students=students, seed=seed)
    return inputs


def demo(students: int, seed: int) -> int:
    """Synthetic district → sandbox servers → the whole nightly job → summary; the sandbox stops after."""
    from sg_orchestration.sandbox import Sandbox

    inputs = _prepare_state(students, seed)
    print(f"generated a synthetic district of {students:,} students in {inputs}")
    districts_file = state_dir() / "districts.yaml"
    with Sandbox(inputs) as sandbox:
        sandbox.write_districts_file(districts_file)
        os.environ.update(sandbox.credentials)
        for name, url in sandbox.urls.items():
            print(f"sandbox {name}: {url}")
        district_id = load_districts(districts_file).districts[0].id
        return run_district(districts_file, district_id)


def dagster_home() -> Path:
    """A project-local DAGSTER_HOME holding the repo's dagster.yaml (SQLite storage, run queue, pools)."""
    home = Path(os.environ.get("DAGSTER_HOME") or state_dir() / "dagster_home")
    home.mkdir(parents=True, exist_ok=True)
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
