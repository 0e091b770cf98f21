"""Load reader batches into `raw`: stamp every row, check its fields against the catalog, keep bad rows
with their reason, report them in `ops.error_log`, and add nothing when the same data comes again.

Two load modes (catalog `Source.mode`):
- `snapshot`: the file or API read is the whole current state. Unchanged content (same digest as the last
  load) adds nothing; changed content is appended whole under a new load id, and staging reads the latest.
- `documents`: every row is a document version; only rows never seen before (by row hash) are appended.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import duckdb

from sg_orchestration import error_log
from sg_orchestration.catalog import (
    FALSE_VALUES,
    TRUE_VALUES,
    TYPE_DESCRIPTIONS,
    TYPE_PATTERNS,
    Column,
    Source,
)
from sg_orchestration.ingest.readers import FIELDS, REJECT, ROW, Batches
from sg_orchestration.warehouse import LOAD_COLUMNS, literal, quote, raw_table, raw_table_ddl

STAGE = "_sg_stage"
SEP = "chr(31)"


@dataclass
class LoadResult:
    source: str
    load_id: int | None
    status: str  # loaded | unchanged
    rows_read: int = 0
    rows_added: int = 0
    rows_with_errors: int = 0
    errors_by_field: Counter = field(default_factory=Counter)  # "field: cause" -> rows, never values

    @property
    def metadata(self) -> dict:
        return {
            "status": self.status,
            "load_id": self.load_id or 0,
            "rows_read": self.rows_read,
            "rows_added": self.rows_added,
            "rows_with_errors": self.rows_with_errors,
        }


def field_problem_sql(column: Column) -> str:
    """SQL giving the cause when the column's raw text breaks its catalog type or is blank but required."""
    c = quote(column.name)
    checks = []
    if column.required:
        checks.append(f"when {c} is null then 'required but blank'")
    expected = literal(f"not {TYPE_DESCRIPTIONS[column.type]}")
    if column.type == "bool":
        allowed = ", ".join(literal(v) for v in TRUE_VALUES + FALSE_VALUES)
        checks.append(f"when {c} is not null and {c} not in ({allowed}) then {expected}")
    elif column.type in TYPE_PATTERNS:
        cast = {"date": "date", "datetime": "timestamptz", "int": "bigint", "decimal": "double"}[column.type]
        pattern = literal(TYPE_PATTERNS[column.type])
        checks.append(
            f"when {c} is not null and (not regexp_full_match({c}, {pattern}) "
            f"or try_cast({c} as {cast}) is null) then {expected}"
        )
    if not checks:
        return "null"
    return f"case {' '.join(checks)} end"


def _problems_sql(source: Source, encoding_errors: bool) -> str:
    """A list of {field, cause} per row: the row's shape first; its fields only when the shape is right."""
    items = []
    for column in source.columns:
        problem = field_problem_sql(column)
        if encoding_errors:
            problem = (
                f"coalesce({problem}, case when contains({quote(column.name)}, chr(65533)) "
                "then 'not valid UTF-8' end)"
            )
        if problem != "null":
            items.append(f"{{'field': {literal(column.name)}, 'cause': {problem}}}")
    fields = f"list_filter([{', '.join(items)}], lambda p: p.cause is not null)" if items else "[]"
    return f"case when {REJECT} is not null then [{{'field': null, 'cause': {REJECT}}}] else {fields} end"


def _hash_sql(columns: list[str]) -> str:
    parts = ", ".join(f"coalesce({quote(c)}, chr(0))" for c in columns)
    return f"md5(concat_ws({SEP}, {parts}))"


def _extra_sql(extras: list[str]) -> str:
    """Unknown columns (kept, ignored downstream) and the fields of a row whose shape was wrong, as JSON."""
    rejected = f"case when {FIELDS} is not null then json_object('{FIELDS}', json({FIELDS})) end"
    if not extras:
        return rejected
    pairs = ", ".join(f"{literal(e)}, {quote(e)}" for e in extras)
    return f"coalesce({rejected}, json_object({pairs}))"


def _stage(con: duckdb.DuckDBPyConnection, batches: Batches) -> int:
    con.execute(f"drop table if exists {STAGE}")
    rows = 0
    created = False
    for batch in batches.batches:
        con.register("_sg_batch", batch)
        if not created:
            con.execute(f"create temp table {STAGE} as select * from _sg_batch")
            created = True
        else:
            con.execute(f"insert into {STAGE} select * from _sg_batch")
        con.unregister("_sg_batch")
        rows += batch.num_rows
    return rows if created else 0


