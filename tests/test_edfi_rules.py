"""The Ed-Fi Student Education Organization Assessment Accommodations rules (seed 002, SPEC §4.2), each a
test, run by dbt against DuckDB.

Two districts hold the same small SIS extract, loaded into raw through the real loader: `edfi-in` (the
Indiana profile, two connections, as of 2025-10-15) and `edfi-ds` (the DS 5.2 profile, as of
2026-03-01). Each test student (person) carries one case; the run inputs are recorded as the Ed-Fi dbt
step records them, then dbt builds the step's selection.
"""

from __future__ import annotations

import csv
import json
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from sg_orchestration.catalog import SOURCES_BY_NAME
from sg_orchestration.config import ConfigError, District
from sg_orchestration.ingest.load import load
from sg_orchestration.ingest.readers import records_to_batches
from sg_orchestration.paths import DBT_PROJECT_DIR, PROJECT_ROOT
from sg_orchestration.transform import edfi
from sg_orchestration.transform.dbt import TARGET_MODELS, invoke, prepare
from sg_orchestration.warehouse import connect

AS_OF = date(2025, 10, 15)  # in school year 2026 (2025-26)
DS_AS_OF = date(2026, 3, 1)
DAY = timedelta(days=1)
ILEARN_NS = "uri://ed-fi.org/assessments/ilearn"
SUBJECT_NS = "http://doe.in.gov/Descriptor/AcademicSubjectDescriptor.xml"
ACCOMMODATION_NS = "http://doe.in.gov/Descriptor/AccommodationDescriptor.xml"
OPENAPI = PROJECT_ROOT.parent / "shared" / "reference" / "edfi-ds52-resources-openapi.json"


def _connection(name: str, number: str, years: list[int]) -> dict:
    return {
        "name": name,
        "base_url": "http://127.0.0.1:9/api",
        "key_env": "X_KEY",
        "secret_env": "X_SECRET",
        "district_number": number,
        "school_years": years,
    }


INDIANA = District(
    id="edfi-in",
    name="Indiana ISD",
    state="IN",
    timezone="America/Indiana/Indianapolis",
    edfi={
        "connections": [
            _connection("idoe", "5375", [2025, 2026, 2027]),
            _connection("second", "1234", [2026]),
        ],
        "profile": "indiana",
    },
)
DS52 = District(
    id="edfi-ds",
    name="DS 5.2 ISD",
    state="IN",
    timezone="America/Indiana/Indianapolis",
    edfi={"connections": [_connection("ods", "7777", [2026])], "profile": "ds52"},
)

# The School Years editor: 2025 with both dates, 2026 without an end date, 2027 with neither.
SCHOOL_YEARS = [
    {"school_year": "2025", "start_date": "2024-08-01", "end_date": "2025-06-10"},
    {"school_year": "2026", "start_date": "2025-08-01", "end_date": None},
    {"school_year": "2027", "start_date": None, "end_date": None},
]
SCHOOLS = [
    {"school_id": "S1", "state_school_number": "0101", "name": "One Elementary", "state_exclude": "N"},
    {"school_id": "S2", "state_school_number": "0202", "name": "Alternative Center", "state_exclude": "Y"},
    {"school_id": "S3", "state_school_number": "0303", "name": "Three Middle", "state_exclude": "N"},
]
CALENDARS = [
    {"calendar_id": "C25", "school_id": "S1", "school_year": "2025", "state_exclude": "N"},
    {"calendar_id": "C26", "school_id": "S1", "school_year": "2026", "state_exclude": "N"},
    {"calendar_id": "C27", "school_id": "S1", "school_year": "2027", "state_exclude": "N"},
    {"calendar_id": "C26-EXCLUDED-SCHOOL", "school_id": "S2", "school_year": "2026", "state_exclude": "N"},
    {"calendar_id": "C26-VIRTUAL", "school_id": "S3", "school_year": "2026", "state_exclude": "Y"},
    {"calendar_id": "C26-S3", "school_id": "S3", "school_year": "2026", "state_exclude": "N"},
]
# Every student's enrollments unless the case says otherwise: one per configured year's calendar.
ENROLLED = (
    ("C25", "2024-08-01", "2025-06-10", "N"),
    ("C26", "2025-08-01", None, "N"),
    ("C27", "2026-07-01", None, "N"),
)
ACCOMMODATION = {"assessment": "ILEARN Grade 3-8", "subject": "02", "accommodation": "ET"}
START, END = "2025-09-01", "2026-05-31"


def _case(start=START, end=END, enrollments=ENROLLED, edfi_id=True, rows=None, **fields) -> dict:
    return {
        "start": start,
        "end": end,
        "enrollments": enrollments,
        "edfi_id": edfi_id,
        "rows": rows or [{**ACCOMMODATION, **fields}],
    }


def _iso(day: date) -> str:
    return day.isoformat()


