"""The synthetic-district generator: deterministic, catalog-shaped, consistent, and holding every case."""

from __future__ import annotations

import csv
import json
import re
import shutil
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from sg_orchestration.catalog import (
    FALSE_VALUES,
    SAMEGOAL_FORMS,
    SAMEGOAL_PROGRAMS,
    SOURCES,
    TRUE_VALUES,
    TYPE_PATTERNS,
    Source,
)
from sg_orchestration.cli import main as cli_main
from sg_orchestration.generate import generate_district, next_day

STUDENTS, SEED, AS_OF = 300, 11, date(2025, 11, 3)
# Seed 002's Indiana descriptor tables: subjects 01..26 and the accommodation code values.
SUBJECTS = {f"{k:02d}" for k in range(1, 27)}
_CODE_TABLE = (
    "AOR AB AIR AGL AT BD BRL_UEB_CTR BRL_UEB_UCTR BGL CAL_HH_ALL CAL_OL_ALL CC E_STT E_WP EX_IEP EX_ILP "
    "EX_RTN ET HOH HR_XRD HR_ALL HC IT LPP M MT ASL BRL_ONL PB PM PD RAS SCR SLI_XRD SLI_ALL ST SGL SF "
    "TTS_XRD TTS_ALL VGL"
)
ACCOMMODATION_CODES = set(_CODE_TABLE.split())
STATE_TESTS = ("ILEARN", "I AM", "ISTAR", "IREAD", "WIDA")


def _file(source: Source) -> str:
    return f"{source.system}/{source.file}"


@dataclass
class District:
    root: Path
    manifest: dict
    facts: dict
    _tables: dict = field(default_factory=dict)

    def table(self, file: str) -> tuple[list[str], list[list[str]]]:
        """Header and every data record, malformed ones included."""
        if file not in self._tables:
            with (self.root / file).open(newline="", encoding="utf-8-sig") as fh:
                header, *rows = csv.reader(fh)
            self._tables[file] = header, rows
        return self._tables[file]

    def records(self, file: str) -> list[dict[str, str]]:
        """The well-formed records, as dicts: every row the manifest does not list as malformed."""
        header, rows = self.table(file)
        bad = {m["row"] for m in self.manifest["malformed"] if m["file"] == file}
        return [dict(zip(header, row, strict=True)) for k, row in enumerate(rows, start=1) if k not in bad]

    def column(self, file: str, name: str) -> list[str]:
        return [r[name] for r in self.records(file)]


def _generate(root: Path, students: int = STUDENTS, seed: int = SEED, as_of: date = AS_OF) -> District:
    manifest = generate_district(root, students=students, seed=seed, as_of=as_of)
    return District(root, manifest, json.loads((root / "district.json").read_text()))


@pytest.fixture(scope="module")
def district(tmp_path_factory: pytest.TempPathFactory) -> District:
    return _generate(tmp_path_factory.mktemp("district"))


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- determinism ------------------------------------------------------------------------------------------
def test_same_students_seed_and_as_of_give_byte_identical_files(district: District, tmp_path: Path):
    again = _generate(tmp_path)
    assert _all_files(again.root) == _all_files(district.root)


def test_a_different_seed_gives_different_data(district: District, tmp_path: Path):
    other = _all_files(_generate(tmp_path, seed=SEED + 1).root)
    mine = _all_files(district.root)
    assert other.keys() == mine.keys()
    assert other["powerschool/students.csv"] != mine["powerschool/students.csv"]
    assert other["samegoal/disability.csv"] != mine["samegoal/disability.csv"]


def test_as_of_moves_dates_and_nothing_else(district: District, tmp_path: Path):
    later = _generate(tmp_path, as_of=AS_OF + timedelta(days=9))
    assert later.manifest["files"] == district.manifest["files"]
    moved = 0
    for source in SOURCES:
        dated = {c.name for c in source.columns if c.type in ("date", "datetime")}
        header, rows = district.table(_file(source))
        _, later_rows = later.table(_file(source))
        for row, later_row in zip(rows, later_rows, strict=True):
            for name, value, later_value in zip(header, row, later_row, strict=False):
                if name in dated:
                    moved += value != later_value
                else:
                    assert value == later_value, (_file(source), name)
    assert moved


