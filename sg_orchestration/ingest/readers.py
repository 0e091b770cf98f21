"""Readers turn a source (a CSV file or API records) into rows of strings, keeping every row.

Nothing is dropped here: a row whose shape is wrong keeps its fields (in `_extra._fields`) and a reason
(`_reject`), so the loader can store it in raw and report it. Types are checked later, in SQL, from the
catalog.

A CSV file goes from the file into DuckDB with DuckDB's own reader (`stage_csv`), every field as text; the
rows of the wrong width DuckDB sets aside are read again here, from their byte offset, to keep their fields.
A file that reader cannot take exactly as the csv module reads it (a quote it refuses, bytes that are not
UTF-8, a field past `MAX_FIELD_CHARS` or a runaway one, a line it skipped) is streamed by the csv module
instead (`Batches.batches`, `_csv_batches`), where the rules for those cases live.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import itertools
import json
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from sg_orchestration.catalog import Source
from sg_orchestration.warehouse import quote

BATCH_ROWS = 50_000
REJECT = "_reject"
ROW = "_source_row"
FIELDS = "_fields"


# The csv module's own field limit would split a runaway quoted field at an arbitrary point and read on
# from inside it; it is lifted so that our checks decide (`_csv_batches`), with these limits.
csv.field_size_limit(sys.maxsize)
MAX_FIELD_CHARS = 131_072  # a field longer than this is far past any real value: the row is unreadable
RUNAWAY_LINES = 20  # a quoted field with this many line breaks (or one holding whole rows) is a runaway


class SourceFileError(ValueError):
    """A whole file that cannot be used (missing, unreadable, empty, bad header, an unterminated quote).

    `problem` says what is wrong (no student data), `fix` what to do; `str()` is `<path>: <problem>`.
    `field` is the column concerned, if one is; `rows_read` how many records were read before refusing.
    """

    def __init__(
        self,
        path: Path | str,
        problem: str,
        fix: str,
        field: str | None = None,
        rows_read: int = 0,
        location: str | None = None,
    ):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        self.field = field
        self.rows_read = rows_read
        self.location = location or Path(path).name  # file name, or file and line

    @property
    def cause(self) -> str:
        """One line naming the file and the problem."""
        return " ".join(str(self).split())


class FileScan(NamedTuple):
    """What one pass over a file's bytes finds (`_scan`)."""

    control_characters: bool  # any control character: then the loader looks per field
    line_feeds: int
    ends_with_line_feed: bool
    spaced_quote: bool  # spaces between a quote and a comma or line end: see `stage_csv`


@dataclass
class CsvFile:
    """A CSV input whose header is checked, as DuckDB's reader stages it (`stage_csv`)."""

    path: Path
    header: list[str]
    names: list[str]  # the staged columns: the catalog's, then the extra ones
    header_lines: int  # the lines the header row took

    @cached_property
    def scan(self) -> FileScan:
        """Made when the file is staged: a file whose digest is that of the last load is never scanned
        (the scan costs ~3× the digest; 0.5 s of a 200,000-student night with nothing new)."""
        try:
            return _scan(self.path)
        except OSError as exc:
            raise _unreadable(self.path, exc) from None


@dataclass
class Batches:
    """What a reader produced: batches with the catalog columns, extra columns and per-row bookkeeping.

    `csv`: set for a CSV file, which DuckDB's reader stages when it can (`stage_csv`); `batches` are then
    read only when it cannot."""

    origin: str
    digest: str | None
    extra_columns: list[str] = field(default_factory=list)
    batches: Iterable[pa.Table] = ()
    encoding_errors: bool = False
    control_characters: bool = True  # may hold control characters: False only when a file has none
    csv: CsvFile | None = None


def _table(columns: dict[str, list]) -> pa.Table:
    arrays = {
        name: pa.array(values, type=pa.int64() if name == ROW else pa.string())
        for name, values in columns.items()
    }
    return pa.table(arrays)


class _Unreadable(list):
    """Stands in for a record the csv module could not read, keeping its reason."""

    def __init__(self, reason: str):
        super().__init__()
        self.reason = reason


def _next_records(reader, limit: int) -> list[list[str]]:
    records: list[list[str]] = []
    while len(records) < limit:
        before = len(records)
        try:
            records.extend(itertools.islice(reader, limit - len(records)))
        except csv.Error as exc:  # the records read before the error are kept; reading goes on after it
            records.append(_Unreadable(f"unreadable CSV: {exc}"))
            continue
        if len(records) == before or len(records) < limit:
            break
    return records