CASES = {
    "sent": _case(),
    # the as-of date against the accommodation's dates (current year: start <= today <= end)
    "starts_today": _case(start=_iso(AS_OF)),
    "not_started": _case(start=_iso(AS_OF + DAY)),
    "ends_today": _case(end=_iso(AS_OF)),
    "ended": _case(end=_iso(AS_OF - DAY)),
    # the enrollment
    "calendar_excluded": _case(enrollments=(("C26-VIRTUAL", "2025-08-01", None, "N"),)),
    "school_excluded": _case(enrollments=(("C26-EXCLUDED-SCHOOL", "2025-08-01", None, "N"),)),
    "no_show": _case(enrollments=(("C26", "2025-08-01", None, "Y"),)),
    "not_enrolled": _case(enrollments=()),
    "enrolled_after_it_ended": _case(end="2025-12-31", enrollments=(("C26", "2026-01-05", None, "N"),)),
    "two_schools": _case(enrollments=(("C26", "2025-08-01", None, "N"), ("C26-S3", "2025-09-15", None, "N"))),
    "no_show_at_one_of_two": _case(
        enrollments=(("C26", "2025-08-01", None, "N"), ("C26-S3", "2025-09-15", None, "Y"))
    ),
    "same_record_twice": _case(rows=[ACCOMMODATION, ACCOMMODATION]),
    # previous year 2025 (the editor's end date 2025-06-10), date ranges
    "prev_starts_on_its_end": _case(start="2025-06-10"),
    "prev_starts_after_its_end": _case(start="2025-06-11"),
    "prev_ends_on_its_end": _case(start="2025-01-10", end="2025-06-10"),
    "prev_ends_after_its_end": _case(start="2025-01-10", end="2025-06-11"),
    # future year 2027 (a blank start date: 2026-07-01), date ranges
    "future_ends_on_its_start": _case(end="2026-07-01"),
    "future_ends_before_its_start": _case(end="2026-06-30"),
    "future_starts_on_its_start": _case(start="2026-07-01", end="2027-05-01"),
    "future_starts_after_its_start": _case(start="2026-07-02", end="2027-05-01"),
    # single dates (no end date yet)
    "single_today": _case(start=_iso(AS_OF), end=None),
    "single_tomorrow": _case(start=_iso(AS_OF + DAY), end=None),
    "single_on_prev_end": _case(start="2025-06-10", end=None),
    "single_after_prev_end": _case(start="2025-06-11", end=None),
    "single_on_future_start": _case(start="2026-07-01", end=None),
    "single_before_future_start": _case(start="2026-06-30", end=None),
    "no_dates": _case(start=None, end=None),
    # the assessment mapping
    "i_am": _case(assessment="I AM"),
    "istar": _case(assessment="ISTAR Alternate"),
    "iread": _case(assessment="IREAD-3", subject="01"),
    "wida": _case(assessment="WIDA ACCESS", subject="01"),
    "lower_case": _case(assessment="ilearn Biology", subject="25"),
    "unmapped": _case(assessment="SAT"),
    # descriptors, valid combinations, the student
    "unknown_subject": _case(subject="27"),
    "unknown_accommodation": _case(accommodation="CALC"),
    "invalid_pair": _case(assessment="WIDA ACCESS", subject="01", accommodation="ST"),
    "no_edfi_id": _case(edfi_id=False),
    "several": _case(
        rows=[
            {**ACCOMMODATION, "subject": "01", "accommodation": "TTS_XRD"},
            {**ACCOMMODATION, "subject": "02", "accommodation": "ET"},
            {**ACCOMMODATION, "subject": "01", "accommodation": "ET"},
        ]
    ),
}


def _raw() -> dict[str, list[dict]]:
    persons, enrollments, accommodations = [], [], []
    for person, case in CASES.items():
        edfi_id = f"ID-{person}"[:32] if case["edfi_id"] else None
        persons.append(
            {"person_id": person, "edfi_id": edfi_id, "student_number": person, "last_name": person}
        )
        for n, (calendar, start, end, no_show) in enumerate(case["enrollments"]):
            enrollments.append(
                {
                    "enrollment_id": f"{person}/{n}",
                    "person_id": person,
                    "calendar_id": calendar,
                    "start_date": start,
                    "end_date": end,
                    "no_show": no_show,
                }
            )
        for n, row in enumerate(case["rows"]):
            accommodations.append(
                {
                    "accommodation_id": f"{person}/{n}",
                    "person_id": person,
                    **row,
                    "start_date": case["start"],
                    "end_date": case["end"],
                    "modified_at": "2025-08-20T10:00:00Z",
                }
            )
    return {
        "campus__schools": SCHOOLS,
        "campus__calendars": CALENDARS,
        "campus__school_years": SCHOOL_YEARS,
        "campus__persons": persons,
        "campus__enrollments": enrollments,
        "campus__test_accommodations": accommodations,
    }