def test_too_few_students_for_every_case_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="at least"):
        generate_district(tmp_path, students=10, seed=1, as_of=AS_OF)


# --- shape ------------------------------------------------------------------------------------------------
def test_every_catalog_input_is_written_and_counted(district: District):
    assert set(district.manifest["files"]) == {_file(s) for s in SOURCES}
    for file, count in district.manifest["files"].items():
        assert len(district.table(file)[1]) == count > 0, file


def test_headers_are_the_catalog_columns_in_catalog_order(district: District):
    for source in SOURCES:
        header, _ = district.table(_file(source))
        extra = header[len(source.column_names) :]
        assert header[: len(source.column_names)] == list(source.column_names), _file(source)
        if source.name == "powerschool__students":
            assert extra == ["Locker Number"]
        elif source.name == "oneroster__users":
            assert extra and all(name.startswith("metadata.") for name in extra)
            assert {
                "metadata.is_identified_as_homeless",
                "metadata.homeless_primary_nighttime_residence",
                "metadata.homeless_unaccompanied_youth",
                "metadata.student_number",
                "metadata.state_identifier",
            } <= set(extra)
        else:
            assert not extra, _file(source)


def _problem(source: Source, header: list[str], row: list[str]) -> str | None:
    """Why a row cannot be parsed against the catalog, as an ingest would see it; None when it can."""
    if len(row) != len(header):
        return "too_few_fields" if len(row) < len(header) else "too_many_fields"
    values = dict(zip(header, row, strict=True))
    for column in source.columns:
        value = values[column.name]
        if value == "":
            if column.required:
                return "blank_required_key"
            continue
        if column.type == "bool" and value not in TRUE_VALUES + FALSE_VALUES:
            return "bad_bool"
        if column.type in TYPE_PATTERNS and not re.match(TYPE_PATTERNS[column.type], value):
            return f"bad_{column.type}"
        try:
            if column.type == "date":
                date.fromisoformat(value)
            elif column.type == "datetime":
                datetime.fromisoformat(value)
        except ValueError:
            return "bad_date"
    return None


def test_malformed_rows_are_exactly_where_the_manifest_says(district: District):
    found = []
    for source in SOURCES:
        header, rows = district.table(_file(source))
        for k, row in enumerate(rows, start=1):
            if problem := _problem(source, header, row):
                found.append({"file": _file(source), "row": k, "kind": problem})
    key = lambda m: (m["file"], m["row"])  # noqa: E731
    assert sorted(found, key=key) == sorted(district.manifest["malformed"], key=key)


def test_every_kind_of_malformed_row_is_present_in_several_files(district: District):
    malformed = district.manifest["malformed"]
    kinds = {m["kind"] for m in malformed}
    assert kinds == {
        "bad_date",
        "bad_bool",
        "bad_int",
        "too_few_fields",
        "too_many_fields",
        "blank_required_key",
    }
    assert {m["file"].split("/")[0] for m in malformed} == {
        "samegoal",
        "qmlativ",
        "powerschool",
        "oneroster",
        "campus",
    }
    header, rows = district.table("samegoal/disability.csv")
    bad = next(m for m in malformed if m["file"] == "samegoal/disability.csv")
    assert rows[bad["row"] - 1][header.index("start_date")] == "2024-02-30"  # looks like a date, is not one


def test_quirks_still_parse_one_bom_one_unknown_column_one_quoted_line_break(district: District):
    files = _all_files(district.root)
    assert [f for f, data in files.items() if data.startswith(b"\xef\xbb\xbf")] == ["campus/persons.csv"]
    quirk = next(q for q in district.manifest["quirks"] if q["kind"] == "quoted_comma_newline")
    header, rows = district.table(quirk["file"])
    value = rows[quirk["row"] - 1][header.index(quirk["column"])]
    assert "," in value and "\n" in value
    assert {q["kind"] for q in district.manifest["quirks"]} == {"bom", "extra_column", "quoted_comma_newline"}


