"""The OneRoster data-quality gate before sharing (seed 001 §2: "Once the data is synced, we will validate
and check the data quality before sharing it"; issue 9 point 6), on bundles written here with Python's
`csv` module: each rule finds what it must, names the record by its hashed key and the field only, and
blocks delivery (or, for the critical homeless fields, blocks past the district's threshold)."""

import csv
from pathlib import Path

import pytest

from sg_orchestration.oneroster import HEADERS
from sg_orchestration.oneroster.gate import (
    FIXES,
    IDENTIFIED,
    RESIDENCE,
    UNACCOMPANIED,
    check_bundle,
    record_findings,
)
from sg_orchestration.warehouse import connect

META = [IDENTIFIED, RESIDENCE, UNACCOMPANIED]
NAME = "Zebediah"  # a student's given name: never in a report


def _bundle() -> dict[str, list[dict]]:
    """A small valid bulk bundle: a district, a school, a year and a term, a course, a class, two students
    (one identified as homeless), a guardian of both, a teacher, enrollments and demographics."""
    return {
        "orgs": [
            {"sourcedId": "org-d", "name": "District", "type": "district"},
            {
                "sourcedId": "org-s",
                "name": "School",
                "type": "school",
                "identifier": "101",
                "parentSourcedId": "org-d",
            },
        ],
        "academicSessions": [
            {
                "sourcedId": "as-y",
                "title": "2026",
                "type": "schoolYear",
                "startDate": "2025-07-01",
                "endDate": "2026-06-30",
                "schoolYear": "2026",
            },
            {
                "sourcedId": "as-t",
                "title": "Fall",
                "type": "term",
                "startDate": "2025-08-01",
                "endDate": "2025-12-20",
                "parentSourcedId": "as-y",
                "schoolYear": "2026",
            },
        ],
        "courses": [
            {
                "sourcedId": "c-1",
                "schoolYearSourcedId": "as-y",
                "title": "Math",
                "grades": "05,06",
                "orgSourcedId": "org-s",
            }
        ],
        "classes": [
            {
                "sourcedId": "k-1",
                "title": "Math 1",
                "grades": "05",
                "courseSourcedId": "c-1",
                "classType": "scheduled",
                "schoolSourcedId": "org-s",
                "termSourcedIds": "as-t,as-y",
            }
        ],
        "users": [
            {
                "sourcedId": "u-1",
                "enabledUser": "true",
                "orgSourcedIds": "org-s",
                "role": "student",
                "username": "s1",
                "givenName": NAME,
                "familyName": "A",
                "agentSourcedIds": "u-g",
                "grades": "05",
                IDENTIFIED: "Y",
                RESIDENCE: "DOUBLE",
                UNACCOMPANIED: "N",
            },
            {
                "sourcedId": "u-2",
                "enabledUser": "true",
                "orgSourcedIds": "org-s",
                "role": "student",
                "username": "s2",
                "givenName": "B",
                "familyName": "B",
                "agentSourcedIds": "u-g",
                "grades": "06",
                IDENTIFIED: "N",
            },
            {
                "sourcedId": "u-g",
                "enabledUser": "true",
                "orgSourcedIds": "org-s",
                "role": "guardian",
                "username": "g",
                "givenName": "G",
                "familyName": "G",
                "agentSourcedIds": "u-1,u-2",
            },
            {
                "sourcedId": "u-t",
                "enabledUser": "true",
                "orgSourcedIds": "org-s",
                "role": "teacher",
                "username": "t",
                "givenName": "T",
                "familyName": "T",
            },
        ],
        "enrollments": [
            {
                "sourcedId": f"e-{u}",
                "classSourcedId": "k-1",
                "schoolSourcedId": "org-s",
                "userSourcedId": u,
                "role": "teacher" if u == "u-t" else "student",
                "beginDate": "2025-08-01",
                "endDate": "2025-12-20",
            }
            for u in ("u-1", "u-2", "u-t")
        ],
        "demographics": [
            {"sourcedId": u, "birthDate": "2015-03-04", "sex": "female", "white": "true", "asian": "false"}
            for u in ("u-1", "u-2")
        ],
        "manifest": [{"propertyName": "manifest.version", "value": "1.0"}],
    }


