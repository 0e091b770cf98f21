"""The data-quality gate before a OneRoster bundle is shared (seed 001 §2: "Once the data is synced, we will
validate and check the data quality before sharing it"; SPEC §4.3; issue 9 point 6).

It reads the bundle as written (the CSV files of a folder), not the marts that made it, so what it passes
is what School Passport receives. The rules, each with its file, field, cause and fix, and whether a
failure blocks delivery:

- `header`: each file's header is exactly the OneRoster 1.1 one (`HEADERS`; users may add `metadata.*`
  columns to the right). Blocking.
- `format`: each file reads as RFC 4180 CSV with the header's width. Blocking.
- `required`: the fields OneRoster 1.1 requires are filled. Blocking.
- `duplicate`: a `sourcedId` appears once in its file. Blocking.
- `enumeration`: org, session, role, class type, grade, sex and boolean values are OneRoster 1.1's; in
  bulk mode `status` is blank. Blocking.
- `reference`: every sourcedId a file names (one or a comma-separated list) is in the file it refers to.
  Blocking.
- `date`: dates are YYYY-MM-DD and real; a session or enrollment does not end before it starts; a birth
  date is neither in the future nor before 1900. Blocking.
- `critical`: the seed's critical homeless fields. Every student says whether they are identified as
  homeless (`Y`/`N`, or `true`/`false` from another SIS's export); one who is has a primary nighttime
  residence (a McKinney-Vento code) and says whether they are an unaccompanied youth (the same values). A student failing this is reported; delivery is
  blocked when the share of such students passes `oneroster.gate.max_missing_critical_share` (a record
  that goes out incomplete is worse than a late one, but one incomplete record should not hold back the
  district's whole roster).

A failing record is named by the md5 of its file and sourcedId, and the field: never by name or value
(the value is kept only for enumeration findings, which are codes). Findings become `ops.error_log` rows
(stage `validate`, target `oneroster/<file>`) that resolve once the record passes.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from sg_orchestration import error_log
from sg_orchestration.oneroster import HEADERS
from sg_orchestration.warehouse import literal, quote

TARGET = "oneroster"
FILES = tuple(name for name in HEADERS if name != "manifest")
BLOCKING_RULES = ("header", "format", "required", "duplicate", "enumeration", "reference", "date")

# OneRoster 1.1 (IMS Global, CSV binding): what each field must hold.
_GRADES = ("IT", "PR", "PK", "TK", "KG", *(f"{g:02d}" for g in range(1, 14)), "PS", "UG", "Other")
_BOOL = ("true", "false")
ENUMERATIONS: dict[tuple[str, str], tuple[tuple[str, ...], bool]] = {
    # (file, field): (allowed values, list-valued)
    ("orgs", "type"): (("department", "school", "district", "local", "state", "national"), False),
    ("academicSessions", "type"): (("gradingPeriod", "semester", "schoolYear", "term"), False),
    ("users", "role"): (
        ("administrator", "aide", "guardian", "parent", "proctor", "relative", "student", "teacher"),
        False,
    ),
    ("users", "enabledUser"): (_BOOL, False),
    ("users", "grades"): (_GRADES, True),
    ("enrollments", "role"): (("administrator", "proctor", "student", "teacher"), False),
    ("enrollments", "primary"): (_BOOL, False),
    ("classes", "classType"): (("homeroom", "scheduled"), False),
    ("classes", "grades"): (_GRADES, True),
    ("courses", "grades"): (_GRADES, True),
    ("demographics", "sex"): (("male", "female"), False),
    **{
        ("demographics", f): (_BOOL, False)
        for f in (
            "americanIndianOrAlaskaNative",
            "asian",
            "blackOrAfricanAmerican",
            "nativeHawaiianOrOtherPacificIslander",
            "white",
            "demographicRaceTwoOrMoreRaces",
            "hispanicOrLatinoEthnicity",
        )
    },
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "orgs": ("sourcedId", "name", "type"),
    "academicSessions": ("sourcedId", "title", "type", "startDate", "endDate", "schoolYear"),
    "courses": ("sourcedId", "title", "orgSourcedId"),
    "classes": ("sourcedId", "title", "courseSourcedId", "classType", "schoolSourcedId", "termSourcedIds"),
    "users": ("sourcedId", "enabledUser", "orgSourcedIds", "role", "username", "givenName", "familyName"),
    "enrollments": ("sourcedId", "classSourcedId", "schoolSourcedId", "userSourcedId", "role"),
    "demographics": ("sourcedId",),
}
# (file, field, referred file, list-valued)
REFERENCES: tuple[tuple[str, str, str, bool], ...] = (
    ("orgs", "parentSourcedId", "orgs", False),
    ("academicSessions", "parentSourcedId", "academicSessions", False),
    ("courses", "schoolYearSourcedId", "academicSessions", False),
    ("courses", "orgSourcedId", "orgs", False),
    ("classes", "courseSourcedId", "courses", False),
    ("classes", "schoolSourcedId", "orgs", False),
    ("classes", "termSourcedIds", "academicSessions", True),
    ("users", "orgSourcedIds", "orgs", True),
    ("users", "agentSourcedIds", "users", True),
    ("enrollments", "classSourcedId", "classes", False),
    ("enrollments", "schoolSourcedId", "orgs", False),
    ("enrollments", "userSourcedId", "users", False),
    ("demographics", "sourcedId", "users", False),
)
DATES: dict[str, tuple[str, ...]] = {
    "academicSessions": ("startDate", "endDate"),
    "enrollments": ("beginDate", "endDate"),
    "demographics": ("birthDate",),
}
SPANS = (("academicSessions", "startDate", "endDate"), ("enrollments", "beginDate", "endDate"))

# The seed's critical fields, as the attribute mapping names their columns.
IDENTIFIED = "metadata.is_identified_as_homeless"
RESIDENCE = "metadata.homeless_primary_nighttime_residence"
UNACCOMPANIED = "metadata.homeless_unaccompanied_youth"
# PowerSchool's plugin fields say Y/N; another SIS's OneRoster export may say true/false (seed 001 §2.2).
YES_NO = ("Y", "N", "true", "false")
YES = ("Y", "true")
# McKinney-Vento primary nighttime residence: doubled-up, shelters/transitional housing, hotels/motels,
# unsheltered (the codes PowerSchool's `Alert Other` carries for the plugin).
RESIDENCES = ("DOUBLE", "STH", "HOTMOT", "UNSHELTERED")

FIXES = {
    "header": "write the file with exactly the OneRoster 1.1 header (metadata.* columns to the right)",
    "format": "write the file as RFC 4180 CSV (UTF-8, comma-separated, fields with commas, quotes or line "
    "breaks in double quotes, a quote inside doubled)",
    "required": "fill the field in the SIS (or the OneRoster export); OneRoster requires it",
    "duplicate": "give each record its own sourcedId: two records share this one in the export",
    "enumeration": "use one of the OneRoster 1.1 values for this field (see the cause)",
    "reference": "the record names a sourcedId the referred file does not hold: export the referred "
    "record too, or correct the reference",
    "date": "correct the date in the SIS: YYYY-MM-DD, a real day, not ending before it starts",
    "critical": "fill the student's homeless fields in PowerSchool (Doctor Phone: identified as homeless "
    "Y/N; if Y, Alert Other: the primary nighttime residence, Alert Other Expires: unaccompanied Y/N)",
}


@dataclass(frozen=True)
class Finding:
    rule: str
    file: str
    field: str | None
    record_key: str  # md5 of `<file>:<sourcedId>` (of the file's name alone for a header finding)
    row: int | None  # the record's row in the file (1 = first after the header)
    cause: str
    value: str | None = None  # only codes (enumeration findings): never a name, a date or an id


@dataclass
class GateReport:
    files: dict[str, int]  # file -> records
    findings: list[Finding] = field(default_factory=list)
    students: int = 0
    students_missing_critical: int = 0
    max_missing_critical_share: float = 0.0

    @property
    def critical_share(self) -> float:
        return self.students_missing_critical / self.students if self.students else 0.0

    @property
    def blocking_reasons(self) -> list[str]:
        reasons = []
        counts = self.counts()
        for rule in BLOCKING_RULES:
            failing = sum(n for (r, _, _), n in counts.items() if r == rule)
            if failing:
                reasons.append(f"{failing:,} {rule} finding(s): {FIXES[rule]}")
        if self.critical_share > self.max_missing_critical_share:
            reasons.append(
                f"{self.students_missing_critical:,} of {self.students:,} students "
                f"({self.critical_share:.1%}) miss a critical homeless field, more than the "
                f"{self.max_missing_critical_share:.1%} allowed "
                f"(districts.yaml oneroster.gate.max_missing_critical_share): {FIXES['critical']}"
            )
        return reasons

    @property
    def blocked(self) -> bool:
        return bool(self.blocking_reasons)

    @property
    def verdict(self) -> str:
        return "blocked" if self.blocked else ("passed with warnings" if self.findings else "passed")

    def counts(self) -> dict[tuple[str, str, str | None], int]:
        out: dict[tuple[str, str, str | None], int] = {}
        for f in self.findings:
            out[(f.rule, f.file, f.field)] = out.get((f.rule, f.file, f.field), 0) + 1
        return out

    def markdown(self, examples: int = 10) -> str:
        lines = [f"**OneRoster data-quality gate: {self.verdict}**", ""]
        lines += [f"- {reason}" for reason in self.blocking_reasons]
        files = ", ".join(f"{name} {n:,}" for name, n in self.files.items())
        lines += [
            f"- records: {files}",
            f"- students missing a critical field: {self.students_missing_critical:,} of {self.students:,} "
            f"({self.critical_share:.1%}; allowed {self.max_missing_critical_share:.1%})",
            "",
        ]
        if not self.findings:
            return "\n".join(lines + ["No findings."])
        lines += ["| rule | file | field | records | blocks | fix |", "|---|---|---|---:|---|---|"]
        for (rule, file, fld), n in sorted(self.counts().items(), key=lambda kv: (kv[0][0], kv[0][1])):
            blocks = "yes" if rule in BLOCKING_RULES else "over threshold"
            lines.append(f"| {rule} | {file} | {fld or ''} | {n:,} | {blocks} | {FIXES[rule]} |")
        lines += ["", "| record (md5) | file | row | field | cause |", "|---|---|---:|---|---|"]
        shown: dict[tuple, int] = {}
        for f in self.findings:
            group = (f.rule, f.file, f.field)
            if shown.get(group, 0) < examples:
                shown[group] = shown.get(group, 0) + 1
                lines.append(
                    f"| {f.record_key[:12]} | {f.file} | {f.row or ''} | {f.field or ''} | {f.cause} |"
                )
        return "\n".join(lines)


def check_bundle(bundle_dir: Path, max_missing_critical_share: float = 0.0) -> GateReport:
    """Every rule on the bundle's CSV files (read with DuckDB, every field as text)."""
    bundle_dir = Path(bundle_dir)
    report = GateReport({}, max_missing_critical_share=max_missing_critical_share)
    with duckdb.connect() as con:
        readable = []
        for name in FILES:
            path = bundle_dir / f"{name}.csv"
            problem = _header_problem(path, name)
            if problem:
                report.findings.append(Finding("header", name, None, _key(name, ""), None, problem))
                continue
            try:
                con.execute(
                    f"create table {quote(name)} as select row_number() over () as _row, * from read_csv(?, "
                    "header = true, all_varchar = true, quote = '\"', escape = '\"', delim = ',', "
                    "strict_mode = true, null_padding = false)",
                    [str(path)],
                )
            except duckdb.Error:  # its message quotes the line: never repeated
                cause = f"{name}.csv cannot be read as CSV (a record's fields do not line up with the header)"
                report.findings.append(Finding("format", name, None, _key(name, ""), None, cause))
                continue
            report.files[name] = con.execute(f"select count(*) from {quote(name)}").fetchone()[0]
            readable.append(name)
        for rule, sql in _rule_queries(readable, _columns(con, readable)):
            for file, fld, sourced_id, row, cause, value in con.execute(sql).fetchall():
                report.findings.append(Finding(rule, file, fld, _key(file, sourced_id), row, cause, value))
        if "users" in readable:
            _critical(con, report)
    return report


