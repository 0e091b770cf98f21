"""The `edfi` group of `sg-orch bench` (issue 8 item 17): the Ed-Fi target against Education Analytics'
`earthmover` (transform) and `lightbeam` (send), side by side in one run. Both tools are installed by the
bench into virtual environments of their own (`bench._bench_venv`), never project dependencies.

- `edfi transform` (a): SG_BENCH_EDFI_ROWS (default 10,000,000) test accommodation rows, written by DuckDB
  as a campus export (`campus/*.csv`: schools, calendars, school years, persons, enrollments, test
  accommodations; the rows of each seed 002 rule's exceptions among them), turned into the Indiana
  payloads. Ours, in a child process: the product's ingest of the campus files into a fresh warehouse,
  the run inputs, `dbt build` of the Ed-Fi models (with their tests) and the payloads (each record once)
  written to a JSONL file: CSV in, JSONL out (validation, a step of its own in a night, is left out).
  earthmover's: `earthmover run` of an equivalent project (`earthmover_project`: the same rules as joins,
  pandas filters and one Jinja template) over the same CSV files to a JSONL file. Peak memory: the
  child's own high-water RSS for ours; for earthmover, the larger of its process's max RSS (wait4) and
  the sampled RSS of its process tree. The two payload files are compared as JSON values
  (`same_payloads`).
- `edfi send` (b): the first SG_BENCH_EDFI_PAYLOADS (default 100,000) of those payloads sent by the
  engine's whole `publish()` path (diff, pending marks, ledger writes, payloads, token) and by `lightbeam
  send`, at the same concurrency (CONCURRENCY), to the same do-nothing Ed-Fi stub in another process
  (`publish.bench_servers`); client CPU per record of each (lightbeam's: its whole process), and every
  POST counted by the stub.
- `edfi nightly` (c): a generated district of SG_BENCH_EDFI_STUDENTS (default 10,000) students published
  cold to two Ed-Fi emulators (`sandbox.edfi`, every data request held LATENCY_S by its `slow` fault):
  one by the product (`sg-orch run` of the `-in` district, a whole process), one by earthmover + `lightbeam
  send` (its state dir kept). Then the next day: `sg-orch generate --next-day --changed-share 0.02` (its
  withdrawn students' enrollments go), CHANGED_SHARE of the accommodation rows sent last night given
  another accommodation valid for the test (a new record: every Indiana element is part of the key), and
  WITHDRAWN_SHARE of the students sent last night withdrawn too (their enrollments go). The night:
  `sg-orch run` again against ours, and earthmover + `lightbeam send` (hash skip) against the other, each
  timed from outside (earthmover reads the campus files less the manifest's malformed rows, which the
  product's ingest quarantines and earthmover's CSV reader stops at: made before its clock starts).
  Afterwards each ODS is read whole: how many records of withdrawn students it still holds, and how many
  it holds that the night's payloads no longer have (stale: lightbeam never deletes).

Targets (reported PASS/MISS, never enforced): (a) ours ≥ 10× faster than earthmover at no more peak memory;
(b) the engine's client CPU per record ≤ 60% of lightbeam's; (c) our night ≥ 3× faster than earthmover +
lightbeam's, and no withdrawn student's record left in our ODS.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from sg_orchestration.paths import DBT_PROJECT_DIR

ROWS_ENV = "SG_BENCH_EDFI_ROWS"
ROWS = 10_000_000
PAYLOADS_ENV = "SG_BENCH_EDFI_PAYLOADS"
PAYLOADS = 100_000
STUDENTS_ENV = "SG_BENCH_EDFI_STUDENTS"
STUDENTS = 10_000
EARTHMOVER_VENV_ENV = "SG_BENCH_EARTHMOVER_VENV"
CONCURRENCY = 16
# DuckDB's memory limit of the transform's dbt build (SG_DBT_MEMORY_LIMIT, when not set): with the product's
# default (768MB) int_edfi__assessment_accommodations runs out of memory at 10,000,000 rows (this machine,
# 2026-12: "could not allocate block", the build fails), so the bench gives dbt this much and says so.
DBT_MEMORY_LIMIT = "4GB"
LATENCY_S = 0.02
NEXT_DAY_SHARE = 0.02  # the generator withdraws a quarter of the share: 0.5% of the students
CHANGED_SHARE = 0.01  # of the accommodation rows
WITHDRAWN_SHARE = 0.005  # of the students with accommodations, withdrawn besides the generator's
ROWS_PER_STUDENT = 6
DISTRICT_NUMBER = "5375"
RESOURCE = "studentAssessmentAccommodations"
NAMESPACE = "indiana"
# Issue 8 item 17's targets.
TRANSFORM_MIN_SPEEDUP = 10.0
SEND_MAX_OF_LIGHTBEAM = 0.6
NIGHT_MIN_SPEEDUP = 3.0

TRANSFORM = "edfi transform"
SEND = "edfi send"
NIGHTLY = "edfi nightly"
OURS_COLD = "edfi nightly: ours (cold)"
OURS_NIGHT = "edfi nightly: ours (next day)"


# --- the campus export of (a), written by DuckDB --------------------------------------------------------------
def _as_of() -> date:
    from sg_orchestration.sandbox.server import INDIANA_TIMEZONE

    return datetime.now(ZoneInfo(INDIANA_TIMEZONE)).date()


def _combinations() -> list[tuple[str, str, str]]:
    """(state test, subject, accommodation) rows of the export: every valid pair of the generator's tests
    with each subject sat for it, and one row of each seed 002 exception (an unmapped test, an unknown
    subject and accommodation, an invalid pair)."""
    from sg_orchestration.generate import campus as c

    subjects = {
        c.ILEARN_3_8: ("01", "02", "03", "04"),
        c.ILEARN_BIOLOGY: ("25",),
        c.ILEARN_GOVERNMENT: ("26",),
        c.IREAD_3: ("01",),
        c.I_AM: ("01", "02"),
        c.ISTAR: ("01", "02"),
        c.WIDA: ("01",),
    }
    rows = [
        (t, s, code) for t, codes in c.VALID_ACCOMMODATIONS.items() for s in subjects[t] for code in codes
    ]
    return rows


EXCEPTIONS = (
    ("SAT", "02", "ET"),
    ("ILEARN Grade 3-8", "27", "ET"),
    ("ILEARN Grade 3-8", "02", "CALC"),
    ("WIDA ACCESS", "01", "ST"),
)


def write_inputs(campus: Path, rows: int, as_of: date) -> dict:
    """`rows` test accommodations of rows/ROWS_PER_STUDENT students, and their schools, calendars, school
    years, persons and enrollments, as campus CSV files in `campus`. Per student: dates current (most),
    ended, not started or open ended; a few without an Ed-Fi id, no shows, in an excluded school; one row
    in 331 an exception of seed 002."""
    import duckdb

    from sg_orchestration.generate.campus import school_year_rows
    from sg_orchestration.generate.common import school_year_of

    campus.mkdir(parents=True, exist_ok=True)
    y = school_year_of(as_of)
    students = -(-rows // ROWS_PER_STUDENT)
    combos = _combinations()
    day = as_of.isoformat()

    def copy(con, name: str, sql: str) -> None:
        con.execute(f"copy ({sql}) to '{campus / (name + '.csv')}' (format csv, header true)")

    with duckdb.connect() as con:
        con.execute("create table combos (i int, assessment varchar, subject varchar, accommodation varchar)")
        con.executemany("insert into combos values (?, ?, ?, ?)", [(i, *r) for i, r in enumerate(combos)])
        con.execute(
            "create table exceptions (i int, assessment varchar, subject varchar, accommodation varchar)"
        )
        con.executemany(
            "insert into exceptions values (?, ?, ?, ?)", [(i, *r) for i, r in enumerate(EXCEPTIONS)]
        )
        copy(
            con,
            "schools",
            "select i::varchar as school_id, (1000 + i * 37)::varchar as state_school_number, "
            "'School ' || i as name, if(i = 20, 'Y', 'N') as state_exclude from range(1, 21) t(i)",
        )
        copy(
            con,
            "calendars",
            f"select (1000 + (y - {y - 1}) * 20 + s)::varchar as calendar_id, s::varchar as school_id, "
            f"y::varchar as school_year, 'N' as state_exclude "
            f"from range({y - 1}, {y + 1}) a(y), range(1, 21) b(s) order by y, s",
        )
        years = [
            (str(r[0]), r[1].isoformat() if r[1] else None, r[2].isoformat() if r[2] else None)
            for r in school_year_rows(y)
        ]
        con.execute("create table years (school_year varchar, start_date varchar, end_date varchar)")
        con.executemany("insert into years values (?, ?, ?)", years)
        copy(con, "school_years", "select * from years")
        copy(
            con,
            "persons",
            f"select (5000001 + i)::varchar as person_id, "
            f"if(i % 500 = 7, null, (6000000000 + i)::varchar) as edfi_id, (100001 + i)::varchar as student_number, "
            f"'First' as first_name, 'Last' as last_name from range({students}) t(i)",
        )
        copy(
            con,
            "enrollments",
            f"select (1 + i)::varchar as enrollment_id, (5000001 + i)::varchar as person_id, "
            f"(1000 + 20 + i % 20 + 1)::varchar as calendar_id, '{y - 1}-08-14' as start_date, null as end_date, "
            f"if(i % 200 = 3, 'Y', 'N') as no_show from range({students}) t(i) "
            f"union all select ({students} + 1 + i)::varchar, (5000001 + i)::varchar, "
            f"(1000 + i % 20 + 1)::varchar, '{y - 2}-08-14', '{y - 1}-05-29', 'N' "
            f"from range(0, {students}, 2) t(i)",
        )
        copy(
            con,
            "test_accommodations",
            f"""
            with r as (
                select k, k // {ROWS_PER_STUDENT} as p,
                    case
                        when (k // {ROWS_PER_STUDENT}) % 20 = 1 then -400 - (k // {ROWS_PER_STUDENT}) % 300
                        when (k // {ROWS_PER_STUDENT}) % 33 = 2 then 1 + (k // {ROWS_PER_STUDENT}) % 59
                        else -1 - ((k // {ROWS_PER_STUDENT}) * 37) % 330
                    end as start_offset
                from range({rows}) t(k)
            )
            select (900001 + k)::varchar as accommodation_id, (5000001 + p)::varchar as person_id,
                coalesce(e.assessment, c.assessment) as assessment, coalesce(e.subject, c.subject) as subject,
                coalesce(e.accommodation, c.accommodation) as accommodation,
                strftime(date '{day}' + start_offset::int, '%Y-%m-%d') as start_date,
                if(p % 7 = 3, null, strftime(date '{day}' + (start_offset + 365 + p % 30)::int, '%Y-%m-%d')) as end_date,
                strftime(date '{day}' - (10 + p % 200)::int, '%Y-%m-%d') || 'T12:00:00Z' as modified_at
            from r
            join combos c on c.i = (k * 7 + p) % {len(combos)}
            left join exceptions e on k % 331 = 0 and e.i = (k // 331) % {len(EXCEPTIONS)}
            order by k
            """,
        )
    return {"rows": rows, "persons": students, "as_of": day, "school_years": [y - 1, y]}


def _district(campus: Path, school_years: list[int], base_url: str = "http://127.0.0.1:9"):
    """An Indiana district over the campus folder, publishing to `base_url`."""
    from sg_orchestration.config import District
    from sg_orchestration.sandbox.server import EDFI_KEY, EDFI_SECRET, INDIANA_TIMEZONE

    connection = {
        "name": "idoe",
        "base_url": base_url,
        "key_env": EDFI_KEY,
        "secret_env": EDFI_SECRET,
        "district_number": DISTRICT_NUMBER,
        "school_years": school_years,
    }
    return District.model_validate(
        {
            "id": "bench-in",
            "name": "Bench (Indiana)",
            "state": "IN",
            "timezone": INDIANA_TIMEZONE,
            "inputs": {"campus_dir": str(campus)},
            "edfi": {"profile": "indiana", "connections": [connection]},
        }
    )


# --- the earthmover project: the same rules ------------------------------------------------------------------
TEMPLATE = (
    '{"studentReference":{"studentUniqueId":{{ edfi_id | tojson }}},'
    '"educationOrganizationReference":{"educationOrganizationId":10{{ district_number }}{{ state_school_number }}},'
    '"assessmentReference":{"assessmentIdentifier":{{ assessment_identifier | tojson }},'
    '"namespace":{{ assessment_namespace | tojson }}},'
    '"academicSubjectDescriptor":{{ (subject_namespace ~ "#" ~ subject) | tojson }},'
    '"accommodationDescriptor":{{ (accommodation_namespace ~ "#" ~ accommodation) | tojson }}}\n'
)


def earthmover_project(
    folder: Path,
    campus: Path,
    output: Path,
    as_of: date,
    school_years: list[int],
    district_id: str,
    district_number: str = DISTRICT_NUMBER,
) -> Path:
    """An earthmover project (config + template) that turns the campus CSV files into the Indiana payloads
    the dbt models send (seed 002's rules: the dates against the as-of date, the scope years, the
    enrollment and its exclusions, the Ed-Fi id, the assessment mapping, the descriptors and the valid
    combinations, each record once), as JSONL in `output`; returns the config file."""
    import csv

    folder.mkdir(parents=True, exist_ok=True)
    seeds = DBT_PROJECT_DIR / "seeds"
    with (seeds / "edfi_assessment_mapping.csv").open() as f:
        mapping = [(r["state_test_contains"].upper(), r["assessment_identifier"]) for r in csv.DictReader(f)]
    # The mapping over the distinct test names (a name matching two assessments maps to none).
    match = (
        "{%- set a = assessment | upper -%}{%- set ns = namespace(ids=[]) -%}"
        f"{{%- for c, i in {mapping!r} -%}}"
        "{%- if c in a and i not in ns.ids -%}{%- set ns.ids = ns.ids + [i] -%}{%- endif -%}{%- endfor -%}"
        "{{ ns.ids[0] if ns.ids | length == 1 else '' }}"
    )
    (folder / "connection_years.csv").write_text(
        "school_year,district_number\n" + "".join(f"{y},{district_number}\n" for y in school_years)
    )
    (folder / "payload.jsont").write_text(TEMPLATE)
    day = as_of.isoformat()
    both = "start_date != '' and end_date != ''"
    single = "(start_date == '') != (end_date == '')"
    the_date = "(start_date + end_date)"  # a single-date record's one date
    in_scope = (
        f"(({both}) and ("
        f"(scope == 'current' and start_date <= '{day}' and end_date >= '{day}') or "
        "(scope == 'previous' and start_date <= year_end and end_date > year_end) or "
        "(scope == 'future' and start_date <= year_start and end_date >= year_start))) or "
        f"(({single}) and ("
        f"(scope == 'current' and {the_date} <= '{day}') or "
        f"(scope == 'previous' and {the_date} <= year_end) or "
        f"(scope == 'future' and {the_date} >= year_start)))"
    )
    dates = (
        f"(start_date != '' or end_date != '') and (start_date == '' or start_date <= '{day}') "
        f"and (end_date == '' or end_date >= '{day}') and ({in_scope})"
    )
    placed = (
        "(enrollment_start == '' or end_date == '' or enrollment_start <= end_date) "
        "and (enrollment_end == '' or start_date == '' or enrollment_end >= start_date) "
        "and no_show != 'Y' and calendar_state_exclude != 'Y' and school_state_exclude != 'Y'"
    )

    def jinja(expression: str) -> str:  # earthmover renders the whole config with Jinja first
        return "{% raw %}" + expression + "{% endraw %}"

    def source(path: Path, **extra) -> dict:
        return {"file": str(path), "header_rows": 1, **extra}

    def join(right: str, left_keys: list[str], right_keys: list[str], how: str = "inner") -> dict:
        return {
            "operation": "join",
            "sources": [f"$transformations.{right}" if right.startswith("t_") else f"$sources.{right}"],
            "join_type": how,
            "left_keys": left_keys,
            "right_keys": right_keys,
        }

    def rename(**columns) -> dict:
        return {"operation": "rename_columns", "columns": columns}

    def keep(*columns) -> dict:
        return {"operation": "keep_columns", "columns": list(columns)}

    def where(query: str) -> dict:
        return {"operation": "filter_rows", "query": query, "behavior": "include"}

    config = {
        "version": 2,
        "config": {"output_dir": str(output), "show_progress": False, "log_level": "WARNING"},
        "sources": {
            "accommodations": source(campus / "test_accommodations.csv"),
            "persons": source(campus / "persons.csv", encoding="utf-8-sig"),
            "enrollments": source(campus / "enrollments.csv"),
            "calendars": source(campus / "calendars.csv"),
            "schools": source(campus / "schools.csv"),
            "school_years": source(campus / "school_years.csv"),
            "connection_years": source(folder / "connection_years.csv"),
            "mapping": source(seeds / "edfi_assessment_mapping.csv"),
            "subjects": source(seeds / "edfi_academic_subject_descriptors.csv"),
            "codes": source(seeds / "edfi_accommodation_descriptors.csv"),
            "combinations": source(seeds / "edfi_valid_combinations.csv"),
        },
        "transformations": {
            # each configured school year with its dates (07/01 and 06/30 when blank) and scope
            "t_years": {
                "source": "$sources.connection_years",
                "operations": [
                    join("school_years", ["school_year"], ["school_year"], how="left"),
                    {
                        "operation": "add_columns",
                        "columns": {
                            "year_start": jinja("{{ start_date or ((school_year | int) - 1) ~ '-07-01' }}"),
                            "year_end": jinja("{{ end_date or school_year ~ '-06-30' }}"),
                            "k": "1",
                        },
                    },
                    {
                        "operation": "add_columns",
                        "columns": {
                            "scope": jinja(
                                f"{{{{ 'future' if '{day}' < year_start else "
                                f"'previous' if '{day}' > year_end else 'current' }}}}"
                            )
                        },
                    },
                    keep("school_year", "district_number", "year_start", "year_end", "scope", "k"),
                ],
            },
            "t_assessments": {
                "source": "$sources.accommodations",
                "operations": [
                    keep("assessment"),
                    {"operation": "distinct_rows", "columns": ["assessment"]},
                    {"operation": "add_columns", "columns": {"assessment_identifier": jinja(match)}},
                    where("assessment_identifier != ''"),
                ],
            },
            "t_namespaces": {
                "source": "$sources.mapping",
                "operations": [
                    keep("assessment_identifier", "namespace"),
                    {"operation": "distinct_rows", "columns": ["assessment_identifier"]},
                    rename(namespace="assessment_namespace"),
                ],
            },
            "t_calendars": {
                "source": "$sources.calendars",
                "operations": [rename(state_exclude="calendar_state_exclude")],
            },
            "t_schools": {
                "source": "$sources.schools",
                "operations": [
                    rename(state_exclude="school_state_exclude"),
                    keep("school_id", "state_school_number", "school_state_exclude"),
                    where("state_school_number.str.isdigit()"),
                ],
            },
            "t_enrollments": {
                "source": "$sources.enrollments",
                "operations": [
                    rename(start_date="enrollment_start", end_date="enrollment_end"),
                    join("t_calendars", ["calendar_id"], ["calendar_id"]),
                    join("t_schools", ["school_id"], ["school_id"]),
                    keep(
                        "person_id",
                        "school_year",
                        "enrollment_start",
                        "enrollment_end",
                        "no_show",
                        "calendar_state_exclude",
                        "school_state_exclude",
                        "state_school_number",
                    ),
                ],
            },
            "t_persons": {
                "source": "$sources.persons",
                "operations": [keep("person_id", "edfi_id"), where("edfi_id != ''")],
            },
            "t_subjects": {
                "source": "$sources.subjects",
                "operations": [keep("code_value", "namespace"), rename(namespace="subject_namespace")],
            },
            "t_codes": {
                "source": "$sources.codes",
                "operations": [keep("code_value", "namespace"), rename(namespace="accommodation_namespace")],
            },
            "t_combinations": {
                "source": "$sources.combinations",
                "operations": [
                    where(f"district_id == '' or district_id == '{district_id}'"),
                    keep("assessment_identifier", "accommodation_code"),
                    {
                        "operation": "distinct_rows",
                        "columns": ["assessment_identifier", "accommodation_code"],
                    },
                ],
            },
            "t_payloads": {
                "source": "$sources.accommodations",
                "operations": [
                    {"operation": "add_columns", "columns": {"k": "1"}},
                    join("t_years", ["k"], ["k"]),
                    where(dates),
                    join("t_persons", ["person_id"], ["person_id"]),
                    join("t_enrollments", ["person_id", "school_year"], ["person_id", "school_year"]),
                    where(placed),
                    join("t_assessments", ["assessment"], ["assessment"]),
                    join("t_namespaces", ["assessment_identifier"], ["assessment_identifier"]),
                    join("t_subjects", ["subject"], ["code_value"]),
                    join("t_codes", ["accommodation"], ["code_value"]),
                    join(
                        "t_combinations",
                        ["assessment_identifier", "accommodation"],
                        ["assessment_identifier", "accommodation_code"],
                    ),
                    keep(
                        "edfi_id",
                        "district_number",
                        "state_school_number",
                        "assessment_identifier",
                        "assessment_namespace",
                        "subject",
                        "subject_namespace",
                        "accommodation",
                        "accommodation_namespace",
                    ),
                    {
                        "operation": "distinct_rows",
                        "columns": [
                            "edfi_id",
                            "state_school_number",
                            "assessment_identifier",
                            "subject",
                            "accommodation",
                        ],
                    },
                ],
            },
        },
        "destinations": {
            RESOURCE: {
                "source": "$transformations.t_payloads",
                "template": str(folder / "payload.jsont"),
                "extension": "jsonl",
                "linearize": True,
            }
        },
    }
    path = folder / "earthmover.yaml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def _measured(cmd: list[str], log: Path, cwd: Path, env: dict | None = None) -> dict:
    """Runs `cmd` to completion: its wall time, user+sys CPU and peak memory (the larger of its own max
    RSS and the sampled summed RSS of its process tree). Fails (SystemExit) on a non-zero exit."""
    from sg_orchestration.bench import _TreeMemory

    with log.open("w") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env)
        with _TreeMemory(proc.pid) as memory:
            _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{Path(cmd[0]).name} failed (exit {code}): {log.read_text()[-3000:]}")
    return {
        "wall_s": round(wall, 3),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "peak_mib": round(max(usage.ru_maxrss, memory.peak_kib) / 1024, 1),
    }


def _earthmover(project: Path, log: Path) -> dict:
    venv = _earthmover_venv()
    cmd = [str(venv / "bin" / "earthmover"), "run", "-c", str(project), "--force", "--skip-hashing"]
    return _measured(cmd, log, project.parent)


def _earthmover_venv() -> Path:
    from sg_orchestration.bench import _bench_venv

    return _bench_venv("earthmover", EARTHMOVER_VENV_ENV)


def _lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for _ in f)


def compare_payloads(ours: Path, theirs: Path) -> dict:
    """How many payloads each file holds, and how many of each the other lacks (compared as JSON)."""
    import duckdb

    def read(path: Path) -> str:
        return (
            f"(select json(line) as j from read_csv('{path}', header = false, columns = {{'line': 'varchar'}}, "
            "delim = '\t', quote = '', escape = ''))"
        )

    with duckdb.connect() as con:
        only_ours = con.execute(f"select count(*) from ({read(ours)} except {read(theirs)})").fetchone()[0]
        only_theirs = con.execute(f"select count(*) from ({read(theirs)} except {read(ours)})").fetchone()[0]
    return {
        "ours": _lines(ours),
        "earthmover": _lines(theirs),
        "only_ours": only_ours,
        "only_earthmover": only_theirs,
        "same_payloads": only_ours == 0 and only_theirs == 0,
    }


# --- the children: one stage each ----------------------------------------------------------------------------
def _stage_inputs(work: Path, students: int, seed: int) -> dict:
    rows = int(os.environ.get(ROWS_ENV, ROWS))
    started = time.perf_counter()
    made = write_inputs(work / "campus", rows, _as_of())
    (work / "inputs.json").write_text(json.dumps(made))
    return {"wall_s": time.perf_counter() - started, **made}


def _stage_ours(work: Path, students: int, seed: int) -> dict:
    """The product's path: ingest of the campus files, the run inputs, `dbt build` of the Ed-Fi models, the
    payloads (each record once, as the publish diff reads them) written to `ours.jsonl`."""
    from sg_orchestration.bench import _dbt
    from sg_orchestration.catalog import SOURCES
    from sg_orchestration.edfi.names import MARTS
    from sg_orchestration.ingest.pipeline import ingest_source
    from sg_orchestration.transform.dbt import TARGET_MODELS, prepare
    from sg_orchestration.transform.edfi import record_run_inputs
    from sg_orchestration.warehouse import connect

    made = json.loads((work / "inputs.json").read_text())
    district = _district(work / "campus", made["school_years"])
    prepare()  # the parsed manifest: not part of a night
    started = time.perf_counter()
    rows_read = 0
    for source in SOURCES:
        if source.system == "campus":
            result, _failures = ingest_source(source, district)
            rows_read += result.rows_read if result else 0
    ingest_s = time.perf_counter() - started
    t = time.perf_counter()
    with connect() as con:
        record_run_inputs(con, district, date.fromisoformat(made["as_of"]))
    dbt_s = time.perf_counter() - t + _dbt(work, ["--select", TARGET_MODELS["edfi"]])
    t = time.perf_counter()
    out = work / "ours.jsonl"
    with connect() as con:
        con.execute(
            f"copy (select distinct payload from {MARTS['indiana']} where district_id = ?) to '{out}' "
            "(format csv, header false, delimiter '\t', quote '', escape '')",
            [district.id],
        )
    export_s = time.perf_counter() - t
    return {
        "wall_s": time.perf_counter() - started,
        "rows": made["rows"],
        "rows_read": rows_read,
        "ingest_s": round(ingest_s, 3),
        "dbt_s": round(dbt_s, 3),
        "export_s": round(export_s, 3),
        "payloads": _lines(out),
    }


def _stage_earthmover(work: Path, students: int, seed: int) -> dict:
    """`earthmover run` of the equivalent project over the same files; then (not timed) its payloads
    against ours."""
    made = json.loads((work / "inputs.json").read_text())
    output = work / "earthmover-out"
    shutil.rmtree(output, ignore_errors=True)
    project = earthmover_project(
        work / "earthmover",
        work / "campus",
        output,
        date.fromisoformat(made["as_of"]),
        made["school_years"],
        "bench-in",
    )
    _earthmover_venv()  # not timed: installed once
    run = _earthmover(project, work / "earthmover.log")
    theirs = output / f"{RESOURCE}.jsonl"
    return {
        "wall_s": run["wall_s"],
        "rows": made["rows"],
        "cpu_s": run["cpu_s"],
        "tool_peak_mib": run["peak_mib"],
        "payloads": _lines(theirs),
        "compared": compare_payloads(work / "ours.jsonl", theirs),
    }


def _stage_send(work: Path, students: int, seed: int) -> dict:
    """(b): the first SG_BENCH_EDFI_PAYLOADS payloads of (a), by the engine's whole path and by `lightbeam
    send`, to the same do-nothing stub at the same concurrency: client CPU per record of each."""
    from sg_orchestration.bench import _engine_publish, _lightbeam_send, _lightbeam_venv
    from sg_orchestration.publish.bench_servers import EdFiAdapter, EdFiStub

    class Adapter(EdFiAdapter):
        path = f"/data/v3/{NAMESPACE}/{RESOURCE}"

    wanted = int(os.environ.get(PAYLOADS_ENV, PAYLOADS))
    with (work.parent / "transform" / "ours.jsonl").open() as f:
        records = [line.rstrip("\n") for _, line in zip(range(wanted), f, strict=False)]
    n = len(records)
    venv = _lightbeam_venv()
    started = time.perf_counter()
    with EdFiStub() as stub:
        engine = _engine_publish(work, stub.base_url, records, CONCURRENCY, stub.reset, adapter=Adapter())
        engine_posts = stub.posts()
        stub.reset()
        lightbeam = _lightbeam_send(
            venv, work, stub.base_url, records, CONCURRENCY, resource=RESOURCE, namespace=NAMESPACE
        )
        lightbeam_posts = stub.posts()
    us = {"engine": engine["cold"]["cpu_s"] / n * 1e6, "lightbeam": lightbeam["cpu_s"] / n * 1e6}
    ratio = us["engine"] / us["lightbeam"]
    return {
        "wall_s": time.perf_counter() - started,
        "rows": n,
        "requested": wanted,
        "concurrency": CONCURRENCY,
        "payload_bytes": round(sum(map(len, records)) / n),
        "arrived": {"engine": engine_posts, "lightbeam": lightbeam_posts},
        "us_per_record": {k: round(v, 1) for k, v in us.items()},
        "engine_wall_s": round(engine["cold"]["wall_s"], 3),
        "ratio": round(ratio, 3),
        "pass": ratio <= SEND_MAX_OF_LIGHTBEAM and engine_posts == n and lightbeam_posts == n,
    }


STAGES = {
    "edfi_inputs": _stage_inputs,
    "edfi_ours": _stage_ours,
    "edfi_earthmover": _stage_earthmover,
    "edfi_send": _stage_send,
}


# --- the parent ------------------------------------------------------------------------------------------------
def run(out: Path, seed: int, keep: bool, failures: list[str]) -> dict:
    """The three comparisons; each failed part is named in `failures` and leaves the others."""
    from sg_orchestration.bench import StageFailed

    work = out / "work" / "edfi"
    shutil.rmtree(work, ignore_errors=True)
    report: dict = {"rows_requested": int(os.environ.get(ROWS_ENV, ROWS))}
    try:
        for name, part in (("transform", _transform), ("send", _send), ("nightly", _nightly)):
            try:
                report[name] = part(work, seed)
            except (StageFailed, SystemExit, subprocess.CalledProcessError, OSError) as exc:
                failures.append(f"edfi {name}: {exc}")
                print(f"bench: edfi {name}: {exc}", file=sys.stderr, flush=True)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    return report


def _stage(stage: str, label: str, work: Path, seed: int, env: dict) -> dict:
    from sg_orchestration.bench import _run_stage

    work.mkdir(parents=True, exist_ok=True)
    return _run_stage(stage, label, 0, seed, work, env, None)


def _transform(work: Path, seed: int) -> dict:
    folder = work / "transform"
    env = {
        **os.environ,
        "SG_WAREHOUSE_PATH": str(folder / "warehouse.duckdb"),
        "SG_STATE_DIR": str(folder / "state"),
        "SG_DBT_MEMORY_LIMIT": os.environ.get("SG_DBT_MEMORY_LIMIT") or DBT_MEMORY_LIMIT,
    }
    made = _stage("edfi_inputs", f"{TRANSFORM}: inputs", folder, seed, env)
    ours = _stage("edfi_ours", f"{TRANSFORM}: ours", folder, seed, env)
    theirs = _stage("edfi_earthmover", f"{TRANSFORM}: earthmover", folder, seed, env)
    theirs["peak_mib"] = max(theirs["peak_mib"], theirs.pop("tool_peak_mib"))
    dbt_wall = ours["dbt_s"] + ours["export_s"]
    speedup = theirs["wall_s"] / ours["wall_s"] if ours["wall_s"] else 0.0
    return {
        "rows": made["rows"],
        "students": made["persons"],
        "inputs_s": round(made["wall_s"], 2),
        "dbt_memory_limit": env["SG_DBT_MEMORY_LIMIT"],
        "ours": ours,
        "earthmover": theirs,
        "compared": theirs["compared"],
        "speedup": round(speedup, 2),
        "speedup_dbt_only": round(theirs["wall_s"] / dbt_wall, 2) if dbt_wall else 0.0,
        "pass": speedup >= TRANSFORM_MIN_SPEEDUP
        and ours["peak_mib"] <= theirs["peak_mib"]
        and theirs["compared"]["same_payloads"],
    }


def _send(work: Path, seed: int) -> dict:
    if not (work / "transform" / "ours.jsonl").is_file():
        raise SystemExit("no payloads: the transform part did not run")
    return _stage("edfi_send", SEND, work / "send", seed, dict(os.environ))


# --- (c): the night, against two emulators -------------------------------------------------------------------
def _sent(records: Path, campus: Path) -> dict[str, set]:
    """What last night's payloads send: the students (person ids) and their (person id, subject,
    accommodation) rows."""
    import csv

    with (campus / "persons.csv").open(encoding="utf-8-sig", newline="") as f:
        person = {r["edfi_id"]: r["person_id"] for r in csv.DictReader(f) if r.get("edfi_id")}
    rows = set()
    for line in records.read_text().splitlines():
        p = json.loads(line)
        rows.add(
            (
                person.get(p["studentReference"]["studentUniqueId"]),
                p["academicSubjectDescriptor"].rsplit("#", 1)[-1],
                p["accommodationDescriptor"].rsplit("#", 1)[-1],
            )
        )
    return {"students": {r[0] for r in rows}, "rows": rows}


def _change_accommodations(campus: Path, share: float, seed: int, sent: dict[str, set]) -> int:
    """Gives `share` of the accommodation rows (at least one), picked by a hash of their id among the rows
    last night sent, another accommodation valid for their test, and a later modified_at; returns how many
    rows changed."""
    import csv
    import hashlib
    import io

    from sg_orchestration.generate.campus import VALID_ACCOMMODATIONS

    path = campus / "test_accommodations.csv"
    raw = path.read_bytes()
    text = raw.decode("utf-8-sig")
    newline = "\r\n" if "\r\n" in text else "\n"
    rows = list(csv.reader(text.splitlines()))
    header, body = rows[0], rows[1:]
    at = {
        name: header.index(name)
        for name in ("accommodation_id", "assessment", "accommodation", "modified_at")
    }
    held = {(r[1], r[at["assessment"]], r[3], r[at["accommodation"]]) for r in body if len(r) == len(header)}

    def rank(r: list[str]) -> int:
        return int(hashlib.md5(f"{seed}/{r[at['accommodation_id']]}".encode()).hexdigest()[:8], 16)

    candidates = [
        r
        for r in body
        if len(r) == len(header)
        and r[at["assessment"]] in VALID_ACCOMMODATIONS
        and (r[1], r[3], r[at["accommodation"]]) in sent["rows"]
    ]
    # the share of the rows, at least one
    picked = sorted(candidates, key=rank)[: max(1, round(len(body) * share))] if candidates else []
    changed = 0
    now = datetime.now(ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%SZ")
    for r in picked:
        h = rank(r)
        codes = VALID_ACCOMMODATIONS[r[at["assessment"]]]
        for code in codes[h % len(codes) :] + codes[: h % len(codes)]:
            key = (r[1], r[at["assessment"]], r[3], code)
            if key not in held:
                held.add(key)
                r[at["accommodation"]], r[at["modified_at"]] = code, now
                changed += 1
                break
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=newline).writerows([header, *body])
    path.write_bytes(
        ("\ufeff" if raw.startswith(b"\xef\xbb\xbf") else "").encode() + buffer.getvalue().encode()
    )
    return changed


def _clean_campus(inputs: Path, dest: Path) -> int:
    """The campus files of `inputs` without the malformed rows its manifest names (the product's ingest
    quarantines them; earthmover's CSV reader would stop at the first), into `dest`; returns how many
    rows were left out."""
    import csv

    manifest = json.loads((inputs / "manifest.json").read_text())
    bad: dict[str, set[int]] = {}
    for m in manifest.get("malformed", []):
        bad.setdefault(m["file"], set()).add(int(m["row"]))
    dest.mkdir(parents=True, exist_ok=True)
    dropped = 0
    for path in sorted((inputs / "campus").glob("*.csv")):
        skip = bad.get(f"campus/{path.name}", set())
        with path.open(encoding="utf-8-sig", newline="") as f:
            header, *rows = list(csv.reader(f))
        kept = [r for k, r in enumerate(rows, start=1) if k not in skip]
        dropped += len(rows) - len(kept)
        with (dest / path.name).open("w", encoding="utf-8", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows([header, *kept])
    return dropped


def _withdraw(inputs: Path, share: float, seed: int, sent: dict[str, set]) -> int:
    """Withdraws `share` (at least one) of the students last night sent records of, picked by a hash of
    their person id: their enrollments go, as the generator's next day does for its withdrawn students
    (and the manifest's malformed rows of the file are renumbered after them); returns how many."""
    import csv
    import hashlib

    accommodated = sent["students"]
    path = inputs / "campus" / "enrollments.csv"
    manifest_path = inputs / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    malformed = [m for m in manifest.get("malformed", []) if m["file"] == "campus/enrollments.csv"]
    bad = {int(m["row"]) for m in malformed}
    raw = path.read_bytes()
    with path.open(encoding="utf-8-sig", newline="") as f:
        header, *rows = list(csv.reader(f))
    person = header.index("person_id")
    enrolled = sorted(
        {r[person] for k, r in enumerate(rows, start=1) if k not in bad and len(r) > person} & accommodated,
        key=lambda p: hashlib.md5(f"{seed}/{p}".encode()).hexdigest(),
    )
    leaving = set(enrolled[: max(1, round(len(enrolled) * share))])
    removed = [
        k for k, r in enumerate(rows, start=1) if k not in bad and len(r) > person and r[person] in leaving
    ]
    gone = set(removed)
    for m in malformed:
        m["row"] = int(m["row"]) - sum(1 for k in removed if k < int(m["row"]))
    newline = "\r\n" if b"\r\n" in raw else "\n"
    with path.open(
        "w", encoding="utf-8-sig" if raw.startswith(b"\xef\xbb\xbf") else "utf-8", newline=""
    ) as f:
        csv.writer(f, lineterminator=newline).writerows(
            [header, *(r for k, r in enumerate(rows, start=1) if k not in gone)]
        )
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return len(leaving)


def _enrolled(campus: Path) -> set[str]:
    import csv

    with (campus / "enrollments.csv").open(encoding="utf-8-sig") as f:
        return {r["person_id"] for r in csv.DictReader(f)}


def _edfi_ids(campus: Path, persons: set[str]) -> set[str]:
    import csv

    with (campus / "persons.csv").open(encoding="utf-8-sig") as f:
        return {r["edfi_id"] for r in csv.DictReader(f) if r["person_id"] in persons and r["edfi_id"]}


class _Ods:
    """One emulator's Indiana resource, read and steered by its test hooks."""

    def __init__(self, url: str, credentials: dict):
        from sg_orchestration.sandbox.server import EDFI_KEY, EDFI_SECRET

        self.url = url
        self.auth = (credentials[EDFI_KEY], credentials[EDFI_SECRET])

    def latency(self, seconds: float) -> None:
        import httpx

        faults = {"slow_rate": 1.0 if seconds else 0.0, "slow_seconds": seconds}
        httpx.post(f"{self.url}/_sandbox/edfi/faults", json=faults).raise_for_status()

    def reset_stats(self) -> None:
        import httpx

        httpx.delete(f"{self.url}/_sandbox/edfi/stats").raise_for_status()

    def writes(self) -> dict[str, int]:
        import httpx

        by_method = httpx.get(f"{self.url}/_sandbox/edfi/stats").json()["writeback"]
        return {m: sum(by.values()) for m, by in by_method.items() if m in ("POST", "PUT", "DELETE")}

    def records(self) -> list[dict]:
        import httpx

        with httpx.Client(timeout=60) as client:
            reply = client.post(
                f"{self.url}/oauth/token", data={"grant_type": "client_credentials"}, auth=self.auth
            )
            headers = {"Authorization": f"Bearer {reply.raise_for_status().json()['access_token']}"}
            out: list[dict] = []
            while page := client.get(
                f"{self.url}/data/v3/{NAMESPACE}/{RESOURCE}",
                params={"offset": len(out), "limit": 500},
                headers=headers,
            ).json():
                out += page
        return out


def _payload_keys(records) -> set[str]:
    """The records as canonical JSON text (without the ODS's own fields)."""
    return {
        json.dumps(
            {k: v for k, v in r.items() if k not in ("id", "_etag", "_lastModifiedDate")}, sort_keys=True
        )
        for r in records
    }


def _held(ods: _Ods, desired: set[str], withdrawn: set[str]) -> dict:
    records = ods.records()
    keys = _payload_keys(records)
    return {
        "records": len(records),
        "withdrawn_records": sum(1 for r in records if r["studentReference"]["studentUniqueId"] in withdrawn),
        "stale_records": len(keys - desired),
        "missing_records": len(desired - keys),
    }


def _lightbeam_night(
    label: str, venv: Path, work: Path, project: Path, url: str, records: Path, env: dict
) -> dict:
    """earthmover over today's files, then `lightbeam send` of its payloads (state kept: hash skip), timed
    from outside as one night."""
    from sg_orchestration.bench import _lightbeam_send
    from sg_orchestration.sandbox.server import EDFI_KEY, EDFI_SECRET

    print(f"bench: {label} ...", flush=True)
    dropped = _clean_campus(work.parent / "inputs", work / "campus")  # not timed: in their favour
    started = time.perf_counter()
    transform = _earthmover(project, work / "earthmover.log")
    lines = records.read_text().splitlines()
    sent = _lightbeam_send(
        venv,
        work,
        url,
        lines,
        CONCURRENCY,
        resource=RESOURCE,
        namespace=NAMESPACE,
        client=(f"${{{EDFI_KEY}}}", f"${{{EDFI_SECRET}}}"),
        fresh=False,
        env=env,
        mode="shared_instance",
    )
    wall = time.perf_counter() - started
    print(f"bench: {label}: {wall:.1f} s, {len(lines):,} payloads", flush=True)
    return {
        "stage": label,
        "wall_s": round(wall, 2),
        "earthmover_s": transform["wall_s"],
        "earthmover_peak_mib": transform["peak_mib"],
        "lightbeam_cpu_s": round(sent["cpu_s"], 3),
        "payloads": len(lines),
        "malformed_rows_left_out": dropped,
    }


def _nightly(work: Path, seed: int) -> dict:
    from sg_orchestration.bench import _lightbeam_venv, _night_env, _nightly_run, _run_stage, _sg_orch
    from sg_orchestration.sandbox import Sandbox

    students = int(os.environ.get(STUDENTS_ENV, STUDENTS))
    night = work / "nightly"
    night.mkdir(parents=True, exist_ok=True)
    _run_stage("generate", f"{NIGHTLY}: generate", students, seed, night, dict(os.environ), None)
    inputs, campus = night / "inputs", night / "inputs" / "campus"
    info = json.loads((inputs / "district.json").read_text())
    school_years = [int(y) for y in info["school_years"]]
    venv = _lightbeam_venv()
    _earthmover_venv()
    districts_file = night / "districts.yaml"
    env = _night_env(night, districts_file)
    lb = night / "lightbeam"
    lb.mkdir(exist_ok=True)
    output = lb / "out"
    project = earthmover_project(
        lb / "project", lb / "campus", output, _as_of(), school_years, f"{info['id']}-in"
    )
    records = output / f"{RESOURCE}.jsonl"
    with (
        Sandbox(inputs, state_dir=night / "ods-ours") as ours,
        Sandbox(inputs, state_dir=night / "ods-lightbeam", credentials=ours.credentials) as theirs,
    ):
        ours.write_districts_file(districts_file)
        env.update(ours.credentials)
        district = f"{info['id']}-in"
        ods_ours = _Ods(ours.urls["edfi"], ours.credentials)
        ods_theirs = _Ods(theirs.urls["edfi"], ours.credentials)
        for ods in (ods_ours, ods_theirs):
            ods.latency(LATENCY_S)

        def our_night(label: str) -> dict:
            ods_ours.reset_stats()
            result = _nightly_run(label, students, district, districts_file, night, env, ours.urls)
            result.update(group="edfi", edfi_writes=ods_ours.writes())
            return result

        def their_night(label: str) -> dict:
            ods_theirs.reset_stats()
            result = _lightbeam_night(label, venv, lb, project, theirs.urls["edfi"], records, env)
            result["edfi_writes"] = ods_theirs.writes()
            return result

        cold = our_night(OURS_COLD)
        theirs_cold = their_night("edfi nightly: earthmover + lightbeam (cold)")
        before = _enrolled(campus)
        cmd = [
            *_sg_orch(),
            "generate",
            "--out",
            str(inputs),
            "--next-day",
            "--changed-share",
            str(NEXT_DAY_SHARE),
        ]
        subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
        sent = _sent(records, campus)
        changed = _change_accommodations(campus, CHANGED_SHARE, seed, sent)
        _withdraw(inputs, WITHDRAWN_SHARE, seed, sent)
        withdrawn = _edfi_ids(campus, before - _enrolled(campus))
        night_ours = our_night(OURS_NIGHT)
        night_theirs = their_night("edfi nightly: earthmover + lightbeam (next day)")
        for ods in (ods_ours, ods_theirs):
            ods.latency(0)
        desired = _payload_keys(json.loads(line) for line in records.read_text().splitlines())
        held_ours = _held(ods_ours, desired, withdrawn)
        held_theirs = _held(ods_theirs, desired, withdrawn)
    speedup = night_theirs["wall_s"] / night_ours["wall_s"] if night_ours["wall_s"] else 0.0
    return {
        "students": students,
        "latency_s": LATENCY_S,
        "concurrency": CONCURRENCY,
        "changed_rows": changed,
        "withdrawn_students": len(withdrawn),
        "cold": {"ours": _night_figures(cold), "lightbeam": theirs_cold},
        "night": {"ours": _night_figures(night_ours), "lightbeam": night_theirs},
        "held": {"ours": held_ours, "lightbeam": held_theirs},
        "speedup": round(speedup, 2),
        "pass": speedup >= NIGHT_MIN_SPEEDUP and held_ours["withdrawn_records"] == 0,
    }


def _night_figures(r: dict) -> dict:
    keep = ("stage", "wall_s", "result", "rows_read", "peak_mib", "steps_s", "edfi_writes")
    return {k: r[k] for k in keep if k in r}


# --- the report -------------------------------------------------------------------------------------------------
def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def render(e: dict | None) -> list[str]:
    if not e:
        return []
    lines: list[str] = []
    t = e.get("transform")
    if t:
        o, m, c = t["ours"], t["earthmover"], t["compared"]
        lines += [
            "",
            f"Ed-Fi transform (issue 8 item 17a): {t['rows']:,} test accommodation rows ({t['students']:,} "
            f"students) of a campus export into Indiana payloads (dbt's DuckDB memory limit "
            f"{t['dbt_memory_limit']}); ours ({c['ours']:,} payloads) vs earthmover "
            f"({c['earthmover']:,}); same payloads: {'yes' if c['same_payloads'] else 'NO'} "
            f"(only ours {c['only_ours']:,}, only earthmover {c['only_earthmover']:,}):",
            "",
            "| path | wall s | rows/s | peak MiB | detail |",
            "|---|---:|---:|---:|---|",
            f"| ours: ingest + dbt build + payloads file | {o['wall_s']:.1f} | {o['rows_per_s']:,} | "
            f"{o['peak_mib']:,.0f} | ingest {o['ingest_s']:.1f} s, dbt {o['dbt_s']:.1f} s, export "
            f"{o['export_s']:.1f} s |",
            f"| `earthmover run` | {m['wall_s']:.1f} | {m['rows_per_s']:,} | {m['peak_mib']:,.0f} | "
            f"CPU {m['cpu_s']:.1f} s |",
            f"| **earthmover / ours** | **{t['speedup']:.1f}×** (dbt + export alone: {t['speedup_dbt_only']:.1f}×) "
            f"| | | {_verdict(t['pass'])} (≥ {TRANSFORM_MIN_SPEEDUP:.0f}×, peak ≤ earthmover's, same payloads) |",
        ]
    s = e.get("send")
    if s:
        us = s["us_per_record"]
        lines += [
            "",
            f"Ed-Fi send (item 17b): {s['rows']:,} of those payloads (~{s['payload_bytes']} bytes), concurrency "
            f"{s['concurrency']}, one do-nothing Ed-Fi stub in another process; arrived: engine "
            f"{s['arrived']['engine']:,}, lightbeam {s['arrived']['lightbeam']:,}:",
            "",
            "| client | µs client CPU per record | target |",
            "|---|---:|---|",
            f"| engine `publish()` (whole path) | {us['engine']:,.1f} | |",
            f"| `lightbeam send` | {us['lightbeam']:,.1f} | engine/lightbeam {s['ratio']:.2f}: "
            f"{_verdict(s['pass'])} (≤ {SEND_MAX_OF_LIGHTBEAM}) |",
        ]
    n = e.get("nightly")
    if n:
        ours, theirs = n["night"]["ours"], n["night"]["lightbeam"]
        ho, ht = n["held"]["ours"], n["held"]["lightbeam"]
        lines += [
            "",
            f"Ed-Fi nightly (item 17c): {n['students']:,} students; next day {n['changed_rows']:,} accommodation "
            f"rows changed, {n['withdrawn_students']:,} students withdrawn; each emulator holds every data "
            f"request {n['latency_s'] * 1000:.0f} ms; concurrency {n['concurrency']}:",
            "",
            "| night | cold wall s | next day wall s | writes (next day) | records held | withdrawn students' "
            "records left | stale records left |",
            "|---|---:|---:|---|---:|---:|---:|",
            f"| ours (`sg-orch run`) | {n['cold']['ours']['wall_s']:.1f} | {ours['wall_s']:.1f} "
            f"(in its steps {sum(ours.get('steps_s', {}).values()):.1f}) | "
            f"{_writes(ours.get('edfi_writes'))} | {ho['records']:,} | {ho['withdrawn_records']:,} | "
            f"{ho['stale_records']:,} |",
            f"| earthmover + `lightbeam send` | {n['cold']['lightbeam']['wall_s']:.1f} | {theirs['wall_s']:.1f} "
            f"(earthmover {theirs['earthmover_s']:.1f}) | {_writes(theirs.get('edfi_writes'))} | {ht['records']:,} | "
            f"{ht['withdrawn_records']:,} | {ht['stale_records']:,} |",
            f"| **theirs / ours** | | **{n['speedup']:.1f}×** | | | | {_verdict(n['pass'])} "
            f"(≥ {NIGHT_MIN_SPEEDUP:.0f}×, no withdrawn record left in ours) |",
        ]
    return lines


def _writes(w: dict | None) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted((w or {}).items())) or "none"
