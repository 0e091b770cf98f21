"""Load reader batches into `raw`: stamp every row, check its fields against the catalog, keep bad rows
with their reason, report them in `ops.error_log`, and add nothing when the same data comes again.

Two load modes (catalog `Source.mode`):
- `snapshot`: the file or API read is the whole current state. Unchanged content (same digest as the last
  load) adds nothing. Of changed content only the rows the current state does not have are added, under
  the new load id, and the current rows the read no longer has are retired (`_retired_load`): a night
  that changes 1% of a file stores 1% of it. Staging reads the rows not retired.
- `documents`: every row is a document version; only rows never seen before (by row hash) are appended.

Failures stay contained: a bad field or row is kept with its reason (`_error`) and logged; two rows with
the same key but different content in one load are both kept as errors; a whole file that cannot be used
(`SourceFileError`) is recorded as a `failed` load, and a snapshot with only a header or far fewer rows
than the last good load is `held` (not applied) until accepted. Either way one `ops.error_log` row names
the file, it resolves once the source loads again, and the last good load stays current.
"""

from __future__ import annotations

import contextlib
import hashlib
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
from sg_orchestration.config import IngestGuards
from sg_orchestration.ingest.readers import FIELDS, REJECT, ROW, Batches, SourceFileError, stage_csv
from sg_orchestration.warehouse import LOAD_COLUMNS, RETIRED, literal, quote, raw_table, raw_table_ddl

STAGE = "_sg_stage"
SEP = "chr(31)"
# The record key of an error about a whole file or load, not one record (`_sync_load_finding`).
FILE_KEY = hashlib.md5(b"file").hexdigest()
# Characters no field may hold: C0 controls but tab, LF, CR; and DEL (an RE2 class).
CONTROL_CHARACTERS = r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F]"
CONTROL_CAUSE = "contains a control character (such as a NUL byte); only tab and line breaks are allowed"


@dataclass
class LoadResult:
    source: str
    load_id: int | None
    status: str  # loaded | unchanged | held
    rows_read: int = 0
    rows_added: int = 0
    rows_with_errors: int = 0
    rows_retired: int = 0  # a snapshot's rows the read no longer has
    errors_by_field: Counter = field(default_factory=Counter)  # "field: cause" -> rows, never values
    cause: str | None = None  # why a load is held: file, counts and threshold, never values

    @property
    def metadata(self) -> dict:
        metadata = {
            "status": self.status,
            "load_id": self.load_id or 0,
            "rows_read": self.rows_read,
            "rows_added": self.rows_added,
            "rows_with_errors": self.rows_with_errors,
            "rows_retired": self.rows_retired,
        }
        if self.cause:
            metadata["cause"] = self.cause
        return metadata


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


def _problems_sql(source: Source, encoding_errors: bool, control_characters: bool = True) -> str:
    """A list of {field, cause} per row: the row's shape first; its fields only when the shape is right.
    Control characters are looked for unless the reader found none in the whole file."""
    items = []
    for column in source.columns:
        c = quote(column.name)
        checks = []
        if control_characters:
            pattern = literal(CONTROL_CHARACTERS)
            checks.append(f"case when regexp_matches({c}, {pattern}) then {literal(CONTROL_CAUSE)} end")
        if (problem := field_problem_sql(column)) != "null":
            checks.append(problem)
        if encoding_errors:
            checks.append(f"case when contains({c}, chr(65533)) then 'not valid UTF-8' end")
        if checks:
            cause = checks[0] if len(checks) == 1 else f"coalesce({', '.join(checks)})"
            items.append(f"{{'field': {literal(column.name)}, 'cause': {cause}}}")
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
    """The rows read into the temp table STAGE: a CSV file by DuckDB's reader when it can, else batches."""
    con.execute(f"drop table if exists {STAGE}")
    if batches.csv is not None:
        batches.control_characters = batches.csv.scan.control_characters
        if (rows := stage_csv(con, batches.csv, STAGE)) is not None:
            return rows
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