def _nulls_for_blanks(values) -> pa.Array:
    array = pa.array(values, type=pa.string())
    return pc.if_else(pc.equal(array, ""), pa.scalar(None, pa.string()), array)


# C0 control bytes but tab, LF, CR; and DEL. In UTF-8 these bytes are never part of another character.
_CONTROL_BYTES = [bytes([b]) for b in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F)]


# Spaces between a quote and the comma or line end next to it: DuckDB's reader drops them, the csv module
# keeps them (`"a" ,` is `a ` to it), so a file with any is read by the csv module.
_SPACED_QUOTE = re.compile(rb'(?:[,\r\n]|\A) +"|" +(?:[,\r\n]|\Z)')


def _scan(path: Path) -> FileScan:
    """What `stage_csv` and the loader need to know of the file's bytes."""
    control = spaced = False
    line_feeds = 0
    tail = b""  # the end of the previous chunk: a quote and spaces may straddle chunks
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            control = control or any(b in chunk for b in _CONTROL_BYTES)  # memchr: cheap
            line_feeds += chunk.count(b"\n")
            window = tail + chunk
            if not spaced:
                byte = np.frombuffer(window, dtype=np.uint8)
                quotes, spaces = byte == ord('"'), byte == ord(" ")
                if (quotes[:-1] & spaces[1:]).any() or (spaces[:-1] & quotes[1:]).any():  # rare
                    spaced = _SPACED_QUOTE.search(window) is not None
            tail = window[max(len(window.rstrip(b" ")) - 1, 0) :]
    return FileScan(control, line_feeds, tail.endswith(b"\n"), spaced)


class _DecodeErrors:
    """Counts undecodable bytes while a file streams; they become U+FFFD and the loader flags the fields."""

    name = "sg_count_and_replace"
    count = 0

    @classmethod
    def handle(cls, exc: UnicodeDecodeError) -> tuple[str, int]:
        cls.count += 1
        return "\ufffd", exc.end


codecs.register_error(_DecodeErrors.name, _DecodeErrors.handle)


def _open(path: Path):
    return path.open(encoding="utf-8-sig", errors=_DecodeErrors.name, newline="")


def read_csv(source: Source, path: Path) -> Batches:
    """A CSV input (UTF-8, a BOM tolerated, RFC 4180, header row), its header checked, to be staged.

    A file that cannot be used at all raises `SourceFileError`, here for the header, or while it is read
    (an unterminated quote)."""
    resend = f"and send {source.file} again"
    if path.is_dir():
        raise SourceFileError(
            path, "is a folder, not a file", f"replace the folder {path} with the {source.file} export file"
        )
    if not path.is_file():
        raise SourceFileError(
            path,
            f"file not found (expected {source.file} for {source.name})",
            f"put the {source.system} export {source.file} in {path.parent} (check that the export ran and "
            "writes there), then run again",
        )
    try:
        if path.stat().st_size == 0:
            raise SourceFileError(
                path,
                "empty file (0 bytes): expected a header row and data",
                f"check the export that writes {source.file}: it wrote nothing; {resend} with its header row",
            )
        with _open(path) as handle:
            reader = csv.reader(handle)
            try:
                header = next(reader)
            except StopIteration:
                raise SourceFileError(
                    path, "empty file, expected a header row", f"{resend} with its header row and data"
                ) from None
            header_lines = reader.line_num
        with path.open("rb") as raw:
            digest = hashlib.file_digest(raw, "sha256").hexdigest()
    except OSError as exc:
        raise _unreadable(path, exc) from None
    header = [h.strip() for h in header]
    missing = [c for c in source.column_names if c not in header]
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if missing:
        raise SourceFileError(
            path,
            f"missing column(s) {missing}; the header must name {list(source.column_names)}",
            f"add the column(s) {', '.join(missing)} to the header of {source.file} {resend}",
            field=", ".join(missing),
        )
    if duplicated:
        raise SourceFileError(
            path,
            f"column(s) {duplicated} appear more than once in the header",
            f"keep one column named {', '.join(duplicated)} in the header of {source.file} {resend}",
            field=", ".join(duplicated),
        )
    extras = [h for h in header if h not in source.column_names]
    names = list(source.column_names) + extras
    batches = Batches(
        origin=str(path),
        digest=digest,
        extra_columns=extras,
        csv=CsvFile(path, header, names, header_lines),
    )

    def stream() -> Iterator[pa.Table]:
        errors_before = _DecodeErrors.count  # before the first read: decoding runs ahead of the csv reader
        try:
            with _open(path) as handle:
                reader = csv.reader(handle)
                next(reader)  # the header, checked above
                yield from _csv_batches(reader, header, names, path)
        except OSError as exc:
            raise _unreadable(path, exc) from None
        batches.encoding_errors = _DecodeErrors.count > errors_before

    batches.batches = stream()
    return batches