def test_values_use_the_formats_of_their_system(district: District):
    assert set(district.column("powerschool/students.csv", "Doctor Phone")) == {"Y", "N"}
    assert set(district.column("oneroster/users.csv", "enabledUser")) == {"true", "false"}
    assert set(district.column("campus/enrollments.csv", "no_show")) == {"Y", "N"}
    for state_id in district.column("powerschool/students.csv", "State Province Id"):
        assert re.fullmatch(r"\d{10}", state_id)
    assert all(re.fullmatch(r"\d{10}", e) for e in district.column("campus/persons.csv", "edfi_id") if e)
    assert all(
        re.fullmatch(r"\d{4}", n) for n in district.column("campus/schools.csv", "state_school_number")
    )
    for form in SAMEGOAL_FORMS:
        for doc in district.records(f"samegoal/{form}.csv"):
            if doc["document_status"] == "complete":
                assert doc["completed_at"].endswith("Z"), form
            else:
                assert doc["completed_at"] == "", form


# --- cross-file consistency -------------------------------------------------------------------------------
def test_one_population_behind_every_system(district: District):
    ps = {r["Local Id"]: r["State Province Id"] for r in district.records("powerschool/students.csv")}
    qm = {r["StudentNumber"]: r["StateID"] for r in district.records("qmlativ/students.csv")}
    campus = set(district.column("campus/persons.csv", "student_number"))
    oneroster = {
        r["metadata.student_number"]: r["metadata.state_identifier"]
        for r in district.records("oneroster/users.csv")
        if r["role"] == "student"
    }
    assert campus == set(ps) and oneroster == ps
    assert qm.items() <= ps.items()  # Qmlativ lacks only the students demographics has not synced
    entity = {r["EntityID"] for r in district.records("qmlativ/students.csv")}
    assert entity == {str(district.facts["qmlativ_entity_id"])}


def test_roster_references_resolve(district: District):
    students = set(district.column("powerschool/students.csv", "Local Id"))
    sections = {r["Section Id"]: r for r in district.records("powerschool/sections.csv")}
    assert set(district.column("powerschool/contacts.csv", "Student Local Id")) <= students
    assert set(district.column("powerschool/enrollments.csv", "Student Local Id")) <= students
    assert set(district.column("powerschool/enrollments.csv", "Section Id")) <= set(sections)
    assert {s["Teacher Id"] for s in sections.values()} <= set(
        district.column("powerschool/teachers.csv", "Teacher Id")
    )
    assert {s["Term Id"] for s in sections.values()} <= set(
        district.column("powerschool/terms.csv", "Term Id")
    )
    schools = set(district.column("powerschool/schools.csv", "School Number"))
    assert {s["School Number"] for s in sections.values()} <= schools
    assert set(district.column("powerschool/students.csv", "School Number")) <= schools

    users = set(district.column("oneroster/users.csv", "sourcedId"))
    classes = set(district.column("oneroster/classes.csv", "sourcedId"))
    orgs = set(district.column("oneroster/orgs.csv", "sourcedId"))
    for enrollment in district.records("oneroster/enrollments.csv"):
        assert enrollment["userSourcedId"] in users and enrollment["classSourcedId"] in classes
        assert enrollment["schoolSourcedId"] in orgs
    for user in district.records("oneroster/users.csv"):
        assert set(filter(None, user["agentSourcedIds"].split(","))) <= users
        assert set(user["orgSourcedIds"].split(",")) <= orgs
    assert set(district.column("oneroster/demographics.csv", "sourcedId")) <= users

    persons = set(district.column("campus/persons.csv", "person_id"))
    calendars = {r["calendar_id"]: r for r in district.records("campus/calendars.csv")}
    assert {c["school_id"] for c in calendars.values()} <= set(
        district.column("campus/schools.csv", "school_id")
    )
    assert set(district.column("campus/enrollments.csv", "calendar_id")) <= set(calendars)
    assert set(district.column("campus/enrollments.csv", "person_id")) <= persons
    assert set(district.column("campus/test_accommodations.csv", "person_id")) <= persons