def _key(file: str, sourced_id: str | None) -> str:
    return hashlib.md5(f"{file}:{sourced_id or ''}".encode()).hexdigest()


def _header_problem(path: Path, name: str) -> str | None:
    if not path.is_file():
        return f"{name}.csv is missing from the bundle"
    with path.open(newline="", encoding="utf-8") as f:
        header = next(csv.reader(f), [])
    expected = list(HEADERS[name])
    extra = header[len(expected) :]
    if header[: len(expected)] != expected or (extra and name != "users"):
        return f"header is {','.join(header)[:200]}; OneRoster 1.1 has {','.join(expected)}"
    if bad := [c for c in extra if not c.startswith("metadata.")]:
        return f"columns {', '.join(bad)} after the OneRoster ones are not metadata.* extensions"
    return None


def _columns(con, files: list[str]) -> dict[str, set[str]]:
    return {
        f: {r[0] for r in con.execute(f"select column_name from (describe {quote(f)})").fetchall()}
        for f in files
    }


def _blank(column: str) -> str:
    return f"nullif(trim({quote(column)}), '') is null"


def _select(file: str, fld: str | None, cause: str, where: str, value: str = "null") -> str:
    return (
        f'select {literal(file)}, {literal(fld) if fld else "null"}, "sourcedId", _row, {cause}, {value} '
        f"from {quote(file)} where {where}"
    )


