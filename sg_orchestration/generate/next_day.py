"""`next_day`: turns a generated district folder into the next day's export, deterministically.

About `changed_share` of the SameGoal documents are touched, split evenly between four kinds, each present
at least once however small the district:

- `new`: a new complete document (a new `document_id`) for a student who had one of that form, dated the
  day of the changes;
- `edited`: a new complete version of an existing document: one of its fields changed, a later
  `completed_at`;
- `superseded`: a later complete document for the same student, form and record date (and supersession
  key), under a new id;
- `voided`: a later version of a complete document with `document_status` voided.

Every change is completed on the old as-of day, after the last `completed_at` of the folder, so a reader of
the export from the previous day's last completion gets exactly the changed documents. Edited and voided
documents replace their row; new and superseding documents are appended. Besides, a few students
(`withdrawn_students`, a quarter of the share) leave the district: their rows go from the Qmlativ
students, the PowerSchool and OneRoster rosters and the campus enrollments; their SameGoal documents stay,
as SameGoal keeps them. `district.json`'s `as_of` advances one day; the manifest counts the days and each
change by kind (`next_day`, and `history` for every day). Malformed and quirk rows are never touched,
and their row numbers in the manifest follow the rows removed before them.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np

from sg_orchestration.catalog import SAMEGOAL_FORMS, SOURCES_BY_NAME
from sg_orchestration.generate.common import rng_for, school_year_of
from sg_orchestration.generate.samegoal import UNKNOWN_CODES

KINDS = ("new", "edited", "superseded", "voided")
PEOPLE = ("samegoal_student_id", "student_local_id", "student_state_id", "campus_id")
_HEAD = ("document_id", "document_status", "completed_at")
# Forms whose documents carry a timeline of their own: never the template of a new document.
_NO_NEW = ("child_find",)
# Where a withdrawn student's rows are, by the column naming the student and how it spells the local id.
WITHDRAWN_FROM = (
    ("qmlativ/students.csv", "StudentNumber", "{}"),
    ("powerschool/students.csv", "Local Id", "{}"),
    ("powerschool/enrollments.csv", "Student Local Id", "{}"),
    ("oneroster/users.csv", "sourcedId", "stu-{}"),
    ("oneroster/demographics.csv", "sourcedId", "stu-{}"),
    ("oneroster/enrollments.csv", "userSourcedId", "stu-{}"),
    ("campus/enrollments.csv", "person_id", "person"),
)


class _Table:
    """A CSV file of the folder, read and written back byte for byte (BOM, CRLF, minimal quoting)."""

    def __init__(self, path: Path):
        self.path = path
        raw = path.read_bytes()
        self.bom = raw.startswith(b"\xef\xbb\xbf")
        self.header, *self.rows = csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline=""))

    def col(self, name: str) -> int:
        return self.header.index(name)

    def write(self) -> int:
        with self.path.open("w", newline="", encoding="utf-8-sig" if self.bom else "utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\r\n")
            writer.writerow(self.header)
            writer.writerows(self.rows)
        return len(self.rows)


class _Tables(dict):
    """Each file of the folder read once, by its path under the folder."""

    def __init__(self, root: Path):
        super().__init__()
        self.root = root

    def __missing__(self, file: str) -> _Table:
        self[file] = _Table(self.root / file)
        return self[file]


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _instant(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (k < total % parts) for k in range(parts)]


def next_day(out: Path, changed_share: float = 0.01, seed: int | None = None) -> dict:
    """Turns the district under `out` into its next day's export; returns the manifest (also written).

    `seed` defaults to the manifest's; the same folder, share and seed always give the same files."""
    out = Path(out)
    if not 0 < changed_share <= 0.5:
        raise ValueError("--changed-share must be more than 0 and at most 0.5")
    manifest_path, district_path = out / "manifest.json", out / "district.json"
    if not manifest_path.is_file() or not district_path.is_file():
        raise FileNotFoundError(
            f"{out} has no manifest.json and district.json: write the first day with `sg-orch generate --out {out}`"
        )
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    district = json.loads(district_path.read_text(encoding="utf-8"))
    day = int(manifest.get("days", 0)) + 1
    seed = manifest["seed"] if seed is None else seed
    rng = rng_for(seed, f"next day {day}")
    old_as_of = date.fromisoformat(district["as_of"])
    new_as_of = old_as_of + timedelta(days=1)
    bad = {
        (m["file"], m["row"])
        for m in [*manifest.get("malformed", []), *manifest.get("quirks", [])]
        if "row" in m
    }

    tables = _Tables(out)
    forms = {form: tables[f"samegoal/{form}.csv"] for form in SAMEGOAL_FORMS}
    # The last completion of the folder: every change of this day comes after it.
    last = max(
        (
            moment
            for form, table in forms.items()
            for k, row in enumerate(table.rows, start=1)
            if (f"samegoal/{form}.csv", k) not in bad and len(row) == len(table.header)
            for moment in [_instant(row[table.col("completed_at")])]
            if moment
        ),
        default=datetime.combine(old_as_of, datetime.min.time(), UTC) - timedelta(seconds=1),
    )
    start = max(datetime.combine(old_as_of, datetime.min.time(), UTC) + timedelta(hours=13), last)
    span = max(
        int((datetime.combine(new_as_of, datetime.min.time(), UTC) - start).total_seconds()) - 7200, 3600
    )

    # Students who leave today: mapped in Qmlativ, not in a malformed or quirk row anywhere.
    qmlativ = tables["qmlativ/students.csv"]
    protected = _protected_ids(tables, bad)
    local = qmlativ.col("StudentNumber")
    pool = sorted({
        row[local] for k, row in enumerate(qmlativ.rows, start=1)
        if ("qmlativ/students.csv", k) not in bad and row[local] and row[local] not in protected
    })  # fmt: skip
    documents = sum(
        1
        for form, t in forms.items()
        for k in range(1, len(t.rows) + 1)
        if (f"samegoal/{form}.csv", k) not in bad
    )
    touched = max(len(KINDS), round(documents * changed_share))
    n_withdrawn = min(len(pool), max(1, round(len(pool) * changed_share / 4)))
    withdrawn = set(rng.choice(pool, size=n_withdrawn, replace=False).tolist()) if pool else set()

    # The complete, well-formed documents of students who stay: what today's changes start from.
    candidates: list[tuple[str, int]] = []
    for form, t in forms.items():
        status, doc_id, loc = t.col("document_status"), t.col("document_id"), t.col("student_local_id")
        candidates += [
            (form, i) for i, row in enumerate(t.rows)
            if (f"samegoal/{form}.csv", i + 1) not in bad and len(row) == len(t.header)
            and row[status] == "complete" and row[doc_id].isdigit() and row[loc] not in withdrawn
        ]  # fmt: skip
    if len(candidates) < touched:
        raise ValueError(f"{out}: only {len(candidates)} complete documents, too few to change {touched}")
    counts = dict(zip(KINDS, _split(touched, len(KINDS)), strict=True))
    order = [candidates[k] for k in rng.permutation(len(candidates))]
    picked: dict[str, list[tuple[str, int]]] = {}
    at = 0
    for kind in ("edited", "superseded", "voided"):
        picked[kind], at = order[at : at + counts[kind]], at + counts[kind]
    templates = [c for c in order[at:] if c[0] not in _NO_NEW]

    seconds = rng.integers(1, span + 1, size=touched).tolist()
    times = iter(_stamp(start + timedelta(seconds=s)) for s in seconds)
    # Rows are edited by position: the catalog puts these columns first in every form.
    if any(tuple(t.header[:3]) != _HEAD for t in forms.values()):
        raise ValueError(f"{out}: a SameGoal file whose first columns are not {', '.join(_HEAD)}")
    next_id = {
        form: 1 + max([int(r[0]) for r in t.rows if r and r[0].isdigit()], default=0)
        for form, t in forms.items()
    }
    appended: dict[str, list[list[str]]] = {form: [] for form in forms}
    by_form: dict[str, dict[str, int]] = {form: dict.fromkeys(KINDS, 0) for form in forms}

    def add(form: str, row: list[str], kind: str) -> None:
        row[0], row[1], row[2] = str(next_id[form]), "complete", next(times)
        next_id[form] += 1
        appended[form].append(row)
        by_form[form][kind] += 1

    good = {
        form: [r for k, r in enumerate(t.rows, start=1) if (f"samegoal/{form}.csv", k) not in bad]
        for form, t in forms.items()
    }
    distinct: dict[str, dict[str, list[str]]] = {form: {} for form in forms}
    for form, i in picked["edited"]:
        t = forms[form]
        row = list(t.rows[i])
        for column, value in _edit(rng, form, t.header, good[form], row, old_as_of, distinct[form]).items():
            row[t.col(column)] = value
        row[1], row[2] = "complete", next(times)
        t.rows[i] = row
        by_form[form]["edited"] += 1
    for form, i in picked["voided"]:
        row = list(forms[form].rows[i])
        row[1], row[2] = "voided", next(times)  # the moment it was voided: its change time
        forms[form].rows[i] = row
        by_form[form]["voided"] += 1
    for form, i in picked["superseded"]:
        add(form, list(forms[form].rows[i]), "superseded")
    made = 0
    taken = {form: _keys(form, t.header, [*good[form], *appended[form]]) for form, t in forms.items()}
    for form, i in templates:
        if made == counts["new"]:
            break
        row = _new_document(form, forms[form], i, old_as_of, taken[form])
        if row is not None:
            add(form, row, "new")
            made += 1
    if made < counts["new"]:
        raise ValueError(f"{out}: no room for {counts['new']} new documents today")

    files = dict(manifest.get("files", {}))
    for form, t in forms.items():
        t.rows += appended[form]
        files[f"samegoal/{form}.csv"] = t.write()
    removed = _withdraw(tables, withdrawn, bad, manifest, files)

    changes = {kind: sum(f[kind] for f in by_form.values()) for kind in KINDS}
    record = {
        "day": day,
        "as_of": new_as_of.isoformat(),
        "previous_as_of": old_as_of.isoformat(),
        "seed": seed,
        "changed_share": changed_share,
        "changes_after": _stamp(last.astimezone(UTC)),
        "documents": documents,
        "documents_touched": touched,
        "changes": changes | {"withdrawn_students": len(withdrawn)},
        "by_form": {form: c for form, c in by_form.items() if any(c.values())},
        "rows_removed": removed,
    }
    manifest |= {"as_of": new_as_of.isoformat(), "days": day, "files": files, "next_day": record}
    manifest["history"] = [*manifest.get("history", []), record]
    district["as_of"] = new_as_of.isoformat()
    year = school_year_of(new_as_of)
    district["school_years"] = [year - 1, year]
    district_path.write_text(json.dumps(district, indent=2) + "\n", encoding="utf-8")
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _edit(
    rng: np.random.Generator,
    form: str,
    header: list[str],
    good: list[list[str]],
    row: list[str],
    today: date,
    distinct: dict[str, list[str]],
) -> dict[str, str]:
    """The fields of the document to change, with their new values: another value the form's well-formed
    documents already use (never its deliberately unknown code); never the record date or a key.
    `distinct` caches each column's values for the form."""
    if form == "section_504":  # its one field with a choice: dismissed today, or dismissed no longer
        dismissed = row[header.index("no_longer_section_504")] == "Y"
        return {"no_longer_section_504": "N", "dismissal_date": ""} if dismissed else {
            "no_longer_section_504": "Y", "dismissal_date": today.isoformat()
        }  # fmt: skip
    source = SOURCES_BY_NAME[f"samegoal__{form}"]
    fixed = {*_HEAD, *PEOPLE, source.record_date, *source.supersession_key}
    unknown = UNKNOWN_CODES.get(form)
    for column in source.columns:
        if column.name in fixed or column.type == "date":
            continue
        k = header.index(column.name)
        if column.name not in distinct:
            distinct[column.name] = sorted({r[k] for r in good if len(r) == len(header) and r[k]})
        values = [v for v in distinct[column.name] if v != row[k]]
        values = [v for v in values if (column.name, v) != unknown]
        if values:
            return {column.name: values[int(rng.integers(len(values)))]}
    # Nothing to choose from (one value in every row): the document ends today (or no longer ends), or
    # else its first flag flips.
    if "end_date" in header:
        end = row[header.index("end_date")]
        return {"end_date": "" if end == today.isoformat() else today.isoformat()}
    flag = next(c.name for c in source.columns if c.type == "bool" and c.name not in fixed)
    return {flag: "N" if row[header.index(flag)] == "Y" else "Y"}


