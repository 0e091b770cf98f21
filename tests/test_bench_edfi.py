"""`sg-orch bench`'s `edfi` group (issue 8 item 17) end to end at a tiny size: the transform against
earthmover, the send against lightbeam, the night against earthmover + lightbeam. No timing is asserted:
the figures are for reading, on the machine at hand."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from sg_orchestration import bench_edfi
from sg_orchestration.bench import LIGHTBEAM_VENV_ENV, _bench_venv, main


@pytest.fixture(scope="module")
def tools() -> None:
    """lightbeam and earthmover, each in the bench's own virtual environment (cached under `.sg/bench/`):
    the test is skipped where they cannot be installed (no package index)."""
    try:
        _bench_venv("lightbeam", LIGHTBEAM_VENV_ENV)
        _bench_venv("earthmover", bench_edfi.EARTHMOVER_VENV_ENV)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"lightbeam or earthmover could not be installed: {exc}")


@pytest.mark.timeout(300)
def test_edfi_group_compares_with_earthmover_and_lightbeam(tools, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(bench_edfi.ROWS_ENV, "2000")
    monkeypatch.setenv(bench_edfi.PAYLOADS_ENV, "300")
    monkeypatch.setenv(bench_edfi.STUDENTS_ENV, "50")
    assert main(sizes=[], seed=1, out=tmp_path, keep=False, only="edfi") == 0

    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["groups"] == ["edfi"] and not report["failures"]
    edfi = report["edfi"]

    # (a) the same payloads from the same files, both ways
    t = edfi["transform"]
    assert t["rows"] == 2000 and t["ours"]["rows"] == t["earthmover"]["rows"] == 2000
    assert t["compared"]["same_payloads"], t["compared"]
    assert 0 < t["compared"]["ours"] == t["compared"]["earthmover"] == t["ours"]["payloads"]
    for side in (t["ours"], t["earthmover"]):
        assert side["wall_s"] > 0 and side["peak_mib"] > 0
    assert t["speedup"] > 0 and isinstance(t["pass"], bool)

    # (b) every payload arrived at the stub from each client
    s = edfi["send"]
    assert s["rows"] == 300 and s["arrived"] == {"engine": 300, "lightbeam": 300}
    assert s["us_per_record"]["engine"] > 0 and s["us_per_record"]["lightbeam"] > 0
    assert s["ratio"] > 0 and isinstance(s["pass"], bool)

    # (c) ours deletes the withdrawn students' records; lightbeam leaves them (and the changed ones' old
    # records) in its ODS
    n = edfi["nightly"]
    assert n["students"] == 50 and n["withdrawn_students"] >= 1 and n["changed_rows"] >= 1
    ours, theirs = n["held"]["ours"], n["held"]["lightbeam"]
    assert ours["withdrawn_records"] == 0 and ours["stale_records"] == 0 and ours["missing_records"] == 0
    assert theirs["withdrawn_records"] > 0 and theirs["stale_records"] > 0 and theirs["missing_records"] == 0
    assert n["night"]["ours"]["edfi_writes"].get("DELETE", 0) >= 1
    assert "DELETE" not in n["night"]["lightbeam"]["edfi_writes"]
    assert n["night"]["ours"]["wall_s"] > 0 and n["night"]["lightbeam"]["wall_s"] > 0

    md = (tmp_path / "bench.md").read_text()
    for heading in (
        "Ed-Fi transform (issue 8 item 17a)",
        "Ed-Fi send (item 17b)",
        "Ed-Fi nightly (item 17c)",
    ):
        assert heading in md
    assert "`earthmover run`" in md and "`lightbeam send`" in md and "withdrawn students' records left" in md
    assert not (tmp_path / "work").exists()