# DuckDB's reader set to read as the csv module does: commas, double quotes (doubled inside a quoted value),
# every field as text, blank ones NULL; a quote it cannot read whole fails the scan, and a row of the
# wrong width is set aside (`_sg_csv_rejects`) with its record number and byte offset.
_DUCKDB_CSV = (
    "delim = ',', quote = '\"', escape = '\"', header = false, auto_detect = false, strict_mode = true, "
    "store_rejects = true, rejects_table = '_sg_csv_rejects', rejects_scan = '_sg_csv_scans'"
)
_SHAPE_ERRORS = "('MISSING COLUMNS', 'TOO MANY COLUMNS')"
_SLACK = 64  # bytes around the offset DuckDB gives for a record it set aside


def stage_csv(con: duckdb.DuckDBPyConnection, file: CsvFile, table: str) -> int | None:
    """Read the file into the temp table `table` with DuckDB's reader, a row per record with the columns
    of the batches (`_records_table`); the rows read. None, and no table, when the file is to be streamed
    by the csv module instead: DuckDB refused it or set a row aside for more than its width, a field is
    longer than MAX_FIELD_CHARS or a runaway, a line of the file is in no row (a blank one), spaces sit
    beside a quote, the header takes more than a line, or the path would be read as a glob pattern."""
    if file.header_lines != 1 or file.scan.spaced_quote or any(c in str(file.path) for c in "*?[{"):
        return None
    width = len(file.header)
    columns = "{" + ", ".join(f"'f{i}': 'VARCHAR'" for i in range(width)) + "}"
    names = ", ".join(f"f{file.header.index(n)} as {quote(n)}" for n in file.names)
    con.execute("drop table if exists _sg_csv_rejects; drop table if exists _sg_csv_scans")
    con.execute("set session preserve_insertion_order = true")  # a row's place in the scan is its number
    try:
        con.execute(
            f"create or replace temp table {table} as select {names}, null::varchar as {REJECT}, "
            f"null::varchar as {FIELDS}, null::bigint as {ROW} "
            f"from read_csv(?, skip = 1, columns = {columns}, {_DUCKDB_CSV})",
            [str(file.path)],
        )
        # In insertion order a new table's rowid is the record's place in the file: numbered after the
        # read, as `row_number() over ()` in it would, which cost as much again as the read of a wide file
        con.execute(f"update {table} set {ROW} = rowid + 1")
        rows = _checked_rows(con, file, table)
    except (duckdb.Error, OSError):  # the csv module reads it, and says what is wrong
        rows = None
    finally:
        con.execute("reset session preserve_insertion_order")
        con.execute("drop table if exists _sg_csv_rejects; drop table if exists _sg_csv_scans")
    if rows is None:
        con.execute(f"drop table if exists {table}")
    return rows


