"""Plumbing shared by every file the generator writes: random streams, dates, value helpers, the CSV writer."""

from __future__ import annotations

import csv
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cached_property
from pathlib import Path

import numpy as np

from sg_orchestration.catalog import SOURCES_BY_NAME, Source

# Rows are built and written this many at a time so memory stays flat whatever the district size.
BLOCK = 50_000
# Dates are day offsets from `as_of`; this window covers the oldest birth date and the latest future date.
_FIRST_DAY, _LAST_DAY = -10_000, 2_000


def rng_for(seed: int, stream: str) -> np.random.Generator:
    """An independent stream per purpose, so a change to one file never shifts the values of another."""
    return np.random.default_rng([seed, zlib.crc32(stream.encode())])


def school_year_of(day: date) -> int:
    """The END year of the school year `day` falls in (2026 = 2025-26); years turn over on July 1."""
    return day.year + 1 if day.month >= 7 else day.year


def school_days(year: int) -> tuple[date, date]:
    """The first and the last day of instruction of a school year (given by its END year)."""
    return date(year - 1, 8, 14), date(year, 5, 29)


@dataclass(frozen=True)
class Clock:
    """Every date the generator writes is an offset in days from `as_of`, so `as_of` only moves dates."""

    as_of: date

    @property
    def year(self) -> int:
        return school_year_of(self.as_of)

    def day(self, d: date) -> int:
        return (d - self.as_of).days

    def first_day(self, year: int) -> int:
        return self.day(school_days(year)[0])

    def last_day(self, year: int) -> int:
        return self.day(school_days(year)[1])

    @cached_property
    def _days(self) -> np.ndarray:
        start = self.as_of + timedelta(days=_FIRST_DAY)
        days = [(start + timedelta(days=k)).isoformat() for k in range(_LAST_DAY - _FIRST_DAY + 1)]
        return np.array([*days, ""], dtype=object)  # the last slot is the blank date

    @cached_property
    def _times(self) -> np.ndarray:
        return np.array(
            [f"T{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}Z" for s in range(86_400)], dtype=object
        )

    def iso(self, offsets: np.ndarray, blank: np.ndarray | None = None) -> list[str]:
        """YYYY-MM-DD for each offset; blank where `blank` is set."""
        idx = np.asarray(offsets, dtype=np.int64) - _FIRST_DAY
        if idx.size and (idx.min() < 0 or idx.max() >= len(self._days) - 1):
            raise ValueError("a generated date falls outside the generator's date window")
        if blank is not None:
            idx = np.where(blank, len(self._days) - 1, idx)
        return self._days[idx].tolist()

    def stamp(self, offsets: np.ndarray, seconds: np.ndarray, blank: np.ndarray | None = None) -> list[str]:
        """ISO date-times in UTC (`2025-09-02T14:03:11Z`); blank where `blank` is set."""
        out = np.asarray(self.iso(offsets), dtype=object) + self._times[np.asarray(seconds) % 86_400]
        if blank is not None:
            out[blank] = ""
        return out.tolist()


def pick(table: Sequence[str], idx: np.ndarray) -> list[str]:
    return np.asarray(table, dtype=object)[idx].tolist()


def choose(
    rng: np.random.Generator, table: Sequence[str], n: int, p: Sequence[float] | None = None
) -> list[str]:
    weights = None if p is None else np.asarray(p, dtype=float) / np.sum(p)
    return pick(table, rng.choice(len(table), size=n, p=weights))


def strs(values: np.ndarray) -> list[str]:
    return list(map(str, np.asarray(values).tolist()))