def _load(con, district_id: str, name: str, records: list[dict]) -> None:
    source = SOURCES_BY_NAME[name]
    load(con, source, district_id, records_to_batches(source, "test", [records]))


def _build() -> None:
    """The Ed-Fi dbt step's own selection."""
    invoke("build", "--select", *TARGET_MODELS["edfi"].split())


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    """Runs the rules once for both districts; returns a query helper over the intermediate model."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SG_WAREHOUSE_PATH", str(tmp_path_factory.mktemp("edfi") / "warehouse.duckdb"))
        with connect() as con:
            for district, as_of in ((INDIANA, AS_OF), (DS52, DS_AS_OF)):
                for name, records in _raw().items():
                    _load(con, district.id, name, records)
                edfi.record_run_inputs(con, district, as_of)
        prepare()
        _build()

        def query(person: str, district: str = INDIANA.id) -> list[dict]:
            with connect() as con:
                result = con.execute(
                    "select * from intermediate.int_edfi__assessment_accommodations "
                    "where district_id = ? and person_id = ? "
                    "order by connection, school_year, accommodation_id, enrollment_id",
                    [district, person],
                )
                names = [d[0] for d in result.description]
                return [dict(zip(names, r, strict=True)) for r in result.fetchall()]

        yield query


def _by_year(rows: list[dict], connection: str = "idoe") -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for r in rows:
        if r["connection"] == connection:
            out.setdefault(r["school_year"], []).append(r)
    return out


def _outcome(rows, person: str, connection: str = "idoe", district: str = INDIANA.id) -> dict[int, str]:
    """Per school year of the connection: `sent` or why not (the first row's rule)."""
    return {
        year: "sent" if any(r["sent"] for r in found) else found[0]["not_sent_rule"]
        for year, found in _by_year(rows(person, district), connection).items()
    }


def _in_scope(rows, year: int, *persons: str) -> dict[str, bool]:
    """Whether each person's accommodation reports to `year` by the scope-year rules alone."""
    return {p: _by_year(rows(p))[year][0]["in_scope_year"] for p in persons}


# --- 1. the as-of date -------------------------------------------------------------------------------


def test_every_date_rule_reads_the_runs_as_of_date_from_its_tag_or_today_in_the_districts_timezone():
    """Seed 002: "Records will be compared to today's date" — the run's as-of date, so reruns, backfills
    and tests decide as the night they stand for did."""
    assert edfi.as_of_date(INDIANA, {edfi.AS_OF_TAG: "2025-10-15"}) == AS_OF
    before = datetime.now(ZoneInfo(INDIANA.timezone)).date()
    today = edfi.as_of_date(INDIANA, {})
    assert today in (before, datetime.now(ZoneInfo(INDIANA.timezone)).date())
    with pytest.raises(ConfigError, match="sg/as_of"):
        edfi.as_of_date(INDIANA, {edfi.AS_OF_TAG: "10/15/2025"})


def test_the_as_of_date_and_connections_are_written_for_dbt_and_change_the_steps_fingerprint(
    tmp_path, monkeypatch
):
    """dbt runs without --vars: the step writes ops tables the models read, and what it wrote is part of
    its fingerprint, so a new as-of date or a changed connection builds again."""
    from sg_orchestration.transform import reuse

    monkeypatch.setenv("SG_WAREHOUSE_PATH", str(tmp_path / "warehouse.duckdb"))
    with connect() as con:
        written = edfi.record_run_inputs(con, INDIANA, AS_OF)
        again = edfi.record_run_inputs(con, INDIANA, AS_OF)  # a rerun replaces, never adds
        assert con.execute("select * from ops.edfi_run_inputs").fetchall() == [("edfi-in", AS_OF, "indiana")]
        assert con.execute(
            "select connection, district_number, school_year from ops.edfi_connections order by 1, 3"
        ).fetchall() == [
            ("idoe", "5375", 2025),
            ("idoe", "5375", 2026),
            ("idoe", "5375", 2027),
            ("second", "1234", 2026),
        ]
        later = edfi.record_run_inputs(con, INDIANA, AS_OF + DAY)
        other = INDIANA.model_copy(update={"edfi": DS52.edfi})
        moved = edfi.record_run_inputs(con, other, AS_OF)
        prints = {
            reuse.fingerprint(con, INDIANA.id, [SOURCES_BY_NAME["campus__schools"]], w, project="p")
            for w in (written, again, later, moved)
        }
    assert written == again and len(prints) == 3


def test_the_as_of_date_is_each_districts_own(rows):
    """The same accommodation, not started on 2025-10-15 (edfi-in), is sent as of 2026-03-01 (edfi-ds)."""
    assert _outcome(rows, "not_started") == {2025: "not_started", 2026: "not_started", 2027: "not_started"}
    assert _outcome(rows, "not_started", "ods", DS52.id) == {2026: "sent"}
    assert {r["as_of"] for r in rows("sent", DS52.id)} == {DS_AS_OF}


# --- 2. post triggers and exclusions -------------------------------------------------------------------


def test_a_test_accommodation_posts_when_its_dates_overlap_a_configured_year(rows):
    """Seed 002: "When a Test Accommodation is created and saved for a person and the Accommodation dates
    overlap a configured year" — and "Data sends for the years that have valid configuration": each
    connection's own years, the 2025-26 accommodation to 2026 only."""
    assert _outcome(rows, "sent") == {2025: "outside_scope_year", 2026: "sent", 2027: "outside_scope_year"}
    assert _outcome(rows, "sent", "second") == {2026: "sent"}
    reason = _by_year(rows("sent"))[2025][0]["not_sent_reason"]
    assert reason.startswith("outside school year 2025, a previous year") and "2025-06-10" in reason


def test_do_not_send_a_record_if_the_enrollment_is_in_a_calendar_marked_as_state_exclude(rows):
    """Seed 002: "Do not send a record if the enrollment is in a calendar marked as State Exclude." """
    [row] = _by_year(rows("calendar_excluded"))[2026]
    assert (row["sent"], row["not_sent_rule"], row["not_sent_kind"]) == (
        False,
        "calendar_state_exclude",
        "excluded",
    )
    assert "C26-VIRTUAL" in row["not_sent_reason"]


def test_do_not_send_a_record_if_enrollment_is_in_a_school_marked_as_state_exclude(rows):
    """Seed 002: "Do not send a record if enrollment is in a School marked as State Exclude." """
    [row] = _by_year(rows("school_excluded"))[2026]
    assert (row["sent"], row["not_sent_rule"]) == (False, "school_state_exclude")
    assert "S2" in row["not_sent_reason"]


def test_do_not_send_a_record_if_the_no_show_checkbox_is_marked_on_the_enrollment(rows):
    """Seed 002: "Do not send a record if the No Show checkbox is marked on the enrollment." (and "This
    record will delete if the enrollment is marked as a No Show": it leaves the mart)."""
    assert _outcome(rows, "no_show") == {
        2025: "outside_scope_year",
        2026: "no_show",
        2027: "outside_scope_year",
    }
    # A No Show at one school does not hold back the record of the student's other school.
    found = {r["school_id"]: r["not_sent_rule"] for r in _by_year(rows("no_show_at_one_of_two"))[2026]}
    assert found == {"S1": None, "S3": "no_show"}


def test_do_not_send_a_record_if_the_current_date_is_prior_to_the_start_date_of_the_test_accommodation(rows):
    """Seed 002: "Do not send a record if the current date is prior to the start date of the test
    accommodation." """
    assert _outcome(rows, "starts_today")[2026] == "sent"
    row = _by_year(rows("not_started"))[2026][0]
    assert row["not_sent_rule"] == "not_started"
    assert (
        row["not_sent_reason"]
        == "not started: the current date 2025-10-15 is prior to the start date 2025-10-16"
    )


def test_do_not_send_a_record_if_the_current_date_is_after_the_end_date_of_the_test_accommodation(rows):
    """Seed 002: "Do not send a record if the current date is after the end date of the test
    accommodation." """
    assert _outcome(rows, "ends_today")[2026] == "sent"
    row = _by_year(rows("ended"))[2026][0]
    assert row["not_sent_rule"] == "ended"
    assert row["not_sent_reason"] == "ended: the current date 2025-10-15 is after the end date 2025-10-14"


def test_the_enrollments_that_apply_are_the_students_in_the_years_calendars_overlapping_the_accommodation(
    rows,
):
    """Each school the student is enrolled in that year (overlapping the accommodation) is a record of its
    own; a student without such an enrollment sends nothing, and says so."""
    assert _outcome(rows, "not_enrolled") == {
        2025: "outside_scope_year",
        2026: "not_enrolled",
        2027: "outside_scope_year",
    }
    assert _outcome(rows, "enrolled_after_it_ended", "second") == {2026: "not_enrolled"}
    schools = {r["education_organization_id"] for r in _by_year(rows("two_schools"))[2026] if r["sent"]}
    assert schools == {1053750101, 1053750303}


def test_a_record_sent_through_two_rows_is_sent_once(rows):
    """Two SIS rows (or enrollments) giving the same record send it once; the other row says why not."""
    found = _by_year(rows("same_record_twice"))[2026]
    assert sorted((r["sent"], r["not_sent_rule"]) for r in found) == [(False, "sent_elsewhere"), (True, None)]


# --- 3. scope years ------------------------------------------------------------------------------------


def test_school_years_take_the_school_years_editors_dates_or_07_01_and_06_30_when_blank(rows):
    """Seed 002: "If blank, the default date of 6/30/xxxx is used." / "If blank, the default date of
    7/01/xxxx is used." A school year 2026 is 2025-26."""
    rows("sent")
    with connect() as con:
        years = con.execute(
            "select school_year, start_date, end_date, scope from intermediate.int_edfi__school_years "
            "where district_id = 'edfi-in' and connection = 'idoe' order by 1"
        ).fetchall()
    assert years == [
        (2025, date(2024, 8, 1), date(2025, 6, 10), "previous"),
        (2026, date(2025, 8, 1), date(2026, 6, 30), "current"),
        (2027, date(2026, 7, 1), date(2027, 6, 30), "future"),
    ]


def test_current_year_the_records_start_date_must_be_on_or_before_todays_date_and_its_end_date_on_or_after(
    rows,
):
    """Seed 002 (start and end dates): "Current Year: The records start date must be on or before today's
    date and the records end date must be on or after today's date." """
    assert _in_scope(rows, 2026, "starts_today", "ends_today", "not_started", "ended") == {
        "starts_today": True,
        "ends_today": True,
        "not_started": False,
        "ended": False,
    }


def test_previous_years_the_start_date_must_be_on_or_before_the_years_end_date_and_the_end_date_after_it(
    rows,
):
    """Seed 002 (start and end dates): "Previous Years: The record's start date must be on or before the
    school year's end date and the record's end date must be after the school year's end date defined in
    the School Years editor." (2025 ends 2025-06-10 in the editor.)"""
    assert _outcome(rows, "prev_starts_on_its_end") == {
        2025: "sent",
        2026: "sent",
        2027: "outside_scope_year",
    }
    # Those that ended before today are not sent at all; the scope-year rule alone still tells them apart.
    assert _in_scope(
        rows, 2025, "prev_starts_after_its_end", "prev_ends_on_its_end", "prev_ends_after_its_end"
    ) == {
        "prev_starts_after_its_end": False,
        "prev_ends_on_its_end": False,
        "prev_ends_after_its_end": True,
    }


def test_future_years_the_start_date_must_be_on_or_before_the_years_start_date_and_the_end_date_on_or_after(
    rows,
):
    """Seed 002 (start and end dates): "Future Years: The record's start date must be on or before the
    schools year's start date and the record's end date must be on or after the school year's start
    date" (2027 has no start date in the editor: 07/01/2026)."""
    assert _outcome(rows, "future_ends_on_its_start") == {
        2025: "outside_scope_year",
        2026: "sent",
        2027: "sent",
    }
    assert _outcome(rows, "future_ends_before_its_start")[2027] == "outside_scope_year"
    # Those not started yet are not sent at all; the scope-year rule alone still tells them apart.
    found = _in_scope(rows, 2027, "future_starts_on_its_start", "future_starts_after_its_start")
    assert found == {"future_starts_on_its_start": True, "future_starts_after_its_start": False}


def test_single_date_current_year_records_are_compared_to_todays_date(rows):
    """Seed 002 (a single date): "Current Year: Records will be compared to today's date to determine if
    the record is eligible to report." — eligible once its date is reached. An accommodation without an
    end date has a single date."""
    today, tomorrow = rows("single_today"), rows("single_tomorrow")
    assert {r["single_date"] for r in today + tomorrow} == {True}
    assert _outcome(rows, "single_today")[2026] == "sent"
    assert _in_scope(rows, 2026, "single_tomorrow") == {"single_tomorrow": False}
    assert _outcome(rows, "single_tomorrow")[2026] == "not_started"


def test_single_date_previous_years_the_records_date_must_be_on_or_before_the_school_years_end_date(rows):
    """Seed 002 (a single date): "Previous Years: The record's date must be on or before the schools
    year's end date defined in the School Years editor." """
    assert _outcome(rows, "single_on_prev_end") == {2025: "sent", 2026: "sent", 2027: "outside_scope_year"}
    assert _outcome(rows, "single_after_prev_end") == {
        2025: "outside_scope_year",
        2026: "sent",
        2027: "outside_scope_year",
    }


def test_single_date_future_years_the_records_date_must_be_on_or_after_the_school_years_start_date(rows):
    """Seed 002 (a single date): "Future Years: The record's date must be on or after the schools year's
    start date defined in the School Years editor. If blank, the default date of 7/01/xxxx is used." """
    found = _in_scope(rows, 2027, "single_on_future_start", "single_before_future_start")
    assert found == {"single_on_future_start": True, "single_before_future_start": False}
    assert _outcome(rows, "single_on_future_start")[2027] == "not_started"


def test_an_accommodation_without_dates_is_an_error_not_a_send(rows):
    row = rows("no_dates")[0]
    assert (row["not_sent_rule"], row["not_sent_kind"], row["not_sent_field"]) == (
        "no_dates",
        "error",
        "start_date",
    )


# --- 4. the assessment mapping -------------------------------------------------------------------------


def test_each_state_test_reports_as_the_ed_fi_assessment_its_name_contains(rows):
    """Seed 002: "Any Test with a state test containing 'ILEARN' will report as 'ILEARN'", "'I AM' or
    'ISTAR' will report as 'I AM'", "'IREAD' will report as 'IREAD-3'", "'WIDA' will report as 'WIDA'",
    each with its namespace uri://ed-fi.org/assessments/{ilearn, iam, iread3, wida}."""
    found = {
        person: {
            (r["assessment_identifier"], r["assessment_namespace"], r["sent"])
            for r in _by_year(rows(person))[2026]
        }
        for person in ("sent", "i_am", "istar", "iread", "wida", "lower_case")
    }
    assert found == {
        "sent": {("ILEARN", ILEARN_NS, True)},
        "i_am": {("I AM", "uri://ed-fi.org/assessments/iam", True)},
        "istar": {("I AM", "uri://ed-fi.org/assessments/iam", True)},
        "iread": {("IREAD-3", "uri://ed-fi.org/assessments/iread3", True)},
        "wida": {("WIDA", "uri://ed-fi.org/assessments/wida", True)},
        "lower_case": {("ILEARN", ILEARN_NS, True)},
    }


def test_any_other_test_is_never_sent_and_kept_with_its_reason_for_the_error_log(rows):
    [row] = _by_year(rows("unmapped"))[2026]
    assert (row["sent"], row["not_sent_rule"], row["not_sent_kind"]) == (
        False,
        "assessment_not_mapped",
        "error",
    )
    assert (row["not_sent_field"], row["not_sent_value"]) == ("assessment", "SAT")
    assert "'SAT' maps to no Ed-Fi assessment" in row["not_sent_reason"]


# --- 5. educationOrganizationId --------------------------------------------------------------------------


def test_education_organization_id_is_10_plus_the_connections_district_number_plus_the_state_school_number(
    rows,
):
    """Seed 002: "10+District+School" — "If multiple keys and secrets (multiple connections), reports from
    'District Number' on the connection credentials for each connection made." """
    ids = {(r["connection"], r["education_organization_id"]) for r in rows("sent") if r["sent"]}
    assert ids == {("idoe", 1053750101), ("second", 1012340101)}


# --- 6. descriptors --------------------------------------------------------------------------------------


def test_descriptors_are_sent_as_namespace_hash_code_value_from_the_indiana_tables(rows):
    """Seed 002's Academic Subject and Accommodation Descriptor tables, as `{namespace}#{codeValue}`."""
    [row] = _by_year(rows("sent"))[2026]
    assert row["academic_subject_descriptor"] == f"{SUBJECT_NS}#02"
    assert row["accommodation_descriptor"] == f"{ACCOMMODATION_NS}#ET"


def test_a_code_not_in_its_descriptor_table_is_never_sent_and_names_the_field_the_value_and_the_table(rows):
    [subject] = _by_year(rows("unknown_subject"))[2026]
    assert (subject["not_sent_rule"], subject["not_sent_field"], subject["not_sent_value"]) == (
        "unknown_subject",
        "subject",
        "27",
    )
    assert (
        "'27'" in subject["not_sent_reason"]
        and "Academic Subject Descriptor table" in subject["not_sent_reason"]
    )
    [code] = _by_year(rows("unknown_accommodation"))[2026]
    assert (code["not_sent_rule"], code["not_sent_field"], code["not_sent_value"]) == (
        "unknown_accommodation",
        "accommodation",
        "CALC",
    )
    assert "'CALC'" in code["not_sent_reason"] and "Accommodation Descriptor table" in code["not_sent_reason"]


def test_the_descriptor_seeds_hold_the_seeds_tables_with_their_codes_as_text():
    """The seed lists IT (Individual Testing) twice: it is in the table once."""
    subjects = list(csv.DictReader((DBT_PROJECT_DIR / "seeds/edfi_academic_subject_descriptors.csv").open()))
    codes = [
        r["code_value"]
        for r in csv.DictReader((DBT_PROJECT_DIR / "seeds/edfi_accommodation_descriptors.csv").open())
    ]
    assert [r["code_value"] for r in subjects] == [f"{n:02d}" for n in range(1, 27)]
    assert len(codes) == len(set(codes)) == 41 and codes.count("IT") == 1


def test_descriptor_codes_stay_text_in_the_warehouse(rows):
    rows("sent")
    with connect() as con:
        (subject,) = con.execute(
            "select min(code_value) from reference.edfi_academic_subject_descriptors"
        ).fetchone()
        (blank,) = con.execute(
            "select count(*) from reference.edfi_valid_combinations where district_id is null"
        ).fetchone()
    assert subject == "01" and blank > 0


# --- 7. valid combinations ---------------------------------------------------------------------------------


def test_a_pair_not_in_the_valid_combinations_is_not_sent_with_the_seeds_error_and_its_three_steps(rows):
    """Seed 002's Error Log: "Assessment and Accommodation are not a valid combination." — "1. Verify that
    the Accommodation is a valid selection for the Assessment on the student's record. 2. If not valid,
    change to a valid accommodation and resync. 3. If you believe it is valid, please contact IDOE for
    further assistance." """
    [row] = _by_year(rows("invalid_pair"))[2026]
    assert row["not_sent_reason"] == "Assessment and Accommodation are not a valid combination."
    assert (row["not_sent_kind"], row["not_sent_value"]) == ("error", "WIDA / ST")
    for step in (
        "1. Verify that the Accommodation is a valid selection for the Assessment on the student's record.",
        "2. If not valid, change to a valid accommodation and resync.",
        "3. If you believe it is valid, please contact IDOE for further assistance.",
    ):
        assert step in row["not_sent_fix"]


def test_the_valid_combinations_seed_holds_the_generators_valid_pairs_and_none_of_its_invalid_ones():
    from sg_orchestration.generate.campus import INVALID_PAIRS, VALID_ACCOMMODATIONS

    mapping = list(csv.DictReader((DBT_PROJECT_DIR / "seeds/edfi_assessment_mapping.csv").open()))

    def identifier(test: str) -> str:
        [found] = {
            m["assessment_identifier"] for m in mapping if m["state_test_contains"].upper() in test.upper()
        }
        return found

    seeded = {
        (r["assessment_identifier"], r["accommodation_code"])
        for r in csv.DictReader((DBT_PROJECT_DIR / "seeds/edfi_valid_combinations.csv").open())
    }
    assert {(identifier(t), c) for t, codes in VALID_ACCOMMODATIONS.items() for c in codes} <= seeded
    assert not {(identifier(t), c) for t, c in INVALID_PAIRS} & seeded


def test_a_student_without_an_ed_fi_id_is_not_sent_and_says_where_to_enter_it(rows):
    [row] = _by_year(rows("no_edfi_id"))[2026]
    assert (row["not_sent_rule"], row["not_sent_field"]) == ("no_edfi_id", "edfi_id")
    assert "Census > Demographics > Ed-Fi ID" in row["not_sent_fix"]


# --- 8. the payload marts ----------------------------------------------------------------------------------


def _mart(name: str, district: str) -> list[dict]:
    with connect() as con:
        result = con.execute(f"select * from marts.{name} where district_id = ? order by all", [district])
        names = [d[0] for d in result.description]
        return [dict(zip(names, r, strict=True)) for r in result.fetchall()]


def test_the_indiana_mart_has_one_record_per_key_with_the_seeds_elements_as_json(rows):
    """Seed 002's Object Data Elements: assessmentReference, educationOrganizationReference,
    studentReference, academicSubjectDescriptor, accommodationDescriptor."""
    rows("sent")
    mart = _mart("edfi__indiana_assessment_accommodations", INDIANA.id)
    sent = {(r["connection"], r["school_year"], r["person_id"]) for r in mart}
    assert ("idoe", 2026, "sent") in sent and ("second", 2026, "sent") in sent
    assert not {p for _, _, p in sent} & {"no_show", "not_started", "ended", "unmapped", "invalid_pair"}
    [record] = [r for r in mart if r["person_id"] == "sent" and r["connection"] == "idoe"]
    assert json.loads(record["payload"]) == {
        "studentReference": {"studentUniqueId": "ID-sent"},
        "educationOrganizationReference": {"educationOrganizationId": 1053750101},
        "assessmentReference": {"assessmentIdentifier": "ILEARN", "namespace": ILEARN_NS},
        "academicSubjectDescriptor": f"{SUBJECT_NS}#02",
        "accommodationDescriptor": f"{ACCOMMODATION_NS}#ET",
    }
    assert len([r for r in mart if r["person_id"] == "several" and r["connection"] == "idoe"]) == 3
    assert _mart("edfi__ds52_assessment_accommodations", INDIANA.id) == []  # not this district's profile


def _ds52_validator():
    jsonschema = pytest.importorskip("jsonschema")
    if not OPENAPI.is_file():
        pytest.skip(f"{OPENAPI} is not here")
    schemas = json.loads(OPENAPI.read_text())["components"]["schemas"]
    # The OpenAPI document's `$ref`s point into components/schemas: the same schemas under `definitions`.
    text = json.dumps(schemas).replace("#/components/schemas/", "#/definitions/")
    schema = {
        "$ref": "#/definitions/EdFi_StudentEducationOrganizationAssessmentAccommodation",
        "definitions": json.loads(text),
    }
    return jsonschema.Draft4Validator(schema)


def test_the_ds52_mart_has_one_record_per_student_and_education_organization_that_validates_against_ed_fi(
    rows,
):
    """DS 5.2 studentEducationOrganizationAssessmentAccommodations: generalAccommodations each once,
    sorted; every payload valid against EdFi_StudentEducationOrganizationAssessmentAccommodation."""
    rows("sent")
    validator = _ds52_validator()
    mart = _mart("edfi__ds52_assessment_accommodations", DS52.id)
    assert mart and _mart("edfi__indiana_assessment_accommodations", DS52.id) == []
    for record in mart:
        assert not list(validator.iter_errors(json.loads(record["payload"]))), record["person_id"]
    [several] = [r for r in mart if r["person_id"] == "several"]
    assert json.loads(several["payload"]) == {
        "studentReference": {"studentUniqueId": "ID-several"},
        "educationOrganizationReference": {"educationOrganizationId": 1077770101},
        "generalAccommodations": [
            {"accommodationDescriptor": f"{ACCOMMODATION_NS}#ET"},
            {"accommodationDescriptor": f"{ACCOMMODATION_NS}#TTS_XRD"},
        ],
    }
    # The validator can fail: a string educationOrganizationId is refused.
    bad = {
        **json.loads(several["payload"]),
        "educationOrganizationReference": {"educationOrganizationId": "1077770101"},
    }
    assert list(validator.iter_errors(bad))


def test_each_edfi_mart_is_a_view_of_the_intermediate_table_only():
    """What a publisher reading build ids relies on: a mart's rows change only when dbt builds its
    intermediate table (see the Qmlativ marts)."""
    from sg_orchestration.transform.dbt import dbt_project

    nodes = json.loads(Path(dbt_project().manifest_path).read_text())["nodes"]
    table = "model.sg_orchestration.int_edfi__assessment_accommodations"
    for mart in ("edfi__indiana_assessment_accommodations", "edfi__ds52_assessment_accommodations"):
        node = nodes[f"model.sg_orchestration.{mart}"]
        assert node["config"]["materialized"] == "view" and node["depends_on"]["nodes"] == [table], mart
    assert nodes[table]["config"]["materialized"] == "table"


def test_the_generated_districts_cases_are_what_the_rules_find_as_of_its_own_date(tmp_path, monkeypatch):
    """The generator dates each case from its `as_of` (accommodations ended, not started, excluded, with
    bad codes): judged as of that day, as `make demo` runs it, each case is found exactly."""
    from sg_orchestration.catalog import SOURCES
    from sg_orchestration.generate import generate_district
    from sg_orchestration.ingest.readers import read_csv

    monkeypatch.setenv("SG_WAREHOUSE_PATH", str(tmp_path / "warehouse.duckdb"))
    cases = generate_district(tmp_path / "inputs", students=300, seed=3, as_of=AS_OF)["cases"]
    facts = json.loads((tmp_path / "inputs" / "district.json").read_text())
    connection = _connection("idoe", facts["edfi_district_number"], facts["school_years"])
    district = District(
        id="generated",
        name="Generated",
        state="IN",
        timezone=facts["timezone"],
        edfi={"connections": [connection]},
    )
    with connect() as con:
        for source in (s for s in SOURCES if s.system == "campus"):
            load(
                con,
                source,
                district.id,
                read_csv(source, tmp_path / "inputs" / "campus" / f"{source.table}.csv"),
            )
        edfi.record_run_inputs(con, district, date.fromisoformat(facts["as_of"]))
    _build()
    with connect() as con:
        found = dict(
            con.execute(
                "select not_sent_rule, [count(distinct accommodation_id), count(distinct person_id)] "
                "from intermediate.int_edfi__assessment_accommodations "
                "where district_id = 'generated' and school_year = ? group by all",
                [max(facts["school_years"])],
            ).fetchall()
        )
    rows_of = {rule: counts[0] for rule, counts in found.items()}
    students_of = {rule: counts[1] for rule, counts in found.items()}
    assert rows_of[None] > 0
    assert {
        "ended": rows_of.get("ended"),
        "not_started": rows_of.get("not_started"),
        "assessment_not_mapped": rows_of.get("assessment_not_mapped"),
        "invalid_combination": rows_of.get("invalid_combination"),
        "unknown_subject": rows_of.get("unknown_subject"),
        "unknown_accommodation": rows_of.get("unknown_accommodation"),
        "school_state_exclude": students_of.get("school_state_exclude"),
        "calendar_state_exclude": students_of.get("calendar_state_exclude"),
        "no_show": students_of.get("no_show"),
        "no_edfi_id": students_of.get("no_edfi_id"),
    } == {
        "ended": cases["campus_accommodations_ended"],
        "not_started": cases["campus_accommodations_not_started"],
        "assessment_not_mapped": cases["campus_accommodations_unmapped_assessment"],
        "invalid_combination": cases["campus_accommodations_invalid_pair"],
        "unknown_subject": cases["campus_accommodations_unknown_subject"],
        "unknown_accommodation": cases["campus_accommodations_unknown_accommodation"],
        "school_state_exclude": cases["campus_accommodated_in_excluded_school"],
        "calendar_state_exclude": cases["campus_accommodated_in_excluded_calendar"],
        "no_show": cases["campus_accommodated_no_show"],
        "no_edfi_id": cases["campus_persons_missing_edfi_id"],
    }
