"""`sg-orch bench`: wall time, rows/s and peak memory of each pipeline stage on synthetic districts.

Stages, for each district size: `generate` the inputs; `ingest` every catalog source into a fresh DuckDB
warehouse (SameGoal and Qmlativ over the sandbox APIs, real HTTP; the rest from files); `ingest
(unchanged)`, the same data again, which must add nothing; `dbt` build of the staging models.

Each stage runs in a child process of its own (`python -m sg_orchestration.bench stage ...`), so its peak
memory is that process's own high-water RSS (VmHWM), not that of everything before it. The sandbox
servers run in this (parent) process, so their memory is not charged to ingest.

Wall time is the stage's work, timed inside the child: interpreter start and imports (a few seconds of
dagster, pandera and dbt) are left out, and kept in bench.json as `process_s`.

Results: a table on stdout, `<out>/bench.md` and `<out>/bench.json`. Work files go to `<out>/work/` and
are deleted after each size unless `keep` (or SG_BENCH_KEEP=1). SG_BENCH_PROFILE=1 also writes a cProfile
file per stage to `<out>/profiles/` (read it with `python -m pstats`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from sg_orchestration.paths import DBT_PROJECT_DIR, PROJECT_ROOT

# The goal of the performance issue: ingest + dbt staging of this many students, in this time and memory.
TARGET_STUDENTS = 200_000
TARGET_WALL_S = 120.0
TARGET_PEAK_MIB = 2048.0
TARGET_TEXT = "ingest + dbt staging of a 200,000-student district in under 2 minutes, peak memory under 2 GiB"
UNCHANGED = "ingest (unchanged)"


class StageFailed(RuntimeError):
    pass


# --- the parent: runs each stage in a child and measures it -----------------------------------------------
def main(sizes: list[int], seed: int, out: Path, keep: bool | None = None) -> int:
    """Benchmark each size; print the table, write bench.json and bench.md; 0 when every stage ran."""
    keep = os.environ.get("SG_BENCH_KEEP") == "1" if keep is None else keep
    profile = os.environ.get("SG_BENCH_PROFILE") == "1"
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    failures: list[str] = []
    for students in sizes:
        work = out / "work" / f"{students}-students"
        print(f"bench: {students:,} students (seed {seed}) in {work}", flush=True)
        try:
            _bench_size(students, seed, work, out / "profiles" if profile else None, results)
        except StageFailed as exc:
            failures.append(f"{students:,} students: {exc}")
            print(f"bench: {students:,} students: {exc}", file=sys.stderr, flush=True)
        finally:
            if not keep:
                shutil.rmtree(work, ignore_errors=True)
    if not keep and (out / "work").is_dir() and not any((out / "work").iterdir()):
        (out / "work").rmdir()

    summary = [_summary(students, results) for students in sizes]
    report = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "target": {
            "text": TARGET_TEXT,
            "students": TARGET_STUDENTS,
            "wall_s": TARGET_WALL_S,
            "peak_mib": TARGET_PEAK_MIB,
        },
        "results": results,
        "summary": [s for s in summary if s],
        "failures": failures,
    }
    table = render(report)
    print(table)
    (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "bench.md").write_text(table + "\n")
    print(f"bench: wrote {out / 'bench.json'} and {out / 'bench.md'}")
    return 1 if failures else 0


def _bench_size(students: int, seed: int, work: Path, profiles: Path | None, results: list[dict]) -> None:
    """Appends each stage's result as it completes, so a failed stage keeps the ones before it."""
    from sg_orchestration.sandbox import Sandbox

    shutil.rmtree(work, ignore_errors=True)  # a fresh warehouse: a leftover one would make ingest a no-op
    work.mkdir(parents=True)
    env = {
        **os.environ,
        "SG_WAREHOUSE_PATH": str(work / "warehouse.duckdb"),
        "SG_STATE_DIR": str(work / "state"),
        "SG_DISTRICTS_FILE": str(work / "districts.yaml"),
    }
    results.append(_run_stage("generate", "generate", students, seed, work, env, profiles))
    with Sandbox(work / "inputs") as sandbox:
        sandbox.write_districts_file(work / "districts.yaml")
        env.update(sandbox.credentials)
        first = _run_stage("ingest", "ingest", students, seed, work, env, profiles)
        results.append(first)
        again = _run_stage("ingest", UNCHANGED, students, seed, work, env, profiles)
    # The second ingest is offered the same rows as the first; most are skipped by digest without being
    # parsed, so its throughput is over the rows offered, and `rows_read` says how many were parsed.
    again["rows"] = first["rows"]
    again["rows_per_s"] = _rate(again["rows"], again["wall_s"])
    results.append(again)
    results.append(_run_stage("dbt", "dbt", students, seed, work, env, profiles))