def _rule_queries(files: list[str], columns: dict[str, set[str]]):
    """(rule, SQL giving file, field, sourcedId, row, cause, value) per rule and field."""
    present = set(files)
    for file in files:
        for fld in REQUIRED.get(file, ()):
            yield "required", _select(file, fld, literal(f"{fld} is blank"), _blank(fld))
        yield (
            "duplicate",
            f"select {literal(file)}, 'sourcedId', \"sourcedId\", _row, 'sourcedId appears ' || n || ' times', "
            f'null from (select *, count(*) over (partition by "sourcedId") as n from {quote(file)}) '
            'where n > 1 and "sourcedId" is not null',
        )
        yield (
            "enumeration",
            _select(file, "status", "'status must be blank in a bulk bundle'", "not " + _blank("status")),
        )
    for (file, fld), (allowed, many) in ENUMERATIONS.items():
        if file not in present or fld not in columns[file]:
            continue
        values = ", ".join(literal(v) for v in allowed)
        c = quote(fld)
        cause = literal(f"{fld} is not one of {', '.join(allowed)}")
        if many:
            bad = f"list_filter(string_split({c}, ','), lambda v: trim(v) not in ({values}))"
            yield (
                "enumeration",
                _select(
                    file, fld, cause, f"{c} is not null and len({bad}) > 0", f"array_to_string({bad}, ',')"
                ),
            )
        else:
            yield "enumeration", _select(file, fld, cause, f"{c} is not null and {c} not in ({values})", c)
    for file, fld, referred, many in REFERENCES:
        if file not in present or referred not in present:
            continue
        c = quote(fld)
        ids = f'(select "sourcedId" from {quote(referred)} where "sourcedId" is not null)'
        cause = literal(f"{fld} names a sourcedId that {referred}.csv does not hold")
        if many:
            where = f"{c} is not null and exists (select 1 from unnest(string_split({c}, ',')) t(v) where trim(t.v) not in {ids})"
        else:
            where = f"{c} is not null and {c} not in {ids}"
        yield "reference", _select(file, fld, cause, where)
    for file, fields in DATES.items():
        if file not in present:
            continue
        for fld in fields:
            c = quote(fld)
            bad = f"not regexp_full_match({c}, '\\d{{4}}-\\d{{2}}-\\d{{2}}') or try_cast({c} as date) is null"
            yield (
                "date",
                _select(
                    file, fld, literal(f"{fld} is not a real YYYY-MM-DD date"), f"{c} is not null and ({bad})"
                ),
            )
            if fld == "birthDate":
                odd = f"try_cast({c} as date) > current_date or try_cast({c} as date) < date '1900-01-01'"
                yield "date", _select(file, fld, literal("birthDate is in the future or before 1900"), odd)
    for file, start, end in SPANS:
        if file in present:
            cause = literal(f"{end} is before {start}")
            yield (
                "date",
                _select(
                    file, end, cause, f"try_cast({quote(end)} as date) < try_cast({quote(start)} as date)"
                ),
            )


