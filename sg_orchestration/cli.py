"""`sg-orch`: the command line of sg_orchestration."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date
from pathlib import Path


def _generate(args: argparse.Namespace) -> int:
    from sg_orchestration.generate import generate_district, next_day

    if args.next_day:
        if args.students is not None or args.as_of is not None:
            print(
                "sg-orch generate: --next-day takes no --students or --as-of: the folder has them",
                file=sys.stderr,
            )
            return 2
        manifest = next_day(Path(args.out), changed_share=args.changed_share, seed=args.seed)
        day = manifest["next_day"]
        changes = ", ".join(f"{count:,} {kind.replace('_', ' ')}" for kind, count in day["changes"].items())
        print(f"{args.out}: day {day['day']}, as of {day['as_of']}: {changes}")
        return 0
    manifest = generate_district(
        Path(args.out),
        students=2000 if args.students is None else args.students,
        seed=1 if args.seed is None else args.seed,
        as_of=args.as_of,
    )
    files = manifest.get("files", {})
    print(f"wrote {sum(files.values()):,} rows in {len(files)} files to {args.out}")
    return 0


def _sandbox(args: argparse.Namespace) -> int:
    from sg_orchestration import sandbox
    from sg_orchestration.sandbox.data import InputsError

    try:
        return _sandbox_action(sandbox, args)
    except InputsError as exc:  # a folder not written by `sg-orch generate`: say what it needs
        print(f"sg-orch sandbox {args.action}: {exc}", file=sys.stderr)
        return 2


def _sandbox_action(sandbox, args: argparse.Namespace) -> int:
    if args.action == "up":
        state = sandbox.up(Path(args.inputs), Path(args.districts_out))
        for name, url in state["urls"].items():
            print(f"{name}: {url}")
        print(f"districts file: {args.districts_out} (credentials in {state['env_file']})")
    elif args.action == "down":
        print("sandbox stopped" if sandbox.down() else "no sandbox was running")
    else:  # serve: the foreground process that `up` starts
        sandbox.serve(Path(args.inputs), Path(args.districts_out))
    return 0


def _run(args: argparse.Namespace) -> int:
    from sg_orchestration.runner import run_district

    return run_district(
        Path(args.districts_file),
        args.district,
        dry_run=args.dry_run,
        accept_shrink=args.accept_shrink,
        confirm_deletes=args.confirm_deletes,
        wait=not args.no_wait,
        as_of=args.as_of,
    )


def _history(args: argparse.Namespace) -> int:
    from sg_orchestration.run_history import history

    print(history(args.district, args.limit))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from sg_orchestration.runner import demo

    return demo(students=args.students, seed=args.seed)


def _dev(args: argparse.Namespace) -> int:
    from sg_orchestration.runner import dev

    return dev(students=args.students, seed=args.seed, port=args.port)


def _docs(args: argparse.Namespace) -> int:
    from sg_orchestration.docs import serve

    return serve(port=args.port)


def _bench(args: argparse.Namespace) -> int:
    from sg_orchestration.bench import main as bench_main

    return bench_main(sizes=args.students, seed=args.seed, out=Path(args.out), keep=args.keep, only=args.only)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sg-orch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write a synthetic district's inputs (SPEC §3)")
    g.add_argument("--out", required=True)
    g.add_argument("--students", type=int, default=None, help="default 2000")
    g.add_argument("--seed", type=int, default=None, help="default 1; with --next-day, the folder's")
    g.add_argument("--as-of", type=date.fromisoformat, default=None, help="the day the data is as of")
    g.add_argument(
        "--next-day",
        action="store_true",
        help="turn the district already in --out into the next day's export (new, edited, superseded and "
        "voided documents, withdrawn students)",
    )
    g.add_argument(
        "--changed-share",
        type=float,
        default=0.01,
        help="with --next-day: the share of SameGoal documents touched (default 0.01)",
    )
    g.set_defaults(func=_generate)

    s = sub.add_parser("sandbox", help="local servers that honour the source and target contracts")
    s.add_argument("action", choices=["up", "down", "serve"])
    s.add_argument(
        "--inputs",
        help="folder written by `sg-orch generate` (or any with its district.json: see the README)",
    )
    s.add_argument("--districts-out", help="districts file to write, pointing at the servers")
    s.set_defaults(func=_sandbox)

    r = sub.add_parser("run", help="materialize the nightly job for one district, in process")
    r.add_argument("--districts-file", required=True)
    r.add_argument("--district", required=True)
    r.add_argument("--dry-run", action="store_true", help="plan without writing to any target")
    r.add_argument(
        "--accept-shrink",
        metavar="SOURCES",
        help="apply held snapshots anyway: `all` or raw source names, comma-separated (e.g. campus__enrollments)",
    )
    r.add_argument(
        "--confirm-deletes",
        metavar="RESOURCES",
        help="send a guarded mass delete: `all` or target/resource names, comma-separated (e.g. qmlativ/disability)",
    )
    r.add_argument(
        "--no-wait", action="store_true", help="refuse at once when another run holds the warehouse"
    )
    r.add_argument(
        "--as-of",
        type=date.fromisoformat,
        default=None,
        metavar="YYYY-MM-DD",
        help="the day the date rules (e.g. Ed-Fi's current school year) stand for: reruns and backfills "
        "(default: today in the district's timezone; run tag sg/as_of in the UI)",
    )
    r.set_defaults(func=_run)

    h = sub.add_parser("history", help="the last runs recorded in ops.run_history")
    h.add_argument("--district", help="only this district's runs")
    h.add_argument("--limit", type=int, default=20)
    h.set_defaults(func=_history)

    for name, func, text in (
        ("demo", _demo, "the whole nightly job on a synthetic district"),
        ("dev", _dev, "the Dagster UI on the demo district"),
    ):
        d = sub.add_parser(name, help=text)
        d.add_argument("--students", type=int, default=2000)
        d.add_argument("--seed", type=int, default=1)
        if name == "dev":
            d.add_argument("--port", type=int, default=3000)
        d.set_defaults(func=func)

    p = sub.add_parser("prepare", help="parse the dbt project into the manifest the definitions load")
    p.set_defaults(func=_prepare)

    o = sub.add_parser("docs", help="generate dbt's documentation (from the analyst snapshot) and serve it")
    o.add_argument("--port", type=int, default=None, help="on 127.0.0.1 (default 8580)")
    o.set_defaults(func=_docs)

    b = sub.add_parser("bench", help="measure each stage on synthetic districts")
    b.add_argument("--students", type=int, nargs="+", default=[50, 10_000, 200_000])
    b.add_argument("--seed", type=int, default=7)
    b.add_argument("--out", default="bench-results")
    b.add_argument("--keep", action="store_true", default=None, help="keep the generated data and warehouses")
    b.add_argument(
        "--only",
        metavar="GROUPS",
        default=None,
        help="run only these groups, comma-separated: parts, nightly, transport, edfi, oneroster (default SG_BENCH_ONLY, else all)",
    )
    b.set_defaults(func=_bench)
    return parser


def _prepare(args) -> int:
    from sg_orchestration.transform.reuse import parse_is_current

    if not parse_is_current():
        from sg_orchestration.transform.dbt import prepare

        prepare()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if (
        args.command == "sandbox"
        and args.action in ("up", "serve")
        and not (args.inputs and args.districts_out)
    ):
        print("sg-orch sandbox up: --inputs and --districts-out are required", file=sys.stderr)
        return 2
    from sg_orchestration.config import ConfigError
    from sg_orchestration.warehouse import WarehouseBusy

    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except WarehouseBusy as exc:
        print(f"sg-orch: not started: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line for the operator; the traceback goes to a log file
        log = _write_traceback(exc)
        cause = " ".join(str(exc).split())[:300]
        print(f"sg-orch {args.command}: {type(exc).__name__}: {cause} (details: {log})", file=sys.stderr)
        return 1


def _write_traceback(exc: BaseException) -> Path:
    import traceback
    from datetime import datetime

    from sg_orchestration.paths import state_dir

    folder = state_dir() / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"sg-orch-{datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}.log"
    path.write_text("".join(traceback.format_exception(exc)))
    return path


def entry() -> None:
    """The `sg-orch` process: `main`, its exit handlers, its output flushed, and then the end, without the
    interpreter tearing down every module and object one by one (Dagster, dbt and a run's state: ~1 s of a
    no-change night measured on this machine). Every file and connection is closed by then; the warehouse
    is DuckDB's and safe at any point, as after a kill. A thread still at work is waited for, as ever."""
    code = main()
    import atexit
    import contextlib
    import threading

    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)  # the interpreter waits for them, as it always has
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