def test_samegoal_students_map_to_qmlativ_except_the_missing_ones(district: District):
    by_local = {r["StudentNumber"] for r in district.records("qmlativ/students.csv")}
    by_state = {r["StateID"] for r in district.records("qmlativ/students.csv")}
    ps_state = set(district.column("powerschool/students.csv", "State Province Id"))
    docs = [d for form in SAMEGOAL_FORMS for d in district.records(f"samegoal/{form}.csv")]
    unmapped = {d["student_state_id"] for d in docs if d["student_local_id"] not in by_local} - by_state
    state_only = {d["student_state_id"] for d in docs if d["student_local_id"] not in by_local} & by_state
    blank = {d["student_state_id"] for d in docs if d["student_local_id"] == ""} & by_state
    cases = district.manifest["cases"]
    assert len(unmapped) == cases["samegoal_students_missing_from_qmlativ"] >= 1
    assert unmapped <= ps_state  # in the SIS, just not synced to Qmlativ yet
    assert len(blank) == cases["samegoal_students_local_id_blank"] >= 1
    assert len(state_only - blank) == cases["samegoal_students_local_id_stale"] >= 1


# --- the cases downstream rules must handle ---------------------------------------------------------------
def _date_field(form: str) -> str:
    return {"restraint": "restraint_date", "section_504": "iap_begin_date"}.get(form, "start_date")


def test_samegoal_documents_cover_every_status_and_supersession(district: District):
    statuses = set()
    superseded = 0
    for form in SAMEGOAL_FORMS:
        docs = district.records(f"samegoal/{form}.csv")
        assert len({d["document_id"] for d in docs}) == len(docs), form
        statuses |= {d["document_status"] for d in docs}
        complete: dict[tuple, list[dict]] = {}
        for d in docs:
            if d["document_status"] == "complete":
                key = (d["samegoal_student_id"], d.get("disability_rank"), d[_date_field(form)])
                complete.setdefault(key, []).append(d)
        for same in complete.values():
            if len(same) > 1:
                first, later = sorted(same, key=lambda d: int(d["document_id"]))[:2]
                assert later["completed_at"] > first["completed_at"], form
                superseded += 1
    assert statuses == {"complete", "draft", "in_review", "voided"}
    assert superseded == district.manifest["cases"]["samegoal_documents_superseded"] >= 1


def test_samegoal_records_before_cutover_and_a_program_never_integrated(district: District):
    cutovers = district.facts["cutover_dates"]
    assert set(cutovers) == set(SAMEGOAL_PROGRAMS)
    assert cutovers["intervention_strategy"] is None
    never = len(district.records("samegoal/intervention_strategy.csv"))
    assert never == district.manifest["cases"]["samegoal_documents_program_not_integrated"] >= 1
    before = 0
    for form, (program, _) in SAMEGOAL_FORMS.items():
        if cutovers[program]:
            before += sum(
                d[_date_field(form)] < cutovers[program] for d in district.records(f"samegoal/{form}.csv")
            )
    assert before == district.manifest["cases"]["samegoal_documents_before_cutover"] >= 1


def test_samegoal_disability_ranks_and_an_unknown_state_code(district: District):
    ranks = set(district.column("samegoal/disability.csv", "disability_rank"))
    assert ranks == {"1", "2", "3"}
    settings = district.records("samegoal/special_education_enrollment.csv")
    assert any(
        d["state_instructional_setting"] == "47" and d["document_status"] == "complete" for d in settings
    )


def test_powerschool_homeless_fields_hold_the_seed_metadata(district: District):
    students = district.records("powerschool/students.csv")
    homeless = [s for s in students if s["Doctor Phone"] == "Y"]
    assert 1 <= len(homeless) <= 0.08 * len(students)
    assert all(s["Alert Other"] for s in homeless)  # primary nighttime residence
    assert "Y" in {s["Alert Other Expires"] for s in homeless} <= {"Y", "N"}  # unaccompanied youth
    assert not any(s["Alert Other"] for s in students if s["Doctor Phone"] == "N")
    users = district.records("oneroster/users.csv")
    assert any(u["metadata.is_identified_as_homeless"] == "true" for u in users)
    assert {u["role"] for u in users} == {"student", "teacher", "parent", "guardian"}