def load(
    con: duckdb.DuckDBPyConnection,
    source: Source,
    district_id: str,
    batches: Batches,
) -> LoadResult:
    con.execute(raw_table_ddl(source))
    table = raw_table(source)
    if (
        source.mode == "snapshot"
        and batches.digest is not None
        and _last_digest(con, source, district_id) == batches.digest
    ):
        return _record_unchanged(con, source, district_id, batches)

    rows_read = _stage(con, batches)
    if rows_read == 0:
        con.execute(f"create or replace temp table {STAGE} as select * from {table} where false")
    con.execute("begin")
    try:
        load_id = con.execute("select nextval('ops.load_id_seq')").fetchone()[0]
        con.execute(
            "insert into ops.loads (load_id, district_id, source, origin, started_at, status) "
            "values (?, ?, ?, ?, now(), 'running')",
            [load_id, district_id, source.name, batches.origin],
        )
        if rows_read == 0:
            return _finish(con, source, district_id, load_id, batches, 0, 0, Counter())
        columns = list(source.column_names)
        key_columns = list(source.key) or columns
        extras = batches.extra_columns
        con.execute(
            f"""
            create or replace temp table _sg_checked as
            select *,
                {_hash_sql(columns + [FIELDS])} as _row_hash,
                {_hash_sql(key_columns)} as _key_hash,
                {_problems_sql(source, batches.encoding_errors)} as _problems
            from {STAGE}
            """
        )
        if source.mode == "snapshot" and batches.digest is None:
            digest = con.execute(
                "select md5(coalesce(string_agg(_row_hash, ',' order by _row_hash), '')) from _sg_checked"
            ).fetchone()[0]
            if digest == _last_digest(con, source, district_id):
                con.execute("rollback")
                batches.digest = digest
                return _record_unchanged(con, source, district_id, batches, rows_read)
            batches.digest = digest
        new_rows = "true"
        if source.mode == "documents":
            new_rows = f"_row_hash not in (select _row_hash from {table} where _district_id = {literal(district_id)})"
        target_cols = ", ".join([quote(c) for c in columns] + [name for name, _ in LOAD_COLUMNS])
        con.execute(
            f"""
            insert into {table} ({target_cols})
            select {", ".join(quote(c) for c in columns)},
                {_extra_sql(extras)}, ?, ?, now(), ?, {ROW}, _row_hash, _key_hash,
                nullif(array_to_string(list_transform(_problems,
                    lambda p: coalesce(p.field || ': ', '') || p.cause), '; '), '')
            from _sg_checked
            where {new_rows}
            qualify row_number() over (partition by _row_hash order by {ROW}) = 1
            """,
            [district_id, load_id, batches.origin],
        )
        added = con.execute(f"select count(*) from {table} where _load_id = ?", [load_id]).fetchone()[0]
        errors = _log_errors(con, source, district_id, load_id, batches.origin)
        return _finish(con, source, district_id, load_id, batches, rows_read, added, errors)
    except BaseException:
        con.execute("rollback")
        raise


def _last_digest(con, source: Source, district_id: str) -> str | None:
    row = con.execute(
        "select content_digest from ops.loads where district_id = ? and source = ? and status = 'loaded' "
        "order by load_id desc limit 1",
        [district_id, source.name],
    ).fetchone()
    return row[0] if row else None


def _record_unchanged(
    con, source: Source, district_id: str, batches: Batches, rows_read: int = 0
) -> LoadResult:
    load_id = con.execute("select nextval('ops.load_id_seq')").fetchone()[0]
    con.execute(
        "insert into ops.loads values (?, ?, ?, ?, ?, now(), now(), ?, 0, 0, 'unchanged')",
        [load_id, district_id, source.name, batches.origin, batches.digest, rows_read],
    )
    return LoadResult(source.name, load_id, "unchanged", rows_read=rows_read)


def _log_errors(con, source: Source, district_id: str, load_id: int, origin: str) -> Counter:
    """One error-log row per bad field, naming the file, row and field; earlier ones gone now resolve."""
    file_name = literal(origin.rsplit("/", 1)[-1])
    value = " ".join(
        ["case p.field"] + [f"when {literal(c)} then {quote(c)}" for c in source.column_names] + ["end"]
    )
    con.execute(
        f"""
        create or replace temp table _sg_errors as
        select {literal(source.name)} as target, _key_hash as record_key_hash, p.field as field,
            {value} as value, p.cause as cause,
            'correct ' || coalesce('`' || p.field || '` in ', 'the row in ') || {file_name} || ' row '
                || {ROW} || ' and send the file again' as fix,
            {file_name} || ' row ' || {ROW} as location, {load_id} as load_id
        from (select *, unnest(_problems) as p from _sg_checked where len(_problems) > 0)
        """
    )
    # Snapshot: an error not in this load is fixed. Documents: fixed once a clean version arrives.
    clean_version = "e.record_key_hash in (select _key_hash from _sg_checked where len(_problems) = 0)"
    error_log.sync(
        con,
        district_id,
        "ingest",
        "_sg_errors",
        scope="e.target = ?",
        scope_params=(source.name,),
        resolve_only_if=clean_version if source.mode == "documents" else "true",
    )
    counts = Counter()
    for fld, cause, n in con.execute(
        "select coalesce(field, '(row)'), cause, count(*) from _sg_errors group by all"
    ).fetchall():
        counts[f"{fld}: {cause}"] = n
    return counts


def _finish(con, source, district_id, load_id, batches, rows_read, added, errors: Counter) -> LoadResult:
    bad_rows = (
        con.execute(
            f"select count(*) from {raw_table(source)} where _load_id = ? and _error is not null", [load_id]
        ).fetchone()[0]
        if added
        else 0
    )
    con.execute(
        "update ops.loads set content_digest = ?, finished_at = now(), rows_read = ?, rows_added = ?, "
        "rows_with_errors = ?, status = 'loaded' where load_id = ?",
        [batches.digest, rows_read, added, bad_rows, load_id],
    )
    con.execute("commit")
    return LoadResult(source.name, load_id, "loaded", rows_read, added, bad_rows, errors)
