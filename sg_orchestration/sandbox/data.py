"""Reading the generated input folder the way an upstream system holds its data: leniently.

A real API serves the records it holds even when one is odd, so a malformed row is served with the fields
it has rather than refused: a short row leaves its missing trailing columns null, a long row's extra fields
are dropped, bad dates pass through as text. Spotting those is the ingest's job, not the sandbox's.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)


def read_records(path: Path, columns: Sequence[str]) -> list[dict[str, str | None]]:
    """The rows of a CSV file as records with exactly `columns`, blank or absent values as None."""
    if not path.is_file():
        log.warning("%s: not found, serving no records", path)
        return []
    records: list[dict[str, str | None]] = []
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader, [])
            for fields in reader:
                if fields:
                    row = dict(zip(header, fields, strict=False))
                    records.append({c: row.get(c) or None for c in columns})
        except csv.Error as exc:
            log.warning(
                "%s: unreadable from line %d (%s); serving the rows before it", path, reader.line_num, exc
            )
    return records


def read_district(inputs: Path) -> dict:
    """`district.json`: the generated district's identity, cutover dates and Qmlativ entity."""
    path = inputs / "district.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: write the inputs first with `sg-orch generate --out {inputs}`"
        )
    return json.loads(path.read_text(encoding="utf-8-sig"))


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    """Readers (another process, Dagster) never see half a file; `mode` applies before any byte lands."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