def test_campus_exclusions_no_shows_and_blank_school_year_dates(district: District):
    schools = {r["school_id"]: r for r in district.records("campus/schools.csv")}
    calendars = {r["calendar_id"]: r for r in district.records("campus/calendars.csv")}
    enrollments = district.records("campus/enrollments.csv")
    accommodated = set(district.column("campus/test_accommodations.csv", "person_id"))

    def people(enrolled_when) -> set[str]:
        return {e["person_id"] for e in enrollments if enrolled_when(e)} & accommodated

    assert people(lambda e: schools[calendars[e["calendar_id"]]["school_id"]]["state_exclude"] == "Y")
    assert people(lambda e: calendars[e["calendar_id"]]["state_exclude"] == "Y")
    assert people(lambda e: e["no_show"] == "Y")
    years = district.records("campus/school_years.csv")
    assert any(y["start_date"] == "" or y["end_date"] == "" for y in years)
    configured = {int(y) for y in district.facts["school_years"]}
    assert configured <= {int(y["school_year"]) for y in years}
    assert any(not r["edfi_id"] for r in district.records("campus/persons.csv"))


def test_campus_accommodations_cover_every_rule_exception(district: District):
    rows = district.records("campus/test_accommodations.csv")
    as_of = district.facts["as_of"]
    assert any(r["end_date"] and r["end_date"] < as_of for r in rows)
    assert any(r["start_date"] > as_of for r in rows)
    unmapped = {r["assessment"] for r in rows if not any(t in r["assessment"] for t in STATE_TESTS)}
    assert {"SAT", "NWEA MAP"} <= unmapped
    assert any("WIDA" in r["assessment"] and r["accommodation"].startswith("CAL_") for r in rows)
    assert any(r["subject"] not in SUBJECTS for r in rows)
    assert any(r["accommodation"] not in ACCOMMODATION_CODES for r in rows)
    assert {"ILEARN Grade 3-8", "IREAD-3", "WIDA ACCESS", "I AM", "ISTAR"} <= {r["assessment"] for r in rows}


def test_every_case_in_the_manifest_is_present(district: District):
    cases = district.manifest["cases"]
    assert all(count >= 1 for count in cases.values()), [c for c, n in cases.items() if n < 1]


def test_proportions_look_like_a_real_district(tmp_path: Path):
    big = _generate(tmp_path, students=3000)
    students = big.records("powerschool/students.csv")
    n = len(students)
    share = lambda column: sum(s[column] == "Y" for s in students) / n  # noqa: E731
    assert 0.11 <= share("Doctor Name") <= 0.17  # special education
    assert 0.15 <= share("Alert MedicalExpires") <= 0.25  # emergent bilingual
    assert 0.01 <= share("Doctor Phone") <= 0.03  # homeless
    assert 2.0 <= len(big.records("powerschool/contacts.csv")) / n <= 3.0
    accommodated = set(big.column("campus/test_accommodations.csv", "person_id"))
    assert 0.10 <= len(accommodated) / n <= 0.15
    for form, low, high in (("section_504", 0.07, 0.11), ("dyslexia", 0.04, 0.08)):
        assert low <= len(set(big.column(f"samegoal/{form}.csv", "samegoal_student_id"))) / n <= high


# --- the next day -----------------------------------------------------------------------------------------
def _next_day(district: District, tmp_path: Path, name: str, **kwargs) -> District:
    """A copy of `district` turned into its next day's export (the module's district stays untouched)."""
    root = tmp_path / name
    shutil.copytree(district.root, root)
    manifest = next_day(root, **kwargs)
    return District(root, manifest, json.loads((root / "district.json").read_text()))


def _documents(d: District) -> dict[tuple[str, str], dict[str, str]]:
    """Every well-formed SameGoal document, by (form, document_id)."""
    return {(form, r["document_id"]): r for form in SAMEGOAL_FORMS for r in d.records(f"samegoal/{form}.csv")}


def _changes(before: District, after: District) -> dict[str, set[tuple[str, str]]]:
    """The documents of `after` that differ from `before`, classified by kind from the files alone."""
    old, new = _documents(before), _documents(after)
    assert set(old) <= set(new)  # SameGoal keeps every document
    kinds: dict[str, set] = {k: set() for k in ("new", "edited", "superseded", "voided")}
    for key, doc in new.items():
        if key not in old:
            form = key[0]
            source = next(s for s in SOURCES if s.name == f"samegoal__{form}")
            same = ("samegoal_student_id", source.record_date, *source.supersession_key)
            earlier = [
                o for (f, _), o in old.items()
                if f == form and o["document_status"] == "complete" and all(o[c] == doc[c] for c in same)
            ]  # fmt: skip
            kinds["superseded" if earlier else "new"].add(key)
        elif doc != old[key]:
            kinds["voided" if doc["document_status"] == "voided" else "edited"].add(key)
    return kinds