def _write(folder: Path, bundle: dict[str, list[dict]], headers: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in bundle.items():
        header = (headers or {}).get(name) or list(HEADERS[name]) + (META if name == "users" else [])
        with (folder / f"{name}.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, header, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    return folder


def _rules(report) -> set[tuple[str, str, str | None]]:
    return {(f.rule, f.file, f.field) for f in report.findings}


def test_a_complete_bundle_passes_the_gate(tmp_path):
    report = check_bundle(_write(tmp_path, _bundle()))
    assert report.findings == [] and report.verdict == "passed" and not report.blocked
    assert report.files["users"] == 4 and report.students == 2


def _broken(tmp_path, change) -> object:
    bundle = _bundle()
    change(bundle)
    return check_bundle(_write(tmp_path, bundle))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda b: b["users"][1].update(givenName=""), ("required", "users", "givenName")),
        (lambda b: b["orgs"].append(dict(b["orgs"][1])), ("duplicate", "orgs", "sourcedId")),
        (lambda b: b["users"][0].update(role="pupil"), ("enumeration", "users", "role")),
        (lambda b: b["orgs"][1].update(type="campus"), ("enumeration", "orgs", "type")),
        (lambda b: b["users"][0].update(grades="05,5th"), ("enumeration", "users", "grades")),
        (lambda b: b["classes"][0].update(classType="online"), ("enumeration", "classes", "classType")),
        (lambda b: b["demographics"][0].update(sex="F"), ("enumeration", "demographics", "sex")),
        (lambda b: b["orgs"][0].update(status="active"), ("enumeration", "orgs", "status")),
        (
            lambda b: b["enrollments"][0].update(classSourcedId="k-9"),
            ("reference", "enrollments", "classSourcedId"),
        ),
        (
            lambda b: b["classes"][0].update(termSourcedIds="as-t,as-9"),
            ("reference", "classes", "termSourcedIds"),
        ),
        (
            lambda b: b["users"][2].update(agentSourcedIds="u-1,u-9"),
            ("reference", "users", "agentSourcedIds"),
        ),
        (lambda b: b["users"][0].update(orgSourcedIds="org-9"), ("reference", "users", "orgSourcedIds")),
        (lambda b: b["demographics"][0].update(sourcedId="u-9"), ("reference", "demographics", "sourcedId")),
        (lambda b: b["enrollments"][0].update(beginDate="2025-02-30"), ("date", "enrollments", "beginDate")),
        (lambda b: b["enrollments"][0].update(endDate="2025-07-01"), ("date", "enrollments", "endDate")),
        (
            lambda b: b["academicSessions"][1].update(startDate="08/01/2025"),
            ("date", "academicSessions", "startDate"),
        ),
        (
            lambda b: b["demographics"][0].update(birthDate="2099-01-01"),
            ("date", "demographics", "birthDate"),
        ),
    ],
)
def test_the_gate_blocks_delivery_on_a_structural_finding_naming_the_file_and_field(
    tmp_path, change, expected
):
    """Referential integrity across files, enumeration validity, duplicate sourcedIds, date sanity: each
    blocks delivery, says why and how to fix it."""
    report = _broken(tmp_path, change)
    assert expected in _rules(report)
    assert report.blocked and report.verdict == "blocked"
    assert any(FIXES[expected[0]] in reason for reason in report.blocking_reasons)


def test_a_file_with_a_wrong_header_or_unreadable_rows_blocks_delivery(tmp_path):
    bundle = _bundle()
    headers = {
        "orgs": ["sourcedId", "status", "dateLastModified", "type", "name", "identifier", "parentSourcedId"]
    }
    report = check_bundle(_write(tmp_path / "a", bundle, headers))
    assert ("header", "orgs", None) in _rules(report) and report.blocked
    folder = _write(tmp_path / "b", bundle)
    with (folder / "courses.csv").open("a", encoding="utf-8") as f:
        f.write(f'c-2,,,as-y,"{NAME},x,y,z,a,b,c,d\n')  # an unterminated quote
    report = check_bundle(folder)
    assert ("format", "courses", None) in _rules(report) and report.blocked
    assert NAME not in report.markdown()
    (folder / "orgs.csv").unlink()
    assert ("header", "orgs", None) in _rules(check_bundle(folder))


def test_critical_is_identified_as_homeless_and_its_residence_and_unaccompanied_fields_are_complete(tmp_path):
    """Seed: "Critical: Is_identified_as_homeless, homeless_primary_nighttime_residence,
    homeless_unaccompanied_youth". A homeless student without a residence, and a student who does not say
    whether they are homeless, are findings; delivery is blocked past the district's threshold."""
    bundle = _bundle()
    bundle["users"][0][RESIDENCE] = ""
    bundle["users"][1][IDENTIFIED] = ""
    folder = _write(tmp_path, bundle)
    strict = check_bundle(folder, max_missing_critical_share=0.0)
    assert {(f.field, f.row) for f in strict.findings} == {(RESIDENCE, 1), (IDENTIFIED, 2)}
    assert strict.students_missing_critical == 2 and strict.blocked
    lenient = check_bundle(folder, max_missing_critical_share=1.0)
    assert not lenient.blocked and lenient.verdict == "passed with warnings"
    # a student who is not homeless needs no residence
    bundle = _bundle()
    bundle["users"][1][RESIDENCE] = ""
    assert check_bundle(_write(tmp_path / "ok", bundle)).findings == []


def test_the_gate_report_names_records_by_hashed_key_and_field_never_by_name(tmp_path):
    report = _broken(tmp_path, lambda b: b["users"][0].update(role="pupil", familyName=""))
    text = report.markdown()
    assert "| enumeration | users | role | 1 |" in text and "| required | users | familyName | 1 |" in text
    assert report.findings[0].record_key[:12] in text
    for value in (NAME, "u-1", "s1"):
        assert value not in text


def test_gate_findings_are_error_log_rows_that_resolve_once_the_bundle_passes(tmp_path, warehouse):
    broken = _broken(tmp_path / "a", lambda b: b["users"][0].update(role="pupil"))
    with connect() as con:
        record_findings(con, "d1", broken)
        rows = con.execute(
            "select target, field, value, location, resolved_at is null from ops.error_log where district_id = 'd1'"
        ).fetchall()
        assert rows == [("oneroster/users", "role", "pupil", "users.csv row 1", True)]
        record_findings(con, "d1", check_bundle(_write(tmp_path / "b", _bundle())))
        assert con.execute("select count(*) from ops.error_log where resolved_at is null").fetchone()[0] == 0
