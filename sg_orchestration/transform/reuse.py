"""When a dbt step has nothing to build: reuse its last clean build instead of building and testing again.

Every model is a view, so a build writes only SQL; what the views show changes only when a load changes
raw. A step's fingerprint covers the dbt project's files and, for each raw source the step reads, the
district's last load that changed that source (plus anything else the step writes, e.g. the cutover
dates). When it equals the fingerprint of the step's last clean build for the district (every test
passed) and every relation the step builds still exists, the step is reused: nothing is rebuilt and no
test re-runs on data they already passed on. A build that starts forgets the fingerprint first, so a
build that fails half-way is never reused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from sg_orchestration.catalog import Source
from sg_orchestration.paths import DBT_PROJECT_DIR

# Metadata of a dbt model reused rather than rebuilt: the run whose clean build it is.
REUSED = "reused from run"
PROJECT_PARTS = ("dbt_project.yml", "models", "macros", "seeds", "tests")


def project_digest() -> str:
    """The dbt project's own files (not its target/ or logs/): any edit rebuilds every step."""
    digest = hashlib.sha256()
    for part in PROJECT_PARTS:
        root = DBT_PROJECT_DIR / part
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            digest.update(str(path.relative_to(DBT_PROJECT_DIR)).encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()


def fingerprint(con, district_id: str, sources: Iterable[Source], written: object = None) -> str:
    """The step's inputs: the project's files, per source the district's last load that changed it (a
    snapshot's every applied load; a document source's loads that added rows), and `written`."""
    sources = sorted(sources, key=lambda s: s.name)
    names = [s.name for s in sources]
    snapshots = [s.name for s in sources if s.mode == "snapshot"]
    loads = con.execute(
        "select source, max(load_id) from ops.loads where district_id = ? and status = 'loaded' "
        "and list_contains(?, source) and (rows_added > 0 or list_contains(?, source)) "
        "group by source order by source",
        [district_id, names, snapshots],
    ).fetchall()
    payload = json.dumps([project_digest(), names, loads, written], default=str, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def relations_exist(con, relations: Iterable[str]) -> bool:
    """Every `schema.name` still there (somebody may have dropped a view by hand)."""
    wanted = sorted(set(relations))
    found = con.execute(
        "select count(*) from information_schema.tables "
        "where list_contains(?, table_schema || '.' || table_name)",
        [wanted],
    ).fetchone()[0]
    return found == len(wanted)


def reusable(con, district_id: str, step: str, current: str, relations: Iterable[str]) -> str | None:
    """The run id of the step's last clean build, when it can be reused for `current`; else None."""
    row = con.execute(
        "select run_id from ops.dbt_builds where district_id = ? and step = ? and fingerprint = ?",
        [district_id, step, current],
    ).fetchone()
    return (row[0] or "unknown") if row and relations_exist(con, relations) else None


def forget(con, district_id: str, step: str) -> None:
    con.execute("delete from ops.dbt_builds where district_id = ? and step = ?", [district_id, step])


def record_clean_build(con, district_id: str, step: str, current: str, run_id: str) -> None:
    forget(con, district_id, step)
    con.execute("insert into ops.dbt_builds values (?, ?, ?, ?, now())", [district_id, step, current, run_id])
