"""The `oneroster` group of `sg-orch bench` (issue 9 point 9): the OneRoster export of a generated district
of SG_BENCH_ONEROSTER_STUDENTS (default 200,000) students, through the product's whole path.

A district with the PowerSchool export only and the OneRoster target, delivered to a directory: one whole
`sg-orch run` process cold (its PowerSchool ingest included, reported apart), then again with nothing
changed. Per stage, from the run's own stage lines: `dbt_oneroster` (the marts), `validate` (the bundle
written and the gate run on it), `publish` (zip and delivery); their sum is "marts + gate + zip". Rows: the
records of the bundle. Peak memory: the process tree's, sampled.

Targets (reported PASS/MISS, never enforced): marts + gate + zip under 60 s on this 2-core machine, peak
memory under 1.5 GiB, and the no-change rerun's marts + gate + zip under 10% of the cold one's with
nothing delivered.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

STUDENTS_ENV = "SG_BENCH_ONEROSTER_STUDENTS"
STUDENTS = 200_000
EXPORT_STAGES = ("dbt_oneroster", "validate", "publish")
MAX_EXPORT_S = 60.0
MAX_PEAK_MIB = 1536.0
NO_CHANGE_MAX_SHARE = 0.10
TARGET_TEXT = (
    f"marts + gate + zip under {MAX_EXPORT_S:.0f} s, peak memory under {MAX_PEAK_MIB / 1024:.1f} GiB, a "
    f"no-change rerun under {NO_CHANGE_MAX_SHARE:.0%} of that with nothing delivered"
)
DISTRICT = "or-bench"


def run(out: Path, seed: int, keep: bool, failures: list[str]) -> dict | None:
    from sg_orchestration.bench import StageFailed

    students = int(os.environ.get(STUDENTS_ENV, STUDENTS))
    work = out / "work" / "oneroster"
    shutil.rmtree(work, ignore_errors=True)
    try:
        return _bench(work, students, seed)
    except (StageFailed, subprocess.CalledProcessError, OSError) as exc:
        failures.append(f"oneroster: {exc}")
        print(f"bench: oneroster: {exc}", file=sys.stderr, flush=True)
        return None
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def _bench(work: Path, students: int, seed: int) -> dict:
    from sg_orchestration.bench import _night_env, _sg_orch

    inputs = work / "inputs"
    print(f"bench: oneroster: generating {students:,} students ...", flush=True)
    subprocess.run(
        [*_sg_orch(), "generate", "--out", str(inputs), "--students", str(students), "--seed", str(seed)],
        check=True,
        capture_output=True,
    )
    districts_file = work / "districts.yaml"
    district = {
        "id": DISTRICT,
        "name": "OneRoster bench district (synthetic)",
        "state": "TX",
        "timezone": "America/Chicago",
        "inputs": {"powerschool_dir": str(inputs / "powerschool")},
        "oneroster": {"delivery": {"directory": {"path": str(work / "outbox")}}},
    }
    districts_file.write_text(yaml.safe_dump({"districts": [district]}, sort_keys=False))
    env = _night_env(work, districts_file)
    cold = _run("cold", work, env)
    again = _run("no change", work, env)
    export = sum(cold["steps_s"].get(s, 0.0) for s in EXPORT_STAGES)
    rerun = sum(again["steps_s"].get(s, 0.0) for s in EXPORT_STAGES)
    share = rerun / export if export else 0.0
    report = {
        "students": students,
        "target": TARGET_TEXT,
        "cold": cold,
        "no_change": again,
        "export_s": round(export, 2),
        "rows_per_s": round(cold["bundle_records"] / export) if export else 0,
        "no_change_export_s": round(rerun, 2),
        "no_change_share": round(share, 4),
        "pass_time": export < MAX_EXPORT_S,
        "pass_memory": cold["peak_mib"] < MAX_PEAK_MIB,
        "pass_no_change": share < NO_CHANGE_MAX_SHARE and not again["delivered"],
    }
    return report


def _run(label: str, work: Path, env: dict) -> dict:
    from sg_orchestration.bench import StageFailed, _parse_run, _sg_orch, _timed_process

    output = work / f"run-{label.replace(' ', '-')}.out"
    cmd = [*_sg_orch(), "run", "--districts-file", env["SG_DISTRICTS_FILE"], "--district", DISTRICT]
    print(f"bench: oneroster: {label} ...", flush=True)
    wall, code, memory = _timed_process(cmd, env, output)
    text = output.read_text()
    parsed = _parse_run(text)
    if parsed["result"] is None or not parsed["result"].startswith("OK"):
        tail = "\n".join(text.splitlines()[-30:])
        raise StageFailed(f"oneroster {label}: `sg-orch run` result {parsed['result']} ({output}):\n{tail}")
    records = sum(int(n.replace(",", "")) for n in re.findall(r"\b\w+ records ([\d,]+)", text))
    delivered = re.search(r"^\s+bundle\s+\d+\s+([\d,]+)", text, re.M)  # the `updated` column
    result = {
        "wall_s": round(wall, 2),
        "steps_s": parsed["steps_s"],
        "bundle_records": records,
        "delivered": bool(delivered and int(delivered.group(1).replace(",", ""))),
        "peak_mib": round(memory.peak_kib / 1024, 1),
        "exit": code,
    }
    steps = ", ".join(f"{k} {v:.1f} s" for k, v in parsed["steps_s"].items())
    print(
        f"bench: oneroster: {label}: {wall:.1f} s ({steps}), peak {result['peak_mib']:,.0f} MiB", flush=True
    )
    return result


def render(report: dict | None) -> list[str]:
    if not report:
        return []

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    cold, again = report["cold"], report["no_change"]
    stages = ", ".join(f"{s} {cold['steps_s'].get(s, 0.0):.1f} s" for s in EXPORT_STAGES)
    return [
        "",
        f"OneRoster export (issue 9 point 9), {report['students']:,} students: {report['target']}.",
        "",
        "| run | whole run s | ingest s | marts + gate + zip s | records | rows/s | peak MiB | delivered |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
        f"| cold | {cold['wall_s']} | {cold['steps_s'].get('ingest', 0.0)} | {report['export_s']} ({stages}) | "
        f"{cold['bundle_records']:,} | {report['rows_per_s']:,} | {cold['peak_mib']:,.0f} | "
        f"{'yes' if cold['delivered'] else 'no'} |",
        f"| no change | {again['wall_s']} | {again['steps_s'].get('ingest', 0.0)} | "
        f"{report['no_change_export_s']} | {again['bundle_records']:,} |  | {again['peak_mib']:,.0f} | "
        f"{'yes' if again['delivered'] else 'no'} |",
        "",
        f"- marts + gate + zip under {MAX_EXPORT_S:.0f} s: {report['export_s']} s, {verdict(report['pass_time'])}",
        f"- peak memory under {MAX_PEAK_MIB:,.0f} MiB: {cold['peak_mib']:,.0f} MiB, "
        f"{verdict(report['pass_memory'])}",
        f"- no-change rerun under {NO_CHANGE_MAX_SHARE:.0%} of it, nothing delivered: "
        f"{report['no_change_share']:.1%}, {verdict(report['pass_no_change'])}",
    ]
