"""`sg-orch docs`: dbt's documentation of the project, generated against the analyst snapshot (so it never
holds the warehouse a run writes) into the state folder, and served on 127.0.0.1."""

from __future__ import annotations

import functools
import http.server
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sg_orchestration.paths import analyst_snapshot_path, state_dir, warehouse_path

DOCS_PORT = 8580


def docs_dir() -> Path:
    return state_dir() / "dbt_docs"


def generate(target: Path | None = None) -> Path:
    """index.html, manifest.json and catalog.json in `target` (default `docs_dir()`). The catalog (tables and column types)
    is read from the snapshot through the profile's read-only `docs` target; a first snapshot is published
    when there is none yet."""
    from sg_orchestration.analyst import publish_snapshot
    from sg_orchestration.transform.dbt import invoke
    from sg_orchestration.warehouse import run_lock

    snapshot = analyst_snapshot_path()
    if not snapshot.exists():
        with run_lock("sg-orch docs (first analyst snapshot)"):
            publish_snapshot()
    if not snapshot.exists():  # no warehouse yet: the catalog would have nothing to read
        raise NoWarehouse(
            f"no warehouse at {warehouse_path()} yet: run a night first (`make demo` or `sg-orch run`)"
        )
    target = target or docs_dir()
    target.mkdir(parents=True, exist_ok=True)
    # The folder keeps its own parse between runs: the project's is for another profile target, which dbt
    # would not reuse.
    # dbt qualifies relations with the warehouse file's name: the snapshot is attached under that name.
    os.environ["SG_DOCS_DATABASE"] = warehouse_path().stem
    os.environ["SG_DOCS_SNAPSHOT_PATH"] = str(snapshot)
    invoke("docs", "generate", "--target", "docs", "--target-path", str(target), "--log-path", str(target))
    return target


class NoWarehouse(RuntimeError):
    pass


@contextmanager
def serving(folder: Path, port: int) -> Iterator[str]:
    """The folder over HTTP on 127.0.0.1 (port 0: a free one) in a thread; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/"
        finally:
            server.shutdown()
            thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass


def serve(port: int | None = None) -> int:
    try:
        folder = generate()
    except NoWarehouse as exc:
        print(f"sg-orch docs: {exc}", file=sys.stderr)
        return 2
    with serving(folder, DOCS_PORT if port is None else port) as url:
        print(f"dbt docs: {url}  (generated in {folder}; Ctrl-C stops it)", flush=True)
        threading.Event().wait()  # until Ctrl-C (`sg-orch` exits 130 then)
    return 0