def _run_stage(
    stage: str, label: str, students: int, seed: int, work: Path, env: dict, profiles: Path | None
) -> dict:
    result_file = work / f"{label.replace(' ', '-')}.result.json"
    result_file.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "sg_orchestration.bench", "stage", stage, "--work", str(work)]
    cmd += ["--students", str(students), "--seed", str(seed), "--result", str(result_file)]
    if profiles:
        profiles.mkdir(parents=True, exist_ok=True)
        cmd += ["--profile", str(profiles / f"{students}-{label.replace(' ', '-')}.prof")]
    print(f"bench: {students:,} students: {label} ...", flush=True)
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=PROJECT_ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    process_s = time.perf_counter() - started
    if proc.returncode != 0 or not result_file.exists():
        raise StageFailed(f"stage {label!r} failed (exit {proc.returncode}); see its output above")
    result = json.loads(result_file.read_text())
    result.update(
        students=students,
        stage=label,
        # Linux reports KiB. wait4's max RSS is only a fallback: Linux carries the parent's high-water mark
        # (this process, holding the sandbox's data) over fork+exec into the child's, see _peak_kib.
        peak_mib=round((result.pop("peak_kib", None) or usage.ru_maxrss) / 1024, 1),
        process_s=round(process_s, 2),
        rows_per_s=_rate(result["rows"], result["wall_s"]),
    )
    added = f" ({result['rows_added']:,} added)" if "rows_added" in result else ""
    print(
        f"bench: {students:,} students: {label}: {result['wall_s']:.1f} s, {result['rows']:,} rows read"
        f"{added}, peak {result['peak_mib']:,.0f} MiB",
        flush=True,
    )
    return result


def _rate(rows: int, seconds: float) -> int:
    return round(rows / seconds) if seconds > 0 else 0


def _summary(students: int, results: list[dict]) -> dict | None:
    """The issue's target for one size: ingest (first load) + dbt, time added up, memory the larger peak."""
    stages = {r["stage"]: r for r in results if r["students"] == students}
    if "ingest" not in stages or "dbt" not in stages:
        return None
    wall = stages["ingest"]["wall_s"] + stages["dbt"]["wall_s"]
    peak = max(stages["ingest"]["peak_mib"], stages["dbt"]["peak_mib"])
    judged = students >= TARGET_STUDENTS
    return {
        "students": students,
        "ingest_dbt_wall_s": round(wall, 2),
        "peak_mib": peak,
        "judged": judged,  # the target is stated for 200,000 students; smaller sizes are for comparison
        "pass": judged and wall < TARGET_WALL_S and peak < TARGET_PEAK_MIB,
    }


