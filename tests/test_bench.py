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
    NIGHTLY_CHANGED,
    NIGHTLY_COLD,
    NIGHTLY_NO_CHANGE,
    PUBLISH_CHANGED,
    PUBLISH_COLD,
    PUBLISH_NO_CHANGE,
    UNCHANGED,
    _groups,
    _parse_run,
    main,
)


@pytest.mark.timeout(600)
def test_bench_runs_every_stage(tmp_path: Path) -> None:
    # a small client-CPU measurement: the figure is for reading, not asserting
    # the nightly group has a test of its own
    assert (
        main(
            sizes=[300],
            seed=1,
            out=tmp_path,
            keep=False,
            measure_requests=200,
            engine_requests=300,
            only="parts,transport",
        )
        == 0
    )

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

    # The engine, lightbeam and the bare aiohttp loop side by side (and any other client the stage adds for
    # information); the stub received every request of each.
    engine = report["engine_vs_lightbeam"]
    assert engine["stage"] == ENGINE_VS_LIGHTBEAM and engine["rows"] == 300
    assert {"engine", "lightbeam", "aiohttp"} <= set(engine["arrived"])
    assert set(engine["arrived"].values()) == {300}
    assert engine["engine_counts"]["created"] == 300
    assert {"engine", "lightbeam", "aiohttp"} <= set(engine["us_per_request"])
    assert all(us > 0 for us in engine["us_per_request"].values())
    assert {"engine/lightbeam", "engine/aiohttp"} <= set(engine["ratios"])
    assert engine["pass"]["no_change"] is None  # the baseline is for the default N only

    assert [s["students"] for s in report["summary"]] == [300]
    md = (tmp_path / "bench.md").read_text()
    assert "| 300 | dbt |" in md
    assert f"| 300 | {PUBLISH_NO_CHANGE} |" in md
    assert "raw aiohttp" in md
    assert "`lightbeam send`" in md and "engine/lightbeam" in md and "bare aiohttp loop (floor)" in md
    assert not (tmp_path / "work").exists(), "the work files are deleted unless asked to keep them"


@pytest.mark.timeout(900)
def test_bench_nightly_runs_the_whole_nightly_three_times(tmp_path: Path) -> None:
    """The nightly group alone: three whole `sg-orch run` processes on the generator's smallest district,
    against the bench's own sandbox, warehouse and Dagster instance; the table has their rows and targets."""
    assert main(sizes=[50], seed=1, out=tmp_path, keep=False, only="nightly") == 0

    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["groups"] == ["nightly"] and report["failures"] == []
    stages = {r["stage"]: r for r in report["results"]}
    assert list(stages) == ["generate", NIGHTLY_COLD, NIGHTLY_NO_CHANGE, NIGHTLY_CHANGED]
    for name in (NIGHTLY_COLD, NIGHTLY_NO_CHANGE, NIGHTLY_CHANGED):
        run = stages[name]
        assert run["students"] == 50 and run["group"] == "nightly"
        assert run["result"] in ("OK", "INCOMPLETE"), name
        assert run["wall_s"] > 0 and run["peak_mib"] > 0, name
        assert run["steps_s"] and "publish" in run["steps_s"], name
    cold, none, changed = stages[NIGHTLY_COLD], stages[NIGHTLY_NO_CHANGE], stages[NIGHTLY_CHANGED]
    assert cold["rows_added"] > 0 and cold["requests"] > 0  # everything is new to an empty warehouse
    assert none["rows_added"] == 0 and none["requests"] == 0  # nothing changed: nothing added or sent
    assert changed["rows_added"] > 0 and changed["requests"] > 0  # the next day's changes, and only them
    assert changed["requests"] < cold["requests"]
    day = changed["next_day"]
    assert day["changes"]["withdrawn_students"] >= 1
    assert day["samegoal_reload"]["created"] + day["samegoal_reload"]["updated"] > 0
    # the sandbox re-read its students: the withdrawn ones are gone
    assert day["qmlativ_students"]["after"] < day["qmlativ_students"]["before"]

    [nightly] = report["nightly_summary"]
    assert nightly["students"] == 50 and nightly["small_judged"] and not nightly["shares_judged"]
    md = (tmp_path / "bench.md").read_text()
    assert "Nightly target" in md and "Target: " not in md  # only the group that ran
    for name in (NIGHTLY_COLD, NIGHTLY_NO_CHANGE, NIGHTLY_CHANGED):
        assert f"| 50 | {name} |" in md
    assert "**nightly (cold), the smallest district** (50 students" in md
    assert "**nightly no change vs cold**" in md and "**nightly 1% changed vs cold**" in md
    for line in md.splitlines():
        if line.startswith("| 50 | **nightly"):
            assert "PASS (<" in line or "MISS (<" in line, line
    assert "Nightly runs by stage" in md
    assert not (tmp_path / "work").exists()


def test_bench_groups_and_the_run_summary_parser() -> None:
    assert _groups("") == ("parts", "nightly", "transport", "edfi", "oneroster")
    assert _groups(" nightly ") == ("nightly",)
    with pytest.raises(SystemExit, match="unknown group"):
        _groups("nightly,everything")
    text = """running the nightly job for demo; Dagster's and dbt's log: /x.log

== sg_orchestration summary: Demo ISD (demo) ==

stages (wall time):
  ingest              12.5 s  19 sources, 1,271 rows added
  dbt_qmlativ          3.0 s
  publish              1.5 s  41 requests sent

ingest                                           status      read     added  errors  check
raw/qmlativ__students                            loaded     1,050     1,050       1     ok
raw/samegoal__dyslexia                         not used         0         0       0   warn

result: INCOMPLETE
"""
    parsed = _parse_run(text)
    assert parsed == {
        "result": "INCOMPLETE",
        "steps_s": {"ingest": 12.5, "dbt_qmlativ": 3.0, "publish": 1.5},
        "requests_sent": 41,
        "rows_read": 1050,
        "rows_added": 1050,
    }
    assert _parse_run("no summary")["result"] is None