def _key_columns(form: str, header: list[str]) -> list[int]:
    """Where a document's supersession key is: student, record date and the form's extra columns."""
    source = SOURCES_BY_NAME[f"samegoal__{form}"]
    return [header.index(c) for c in ("samegoal_student_id", source.record_date, *source.supersession_key)]


def _keys(form: str, header: list[str], rows: list[list[str]]) -> set[tuple[str, ...]]:
    at = _key_columns(form, header)
    return {tuple(r[k] for k in at) for r in rows if len(r) == len(header)}


def _new_document(form: str, t: _Table, i: int, today: date, taken: set[tuple[str, ...]]) -> list[str] | None:
    """A copy of document `i` dated today and open-ended; None if the student already has one of that key
    (which would read as a supersession). Its key joins `taken`."""
    row = list(t.rows[i])
    row[t.col(SOURCES_BY_NAME[f"samegoal__{form}"].record_date)] = today.isoformat()
    for column, value in (("end_date", ""), ("dismissal_date", ""), ("no_longer_section_504", "N")):
        if column in t.header:
            row[t.col(column)] = value
    key = tuple(row[k] for k in _key_columns(form, t.header))
    if key in taken:
        return None
    taken.add(key)
    return row


def _protected_ids(tables: _Tables, bad: set[tuple[str, int]]) -> set[str]:
    """Local ids (and `stu-` ids, person ids) on malformed or quirk rows: those students never withdraw."""
    ids: set[str] = set()
    for file, column, _ in WITHDRAWN_FROM:
        rows = [r for f, r in bad if f == file]
        if rows and (tables.root / file).is_file():
            t = tables[file]
            k = t.col(column)
            ids |= {
                t.rows[r - 1][k].removeprefix("stu-")
                for r in rows
                if r <= len(t.rows) and len(t.rows[r - 1]) > k
            }
    return ids


