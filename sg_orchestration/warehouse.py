"""The DuckDB warehouse: short-lived connections and the `raw` / `ops` tables every layer shares.

DuckDB allows one writing process per file, so every asset that writes here runs in the Dagster pool
`WAREHOUSE_POOL` (limit 1, see dagster.yaml) and holds its connection only while it works.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

import duckdb

from sg_orchestration.catalog import SOURCES, Source
from sg_orchestration.paths import warehouse_path

WAREHOUSE_POOL = "duckdb_warehouse"

OPS_DDL = """
create schema if not exists raw;
create schema if not exists ops;
create sequence if not exists ops.load_id_seq start 1;
create table if not exists ops.loads (
    load_id bigint primary key,
    district_id varchar not null,
    source varchar not null,
    origin varchar not null,
    content_digest varchar,
    started_at timestamptz not null,
    finished_at timestamptz,
    rows_read bigint,
    rows_added bigint,
    rows_with_errors bigint,
    status varchar not null            -- loaded | unchanged | held | failed
);
create table if not exists ops.cursors (
    district_id varchar not null,
    source varchar not null,
    cursor_value varchar not null,
    updated_at timestamptz not null,
    primary key (district_id, source)
);
create table if not exists ops.samegoal_cutover (
    district_id varchar not null,
    program varchar not null,
    cutover_date date,                 -- null: the program is not integrated at all
    primary key (district_id, program)
);
create table if not exists ops.error_log (
    district_id varchar not null,
    stage varchar not null,            -- ingest | validate | publish
    target varchar not null,           -- raw table or target resource
    record_key_hash varchar not null,  -- md5 of the record's natural key: never the key itself
    field varchar,
    value varchar,
    cause varchar not null,
    fix varchar not null,
    location varchar,                  -- file and row, or request
    load_id bigint,
    first_seen_at timestamptz not null,
    last_seen_at timestamptz not null,
    resolved_at timestamptz
);
create table if not exists ops.dbt_builds (
    district_id varchar not null,
    step varchar not null,             -- the dbt step (dbt_<target>)
    fingerprint varchar not null,      -- of the dbt project and the district's loads the step reads
    project_digest varchar,            -- of the dbt project alone
    run_id varchar,
    built_at timestamptz not null,
    primary key (district_id, step)
);
alter table ops.dbt_builds add column if not exists project_digest varchar;  -- a warehouse of 2026-12-01
create table if not exists ops.validated_marts (
    district_id varchar not null,
    mart varchar not null,
    digest varchar not null,           -- of the rules and the district's code tables it was validated by
    validated_at timestamptz not null,
    primary key (district_id, mart)
);
create table if not exists ops.run_history (  -- one row per Dagster run: counts and causes, no student data
    run_id varchar primary key,
    district_id varchar,
    job varchar not null,
    started_at timestamptz,
    finished_at timestamptz,
    status varchar not null,           -- success | failure | canceled
    dry_run boolean not null,          -- sg/dry_run: planned, nothing sent (the counts are then 0)
    created bigint not null,           -- these five: summed over the targets of `target_counts`
    updated bigint not null,
    deleted bigint not null,
    failed bigint not null,
    held bigint not null,
    target_counts json not null,       -- {publish asset: {created, updated, deleted, failed, held}}
    errors_opened bigint not null,     -- ops.error_log rows of the district first seen during the run
    errors_resolved bigint not null,   -- ... and resolved during the run
    failed_step varchar,
    cause varchar,                     -- one line: a dagster.Failure's description or the error's first line
    recorded_at timestamptz not null
);
create table if not exists ops.validated_rows (  -- the mart rows that validation has judged
    district_id varchar not null,
    mart varchar not null,
    row_hash ubigint not null
);
"""

LOAD_COLUMNS = (
    ("_extra", "json"),
    ("_district_id", "varchar"),
    ("_load_id", "bigint"),
    ("_loaded_at", "timestamptz"),
    ("_origin", "varchar"),
    ("_source_row", "bigint"),
    ("_row_hash", "varchar"),
    ("_key_hash", "varchar"),
    ("_error", "varchar"),
)


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def literal(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def text_rows(names: Sequence[str], columns: Sequence[Sequence[str | None]]) -> tuple[str, dict]:
    """Rows of text, given column by column, as a SQL subquery with columns `names` and its named
    parameters (one list each): into DuckDB without Arrow or pandas (the first Arrow table a process
    builds imports pandas, ~0.25 s of a publish run in a process of its own), and as fast."""
    selects = ", ".join(f"unnest($_col{i}::varchar[]) as {quote(n)}" for i, n in enumerate(names))
    return f"(select {selects})", {f"_col{i}": list(c) for i, c in enumerate(columns)}


def raw_table(source: Source) -> str:
    return f"raw.{quote(source.name)}"


# A snapshot source's raw rows are stored once, by the load that first had them; a later load that no
# longer has a row sets its `_retired_load`. The current snapshot is the rows not retired.
RETIRED = "_retired_load"


def raw_table_ddl(source: Source) -> str:
    columns = [f"{quote(c)} varchar" for c in source.column_names]
    columns += [f"{name} {ctype}" for name, ctype in LOAD_COLUMNS]
    if source.mode == "snapshot":
        columns.append(f"{RETIRED} bigint")
    return f"create table if not exists {raw_table(source)} ({', '.join(columns)})"


def _upgrade_snapshots(con: duckdb.DuckDBPyConnection) -> None:
    """A warehouse of 2026-12-02 or before appended each changed snapshot whole and read the latest load:
    its snapshot tables get `_retired_load`, set on the rows of every load but the latest applied one."""
    have = {
        name
        for (name,) in con.execute(
            "select table_name from information_schema.columns where table_schema = 'raw' and column_name = ?",
            [RETIRED],
        ).fetchall()
    }
    for source in SOURCES:
        if source.mode != "snapshot" or source.name in have:
            continue
        table = raw_table(source)
        con.execute(f"alter table {table} add column {RETIRED} bigint")
        con.execute(
            f"""
            update {table} r set {RETIRED} = l.latest
            from (select district_id, max(load_id) as latest from ops.loads
                  where source = {literal(source.name)} and status = 'loaded' group by district_id) l
            where r._district_id = l.district_id and r._load_id <> l.latest
            """
        )


_initialised: set[str] = set()  # warehouse files whose tables this process has created


def _ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """The `raw` and `ops` tables, created or upgraded unless the file says this very schema is in place
    (`ops.warehouse_schema`, the digest of the DDL, with every raw table still there): a process's first
    connection then costs two small queries instead of some forty statements (~60-90 ms)."""
    ddl = OPS_DDL + ";\n".join(raw_table_ddl(s) for s in SOURCES)
    digest = hashlib.sha256(f"{ddl}\0{RETIRED}".encode()).hexdigest()
    try:
        (held,) = con.execute("select max(digest) from ops.warehouse_schema").fetchone()
        (tables,) = con.execute(
            "select count(*) from duckdb_tables() where database_name = current_database() "
            "and schema_name = 'raw' and list_contains(?, table_name)",
            [[s.name for s in SOURCES]],
        ).fetchone()
        if held == digest and tables == len(SOURCES):
            return
    except duckdb.CatalogException:  # a new warehouse, or one from before the digest
        pass
    con.execute(ddl)
    _upgrade_snapshots(con)
    con.execute(
        "create table if not exists ops.warehouse_schema (digest varchar not null);"
        "delete from ops.warehouse_schema;"
        f"insert into ops.warehouse_schema values ('{digest}')"
    )


def _open(path: str, read_only: bool) -> duckdb.DuckDBPyConnection:
    """DuckDB refuses a second writing process; one started outside the Dagster pool (another instance, a
    tool) waits for the file instead of failing half-way, up to SG_WAREHOUSE_WAIT_S seconds."""
    deadline = time.monotonic() + float(os.environ.get("SG_WAREHOUSE_WAIT_S", "600"))
    pause = 0.2
    while True:
        try:
            return duckdb.connect(path, read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 2.0)


@contextmanager
def connect(read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    path = warehouse_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    con = _open(str(path), read_only)
    # Set, not passed as connect config: dbt may hold the same file open in this process, and DuckDB
    # refuses a second connection whose config differs. A bounded limit lets large loads spill to disk.
    con.execute(f"set memory_limit = '{os.environ.get('SG_DUCKDB_MEMORY_LIMIT', '1GB')}'")
    con.execute("set preserve_insertion_order = false")
    try:
        if not read_only and str(path) not in _initialised:
            _ensure_schema(con)
            _initialised.add(str(path))
        yield con
    finally:
        con.close()


class WarehouseBusy(RuntimeError):
    """Another run holds the warehouse; the message names it."""


@contextmanager
def run_lock(owner: str, wait: bool = True, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """One run at a time per warehouse file (`<warehouse>.run.lock`, released by the OS if the holder dies).

    A second run waits for the first (telling `on_wait` who holds it) or, with `wait=False`, is refused at
    once with `WarehouseBusy` naming the running one: it never starts and then fails half-way.
    """
    path = warehouse_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + ".run.lock")
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = _describe_holder(handle.read())
            message = f"the warehouse {path} is in use by {holder}"
            if not wait:
                raise WarehouseBusy(message) from None
            if on_wait:
                on_wait(f"{message}; waiting for it to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"owner": owner, "pid": os.getpid(), "since": datetime.now(UTC).isoformat()}))
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def _describe_holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"{info['owner']} (pid {info['pid']}, since {info['since'][:19]}Z)"
    except (ValueError, KeyError, TypeError):
        return "another run"