def _checked_rows(con: duckdb.DuckDBPyConnection, file: CsvFile, table: str) -> int | None:
    """The rows staged once the rows DuckDB set aside are added with their fields, and the rows of a
    record after them renumbered; None when the csv module is to read the file (`stage_csv`)."""
    width = len(file.header)
    set_aside = con.execute(
        f"select line - 1, min(line_byte_position), any_value(csv_line), "
        f"bool_and(error_type in {_SHAPE_ERRORS}) from _sg_csv_rejects group by line order by line"
    ).fetchall()
    if not all(shape_only for *_, shape_only in set_aside):
        return None
    records = _records_at(file.path, [(offset, text) for _, offset, text, _ in set_aside])
    if records is None or any(len(record) in (0, width) for record, _ in records):
        return None  # the csv module reads these records otherwise
    columns = [quote(n) for n in file.names]
    spanning = " or ".join(
        f"contains({c}, chr(10)) or contains({c}, chr(13)) or strlen({c}) > {MAX_FIELD_CHARS}"
        for c in columns
    )
    good, *_ = con.execute(f"select count(*) from {table}").fetchone()
    # Few rows: those with a line break in a field, or a very long one; and the rows set aside.
    fields = [
        text
        for (values,) in con.execute(
            f"select [{', '.join(columns)}] from {table} where {spanning}"
        ).fetchall()
        for text in values
        if text is not None
    ]
    if any(
        _csv_module_decides(text, width) for text in fields + [t for record, _ in records for t in record]
    ):
        return None
    line_feeds = sum(text.count("\n") for text in fields)
    lines = file.header_lines + good + line_feeds + sum(lines for _, lines in records)
    if file.scan.line_feeds != lines - (0 if file.scan.ends_with_line_feed else 1):
        return None  # a line DuckDB skipped (a blank one): the csv module reads it as a record
    if set_aside:
        _add_set_aside(con, file, table, [row for row, *_ in set_aside], [record for record, _ in records])
    return good + len(set_aside)


def _csv_module_decides(text: str, width: int) -> bool:
    """A field past MAX_FIELD_CHARS bytes, or a runaway one: the csv module's reading has the rules."""
    return len(text.encode()) > MAX_FIELD_CHARS or ("\n" in text or "\r" in text) and _runaway(text, width)


def _records_at(path: Path, set_aside: list[tuple[int, str]]) -> list[tuple[list[str], int]] | None:
    """Each record DuckDB set aside (its offset and text) as the csv module reads it, with the lines it
    spans; None when one is not found. DuckDB's offset can be a byte off: the record starts after the
    last line break up to it, and there the file must hold the text DuckDB kept of it."""
    records = []
    with path.open("rb") as raw:
        for offset, kept in set_aside:
            kept = kept.lstrip("\r\n").encode()  # DuckDB may keep the end of the line before
            base = max(offset - _SLACK, 0)
            raw.seek(base)
            window = raw.read(offset - base + 1 + len(kept) + _SLACK)
            starts = [window.rfind(b"\n", 0, end) + 1 for end in (offset - base, offset - base + 1)]
            start = next((s for s in starts if (s or not base) and window.startswith(kept, s)), None)
            if not kept or start is None:
                return None
            raw.seek(base + start)
            text = io.TextIOWrapper(raw, encoding="utf-8", errors=_DecodeErrors.name, newline="")
            reader = csv.reader(text)
            try:
                records.append((next(reader, []), reader.line_num))
            except csv.Error:
                return None
            finally:
                text.detach()
    return records


def _add_set_aside(con, file: CsvFile, table: str, numbers: list[int], records: list[list[str]]) -> None:
    """Put the records DuckDB set aside, with their record numbers, among the staged rows, which are
    numbered in order of the scan: a row after n of them moves n on."""
    shifts: dict[int, int] = {}  # staged row number -> set-aside records before the row after it
    for index, number in enumerate(numbers, start=1):
        shifts[number - index] = index
    bounds = sorted(shifts)
    ranges = pa.table(
        {
            "low": pa.array(bounds, pa.int64()),  # rows after `low` ...
            "high": pa.array(bounds[1:] + [2**62], pa.int64()),  # ... up to `high` move on `shift`
            "shift": pa.array([shifts[b] for b in bounds], pa.int64()),
        }
    )
    con.register("_sg_ranges", ranges)
    con.execute(
        f"update {table} t set {ROW} = t.{ROW} + r.shift from _sg_ranges r "
        f"where t.{ROW} > r.low and t.{ROW} <= r.high"
    )
    con.unregister("_sg_ranges")
    positions = [file.header.index(n) for n in file.names]
    rows = _records_table(records, file.names, positions, len(file.header), 1)
    rows = rows.set_column(rows.schema.get_field_index(ROW), ROW, pa.array(numbers, pa.int64()))
    con.register("_sg_batch", rows)
    con.execute(f"insert into {table} by name select * from _sg_batch")
    con.unregister("_sg_batch")


def _unreadable(path: Path, exc: OSError) -> SourceFileError:
    return SourceFileError(
        path,
        f"cannot be read: {exc.strerror or type(exc).__name__}",
        f"give the account that runs sg_orchestration read access to {path} (or replace the file), "
        "then run again",
    )


