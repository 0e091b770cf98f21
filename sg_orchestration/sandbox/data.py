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

from sg_orchestration.catalog import SAMEGOAL_FORMS, SOURCES_BY_NAME

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


# `district.json`, the one file of the inputs folder that is not a system's export: what the sandbox needs to
# know about the district. The first keys are required; the last ones `sg-orch generate` writes as well.
DISTRICT_KEYS = {
    "id": 'the district id the districts file gets, e.g. "demo"',
    "name": "the district's name",
    "state": 'two-letter state, e.g. "TX"',
    "timezone": 'IANA timezone, e.g. "America/Chicago"',
    "cutover_dates": 'per special program, its SameGoal cutover date "YYYY-MM-DD" or null (not integrated)',
    "qmlativ_entity_id": "the Qmlativ District Entity id (an integer); the students' EntityID",
    "qmlativ_access_expires": 'the Qmlativ Integration Access expiry, "YYYY-MM-DD"',
}
OPTIONAL_DISTRICT_KEYS = {
    "edfi_district_number": "the Ed-Fi district number (text)",
    "school_years": "the school years the extracts cover, by end year, e.g. [2025, 2026]",
    "as_of": 'the day the export is as of, "YYYY-MM-DD" (`sg-orch generate --next-day` advances it)',
}
# What the sandbox serves from the folder: CSV with a header row, the columns of `catalog.py`; a missing
# file serves no records.
INPUT_FILES = (
    ("samegoal/<form>.csv", f"one per SameGoal form: {', '.join(SAMEGOAL_FORMS)}"),
    ("qmlativ/students.csv", ",".join(SOURCES_BY_NAME["qmlativ__students"].column_names)),
    ("powerschool/, oneroster/, campus/", "file drops, optional: named in the districts file when present"),
)


class InputsError(ValueError):
    """The inputs folder cannot be served; the message says which file it needs and its format."""


def inputs_layout(inputs: Path) -> str:
    """The folder layout and the `district.json` format, for an error message or the README."""
    width = max(map(len, [*DISTRICT_KEYS, *OPTIONAL_DISTRICT_KEYS])) + 2
    lines = [f"{inputs}/district.json: a JSON object with the keys"]
    lines += [f"  {k:<{width}}{v}" for k, v in DISTRICT_KEYS.items()]
    lines += ["and optionally"]
    lines += [f"  {k:<{width}}{v}" for k, v in OPTIONAL_DISTRICT_KEYS.items()]
    lines += ["The sandbox also reads, under the same folder (CSV, header row, the columns of catalog.py;"]
    lines += ["a missing file serves no records):"]
    lines += [f"  {f}: {what}" for f, what in INPUT_FILES]
    lines += [f"`sg-orch generate --out {inputs}` writes such a folder."]
    return "\n".join(lines)


def read_district(inputs: Path) -> dict:
    """`district.json`: the district's identity, cutover dates and Qmlativ entity (see DISTRICT_KEYS).

    InputsError, naming the file, its keys and the folder layout, if it is missing or incomplete."""
    inputs = Path(inputs)
    path = inputs / "district.json"
    if not inputs.is_dir():
        problem = f"{inputs} is not a folder"
    elif not path.is_file():
        problem = f"{path} not found"
    else:
        try:
            district = json.loads(path.read_text(encoding="utf-8-sig"))
        except (ValueError, OSError) as exc:
            problem = f"{path} is not readable JSON ({exc})"
        else:
            missing = [k for k in DISTRICT_KEYS if not isinstance(district, dict) or k not in district]
            if missing:
                problem = f"{path} lacks the keys {', '.join(missing)}"
            elif not str(district["qmlativ_entity_id"]).strip().isdigit():
                problem = (
                    f"{path}: qmlativ_entity_id must be an integer, not {district['qmlativ_entity_id']!r}"
                )
            else:
                return district
    raise InputsError(f"{problem}.\n{inputs_layout(inputs)}")


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    """Readers (another process, Dagster) never see half a file; `mode` applies before any byte lands."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
