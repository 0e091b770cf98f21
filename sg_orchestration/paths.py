"""Where the project keeps its local state: one folder, `.sg/`, beside the code (git-ignored)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"


def state_dir() -> Path:
    return Path(os.environ.get("SG_STATE_DIR") or PROJECT_ROOT / ".sg")


def warehouse_path() -> Path:
    """The DuckDB file; `SG_WAREHOUSE_PATH` lets each test run (and the dbt profile) use its own."""
    return Path(os.environ.get("SG_WAREHOUSE_PATH") or state_dir() / "warehouse.duckdb")


def default_districts_file() -> Path:
    """The sandbox's districts file once `sg-orch sandbox up` or the demo has written it, else the example."""
    written = state_dir() / "districts.yaml"
    return written if written.exists() else PROJECT_ROOT / "districts.example.yaml"


def analyst_snapshot_path() -> Path:
    """The read-only copy of the warehouse analysts open (`SG_ANALYST_SNAPSHOT_PATH` moves it)."""
    return Path(os.environ.get("SG_ANALYST_SNAPSHOT_PATH") or state_dir() / "analyst" / "warehouse.duckdb")