def _line_breaks(text: str) -> int:
    return text.count("\n") + text.count("\r") - text.count("\r\n")


def _swallows_rows(text: str, width: int) -> bool:
    """A line inside the field (after its first) with a whole row's commas: a record read into a field."""
    return width >= 4 and any(line.count(",") >= width - 1 for line in text.splitlines()[1:])


def _runaway(text: str, width: int) -> bool:
    """A field with a line break that spans many lines, is huge, or holds whole rows: its quote opened and
    never closed where it should, so the file's next lines were read into it."""
    return _line_breaks(text) >= RUNAWAY_LINES or len(text) > MAX_FIELD_CHARS or _swallows_rows(text, width)


def _refuse_runaway_quote(
    records: list[list[str]],
    candidates: Iterable[int],
    first_line: int,
    header: list[str],
    path: Path,
    rows_before: int,
):
    """Raise when a field of these records spans many lines, is huge and spans any, or holds whole rows:
    its quote opened and never closed where it should, so the file's next lines were read into it.
    `candidates`: the (ascending) indices of the records with a line break in a field; the others span
    one line each."""
    extra_lines = 0  # line breaks inside the fields of the records before this one
    for index in candidates:
        record = records[index]
        span = 0
        for position, text in enumerate(record):
            if "\n" not in text and "\r" not in text:
                continue
            breaks = _line_breaks(text)
            if _runaway(text, len(header)):
                column = header[position] if position < len(header) else f"field {position + 1}"
                opened = first_line + index + extra_lines + span
                # A field running to the end of the file holds the file's last line break too.
                lost = max(breaks - (1 if text.endswith(("\n", "\r")) else 0), 1)
                raise SourceFileError(
                    path,
                    f"unterminated quote: the quoted `{column}` field opened on line {opened} does not close "
                    f"where it should, so lines {opened + 1} to {opened + lost} (about {lost} rows) were read "
                    "into it; the file is refused and the last good load stays current",
                    f"close the quote in `{column}` on line {opened} of {path.name} (a quote inside a quoted "
                    'value is written twice: "") and send the file again',
                    field=column if position < len(header) else None,
                    rows_read=rows_before + index,
                    location=f"{path.name} line {opened}",
                )
            span += breaks
        extra_lines += span


def _multiline_records(table: pa.Table) -> list[int]:
    """Indices of the records with a line break in any field (in `_fields` they are JSON-escaped)."""
    mask = None
    for name, column in zip(table.column_names, table.itercolumns(), strict=True):
        if pa.types.is_string(column.type) and len(column):
            for brk in ("\\n", "\\r") if name == FIELDS else ("\n", "\r"):
                found = pc.fill_null(pc.match_substring(column, brk), False)
                mask = found if mask is None else pc.or_(mask, found)
    return [] if mask is None else pc.indices_nonzero(mask).to_pylist()


def _longest(table: pa.Table) -> int:
    """The longest value in the batch, in bytes, read off the string offsets (no compute kernel)."""
    longest = 0
    for column in table.itercolumns():
        if not pa.types.is_string(column.type):
            continue
        for chunk in column.chunks:
            if len(chunk):
                offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int32)
                longest = max(
                    longest, int(np.diff(offsets[chunk.offset : chunk.offset + len(chunk) + 1]).max())
                )
    return longest


def _csv_batches(reader, header: list[str], names: list[str], path: Path) -> Iterator[pa.Table]:
    positions = [header.index(n) for n in names]
    width = len(header)
    first_row = 1
    while True:
        lines_before = reader.line_num
        records = _next_records(reader, BATCH_ROWS)
        if not records:
            break
        table = _records_table(records, names, positions, width, first_row)
        # Cheap: only a batch that consumed more lines than records can hold a runaway quote; then only
        # its records with a line break in a field are looked at, one by one.
        if reader.line_num - lines_before > len(records):
            multiline = _multiline_records(table)
            _refuse_runaway_quote(records, multiline, lines_before + 1, header, path, first_row - 1)
        if _longest(table) > MAX_FIELD_CHARS:  # rare: find the record(s) and refuse or set them aside
            everything = range(len(records))
            _refuse_runaway_quote(records, everything, lines_before + 1, header, path, first_row - 1)
            records = [_oversized(r) for r in records]
            table = _records_table(records, names, positions, width, first_row)
        first_row += len(records)
        yield table


