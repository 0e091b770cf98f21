"""`sg-orch bench` runs every stage end to end on a tiny district (no timing is asserted: that is for
reading, on the machine at hand)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sg_orchestration.bench import UNCHANGED, main


@pytest.mark.timeout(600)
def test_bench_runs_every_stage(tmp_path: Path) -> None:
    assert main(sizes=[300], seed=1, out=tmp_path, keep=False) == 0

    report = json.loads((tmp_path / "bench.json").read_text())
    stages = {r["stage"]: r for r in report["results"]}
    assert list(stages) == ["generate", "ingest", UNCHANGED, "dbt"]
    for name, result in stages.items():
        assert result["students"] == 300
        assert result["rows"] > 0, name
        assert result["peak_mib"] > 0, name
        assert result["wall_s"] > 0, name

    # The first load adds rows; the same data offered again adds nothing.
    assert stages["ingest"]["rows_added"] > 0
    assert stages[UNCHANGED]["rows_added"] == 0

    assert [s["students"] for s in report["summary"]] == [300]
    assert "| 300 | dbt |" in (tmp_path / "bench.md").read_text()
    assert not (tmp_path / "work").exists(), "the work files are deleted unless asked to keep them"
