"""Shared fixtures: one small synthetic district, the sandbox serving it, and a districts file with two
districts over the same data — `demo` through the sandbox APIs, `filedrop` entirely from file drops.

Everything lives in a per-session temporary folder; each test that writes the warehouse gets its own
DuckDB file through SG_WAREHOUSE_PATH.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

STUDENTS = 300
SEED = 3
TEST_DISTRICTS = ("demo", "filedrop")


def pytest_configure(config):
    """Partitions are the configured districts, fixed when the code location is imported, which may be
    before the sandbox is up: name the test districts now; `districts_file` fills in their connections."""
    import tempfile

    placeholder = Path(tempfile.mkdtemp(prefix="sg-districts-")) / "districts.yaml"
    entries = [{"id": d, "name": d, "state": "TX", "timezone": "America/Chicago"} for d in TEST_DISTRICTS]
    placeholder.write_text(yaml.safe_dump({"districts": entries}))
    os.environ["SG_DISTRICTS_FILE"] = str(placeholder)


@pytest.fixture(autouse=True)
def _districts_file_kept(monkeypatch):
    """`sg-orch run` points SG_DISTRICTS_FILE at its districts file for the rest of its process; a test
    that runs it in process must not leave its own file to the tests after it."""
    monkeypatch.setenv("SG_DISTRICTS_FILE", os.environ["SG_DISTRICTS_FILE"])


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sg")
    os.environ["SG_STATE_DIR"] = str(path / "state")
    os.environ.setdefault("SG_WAREHOUSE_PATH", str(path / "session" / "warehouse.duckdb"))
    return path


@pytest.fixture(scope="session")
def district_inputs(session_dir) -> Path:
    from sg_orchestration.generate import generate_district

    out = session_dir / "inputs"
    generate_district(out, students=STUDENTS, seed=SEED)
    return out


@pytest.fixture(scope="session")
def manifest(district_inputs) -> dict:
    import json

    return json.loads((district_inputs / "manifest.json").read_text())


@pytest.fixture(scope="session")
def sandbox(district_inputs):
    from sg_orchestration.sandbox import Sandbox

    with Sandbox(district_inputs) as sb:
        yield sb


@pytest.fixture(scope="session")
def districts_file(session_dir, district_inputs, sandbox) -> Path:
    """`demo` (SameGoal and Qmlativ over the sandbox APIs; the Qmlativ writeback only) and `filedrop`
    (every source from files, every target)."""
    path = Path(os.environ["SG_DISTRICTS_FILE"])
    sandbox.write_districts_file(path)
    os.environ.update(sandbox.credentials)
    doc = yaml.safe_load(path.read_text())
    demo = doc["districts"][0]
    assert demo["id"] == "demo"
    # The sandbox's Indiana district (`demo-in`) is left out: `filedrop` has the Ed-Fi target here.
    doc["districts"] = [demo]
    filedrop = yaml.safe_load(yaml.safe_dump(demo))
    filedrop.update(id="filedrop", name="File Drop ISD (synthetic)")
    filedrop["inputs"].update(
        samegoal_dir=str(district_inputs / "samegoal"), qmlativ_dir=str(district_inputs / "qmlativ")
    )
    del filedrop["samegoal"]["base_url"], filedrop["qmlativ"]["base_url"]
    filedrop.update(other_targets(session_dir / "outbox", sandbox))  # so its nightly builds every dbt step
    doc["districts"].append(filedrop)
    assert [d["id"] for d in doc["districts"]] == list(TEST_DISTRICTS)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def other_targets(outbox: Path, sandbox=None) -> dict:
    """The `edfi` and `oneroster` sections of a district that has every target (`demo` has the Qmlativ
    writeback only); the Ed-Fi connection is the sandbox's emulator when given."""
    connection = {
        "name": "idoe",
        "base_url": "http://127.0.0.1:9/api",
        "key_env": "SG_SANDBOX_EDFI_KEY",
        "secret_env": "SG_SANDBOX_EDFI_SECRET",
        "district_number": "5375",
        "school_years": [2026],
    }
    if sandbox is not None:
        connection.update(
            base_url=sandbox.urls["edfi"],
            district_number=str(sandbox.district["edfi_district_number"]),
            school_years=[int(y) for y in sandbox.district["school_years"]],
        )
    return {
        "edfi": {"connections": [connection]},
        "oneroster": {"delivery": {"directory": {"path": str(outbox)}}},
    }


@pytest.fixture(scope="session")
def every_target():
    """`other_targets`, for tests that write their own districts file."""
    return other_targets


@pytest.fixture(scope="session")
def districts(districts_file):
    from sg_orchestration.config import load_districts

    return load_districts(districts_file)


@pytest.fixture(scope="session")
def dbt_manifest(session_dir):
    from sg_orchestration.transform.dbt import prepare

    prepare()


@pytest.fixture
def warehouse(tmp_path, monkeypatch) -> Path:
    """A fresh DuckDB file for this test."""
    path = tmp_path / "warehouse.duckdb"
    monkeypatch.setenv("SG_WAREHOUSE_PATH", str(path))
    return path


@pytest.fixture(scope="session")
def defs(districts_file, dbt_manifest):
    """The code location, loaded with the test districts (partitions are the configured districts)."""
    from sg_orchestration.definitions import defs

    return defs
