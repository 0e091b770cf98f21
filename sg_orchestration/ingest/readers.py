"""Readers turn a source (a CSV file or API records) into column batches of strings, keeping every row.

Nothing is dropped here: a row whose shape is wrong keeps its fields (in `_extra._fields`) and a reason
(`_reject`), so the loader can store it in raw and report it. Types are checked later, in SQL, from the
catalog.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from sg_orchestration.catalog import Source

BATCH_ROWS = 50_000
REJECT = "_reject"
ROW = "_source_row"
FIELDS = "_fields"


class SourceFileError(ValueError):
    """A whole file that cannot be read (missing, no header, missing columns); names file and cause."""


@dataclass
class Batches:
    """What a reader produced: batches with the catalog columns, extra columns and per-row bookkeeping."""

    origin: str
    digest: str | None
    extra_columns: list[str] = field(default_factory=list)
    batches: Iterable[pa.Table] = ()
    encoding_errors: bool = False


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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _DecodeErrors:
    """Counts undecodable bytes while a file streams; they become U+FFFD and the loader flags the fields."""

    name = "sg_count_and_replace"
    count = 0

    @classmethod
    def handle(cls, exc: UnicodeDecodeError) -> tuple[str, int]:
        cls.count += 1
        return "\ufffd", exc.end


codecs.register_error(_DecodeErrors.name, _DecodeErrors.handle)


def read_csv(source: Source, path: Path) -> Batches:
    """Stream a CSV input (UTF-8, a BOM tolerated, RFC 4180, header row) as batches."""
    if not path.is_file():
        raise SourceFileError(f"{path}: file not found (expected {source.file} for {source.name})")
    errors_before = _DecodeErrors.count  # before the first read: decoding runs ahead of the csv reader
    handle = path.open(encoding="utf-8-sig", errors=_DecodeErrors.name, newline="")
    reader = csv.reader(handle)
    try:
        header = next(reader)
    except StopIteration:
        handle.close()
        raise SourceFileError(f"{path}: empty file, expected a header row") from None
    header = [h.strip() for h in header]
    missing = [c for c in source.column_names if c not in header]
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if missing or duplicated:
        handle.close()
        if missing:
            raise SourceFileError(
                f"{path}: missing column(s) {missing}; the header must name {list(source.column_names)}"
            )
        raise SourceFileError(f"{path}: column(s) {duplicated} appear more than once in the header")
    extras = [h for h in header if h not in source.column_names]
    batches = Batches(origin=str(path), digest=_sha256(path), extra_columns=extras)

    def stream() -> Iterator[pa.Table]:
        with handle:
            yield from _csv_batches(reader, header, source, extras)
        batches.encoding_errors = _DecodeErrors.count > errors_before

    batches.batches = stream()
    return batches


def _csv_batches(reader, header: list[str], source: Source, extras: list[str]) -> Iterator[pa.Table]:
    names = list(source.column_names) + extras
    positions = [header.index(n) for n in names]
    width = len(header)
    blank = [""] * width
    first_row = 1
    while records := _next_records(reader, BATCH_ROWS):
        shaped = [len(r) == width for r in records]
        rows = [r if ok else blank for r, ok in zip(records, shaped, strict=True)]
        table = {
            name: _nulls_for_blanks([r[p] for r in rows]) for name, p in zip(names, positions, strict=True)
        }
        table[REJECT] = pa.array(
            [
                None
                if ok
                else getattr(r, "reason", None) or f"row has {len(r)} fields; the header has {width}"
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
        first_row += len(records)
        yield pa.table(table)


def records_to_batches(source: Source, origin: str, pages: Iterable[list[dict]]) -> Batches:
    """API records (JSON objects) as batches; keys outside the catalog are kept as extra columns."""
    pages = list(pages)
    extras = sorted({k for page in pages for r in page for k in r} - set(source.column_names))
    names = list(source.column_names) + extras

    def text(value) -> str | None:
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

    def batches() -> Iterator[pa.Table]:
        row_number = 0
        for page in pages:
            if not page:
                continue
            columns: dict[str, list] = {n: [text(r.get(n)) for r in page] for n in names}
            columns[REJECT] = [None] * len(page)
            columns[FIELDS] = [None] * len(page)
            columns[ROW] = list(range(row_number + 1, row_number + len(page) + 1))
            row_number += len(page)
            yield _table(columns)

    return Batches(origin=origin, digest=None, extra_columns=extras, batches=batches())