def _oversized(record: list[str]) -> list[str]:
    longest = max(map(len, record), default=0)
    if longest <= MAX_FIELD_CHARS:
        return record
    return _Unreadable(
        f"unreadable CSV: a field of {longest:,} characters, more than the {MAX_FIELD_CHARS:,} allowed"
    )


def _records_table(records, names: list[str], positions: list[int], width: int, first_row: int) -> pa.Table:
    blank = [""] * width
    shaped = [len(r) == width for r in records]
    rows = [r if ok else blank for r, ok in zip(records, shaped, strict=True)]
    table = {name: _nulls_for_blanks([r[p] for r in rows]) for name, p in zip(names, positions, strict=True)}
    table[REJECT] = pa.array(
        [
            None if ok else getattr(r, "reason", None) or f"row has {len(r)} fields; the header has {width}"
            for r, ok in zip(records, shaped, strict=True)
        ],
        type=pa.string(),
    )
    table[FIELDS] = pa.array(
        [
            None if ok or isinstance(r, _Unreadable) else json.dumps(r)
            for r, ok in zip(records, shaped, strict=True)
        ],
        type=pa.string(),
    )
    table[ROW] = pa.array(range(first_row, first_row + len(records)), type=pa.int64())
    return pa.table(table)


# API records are staged in batches of at least this many (whole pages): a batch costs ~1.5 ms to stage.
API_BATCH_ROWS = 20_000


def records_to_batches(source: Source, origin: str, pages: Iterable[list[dict]]) -> Batches:
    """API records (JSON objects) as batches; keys outside the catalog are kept as extra columns."""
    read = ApiRead(source)
    for page in pages:
        read.add(list(page))
    return read.batches(origin)


class ApiRead:
    """An API read, page by page as it arrives: each page's keys and its share of the records digest are
    taken at once; a page given with the JSON bytes it came in is kept as those bytes and decoded again, a
    batch at a time, only when it is staged (a million Qmlativ students hold ~630 MB as Python objects,
    ~150 MB as JSON)."""

    def __init__(self, source: Source):
        self.source = source
        self.keys: set[str] = set()
        # A snapshot read (the Qmlativ students) is recognised as unchanged by the digest of its records,
        # in the order served, before anything is staged: a night with the same students costs the read
        # alone. Records served in another order get another digest: the same rows are then loaded again.
        self.hasher = hashlib.sha256(b"records\0") if source.mode == "snapshot" else None
        self.pages: list[list[dict] | bytes] = []

    def add(self, records: list[dict], body: bytes | None = None) -> None:
        """One page: its records, and the JSON answer they were decoded from (`Objects`), if kept."""
        self.keys.update(k for r in records for k in r)
        if self.hasher is not None and records:  # each record once, whatever the page size
            self.hasher.update(b"," + orjson.dumps(records, option=orjson.OPT_SORT_KEYS, default=str)[1:-1])
        self.pages.append(records if body is None else body)

    def batches(self, origin: str) -> Batches:
        extras = sorted(self.keys - set(self.source.column_names))
        names = list(self.source.column_names) + extras
        pages = self.pages
        self.pages = []

        def records(page: list[dict] | bytes) -> list[dict]:
            return orjson.loads(page)["Objects"] if isinstance(page, bytes) else page

        def batches() -> Iterator[pa.Table]:
            # Pages are let go once they are a batch: a large read is not held whole while it is loaded.
            pages.reverse()
            row_number = 0
            while pages:
                batch = list(records(pages.pop()))
                while pages and len(batch) < API_BATCH_ROWS:  # many pages a batch: ~1.5 ms a batch to stage
                    batch.extend(records(pages.pop()))
                if not batch:
                    continue
                columns: dict[str, list] = {n: [_api_text(r.get(n)) for r in batch] for n in names}
                columns[REJECT] = [None] * len(batch)
                columns[FIELDS] = [None] * len(batch)
                columns[ROW] = list(range(row_number + 1, row_number + len(batch) + 1))
                row_number += len(batch)
                del batch
                table = _table(columns)
                del columns
                yield table

        digest = self.hasher.hexdigest() if self.hasher is not None else None
        return Batches(origin=origin, digest=digest, extra_columns=extras, batches=batches())


def _api_text(value) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return (
        value
        if isinstance(value, str)
        else json.dumps(value)
        if isinstance(value, dict | list)
        else str(value)
    )
