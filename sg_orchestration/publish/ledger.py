"""The publish ledger (`ops.publish_ledger`): what each target holds, per district, resource and record.

Records are known by the md5 of their natural key (`key_hash`) and of their payload (`content_hash`);
the ledger never holds a payload, and holds a natural key (`lookup_key`, e.g. Qmlativ's SourceDocumentID,
the SameGoal document id) only while a create is `pending`: the next run must be able to look the record
up in the target even when it has been withdrawn from the desired state meanwhile. It is cleared once the
create is resolved. The plan is one SQL diff of the desired state against the ledger, so an unchanged run
costs one query and no per-record Python work.

`last_status`: `sent` (the target holds `content_hash` as `target_id`), `pending` (a create was about to
be sent and its outcome is unknown: resolved by a lookup at the start of the next run), `failed` (the
last request failed; a 4xx also sets `rejected_hash`, so the same content is not re-sent until it
changes), `deleted` (withdrawn from the target).
"""

from __future__ import annotations

import itertools
import json
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import duckdb

from sg_orchestration.warehouse import literal, text_rows

LEDGER_DDL = """
create schema if not exists ops;
create table if not exists ops.publish_ledger (
    district_id varchar not null,
    target varchar not null,
    resource varchar not null,
    key_hash varchar not null,         -- md5 of the record's natural key: never the key itself
    content_hash varchar,              -- what the target holds (for `pending`: what was being created)
    target_id varchar,
    etag varchar,
    last_status varchar not null,      -- sent | pending | failed | deleted
    last_action varchar,               -- create | update | delete | resolve | resync
    last_error varchar,                -- HTTP status and a short message: never record contents
    rejected_hash varchar,             -- content (or `withdrawn`) the target refused with a 4xx
    updated_at timestamptz not null,
    lookup_key varchar,                -- the natural key, only while `pending`: how the create is found
    primary key (district_id, target, resource, key_hash)
);
-- ledgers created before `lookup_key` existed
alter table ops.publish_ledger add column if not exists lookup_key varchar;
-- Per resource, the last publish that left nothing to do: the version of the desired state it published,
-- the ledger's state after it, and the counts a plan of the same desired state and ledger gives (`kept`).
create table if not exists ops.publish_settled (
    district_id varchar not null,
    target varchar not null,
    resource varchar not null,
    desired_version varchar not null,
    ledger_state varchar not null,
    counts varchar not null,           -- JSON: unchanged, skipped, held
    settled_at timestamptz not null,
    primary key (district_id, target, resource)
);
-- Per resource of a target that answers change queries (Ed-Fi's), the newest change version the last
-- resync that fixed everything read up to: the next one reads only what changed after it.
create table if not exists ops.publish_change_versions (
    district_id varchar not null,
    target varchar not null,
    resource varchar not null,
    change_version bigint not null,
    recorded_at timestamptz not null,
    primary key (district_id, target, resource)
);
"""

ACTIONS = ("create", "update", "delete")
WITHDRAWN = "withdrawn"  # the rejected_hash of a refused delete
PLAN_TABLE = "publish_plan"
LEDGER_COLUMNS = (
    "key_hash",
    "content_hash",
    "target_id",
    "etag",
    "last_status",
    "last_action",
    "last_error",
    "rejected_hash",
    "lookup_key",
)
DESIRED_COLUMNS = ("key_hash", "content_hash", "payload", "lookup_key")
DESIRED_PAGE_ROWS = 50_000  # desired-state tuples go into DuckDB this many at a time

Desired = str | duckdb.DuckDBPyRelation | Iterable[tuple[str, str, str | None, str | None]]


_ENSURED: weakref.WeakSet = weakref.WeakSet()  # connections the DDL has run on (each screen asks again)


def ensure_ledger(con: duckdb.DuckDBPyConnection) -> None:
    if con not in _ENSURED:
        con.execute(LEDGER_DDL)
        _ENSURED.add(con)