def _critical(con, report: GateReport) -> None:
    """The seed's critical homeless fields of every student (see the module's docstring)."""
    have = _columns(con, ["users"])["users"]
    checks: list[tuple[str, str, str]] = []  # (field, cause, SQL true when the student fails it)
    if IDENTIFIED not in have:
        checks.append((IDENTIFIED, f"{IDENTIFIED} is not in users.csv", "true"))
    else:
        identified = quote(IDENTIFIED)
        checks.append(
            (
                IDENTIFIED,
                f"{IDENTIFIED} is blank or not one of {', '.join(YES_NO)}",
                f"coalesce({identified} not in ({', '.join(literal(v) for v in YES_NO)}), true)",
            )
        )
        for fld, allowed in ((RESIDENCE, RESIDENCES), (UNACCOMPANIED, YES_NO)):
            values = ", ".join(literal(v) for v in allowed)
            bad = f"coalesce({quote(fld)} not in ({values}), true)" if fld in have else "true"
            cause = f"{fld} is blank or not one of {', '.join(allowed)} for a student identified as homeless"
            homeless = f"{identified} in ({', '.join(literal(v) for v in YES)})"
            checks.append((fld, cause, f"{homeless} and {bad}"))
    items = ", ".join(f"{{'field': {literal(f)}, 'cause': {literal(c)}, 'bad': {b}}}" for f, c, b in checks)
    rows = con.execute(
        f"select \"sourcedId\", _row, list_filter([{items}], lambda p: p.bad) from users where role = 'student'"
    ).fetchall()
    report.students = len(rows)
    for sourced_id, row, failed in rows:
        report.students_missing_critical += bool(failed)
        for p in failed:
            report.findings.append(
                Finding("critical", "users", p["field"], _key("users", sourced_id), row, p["cause"])
            )


def record_findings(con, district_id: str, report: GateReport) -> None:
    """The report's findings as `ops.error_log` rows (stage `validate`, target `oneroster/<file>`); those
    of an earlier run no longer found resolve."""
    con.execute(
        "create or replace temp table _sg_gate_findings (target varchar, record_key_hash varchar, field varchar, "
        "value varchar, cause varchar, fix varchar, location varchar, load_id bigint)"
    )
    rows = [
        [f"{TARGET}/{f.file}", f.record_key, f.field, f.value, f.cause, FIXES[f.rule], _location(f)]
        for f in report.findings
    ]
    if rows:
        con.executemany("insert into _sg_gate_findings values (?, ?, ?, ?, ?, ?, ?, null)", rows)
    error_log.sync(con, district_id, "validate", "_sg_gate_findings", scope=f"e.target like '{TARGET}/%'")
    con.execute("drop table _sg_gate_findings")


def _location(f: Finding) -> str:
    return f"{f.file}.csv" + (f" row {f.row}" if f.row else "")