# The temp tables of one load: each holds a copy of the whole read, in DuckDB's memory (`memory_limit`)
# until dropped, so they go as soon as the load is done, before the caller reads raw again.
_TEMP_TABLES = (STAGE, "_sg_checked", "_sg_new", "_sg_conflicts", "_sg_errors", "_sg_load_findings")


def load(
    con: duckdb.DuckDBPyConnection,
    source: Source,
    district_id: str,
    batches: Batches,
    *,
    guards: IngestGuards | None = None,
    accept_shrink: bool = False,
) -> LoadResult:
    """Load one read of a source. Raises `SourceFileError` (nothing applied) for a file refused while it
    streams; the caller records it with `record_failure`."""
    drop = "; ".join(f"drop table if exists {t}" for t in _TEMP_TABLES)
    try:
        result = _load(con, source, district_id, batches, guards=guards, accept_shrink=accept_shrink)
    except BaseException:
        with contextlib.suppress(duckdb.Error):  # the load's own error is the one to report
            con.execute(drop)
        raise
    con.execute(drop)
    return result


def _load(
    con: duckdb.DuckDBPyConnection,
    source: Source,
    district_id: str,
    batches: Batches,
    *,
    guards: IngestGuards | None,
    accept_shrink: bool,
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
    if source.mode == "snapshot" and not accept_shrink:
        held = _hold_cause(con, source, district_id, batches.origin, rows_read, guards or IngestGuards())
        if held:
            return _record_held(con, source, district_id, batches, rows_read, *held)
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
        if rows_read == 0:  # an empty snapshot, accepted: nothing is current any more
            retired = _retire(con, source, district_id, load_id, "true") if source.mode == "snapshot" else 0
            return _finish(con, source, district_id, load_id, batches, 0, 0, Counter(), retired)
        columns = list(source.column_names)
        key_columns = list(source.key) or columns
        extras = batches.extra_columns
        current = f" and r.{RETIRED} is null" if source.mode == "snapshot" else ""
        # `_known`: a row the district already holds, clean, with this content (the same content has the
        # same problems, so none): its fields are not checked again, and unless it conflicts with another
        # row of this load it is neither added nor retired. A night that changes 1% checks 1%.
        # `_sg_checked` holds the verdicts, not the fields (a copy of every field of a 600,000-row file
        # costs more than its hashes): the few statements that need fields join STAGE by row number.
        readable = f"{REJECT} is null" + "".join(f" and {quote(k)} is not null" for k in key_columns)
        con.execute(
            f"""
            create or replace temp table _sg_checked as
            select {ROW}, {REJECT}, _row_hash, _key_hash, _known, {readable} as _readable,
                case when _known then [] else
                    {_problems_sql(source, batches.encoding_errors, batches.control_characters)}
                end as _problems,
                null::varchar as _conflict
            from (
                select *, coalesce(_row_hash in (
                    select r._row_hash from {table} r
                    where r._district_id = {literal(district_id)} and r._error is null{current}
                ), false) as _known
                from (
                    select *, {_hash_sql(columns + [FIELDS])} as _row_hash, {_hash_sql(key_columns)} as _key_hash
                    from {STAGE}
                )
            )
            """
        )
        _mark_conflicts(con, source, key_columns)
        if source.mode == "snapshot" and batches.digest is None:
            digest = con.execute(
                "select md5(coalesce(string_agg(_row_hash, ',' order by _row_hash), '')) from _sg_checked"
            ).fetchone()[0]
            if digest == _last_digest(con, source, district_id):
                con.execute("rollback")
                batches.digest = digest
                return _record_unchanged(con, source, district_id, batches, rows_read)
            batches.digest = digest
        error = (
            "nullif(concat_ws('; ', array_to_string(list_transform(c._problems, "
            "lambda p: coalesce(p.field || ': ', '') || p.cause), '; '), c._conflict), '')"
        )
        # Documents: a version never seen, or seen only with another verdict (a row kept as an error
        # before, two versions in one load, is added again once it arrives clean). Snapshot: a row the
        # current state does not have with this verdict.
        new_rows = (
            f"(not c._known or c._conflict is not null) and not exists (select 1 from {table} r "
            f"where r._district_id = {literal(district_id)}{current} "
            f"and r._row_hash = c._row_hash and r._error is not distinct from {error})"
        )
        target_cols = ", ".join([quote(c) for c in columns] + [name for name, _ in LOAD_COLUMNS])
        # The rows to add first, then their fields (a join of every row's fields costs more than the read).
        con.execute(
            f"""
            create or replace temp table _sg_new as
            select {ROW}, _row_hash, _key_hash, {error} as _error from _sg_checked c where {new_rows}
            qualify row_number() over (partition by _row_hash order by {ROW}) = 1
            """
        )
        con.execute(
            f"""
            insert into {table} ({target_cols})
            select {", ".join(quote(c) for c in columns)},
                {_extra_sql(extras)}, ?, ?, now(), ?, {ROW}, n._row_hash, n._key_hash, n._error
            from _sg_new n join {STAGE} using ({ROW})
            """,
            [district_id, load_id, batches.origin],
        )
        added = con.execute(f"select count(*) from {table} where _load_id = ?", [load_id]).fetchone()[0]
        retired = 0
        if source.mode == "snapshot":
            # A clean current row stays while a `_known` row of this load without a conflict has its
            # content; a current row with an error, while a row of this load has its content and verdict.
            clean_gone = (
                "r._error is null and not exists (select 1 from _sg_checked c where c._row_hash = r._row_hash "
                "and c._known and c._conflict is null)"
            )
            erred_gone = (
                f"r._error is not null and not exists (select 1 from _sg_checked c "
                f"where c._row_hash = r._row_hash and r._error = {error})"
            )
            retired = sum(_retire(con, source, district_id, load_id, g) for g in (clean_gone, erred_gone))
        errors = _log_errors(con, source, district_id, load_id, batches.origin)
        return _finish(con, source, district_id, load_id, batches, rows_read, added, errors, retired)
    except BaseException:
        con.execute("rollback")
        raise


def _mark_conflicts(con, source: Source, key_columns: list[str]) -> None:
    """Rows of this load sharing a key but not their content: `_conflict` says which fields differ, and
    `_sg_conflicts` holds one row per such key. Exact duplicates are no conflict (one is kept)."""
    others = [c for c in source.column_names if c not in key_columns]
    # Rows whose shape is wrong have no key (`_readable` false): they are errors already, never a conflict.
    readable = "_readable"
    # A snapshot's clean current rows were checked together, so no two of them share a key: a conflict
    # needs a row the district does not hold, and a night that changes 1% groups only its keys. (Documents
    # keep every version, and two known ones can arrive in one load.)
    keys = "_key_hash in (select _key_hash from _sg_checked where not _known)"
    candidates = f"{readable} and {keys}" if source.mode == "snapshot" else readable
    if others:
        con.execute(
            f"""
            create or replace temp table _sg_conflicts as
            select _key_hash from _sg_checked where {candidates}
            group by _key_hash having min(_row_hash) <> max(_row_hash)
            """
        )
    if not others or not con.execute("select count(*) from _sg_conflicts").fetchone()[0]:
        con.execute(
            "create or replace temp table _sg_conflicts (_key_hash varchar, versions bigint, "
            "fields varchar[], source_rows bigint[])"
        )
        return
    differing = ", ".join(
        f"case when count(distinct coalesce({quote(c)}, chr(0))) > 1 then {literal(c)} end" for c in others
    )
    con.execute(
        f"""
        create or replace temp table _sg_conflicts as
        select _key_hash, count(distinct _row_hash) as versions,
            list_filter([{differing}], lambda f: f is not null) as fields,
            list_sort(list(distinct {ROW})) as source_rows
        from _sg_checked join {STAGE} using ({ROW})
        where {readable} and _key_hash in (select _key_hash from _sg_conflicts)
        group by _key_hash
        """
    )
    con.execute(
        f"""
        update _sg_checked c set _conflict = f.versions || ' rows in this load share this key ('
            || {literal(", ".join(key_columns))} || ') but differ in ' || array_to_string(f.fields, ', ')
        from _sg_conflicts f where c._key_hash = f._key_hash and c.{REJECT} is null
        """
    )


def _last_good(con, source: Source, district_id: str) -> tuple[int, int] | None:
    return con.execute(
        "select load_id, rows_read from ops.loads where district_id = ? and source = ? and status = 'loaded' "
        "order by load_id desc limit 1",
        [district_id, source.name],
    ).fetchone()


def _hold_cause(
    con, source: Source, district_id: str, origin: str, rows: int, guards: IngestGuards
) -> tuple[str, str] | None:
    """(cause, fix) when this snapshot has only a header, or far fewer rows than the last good load."""
    last = _last_good(con, source, district_id)
    if not last or not last[1]:
        return None
    last_id, last_rows = last
    kept = f"held: the last good load ({last_rows:,} rows, load {last_id}) stays current"
    if rows == 0:
        nothing = "no records" if origin.startswith(("http://", "https://")) else "only a header, no rows"
        cause = f"{origin}: {nothing}; {kept}"
    elif last_rows >= guards.shrink_min_rows and rows < last_rows * (1 - guards.shrink_threshold_pct / 100):
        drop = 100 * (last_rows - rows) / last_rows
        cause = (
            f"{origin}: {rows:,} rows, {drop:.0f}% fewer than the {last_rows:,} of the last good load, more "
            f"than the {guards.shrink_threshold_pct:g}% allowed (districts.yaml ingest.shrink_threshold_pct); "
            f"{kept}"
        )
    else:
        return None
    name = origin.rsplit("/", 1)[-1]
    fix = (
        f"if the smaller {name} is right, apply it: run again with `--accept-shrink {source.name}` (run tag "
        f"sg/accept_shrink={source.name}); otherwise send the complete file"
    )
    return cause, fix


def _record_held(
    con, source: Source, district_id: str, batches: Batches, rows_read: int, cause: str, fix: str
) -> LoadResult:
    load_id = con.execute("select nextval('ops.load_id_seq')").fetchone()[0]
    con.execute(
        "insert into ops.loads values (?, ?, ?, ?, ?, now(), now(), ?, 0, 0, 'held')",
        [load_id, district_id, source.name, batches.origin, batches.digest, rows_read],
    )
    location = batches.origin.rsplit("/", 1)[-1]
    _sync_load_finding(con, source, district_id, load_id, (None, cause, fix, location))
    return LoadResult(source.name, load_id, "held", rows_read=rows_read, cause=cause)


def record_failure(con, source: Source, district_id: str, error: SourceFileError) -> int:
    """A file refused whole: a `failed` load and one error-log row (resolved once the source loads)."""
    con.execute(raw_table_ddl(source))
    load_id = con.execute("select nextval('ops.load_id_seq')").fetchone()[0]
    con.execute(
        "insert into ops.loads values (?, ?, ?, ?, null, now(), now(), ?, 0, 0, 'failed')",
        [load_id, district_id, source.name, error.path, error.rows_read],
    )
    finding = (error.field, error.cause, error.fix, error.location)
    _sync_load_finding(con, source, district_id, load_id, finding)
    return load_id


def _sync_load_finding(con, source: Source, district_id: str, load_id: int, finding: tuple | None) -> None:
    """The error about the whole file or load of this source, if any (field, cause, fix, location):
    one open row while it lasts; it resolves when a load is applied or found unchanged."""
    if (
        not finding
        and not con.execute(
            "select count(*) from ops.error_log where district_id = ? and stage = 'ingest' and target = ? "
            "and record_key_hash = ? and resolved_at is null",
            [district_id, source.name, FILE_KEY],
        ).fetchone()[0]
    ):
        return  # nothing open, nothing found
    con.execute(
        "create or replace temp table _sg_load_findings (target varchar, record_key_hash varchar, "
        "field varchar, value varchar, cause varchar, fix varchar, location varchar, load_id bigint)"
    )
    if finding:
        field_name, cause, fix, location = finding
        con.execute(
            "insert into _sg_load_findings values (?, ?, ?, null, ?, ?, ?, ?)",
            [source.name, FILE_KEY, field_name, cause, fix, location, load_id],
        )
    error_log.sync(
        con,
        district_id,
        "ingest",
        "_sg_load_findings",
        scope="e.target = ? and e.record_key_hash = ?",
        scope_params=(source.name, FILE_KEY),
    )


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
    _sync_load_finding(con, source, district_id, load_id, None)
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
        from (
            select *, unnest(_problems) as p
            from _sg_checked join {STAGE} using ({ROW}) where len(_problems) > 0
        )
        union all
        select {literal(source.name)}, _key_hash, f, null, versions || ' rows in this load share this key but '
                || 'differ in ' || array_to_string(fields, ', '),
            'correct the source so the key (' || {literal(", ".join(source.key))} || ') appears once in '
                || {file_name} || ' (rows ' || array_to_string(source_rows[:10], ', ') || '), then send it again',
            {file_name} || ' rows ' || array_to_string(source_rows[:10], ', '), {load_id}
        from (select *, unnest(fields) as f from _sg_conflicts)
        """
    )
    # Snapshot: an error not in this load is fixed. Documents: fixed once a clean version arrives.
    clean_version = "e.record_key_hash in (select _key_hash from _sg_checked where len(_problems) = 0 and _conflict is null)"
    error_log.sync(
        con,
        district_id,
        "ingest",
        "_sg_errors",
        scope="e.target = ? and e.record_key_hash <> ?",
        scope_params=(source.name, FILE_KEY),
        resolve_only_if=clean_version if source.mode == "documents" else "true",
    )
    counts = Counter()
    for fld, cause, n in con.execute(
        "select coalesce(field, '(row)'), cause, count(*) from _sg_errors group by all"
    ).fetchall():
        counts[f"{fld}: {cause}"] = n
    return counts


def _retire(con, source: Source, district_id: str, load_id: int, gone: str) -> int:
    """Marks the district's current snapshot rows (alias `r`) for which `gone` holds as retired by this
    load; how many."""
    return con.execute(
        f"update {raw_table(source)} r set {RETIRED} = ? where r._district_id = ? and r.{RETIRED} is null "
        f"and r._load_id <> ? and {gone}",
        [load_id, district_id, load_id],
    ).fetchone()[0]


def _finish(
    con, source, district_id, load_id, batches, rows_read, added, errors: Counter, retired: int = 0
) -> LoadResult:
    # The rows with errors of what is current after this load: of a snapshot, all its rows; of documents,
    # the versions this load added.
    if source.mode == "snapshot":
        bad_rows = con.execute(
            f"select count(*) from {raw_table(source)} where _district_id = ? and {RETIRED} is null "
            "and _error is not null",
            [district_id],
        ).fetchone()[0]
    elif added:
        bad_rows = con.execute(
            f"select count(*) from {raw_table(source)} where _load_id = ? and _error is not null", [load_id]
        ).fetchone()[0]
    else:
        bad_rows = 0
    con.execute(
        "update ops.loads set content_digest = ?, finished_at = now(), rows_read = ?, rows_added = ?, "
        "rows_with_errors = ?, status = 'loaded' where load_id = ?",
        [batches.digest, rows_read, added, bad_rows, load_id],
    )
    _sync_load_finding(con, source, district_id, load_id, None)
    con.execute("commit")
    return LoadResult(source.name, load_id, "loaded", rows_read, added, bad_rows, retired, errors)