@contextmanager
def cursor(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """A cursor of `con` for another thread (a connection of its own to the same database, with its own
    temp tables and transactions), known to have the ledger when `con` has it: the DDL, run from two
    threads at once, could conflict in DuckDB's catalog."""
    cur = con.cursor()
    if con in _ENSURED:
        _ENSURED.add(cur)
    try:
        yield cur
    finally:
        cur.close()


def register_desired(con: duckdb.DuckDBPyConnection, desired: dict[str, Desired]) -> None:
    """Evaluate the desired state of each resource (name -> desired state) once into the temp table
    `publish_desired(resource, key_hash, content_hash, payload, lookup_key)`: the plan, the pending lookups
    and the resync read it several times, and a query over views is not cheap. Queries go in as one
    statement for all the resources.

    A desired state is a SQL query or table name, a relation of this connection, or (key_hash,
    content_hash, payload JSON, lookup_key) tuples. `lookup_key` is the record's natural key as the target
    knows it (what `Adapter.lookup` and `Adapter.natural_key` use); `key_hash` is usually its md5. A row
    whose payload is null is held back: what the target holds for it stays as it is.
    """
    names = ", ".join(DESIRED_COLUMNS)
    queries, tuples = [], {}
    for resource, state in desired.items():
        if isinstance(state, duckdb.DuckDBPyRelation):
            state = state.sql_query()
        if isinstance(state, str):
            query = state if " " in state.strip() else f"select {names} from {state}"
            queries.append(f"select {literal(resource)} as resource, {names} from ({query})")
        else:
            tuples[resource] = state
    if queries and not tuples:
        con.execute("create or replace temp table publish_desired as " + " union all ".join(queries))
    else:
        columns = ("resource", *DESIRED_COLUMNS)
        con.execute(
            "create or replace temp table publish_desired ("
            + ", ".join(f"{n} varchar" for n in columns)
            + ")"
        )
        if queries:
            con.execute(f"insert into publish_desired {' union all '.join(queries)}")
        for resource, state in tuples.items():  # into the table a page at a time, never all in Python
            rows = iter(state)
            while page := list(itertools.islice(rows, DESIRED_PAGE_ROWS)):
                query, params = text_rows(DESIRED_COLUMNS, list(zip(*page, strict=True)))
                con.execute(
                    f"insert into publish_desired select $r, {names} from {query}", {"r": resource, **params}
                )
    for resource, duplicates, keyless in con.execute(
        "select resource, count(*) - count(distinct key_hash), "
        "count(*) filter (payload is not null and lookup_key is null) from publish_desired group by resource"
    ).fetchall():
        if duplicates:
            raise ValueError(f"the desired state of {resource} has {duplicates} duplicate key hashes")
        if keyless:
            raise ValueError(f"the desired state of {resource} has {keyless} records without a lookup_key")


def plan(
    con: duckdb.DuckDBPyConnection,
    district_id: str,
    target: str,
    resources: list[str],
    retry_rejected: bool = False,
) -> dict[str, dict[str, int]]:
    """Diff `publish_desired` against the ledger into the temp table `publish_plan`; counts per resource
    and action.

    `publish_plan(seq, resource, key_hash, action, content_hash, payload, target_id, etag, held_hash,
    lookup_key)`: one row per request to send. The counts also give `unchanged`, `skipped` (content the
    target refused before, not re-sent until it changes, unless `retry_rejected`) and `pending` (creates of
    a killed run that could not be looked up yet: never re-created blindly).
    """
    # The diff without payloads first: an unchanged record (most of them, most nights) costs a narrow row,
    # and only the records to send get their payload, in the plan. `register_desired` has refused
    # duplicate key hashes.
    con.execute(
        f"""
        create or replace temp table _publish_diff as
        with ledger as (
            select * from ops.publish_ledger
            where district_id = $d and target = $t and list_contains($resources, resource)
        )
        select
            coalesce(d.resource, l.resource) as resource,
            coalesce(d.key_hash, l.key_hash) as key_hash,
            case
                when d.key_hash is null then 'delete'
                when l.target_id is null then 'create'
                else 'update'
            end as action,
            d.content_hash, l.target_id, l.etag, l.content_hash as held_hash, d.lookup_key,
            case
                when l.last_status = 'pending' then 'pending'
                when d.key_hash is not null and l.target_id is not null and l.content_hash = d.content_hash
                    then 'unchanged'
                when d.key_hash is not null and d.payload is null then 'held'
                when not $retry and l.rejected_hash is not distinct from coalesce(d.content_hash, '{WITHDRAWN}')
                    then 'skipped'
            end as hold
        from publish_desired d
        full join ledger l on l.resource = d.resource and l.key_hash = d.key_hash
        where d.key_hash is not null or l.target_id is not null or l.last_status = 'pending'
        """,
        {"d": district_id, "t": target, "resources": resources, "retry": retry_rejected},
    )
    counts = {r: dict.fromkeys((*ACTIONS, "unchanged", "skipped", "pending", "held"), 0) for r in resources}
    for resource, action, n in con.execute(
        "select resource, coalesce(hold, action), count(*) from _publish_diff group by all"
    ).fetchall():
        counts[resource][action] += n
    con.execute(
        f"""
        create or replace temp table {PLAN_TABLE} as
        select row_number() over () as seq, x.resource, x.key_hash, x.action, x.content_hash,
            d.payload::varchar as payload, x.target_id, x.etag, x.held_hash, x.lookup_key
        from _publish_diff x left join publish_desired d
            on x.action != 'delete' and d.resource = x.resource and d.key_hash = x.key_hash
        where x.hold is null
        """
    )
    return counts


# A digest of a resource's ledger rows, every column: any write to them changes it.
_STATE = """count(*) || ':' || coalesce(bit_xor(hash(key_hash, content_hash, target_id, etag, last_status,
        last_action, last_error, rejected_hash, lookup_key)), 0) || ':' || coalesce(max(updated_at)::varchar, '')"""
# `_STATE` per resource of the target, for the resources of the `text_rows` list `$_col0` (a resource
# without ledger rows has none: `coalesce(l.state, '0:0:')`, the `_STATE` of no rows).
_STATE_CTE = f"""state as (
    select resource, {_STATE} as state from ops.publish_ledger
    where district_id = $d and target = $t and list_contains($_col0, resource) group by resource
)"""
_LEDGER_STATE = "coalesce(l.state, '0:0:')"


def settle(con, district_id: str, target: str, settled: dict[str, tuple[str, dict]]) -> None:
    """Record, per resource (name -> (desired version, counts)), that publishing that version left it
    with nothing to do (`kept`): one statement for them all."""
    if not settled:
        return
    names = list(settled)
    versions = [v for v, _ in settled.values()]
    query, params = text_rows(
        ("resource", "version", "counts"), (names, versions, [json.dumps(c) for _, c in settled.values()])
    )
    con.execute(
        f"""
        insert or replace into ops.publish_settled
        with {_STATE_CTE}
        select $d, $t, v.resource, v.version, {_LEDGER_STATE}, v.counts, now()
        from {query} v left join state l on l.resource = v.resource
        """,
        {"d": district_id, "t": target, **params},
    )


def kept(con, district_id: str, target: str, versions: dict[str, str]) -> dict[str, dict]:
    """Per resource of `versions` (resource -> desired version), the plan's counts when the desired state
    is still that version and the ledger is as its last settled publish left it: the plan would send
    nothing, so it need not be made. A resource not settled so is left out. One query for them all."""
    if not versions:
        return {}
    query, params = text_rows(("resource", "version"), (list(versions), list(versions.values())))
    rows = con.execute(
        f"""
        with {_STATE_CTE}
        select s.resource, s.counts from ops.publish_settled s
        join {query} v on v.resource = s.resource and v.version = s.desired_version
        left join state l on l.resource = s.resource
        where s.district_id = $d and s.target = $t and s.ledger_state = {_LEDGER_STATE}
        """,
        {"d": district_id, "t": target, **params},
    ).fetchall()
    return {resource: json.loads(counts) for resource, counts in rows}


def held(con: duckdb.DuckDBPyConnection, district_id: str, target: str, resource: str) -> int:
    """How many records the ledger says the target holds for the resource (those with a target id)."""
    return con.execute(
        "select count(*) from ops.publish_ledger where district_id = ? and target = ? and resource = ? "
        "and target_id is not null",
        [district_id, target, resource],
    ).fetchall()[0][0]


def change_version(
    con: duckdb.DuckDBPyConnection, district_id: str, target: str, resource: str
) -> int | None:
    """The change version the resource's last complete resync read up to, or None (never, or forgotten)."""
    row = con.execute(
        "select change_version from ops.publish_change_versions where district_id = ? and target = ? "
        "and resource = ?",
        [district_id, target, resource],
    ).fetchone()
    return row[0] if row else None


def record_change_version(
    con: duckdb.DuckDBPyConnection, district_id: str, target: str, resource: str, version: int | None
) -> None:
    """Record (None: forget) the change version a resync of the resource read up to and fixed."""
    con.execute(
        "delete from ops.publish_change_versions where district_id = ? and target = ? and resource = ?",
        [district_id, target, resource],
    )
    if version is not None:
        con.execute(
            "insert into ops.publish_change_versions values (?, ?, ?, ?, now())",
            [district_id, target, resource, version],
        )


def write(con: duckdb.DuckDBPyConnection, district_id: str, target: str, rows: list[tuple]) -> None:
    """Upsert ledger rows (tuples in `LEDGER_COLUMNS` order, then the resource) in one transaction."""
    if not rows:
        return
    query, params = text_rows((*LEDGER_COLUMNS, "resource"), list(zip(*rows, strict=True)))
    names = ", ".join(LEDGER_COLUMNS)
    con.execute(
        f"""
        insert or replace into ops.publish_ledger (district_id, target, resource, {names}, updated_at)
        select $d, $t, resource, {names}, now() from {query}
        """,
        {"d": district_id, "t": target, **params},
    )


def forget(con: duckdb.DuckDBPyConnection, district_id: str, target: str, keys: list[tuple[str, str]]):
    """Drop ledger rows, (resource, key_hash) pairs: a pending create the target never applied is planned
    afresh as a create."""
    if keys:
        query, params = text_rows(("resource", "key_hash"), list(zip(*keys, strict=True)))
        con.execute(
            f"delete from ops.publish_ledger l using {query} k where l.district_id = $d and l.target = $t "
            "and l.resource = k.resource and l.key_hash = k.key_hash",
            {"d": district_id, "t": target, **params},
        ).fetchall()  # DuckDB refuses to register a table while a statement's result is unread
