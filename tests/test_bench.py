"""`sg-orch bench` runs every stage end to end on a tiny district (no timing is asserted: that is for
reading, on the machine at hand)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sg_orchestration.bench import (
    CHANGE,
    CLIENT_CPU,
    DBT_MARTS,
    ENGINE_VS_LIGHTBEAM,
    PUBLISH_CHANGED,
    PUBLISH_COLD,
    PUBLISH_NO_CHANGE,
    UNCHANGED,
    main,
)


@pytest.mark.timeout(600)
def test_bench_runs_every_stage(tmp_path: Path) -> None:
    # a small client-CPU measurement: the figure is for reading, not asserting
    assert main(sizes=[300], seed=1, out=tmp_path, keep=False, measure_requests=200, engine_requests=300) == 0

    report = json.loads((tmp_path / "bench.json").read_text())
    stages = {r["stage"]: r for r in report["results"]}
    assert list(stages) == [
        "generate",
        "ingest",
        UNCHANGED,
        "dbt",
        DBT_MARTS,
        PUBLISH_COLD,
        CHANGE,
        PUBLISH_CHANGED,
        PUBLISH_NO_CHANGE,
    ]
    for name, result in stages.items():
        assert result["students"] == 300
        assert result["rows"] > 0, name
        assert result["peak_mib"] > 0, name
        assert result["wall_s"] > 0, name

    # The first load adds rows; the same data offered again adds nothing.
    assert stages["ingest"]["rows_added"] > 0
    assert stages[UNCHANGED]["rows_added"] == 0

    # The cold run creates every integrated document; 1% changed sends some but fewer; no change sends none,
    # as the sandbox Qmlativ counted too.
    cold, changed, none = stages[PUBLISH_COLD], stages[PUBLISH_CHANGED], stages[PUBLISH_NO_CHANGE]
    assert cold["requests"] == cold["counts"]["created"] == stages[DBT_MARTS]["rows"]
    assert 0 < changed["requests"] < cold["requests"]
    assert changed["requests"] == changed["counts"]["updated"] == stages[CHANGE]["rows"]
    assert changed["writeback_requests"] == changed["requests"]
    assert none["requests"] == 0
    assert none["writeback_requests"] == 0

    [publish] = report["publish_summary"]
    assert publish["students"] == 300 and publish["no_change_requests"] == 0
    cpu = report["client_cpu"]
    assert cpu["stage"] == CLIENT_CPU
    assert set(cpu["us_per_request"]) == {"httpx", "httpx_aiohttp", "aiohttp"}
    assert all(us > 0 for us in cpu["us_per_request"].values())

    # The engine, lightbeam and the bare aiohttp loop side by side; the stub received every request.
    engine = report["engine_vs_lightbeam"]
    assert engine["stage"] == ENGINE_VS_LIGHTBEAM and engine["rows"] == 300
    assert engine["arrived"] == {"engine": 300, "lightbeam": 300, "aiohttp": 300}
    assert engine["engine_counts"]["created"] == 300
    assert set(engine["us_per_request"]) == {"engine", "lightbeam", "aiohttp"}
    assert all(us > 0 for us in engine["us_per_request"].values())
    assert set(engine["ratios"]) == {"engine/lightbeam", "engine/aiohttp"}
    assert engine["pass"]["no_change"] is None  # the baseline is for the default N only

    assert [s["students"] for s in report["summary"]] == [300]
    md = (tmp_path / "bench.md").read_text()
    assert "| 300 | dbt |" in md
    assert f"| 300 | {PUBLISH_NO_CHANGE} |" in md
    assert "raw aiohttp" in md
    assert "`lightbeam send`" in md and "engine/lightbeam" in md and "bare aiohttp loop (floor)" in md
    assert not (tmp_path / "work").exists(), "the work files are deleted unless asked to keep them"