def render(report: dict) -> str:
    lines = [
        f"Target: {TARGET_TEXT}.",
        f"Machine: {report['machine']['cpus']} CPUs, Python {report['machine']['python']}; seed {report['seed']}.",
        "",
        "| students | stage | wall s | rows | rows/s | rows added | peak MiB | target |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    summaries = {s["students"]: s for s in report["summary"]}
    for students in dict.fromkeys(r["students"] for r in report["results"]):
        for r in (r for r in report["results"] if r["students"] == students):
            added = f"{r['rows_added']:,}" if "rows_added" in r else ""
            lines.append(
                f"| {students:,} | {r['stage']} | {r['wall_s']:.1f} | {r['rows']:,} | {r['rows_per_s']:,} "
                f"| {added} | {r['peak_mib']:,.0f} | |"
            )
        s = summaries.get(students)
        if s:
            verdict = ("PASS" if s["pass"] else "MISS") if s["judged"] else "n/a (target is for 200,000)"
            lines.append(
                f"| {students:,} | **ingest + dbt** | **{s['ingest_dbt_wall_s']:.1f}** | | | | "
                f"**{s['peak_mib']:,.0f}** | {verdict} |"
            )
    for failure in report["failures"]:
        lines.append(f"\nFAILED: {failure}")
    return "\n".join(lines)


# --- the children: one stage each ----------------------------------------------------------------------------
def _stage_generate(work: Path, students: int, seed: int) -> dict:
    from sg_orchestration.generate import generate_district

    started = time.perf_counter()
    manifest = generate_district(work / "inputs", students=students, seed=seed)
    return {"wall_s": time.perf_counter() - started, "rows": sum(manifest["files"].values())}


def _stage_ingest(work: Path, students: int, seed: int) -> dict:
    from sg_orchestration.catalog import SOURCES
    from sg_orchestration.config import districts_file_path, load_districts
    from sg_orchestration.ingest.pipeline import ingest_source, transport

    district = load_districts(districts_file_path()).districts[0]
    sources: dict[str, dict] = {}
    started = time.perf_counter()
    for source in SOURCES:
        t = time.perf_counter()
        result, _failures = ingest_source(source, district)
        if result is None:
            continue  # not configured for this district
        sources[source.name] = {
            "transport": transport(source, district),
            "status": result.status,
            "s": round(time.perf_counter() - t, 3),
            "rows_read": result.rows_read,
            "rows_added": result.rows_added,
            # the stage's high-water mark so far: the source where it jumps is the one to look at
            "peak_mib_so_far": round((_peak_kib() or 0) / 1024),
        }
    wall = time.perf_counter() - started
    rows_read = sum(s["rows_read"] for s in sources.values())
    return {
        "wall_s": wall,
        "rows": rows_read,
        "rows_read": rows_read,
        "rows_added": sum(s["rows_added"] for s in sources.values()),
        "sources": sources,
    }


def _stage_dbt(work: Path, students: int, seed: int) -> dict:
    import duckdb
    from dbt.cli.main import dbtRunner

    from sg_orchestration.config import districts_file_path, load_districts
    from sg_orchestration.paths import warehouse_path
    from sg_orchestration.transform.dbt import prepare

    district_id = load_districts(districts_file_path()).districts[0].id
    prepare()  # the manifest Dagster needs; not part of a nightly run, so not timed
    args = ["build", "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)]
    # dbt's own files go to the work dir, so the bench never races a test or `dagster dev` in target/.
    args += ["--target-path", str(work / "dbt_target"), "--log-path", str(work / "dbt_logs")]
    args += ["--select", "path:models/staging", "--vars", json.dumps({"district_id": district_id}), "--quiet"]
    started = time.perf_counter()
    result = dbtRunner().invoke(args)
    wall = time.perf_counter() - started
    if not result.success:
        failed = [r.node.name for r in getattr(result.result, "results", []) if r.status in ("error", "fail")]
        raise SystemExit(f"dbt build failed: {result.exception or failed}")
    # dbt-duckdb keeps its connection open in this process: a second one must use the same (default) config.
    with duckdb.connect(str(warehouse_path())) as con:
        views = con.execute(
            "select table_name from information_schema.tables where table_schema = 'staging'"
        ).fetchall()
        rows = sum(con.execute(f'select count(*) from staging."{v}"').fetchone()[0] for (v,) in views)
    return {"wall_s": wall, "rows": rows, "models": len(views)}


STAGES = {"generate": _stage_generate, "ingest": _stage_ingest, "dbt": _stage_dbt}


def _stage_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m sg_orchestration.bench stage")
    parser.add_argument("stage", choices=sorted(STAGES))
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--students", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--profile", type=Path, help="write cProfile stats of the stage here")
    args = parser.parse_args(argv)
    run = STAGES[args.stage]
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        result = profiler.runcall(run, args.work, args.students, args.seed)
        profiler.dump_stats(args.profile)
    else:
        result = run(args.work, args.students, args.seed)
    args.result.write_text(json.dumps({**result, "peak_kib": _peak_kib()}))
    return 0


def _peak_kib() -> int | None:
    """This process's peak RSS since exec (VmHWM), or None where /proc is not there.

    Not getrusage's ru_maxrss: Linux starts a child's ru_maxrss at its parent's RSS at fork, so every stage
    would seem to need at least what the bench process (and the sandbox in it) holds.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


if __name__ == "__main__":
    if sys.argv[1:2] == ["stage"]:
        sys.exit(_stage_main(sys.argv[2:]))
    sys.exit("usage: sg-orch bench [--students N ...] [--seed S] [--out DIR]  (this module runs its stages)")