def _withdraw(
    tables: _Tables, withdrawn: set[str], bad: set[tuple[str, int]], manifest: dict, files: dict
) -> dict[str, int]:
    """Removes the withdrawn students' rows; renumbers the manifest's malformed and quirk rows after them."""
    persons: set[str] = set()
    if (tables.root / "campus/persons.csv").is_file():
        t = tables["campus/persons.csv"]
        k, p = t.col("student_number"), t.col("person_id")
        persons = {r[p] for r in t.rows if len(r) > k and r[k] in withdrawn}
    removed: dict[str, int] = {}
    for file, column, spelling in WITHDRAWN_FROM:
        if not (tables.root / file).is_file():
            continue
        t = tables[file]
        k = t.col(column)
        ids = persons if spelling == "person" else {spelling.format(s) for s in withdrawn}
        gone = [
            n for n, r in enumerate(t.rows, start=1) if (file, n) not in bad and len(r) > k and r[k] in ids
        ]
        if not gone:
            continue
        drop = set(gone)
        t.rows = [r for n, r in enumerate(t.rows, start=1) if n not in drop]
        files[file] = t.write()
        removed[file] = len(gone)
        for entry in [*manifest.get("malformed", []), *manifest.get("quirks", [])]:
            if entry["file"] == file and "row" in entry:
                entry["row"] -= sum(1 for n in gone if n < entry["row"])
    return removed