def texts(values: Sequence[str]) -> np.ndarray:
    """Strings as a numpy object array, so a block of rows is one fancy index away."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def flag(mask: np.ndarray, true: str = "Y", false: str = "N") -> list[str]:
    return pick((false, true), np.asarray(mask, dtype=np.intp))


def blank_where(values: Sequence[str], mask: np.ndarray) -> list[str]:
    out = np.asarray(values, dtype=object)
    out[np.asarray(mask, dtype=bool)] = ""
    return out.tolist()


def at_least(
    rng: np.random.Generator, mask: np.ndarray, k: int, eligible: np.ndarray | None = None
) -> np.ndarray:
    """`mask` with members added from `eligible` until it has `k`, so every case exists even at small N."""
    mask = mask.copy()
    missing = k - int(mask.sum())
    if missing > 0:
        pool = np.flatnonzero(~mask if eligible is None else eligible & ~mask)
        mask[rng.permutation(pool)[:missing]] = True
    return mask


def spread(rng: np.random.Generator, n: int, share: float, k: int) -> np.ndarray:
    """A random subset of `range(n)` of about `share`, with at least `k` members."""
    return at_least(rng, rng.random(n) < share, min(k, n))


# --- the CSV writer ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fault:
    """A malformed row: a copy of a real row of the file, re-keyed and then broken in one way."""

    file: str
    kind: str  # bad_date, bad_bool, bad_int, too_few_fields, too_many_fields, blank_required_key
    values: dict[str, str] = field(default_factory=dict)  # column -> the broken (or blank) value

    def break_row(self, source: Source, header: Sequence[str], row: Sequence[str]) -> list[str]:
        out = list(row)
        for key in source.key:  # a fresh key, so the broken row never collides with the real one
            out[header.index(key)] = "X" + out[header.index(key)]
        for column, value in self.values.items():
            out[header.index(column)] = value
        if self.kind == "too_few_fields":
            return out[:-2]
        if self.kind == "too_many_fields":
            return [*out, "Jr."]  # what an unquoted "Smith, Jr." turns into
        return out


class CsvOut:
    """One input file: the catalog header (plus any extra columns), streamed rows, and its faults.

    A fault is written just before the clean row numbered `at` (or after the last row in a shorter file);
    `placed` records where each landed, as a 1-based data-row number that excludes the header.
    """

    def __init__(
        self,
        root: Path,
        source: str,
        extra_columns: Sequence[str] = (),
        faults: Sequence[tuple[int, Fault]] = (),
        bom: bool = False,
    ):
        self.source = SOURCES_BY_NAME[source]
        self.file = f"{self.source.system}/{self.source.file}"
        self.header = [*self.source.column_names, *extra_columns]
        path = root / self.file
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("w", newline="", encoding="utf-8-sig" if bom else "utf-8")
        self._writer = csv.writer(self._fh, lineterminator="\r\n")
        self._writer.writerow(self.header)
        self._pending = sorted(faults, key=lambda item: item[0])
        self._last: Sequence[str] = ()
        self.clean = 0
        self.rows = 0
        self.placed: list[dict] = []
        self._clean_before: list[int] = []

    def write(self, columns: Sequence[Sequence[str]]) -> None:
        """Writes one block of rows given column-wise, in header order."""
        if len(columns) != len(self.header):
            raise ValueError(f"{self.file}: {len(columns)} columns for a {len(self.header)}-column header")
        n = len(columns[0])
        if not n:
            return
        if self._pending and self._pending[0][0] <= self.clean + n:
            rows = list(zip(*columns, strict=True))
            start = 0
            while self._pending and self._pending[0][0] <= self.clean + n:
                at, fault = self._pending.pop(0)
                cut = max(at - 1 - self.clean, start)
                self._writer.writerows(rows[start:cut])
                self.rows += cut - start
                self._place(fault, rows[cut])
                start = cut
            self._writer.writerows(rows[start:])
            self.rows += n - start
        else:
            self._writer.writerows(zip(*columns, strict=True))
            self.rows += n
        self.clean += n
        self._last = [col[-1] for col in columns]

    def _place(self, fault: Fault, template: Sequence[str]) -> None:
        self._clean_before.append(self.rows - len(self.placed))
        self._writer.writerow(fault.break_row(self.source, self.header, template))
        self.rows += 1
        self.placed.append({"file": self.file, "row": self.rows, "kind": fault.kind})

    def row_of(self, clean_index: int) -> int:
        """The data-row number of the clean row `clean_index` (0-based), counting the faults before it."""
        return clean_index + 1 + sum(1 for before in self._clean_before if before <= clean_index)

    def close(self) -> int:
        for _, fault in self._pending:
            self._place(fault, self._last)
        self._pending = []
        self._fh.close()
        return self.rows


def write_blocks(out: CsvOut, n: int, build: Callable[[slice], Sequence[Sequence[str]]]) -> None:
    for lo in range(0, n, BLOCK):
        out.write(build(slice(lo, min(n, lo + BLOCK))))


class Output:
    """The folder being written: opens each file with its planned faults and keeps the manifest's facts."""

    def __init__(self, root: Path, faults: Sequence[tuple[int, Fault]]):
        self.root = root
        self._faults = faults
        self.files: dict[str, int] = {}
        self.malformed: list[dict] = []
        self.quirks: list[dict] = []

    @contextmanager
    def csv(self, source: str, extra_columns: Sequence[str] = (), bom: bool = False) -> Iterator[CsvOut]:
        src = SOURCES_BY_NAME[source]
        file = f"{src.system}/{src.file}"
        faults = [(at, f) for at, f in self._faults if f.file == file]
        out = CsvOut(self.root, source, extra_columns, faults, bom)
        try:
            yield out
        finally:
            self.files[file] = out.close()
            self.malformed.extend(out.placed)

    def quirk(self, file: str, kind: str, **where: object) -> None:
        """A file-level oddity that must still parse: a BOM, an unknown column, a quoted line break."""
        self.quirks.append({"file": file, "kind": kind, **where})