def test_next_day_is_deterministic(district: District, tmp_path: Path):
    one = _next_day(district, tmp_path, "one")
    two = _next_day(district, tmp_path, "two")
    assert _all_files(one.root) == _all_files(two.root)
    assert _all_files(one.root) != _all_files(district.root)
    other = _next_day(district, tmp_path, "other", seed=SEED + 1)
    assert _all_files(other.root) != _all_files(one.root)
    # and the day after, from the same folder, again the same
    assert next_day(one.root) == next_day(two.root)
    assert _all_files(one.root) == _all_files(two.root)


def test_next_day_holds_every_kind_of_change_counted_in_the_manifest(district: District, tmp_path: Path):
    after = _next_day(district, tmp_path, "after")
    day = after.manifest["next_day"]
    assert after.manifest["days"] == day["day"] == 1 and after.manifest["history"] == [day]
    assert after.facts["as_of"] == after.manifest["as_of"] == (AS_OF + timedelta(days=1)).isoformat()
    assert {k: v for k, v in after.facts.items() if k != "as_of"} == {
        k: v for k, v in district.facts.items() if k != "as_of"
    }

    kinds = _changes(district, after)
    assert {kind: len(keys) for kind, keys in kinds.items()} == {
        k: v for k, v in day["changes"].items() if k != "withdrawn_students"
    }
    assert all(day["changes"].values())  # every kind, withdrawn students included
    docs = _documents(after)
    last_before = max(r["completed_at"] for r in _documents(district).values() if r["completed_at"])
    assert day["changes_after"] == last_before
    for key in set().union(*kinds.values()):
        assert docs[key]["completed_at"] > last_before, key  # changed after the last export
        assert docs[key]["completed_at"].startswith(AS_OF.isoformat())
    old = _documents(district)
    for key in kinds["edited"]:
        changed = {c for c in old[key] if old[key][c] != docs[key][c]} - {"completed_at"}
        assert changed and docs[key]["document_status"] == "complete", key

    # withdrawn: gone from Qmlativ and the rosters, their SameGoal documents kept
    gone = set(district.column("qmlativ/students.csv", "StudentNumber")) - set(
        after.column("qmlativ/students.csv", "StudentNumber")
    )
    assert len(gone) == day["changes"]["withdrawn_students"]
    assert not gone & set(after.column("powerschool/students.csv", "Local Id"))
    assert not {f"stu-{s}" for s in gone} & set(after.column("oneroster/users.csv", "sourcedId"))
    assert gone & {r["student_local_id"] for r in docs.values()} <= gone
    # every file still parses where the manifest says, and is counted
    for file, count in after.manifest["files"].items():
        assert len(after.table(file)[1]) == count, file
        after.records(file)  # strict: a malformed row out of place fails here
    for quirk in after.manifest["quirks"]:
        if "row" in quirk:
            header, rows = after.table(quirk["file"])
            assert "\n" in rows[quirk["row"] - 1][header.index(quirk["column"])]


def test_next_day_touches_about_the_requested_share(district: District, tmp_path: Path):
    after = _next_day(district, tmp_path, "share", changed_share=0.05)
    day = after.manifest["next_day"]
    touched = sum(len(keys) for keys in _changes(district, after).values())
    assert touched == day["documents_touched"] == round(0.05 * day["documents"])
    assert day["documents"] == len(_documents(district))  # the well-formed ones
    with pytest.raises(ValueError, match="changed-share"):
        next_day(after.root, changed_share=0)


def test_the_cli_writes_the_next_day(district: District, tmp_path: Path, capsys: pytest.CaptureFixture):
    root = tmp_path / "cli"
    shutil.copytree(district.root, root)
    assert cli_main(["generate", "--out", str(root), "--next-day", "--changed-share", "0.02"]) == 0
    assert "day 1, as of 2025-11-04" in capsys.readouterr().out
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["days"] == 1 and manifest["next_day"]["changed_share"] == 0.02
    assert cli_main(["generate", "--out", str(root), "--next-day", "--students", "50"]) == 2
    assert "--next-day takes no --students" in capsys.readouterr().err
