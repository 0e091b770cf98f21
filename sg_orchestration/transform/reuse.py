"""How much of a dbt step has to run: nothing, its tests, or a whole build.

Each step's clean build (every test passed) is recorded per district with a fingerprint of what it read:
the dbt project's files and, for each raw source the step reads, the district's last load that changed
that source (plus what else the step writes, e.g. the cutover dates). Then:
- `reuse`: the fingerprint is that of the last clean build and every relation still exists: nothing runs,
  no test re-runs on data it already passed on;
- `test`: only loads changed and every model of the step is a view in the warehouse: a view's SQL is all
  dbt writes, and it already shows the new data, so only the tests run (`dbt test`);
- `tables`: only loads changed and some models are tables (the SameGoal rules are): those are built again,
  the views and seeds kept (their SQL and files are the project's, unchanged), and every test runs;
- `build`: the project changed, a relation is gone, or no clean build is known.
A step that runs forgets its record first, so a build that fails half-way is never reused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

from sg_orchestration.catalog import Source
from sg_orchestration.paths import DBT_PROJECT_DIR

# Metadata of a dbt model reused rather than rebuilt: the run whose clean build it is.
REUSED = "reused from run"
# Metadata of a view whose definition was kept (only its tests ran): the run that created it.
VIEW_KEPT = "view kept from run"
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


def _parsed_marker():
    return DBT_PROJECT_DIR / "target" / "parsed_project_digest"


def _parsed_as() -> str:
    from importlib.metadata import version

    return f"{project_digest()} dbt-core {version('dbt-core')}"


def parse_is_current() -> bool:
    """The project's manifest was parsed from these very files, by this dbt: `sg-orch prepare` has nothing
    to do (and does not import dbt and Dagster to find out)."""
    marker = _parsed_marker()
    manifest = marker.with_name("manifest.json")
    return manifest.is_file() and marker.is_file() and marker.read_text() == _parsed_as()


def mark_parsed() -> None:
    _parsed_marker().write_text(_parsed_as())


def fingerprint(
    con, district_id: str, sources: Iterable[Source], written: object = None, project: str | None = None
) -> str:
    """The step's inputs: the project's files (`project`, its digest when the caller has it), per source
    the district's last load that changed it (a snapshot's every applied load; a document source's loads
    that added rows), and `written`."""
    sources = sorted(sources, key=lambda s: s.name)
    names = [s.name for s in sources]
    snapshots = [s.name for s in sources if s.mode == "snapshot"]
    loads = con.execute(
        "select source, max(load_id) from ops.loads where district_id = ? and status = 'loaded' "
        "and list_contains(?, source) and (rows_added > 0 or list_contains(?, source)) "
        "group by source order by source",
        [district_id, names, snapshots],
    ).fetchall()
    payload = json.dumps([project or project_digest(), names, loads, written], default=str, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class Plan:
    action: str  # reuse | test | tables | build
    built_by: str | None = None  # the run of the last clean build, for `reuse`, `test` and `tables`
    tables: tuple[str, ...] = ()  # for `tables`: the models (`schema.name`) to build again


def plan(
    con,
    district_id: str,
    step: str,
    current: str,
    relations: Iterable[str],
    models: Iterable[str] = (),
    project: str | None = None,
) -> Plan:
    """`relations`: every `schema.name` the step builds; `models`: those of them that are models (not
    seeds). What the warehouse holds decides, not the manifest loaded at start: a relation dropped by hand
    is built again, and only models that are all views there can be just tested."""
    row = con.execute(
        "select fingerprint, project_digest, run_id from ops.dbt_builds where district_id = ? and step = ?",
        [district_id, step],
    ).fetchone()
    if not row:
        return Plan("build")
    wanted = sorted(set(relations))
    found, tables = con.execute(
        "select count(*), list(qualified order by qualified) filter (where table_type <> 'VIEW' "
        "and list_contains(?, qualified)) "
        "from (select table_schema || '.' || table_name as qualified, table_type from information_schema.tables) "
        "where list_contains(?, qualified)",
        [sorted(set(models)), wanted],
    ).fetchone()
    if found != len(wanted):
        return Plan("build")
    fingerprint, built_project, run_id = row
    if fingerprint == current:
        return Plan("reuse", run_id)
    if built_project == (project or project_digest()):
        return Plan("tables", run_id, tuple(tables)) if tables else Plan("test", run_id)
    return Plan("build")


def forget(con, district_id: str, step: str) -> None:
    con.execute("delete from ops.dbt_builds where district_id = ? and step = ?", [district_id, step])


def record_clean_build(
    con, district_id: str, step: str, current: str, run_id: str, project: str | None = None
) -> None:
    forget(con, district_id, step)
    con.execute(
        "insert into ops.dbt_builds values (?, ?, ?, ?, ?, now())",
        [district_id, step, current, project or project_digest(), run_id],
    )
