"""Failures stay contained (issue 6): a whole file that cannot be used, an unterminated quote, a header-only
or sharply shrunk snapshot, control characters and one key with two contents are each recorded in
`ops.error_log` (naming the file and what to do), never stop the other records, and never replace the
last good load with a broken one."""

import csv
import hashlib
import os
from pathlib import Path

import dagster as dg
import pytest

from sg_orchestration.catalog import SOURCES_BY_NAME
from sg_orchestration.config import District, IngestGuards
from sg_orchestration.ingest.load import FILE_KEY
from sg_orchestration.ingest.pipeline import ingest_source
from sg_orchestration.ingest.readers import SourceFileError
from sg_orchestration.warehouse import connect

SCHOOLS = SOURCES_BY_NAME["powerschool__schools"]
CONTACTS = SOURCES_BY_NAME["powerschool__contacts"]
ENROLLMENTS = SOURCES_BY_NAME["campus__enrollments"]
SCHOOLS_HEADER = "School Number,School Name,District Number,District Name"
CONTACTS_HEADER = (
    "Contact Id,Student Local Id,First Name,Last Name,Contact Email,Contact Phone,Cell Phone,"
    "Contact Relationship"
)
ENROLLMENTS_HEADER = "enrollment_id,person_id,calendar_id,start_date,end_date,no_show"


def _query(sql: str, params=None):
    with connect() as con:
        return con.execute(sql, params or []).fetchall()


def _district(folder: Path, district_id: str = "drop", **extra) -> District:
    return District(
        id=district_id,
        name="Drop ISD",
        state="TX",
        timezone="America/Chicago",
        inputs={"powerschool_dir": folder, "campus_dir": folder, "samegoal_dir": folder},
        **extra,
    )


def _open_errors(target: str) -> list[tuple]:
    return _query(
        "select record_key_hash, field, value, cause, fix, location from ops.error_log "
        "where target = ? and resolved_at is null order by cause",
        [target],
    )


def _loads(source_name: str) -> list[tuple]:
    return _query(
        "select status, rows_read, rows_added from ops.loads where source = ? order by load_id", [source_name]
    )


def _schools(folder: Path, rows: int = 3) -> None:
    lines = [SCHOOLS_HEADER] + [f"{i},School {i},9,D" for i in range(1, rows + 1)]
    (folder / "schools.csv").write_text("\n".join(lines) + "\n")


def _enrollments(folder: Path, ids) -> None:
    lines = [ENROLLMENTS_HEADER] + [f"E{i},P{i},C1,2025-08-20,,N" for i in ids]
    (folder / "enrollments.csv").write_text("\n".join(lines) + "\n")


# --- 1. Whole-file problems are error-log rows and a failed load, not only exceptions -----------------


def _missing_file(folder: Path) -> None:
    pass


def _empty_file(folder: Path) -> None:
    (folder / "schools.csv").write_bytes(b"")


def _missing_column(folder: Path) -> None:
    (folder / "schools.csv").write_text("School Number,School Name,District Name\n1,A,D\n")


def _duplicated_header(folder: Path) -> None:
    (folder / "schools.csv").write_text(SCHOOLS_HEADER + ",School Name\n1,A,9,D,A\n")


def _folder_instead_of_file(folder: Path) -> None:
    (folder / "schools.csv").mkdir()


WHOLE_FILE_CASES = {
    "missing_file": (_missing_file, "file not found", None),
    "empty_file": (_empty_file, "empty file (0 bytes)", None),
    "missing_required_column": (_missing_column, "missing column(s) ['District Number']", "District Number"),
    "duplicated_header": (_duplicated_header, "appear more than once in the header", "School Name"),
    "folder_instead_of_file": (_folder_instead_of_file, "is a folder, not a file", None),
}


@pytest.mark.parametrize("case", list(WHOLE_FILE_CASES))
def test_a_whole_file_problem_is_an_error_log_row_and_a_failed_load(case, tmp_path, warehouse):
    prepare, problem, field = WHOLE_FILE_CASES[case]
    prepare(tmp_path)
    with pytest.raises(SourceFileError) as info:
        ingest_source(SCHOOLS, _district(tmp_path))
    assert problem in info.value.cause and "\n" not in info.value.cause
    [(key, logged_field, value, cause, fix, location)] = _open_errors(SCHOOLS.name)
    assert key == FILE_KEY == hashlib.md5(b"file").hexdigest()
    assert (logged_field, value, location) == (field, None, "schools.csv")
    assert str(tmp_path / "schools.csv") in cause and problem in cause
    assert fix and "schools.csv" in fix
    assert _loads(SCHOOLS.name) == [("failed", 0, 0)]


def test_an_unreadable_file_is_an_error_log_row_and_a_failed_load(tmp_path, warehouse, monkeypatch):
    _schools(tmp_path)
    path = tmp_path / "schools.csv"
    path.chmod(0)
    if os.access(path, os.R_OK):  # running as root: permissions do not stop reading; simulate the refusal
        real_open = Path.open

        def refuse(self, *args, **kwargs):
            if self == path:
                raise PermissionError(13, "Permission denied", str(self))
            return real_open(self, *args, **kwargs)

        monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(SourceFileError, match="cannot be read: Permission denied"):
        ingest_source(SCHOOLS, _district(tmp_path))
    [(_, _, _, cause, fix, location)] = _open_errors(SCHOOLS.name)
    assert "Permission denied" in cause and "read access" in fix and location == "schools.csv"
    assert _loads(SCHOOLS.name) == [("failed", 0, 0)]


def test_a_configured_input_folder_that_does_not_exist_is_an_error_log_row(tmp_path, warehouse):
    with pytest.raises(SourceFileError, match="input folder .* does not exist"):
        ingest_source(SCHOOLS, _district(tmp_path / "nowhere"))
    [(key, _, _, cause, fix, location)] = _open_errors(SCHOOLS.name)
    assert key == FILE_KEY and "inputs.powerschool_dir" in cause and "districts.yaml" in fix
    assert location == "schools.csv"
    assert _loads(SCHOOLS.name) == [("failed", 0, 0)]


def test_a_whole_file_error_is_seen_again_not_duplicated_and_resolves_when_the_source_loads(
    tmp_path, warehouse
):
    district = _district(tmp_path)
    _schools(tmp_path)
    ingest_source(SCHOOLS, district)
    (tmp_path / "schools.csv").unlink()
    for _ in range(2):
        with pytest.raises(SourceFileError):
            ingest_source(SCHOOLS, district)
    assert len(_open_errors(SCHOOLS.name)) == 1
    _schools(tmp_path)  # the same file as the last good load comes back: unchanged, and fine
    result, _ = ingest_source(SCHOOLS, district)
    assert result.status == "unchanged"
    assert _open_errors(SCHOOLS.name) == []
    assert [s for s, *_ in _loads(SCHOOLS.name)] == ["loaded", "failed", "failed", "unchanged"]


def test_a_samegoal_file_error_resolves_when_the_documents_load(tmp_path, warehouse):
    source = SOURCES_BY_NAME["samegoal__dyslexia"]
    with pytest.raises(SourceFileError):
        ingest_source(source, _district(tmp_path))
    assert len(_open_errors(source.name)) == 1
    header = ",".join(source.column_names)
    (tmp_path / source.file).write_text(header + "\n")  # documents: nothing new is fine
    result, _ = ingest_source(source, _district(tmp_path))
    assert result.status == "loaded"
    assert _open_errors(source.name) == []


def _materialize(source, district: District, monkeypatch, tags=None) -> dg.ExecuteInProcessResult:
    from sg_orchestration.ingest import assets

    class Districts:
        def get(self, district_id):
            assert district_id == district.id
            return district

    monkeypatch.setattr(assets, "current_districts", Districts)
    key = assets.ingest_key(source)
    asset = next(a for a in assets.INGEST_ASSETS if key in a.keys)  # the step of the source's system
    return dg.materialize(
        [asset], selection=[key], partition_key=district.id, tags=tags or {}, raise_on_error=False
    )


def test_a_broken_file_fails_its_systems_step_only_after_the_systems_other_sources_are_loaded(
    tmp_path, warehouse, monkeypatch, district_inputs
):
    """One step ingests a source system; a file of it that cannot be used is not materialized and fails
    the step, naming the source, while every other source of the system is loaded and materialized."""
    import shutil

    from sg_orchestration.catalog import SOURCES
    from sg_orchestration.ingest import assets
    from sg_orchestration.summary import _failed_assets

    folder = tmp_path / "powerschool"
    shutil.copytree(district_inputs / "powerschool", folder)
    _missing_column(folder)  # schools.csv without `District Number`
    district = District(
        id="filedrop", name="Drop", state="TX", timezone="America/Chicago", inputs={"powerschool_dir": folder}
    )
    monkeypatch.setattr(
        assets, "current_districts", lambda: type("D", (), {"get": lambda self, _: district})()
    )
    step = next(a for a in assets.INGEST_ASSETS if assets.ingest_key(SCHOOLS) in a.keys)
    result = dg.materialize([step], partition_key="filedrop", raise_on_error=False)
    assert not result.success
    powerschool = {f"raw/{s.name}" for s in SOURCES if s.system == "powerschool"}
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == powerschool - {"raw/powerschool__schools"}
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert list(_failed_assets(failure)) == ["raw/powerschool__schools"]
    assert "missing column(s) ['District Number']" in _failed_assets(failure)["raw/powerschool__schools"]
    loaded = _query("select source, status from ops.loads where district_id = 'filedrop' order by source")
    assert dict(loaded) == {s.removeprefix("raw/"): "loaded" for s in materialized} | {
        "powerschool__schools": "failed"
    }


def test_a_whole_file_problem_fails_the_asset_with_a_one_line_cause(tmp_path, warehouse, monkeypatch):
    _missing_column(tmp_path)
    result = _materialize(SCHOOLS, _district(tmp_path, "filedrop"), monkeypatch)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    data = failure.event_specific_data
    description = data.user_failure_data.description
    assert description.startswith(str(tmp_path / "schools.csv") + ": missing column(s) ['District Number']")
    assert "\n" not in description and "Traceback" not in description
    assert data.user_failure_data.metadata["status"].value == "failed"
    assert len(_open_errors(SCHOOLS.name)) == 1


# --- 2. An unterminated quote refuses the file; the last good load stays current ----------------------


def _contacts(count: int) -> list[list[str]]:
    return [
        [f"C{i}", f"S{i}", "Pat", f"Parent{i}", f"p{i}@example.org", "555-0100", "555-0101", "Mother"]
        for i in range(1, count + 1)
    ]


def _write_contacts(folder: Path, rows: list[list[str]]) -> Path:
    path = folder / "contacts.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([CONTACTS_HEADER.split(","), *rows])
    return path


def test_an_unterminated_quote_refuses_the_file_and_keeps_the_last_good_load(tmp_path, warehouse):
    district = _district(tmp_path)
    rows = _contacts(1155)
    _write_contacts(tmp_path, rows)
    good, _ = ingest_source(CONTACTS, district)
    assert (good.status, good.rows_added) == ("loaded", 1155)

    path = _write_contacts(tmp_path, rows)
    lines = path.read_text().splitlines(keepends=True)
    # Contact 577's phone opens a quote that is never closed: csv reads the rest of the file into it.
    lines[577] = lines[577].replace(",555-0100,", ',"555-0100,')
    path.write_text("".join(lines))
    with pytest.raises(SourceFileError) as info:
        ingest_source(CONTACTS, district)
    cause = info.value.cause
    assert "unterminated quote" in cause and "line 578" in cause and "`Contact Phone`" in cause
    assert "about 578 rows" in cause and "\n" not in cause
    [(key, field, _, logged_cause, fix, location)] = _open_errors(CONTACTS.name)
    assert (key, field, location) == (FILE_KEY, "Contact Phone", "contacts.csv line 578")
    assert logged_cause == cause and "line 578" in fix and "contacts.csv" in fix
    assert [s for s, *_ in _loads(CONTACTS.name)] == ["loaded", "failed"]
    # Nothing of the broken file was applied: the last good load is the one staging reads.
    assert _query("select count(*), min(_load_id), max(_load_id) from raw.powerschool__contacts") == [
        (1155, good.load_id, good.load_id)
    ]

    _write_contacts(tmp_path, rows[:-1])  # fixed (and one contact fewer): applied, the error resolves
    fixed, _ = ingest_source(CONTACTS, district)
    # The same contacts but one: nothing is added, the one gone is retired.
    assert (fixed.status, fixed.rows_added, fixed.rows_retired) == ("loaded", 0, 1)
    assert _open_errors(CONTACTS.name) == []


def test_an_unterminated_quote_closed_far_later_by_a_stray_quote_is_refused(tmp_path, warehouse):
    rows = _contacts(1155)
    rows[699][3] = 'O"Brien'  # a stray quote 600 lines on ends the runaway field: one odd-shaped row
    path = _write_contacts(tmp_path, rows)
    lines = path.read_text().splitlines(keepends=True)
    lines[100] = lines[100].replace(",Pat,", ',"Pat,')
    path.write_text("".join(lines))
    with pytest.raises(
        SourceFileError, match=r"`First Name` field opened on line 101 .* to 701 \(about 600 rows\)"
    ):
        ingest_source(CONTACTS, _district(tmp_path))
    assert _query("select count(*) from raw.powerschool__contacts") == [(0,)]


def test_an_unterminated_quote_swallowing_a_few_whole_rows_is_refused(tmp_path, warehouse):
    path = _write_contacts(tmp_path, _contacts(100))
    text = path.read_text().replace(
        "p95@example.org,555-0100,555-0101,Mother", 'p95@example.org,555-0100,555-0101,"Mother'
    )
    path.write_text(text)  # the last field of row 95 runs to the end: the record still has 8 fields
    with pytest.raises(
        SourceFileError, match=r"`Contact Relationship` field opened on line 96 .* to 101 \(about 5 rows\)"
    ):
        ingest_source(CONTACTS, _district(tmp_path))


def test_legit_quoted_newlines_and_commas_still_load(tmp_path, warehouse):
    rows = _contacts(200)
    for i in range(0, 200, 10):
        rows[i][7] = "Mother,\nsee note\nline three"  # quoted, with commas and line breaks
    rows[5][7] = "\n".join(f"note line {n}" for n in range(15))  # a long note, still below the limit
    _write_contacts(tmp_path, rows)
    result, _ = ingest_source(CONTACTS, _district(tmp_path))
    assert (result.status, result.rows_added, result.rows_with_errors) == ("loaded", 200, 0)
    assert _query(
        'select "Contact Relationship" from raw.powerschool__contacts where "Contact Id" = \'C1\''
    ) == [("Mother,\nsee note\nline three",)]


def test_an_unterminated_quote_in_the_last_row_running_to_the_end_is_refused(tmp_path, warehouse):
    path = _write_contacts(tmp_path, _contacts(100))
    text = path.read_text()
    text = text.replace("C70,S70,Pat,", 'C70,S70,"Pat,')
    path.write_text(text)
    with pytest.raises(SourceFileError, match=r"`First Name` field opened on line 71 .*about 30 rows"):
        ingest_source(CONTACTS, _district(tmp_path))
    assert _query("select count(*) from raw.powerschool__contacts") == [(0,)]


# --- 3. A header-only or sharply shrunk snapshot is held until accepted -------------------------------


def test_a_header_only_snapshot_is_held_and_the_last_good_load_stays_current(tmp_path, warehouse):
    district = _district(tmp_path)
    _enrollments(tmp_path, range(5))  # few rows: the header-only rule still holds it
    good, _ = ingest_source(ENROLLMENTS, district)
    _enrollments(tmp_path, [])
    held, _ = ingest_source(ENROLLMENTS, district)
    assert (held.status, held.rows_read, held.rows_added) == ("held", 0, 0)
    assert [s for s, *_ in _loads(ENROLLMENTS.name)] == ["loaded", "held"]
    assert _query("select distinct _load_id from raw.campus__enrollments") == [(good.load_id,)]
    [(key, field, _, cause, fix, location)] = _open_errors(ENROLLMENTS.name)
    assert (key, field, location) == (FILE_KEY, None, "enrollments.csv")
    assert "only a header" in cause and "5 rows" in cause and "last good load" in cause
    assert "sg/accept_shrink=campus__enrollments" in fix


def test_a_sharply_shrunk_snapshot_is_held_until_accepted_with_the_run_tag(tmp_path, warehouse):
    district = _district(tmp_path)
    _enrollments(tmp_path, range(100))
    ingest_source(ENROLLMENTS, district)
    _enrollments(tmp_path, range(60))  # 40% fewer: more than the 30% allowed
    held, _ = ingest_source(ENROLLMENTS, district, accept_shrink="powerschool__schools")
    assert held.status == "held"
    [(_, _, _, cause, _, _)] = _open_errors(ENROLLMENTS.name)
    assert "60 rows, 40% fewer than the 100 of the last good load" in cause and "30%" in cause
    again, _ = ingest_source(ENROLLMENTS, district)  # the same file again: held again, one open error
    assert again.status == "held" and len(_open_errors(ENROLLMENTS.name)) == 1

    accepted, _ = ingest_source(
        ENROLLMENTS, district, accept_shrink="powerschool__schools, campus__enrollments"
    )
    assert (accepted.status, accepted.rows_added, accepted.rows_retired) == ("loaded", 0, 40)
    assert _open_errors(ENROLLMENTS.name) == []
    assert [s for s, *_ in _loads(ENROLLMENTS.name)] == ["loaded", "held", "held", "loaded"]


def test_a_changed_snapshot_stores_only_the_rows_that_changed_and_retires_those_gone(tmp_path, warehouse):
    """A snapshot is the whole current state, but a night that changes one row of it stores one row: the
    rows the current state lacks are added, those the read no longer has are retired, staging shows
    exactly the new file."""
    district = _district(tmp_path)
    _enrollments(tmp_path, range(10))
    first, _ = ingest_source(ENROLLMENTS, district)
    assert (first.rows_added, first.rows_retired) == (10, 0)
    lines = (tmp_path / "enrollments.csv").read_text().splitlines()
    lines[3] = lines[3].replace(",N", ",Y")  # E2 becomes a no-show
    del lines[5]  # E4 withdrawn
    lines.append("E10,P10,C1,2025-08-20,,N")  # a new enrollment
    lines.append("E11,P11,C1,not-a-date,,N")  # and a malformed one, kept with its reason
    (tmp_path / "enrollments.csv").write_text("\n".join(lines) + "\n")
    second, _ = ingest_source(ENROLLMENTS, district)
    assert (second.status, second.rows_read, second.rows_added) == ("loaded", 11, 3)
    assert (second.rows_retired, second.rows_with_errors) == (2, 1)
    current = _query(
        "select enrollment_id, no_show, _error is null from raw.campus__enrollments "
        "where _district_id = 'drop' and _retired_load is null order by _source_row, enrollment_id"
    )
    assert {r[0] for r in current} == {f"E{i}" for i in range(12) if i != 4}
    assert dict((r[0], r[1]) for r in current)["E2"] == "Y"
    assert [r[0] for r in current if not r[2]] == ["E11"]
    assert _query("select count(*) from raw.campus__enrollments") == [(13,)]  # 10 + 3, not 10 + 11
    retired = _query(
        "select enrollment_id, no_show from raw.campus__enrollments where _retired_load = ?", [second.load_id]
    )
    assert sorted(retired) == [("E2", "N"), ("E4", "N")]
    # An accepted empty snapshot: nothing is current any more.
    _enrollments(tmp_path, [])
    empty, _ = ingest_source(ENROLLMENTS, district, accept_shrink="campus__enrollments")
    assert (empty.status, empty.rows_added, empty.rows_retired) == ("loaded", 0, 11)
    assert _query("select count(*) from raw.campus__enrollments where _retired_load is null") == [(0,)]


def test_a_known_row_is_checked_again_when_its_verdict_changes_with_the_rows_beside_it(tmp_path, warehouse):
    """Rows the district already holds clean are not checked again, but a row's verdict also depends on the
    rows of its load: a clean row that now shares its key with another becomes an error row, and once the
    other goes it is current and clean again; unchanged rows are neither added nor retired."""
    district = _district(tmp_path)

    def night(*rows: str):
        (tmp_path / "enrollments.csv").write_text("\n".join([ENROLLMENTS_HEADER, *rows]) + "\n")
        result, _ = ingest_source(ENROLLMENTS, district)
        current = _query(
            "select enrollment_id, no_show, _error from raw.campus__enrollments "
            "where _district_id = 'drop' and _retired_load is null order by enrollment_id, no_show"
        )
        return (result.rows_added, result.rows_retired), current

    a, b, b2 = "E1,P1,C1,2025-08-20,,N", "E2,P2,C1,2025-08-20,,N", "E2,P2,C1,2025-08-20,,Y"
    assert night(a, b) == ((2, 0), [("E1", "N", None), ("E2", "N", None)])
    counts, current = night(a, b, b2)  # E2 twice, with different content: both are errors
    assert counts == (2, 1)
    assert [(r[0], r[1], "share this key" in (r[2] or "")) for r in current] == [
        ("E1", "N", False),
        ("E2", "N", True),
        ("E2", "Y", True),
    ]
    assert night(a, b) == ((1, 2), [("E1", "N", None), ("E2", "N", None)])  # the conflict is gone
    assert night(a, b) == ((0, 0), [("E1", "N", None), ("E2", "N", None)])  # the same file: unchanged
    assert _query("select count(*) from raw.campus__enrollments") == [(5,)]


def test_a_warehouse_that_kept_whole_snapshots_is_upgraded_to_the_current_rows(tmp_path, warehouse):
    """Before 2026-12-02 a changed snapshot was appended whole and staging read the latest load: opening
    such a warehouse retires every row of every load but the latest applied one, per district."""
    from sg_orchestration import warehouse as wh

    district = _district(tmp_path)
    _enrollments(tmp_path, range(3))
    first, _ = ingest_source(ENROLLMENTS, district)
    _enrollments(tmp_path, range(2))
    with connect() as con:  # the old layout: no column, the second load appended whole, no schema digest
        con.execute("alter table raw.campus__enrollments drop column _retired_load")
        con.execute("drop table ops.warehouse_schema")
        con.execute(
            "insert into raw.campus__enrollments by name select * exclude (_load_id), 999 as _load_id "
            "from raw.campus__enrollments where enrollment_id in ('E0', 'E1')"
        )
        con.execute(
            "insert into ops.loads values (999, 'drop', 'campus__enrollments', 'x', 'd', now(), now(), 2, 2, 0, 'loaded')"
        )
    wh._initialised.clear()  # a new process opening the warehouse
    assert _query(
        "select _load_id, count(*) from raw.campus__enrollments where _retired_load is null group by 1"
    ) == [(999, 2)]
    assert _query("select count(*) from raw.campus__enrollments where _retired_load = 999") == [(3,)]
    assert first.load_id != 999


def test_a_shrink_within_the_threshold_or_of_a_small_source_is_applied(tmp_path, warehouse):
    district = _district(tmp_path, ingest={"shrink_threshold_pct": 50, "shrink_min_rows": 20})
    _enrollments(tmp_path, range(100))
    ingest_source(ENROLLMENTS, district)
    _enrollments(tmp_path, range(55))  # 45% fewer, the district allows 50%
    assert ingest_source(ENROLLMENTS, district)[0].status == "loaded"
    _schools(tmp_path, rows=19)
    ingest_source(SCHOOLS, district)
    _schools(tmp_path, rows=2)  # the last good load had fewer than shrink_min_rows: applied
    assert ingest_source(SCHOOLS, district)[0].status == "loaded"


def test_accept_shrink_all_applies_every_held_source(tmp_path, warehouse):
    district = _district(tmp_path)
    _enrollments(tmp_path, range(50))
    ingest_source(ENROLLMENTS, district)
    _enrollments(tmp_path, [])
    assert ingest_source(ENROLLMENTS, district, accept_shrink="all")[0].status == "loaded"
    assert _loads(ENROLLMENTS.name)[-1] == ("loaded", 0, 0)  # accepted: the empty snapshot is current


def test_a_held_snapshot_materializes_with_a_failing_warn_check_and_the_tag_accepts_it(
    tmp_path, warehouse, monkeypatch
):
    district = _district(tmp_path, "filedrop")
    _enrollments(tmp_path, range(50))
    assert _materialize(ENROLLMENTS, district, monkeypatch).success
    _enrollments(tmp_path, [])
    result = _materialize(ENROLLMENTS, district, monkeypatch)
    assert result.success  # not an exception: downstream runs on the last good load
    [mat] = [e.materialization for e in result.get_asset_materialization_events()]
    assert mat.metadata["status"].value == "held"
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["load_applied"].passed
    assert checks["load_applied"].severity == dg.AssetCheckSeverity.WARN
    accepted = _materialize(
        ENROLLMENTS, district, monkeypatch, tags={"sg/accept_shrink": "campus__enrollments"}
    )
    checks = {e.check_name: e for e in accepted.get_asset_check_evaluations()}
    assert checks["load_applied"].passed
    assert _open_errors(ENROLLMENTS.name) == []


def test_ingest_guards_come_from_the_districts_file(tmp_path):
    import yaml

    from sg_orchestration.config import ConfigError, load_districts

    entry = {"id": "g", "name": "G", "state": "TX", "timezone": "America/Chicago"}
    path = tmp_path / "districts.yaml"
    path.write_text(yaml.safe_dump({"districts": [{**entry, "ingest": {"shrink_threshold_pct": 10}}]}))
    assert load_districts(path).get("g").ingest == IngestGuards(shrink_threshold_pct=10, shrink_min_rows=20)
    path.write_text(yaml.safe_dump({"districts": [entry]}))
    assert load_districts(path).get("g").ingest == IngestGuards()
    path.write_text(yaml.safe_dump({"districts": [{**entry, "ingest": {"shrink_pct": 10}}]}))
    with pytest.raises(ConfigError, match="ingest.shrink_pct"):
        load_districts(path)


# --- 4. Control characters in a field are an error row ------------------------------------------------


def test_control_characters_in_any_field_are_an_error_row(tmp_path, warehouse):
    (tmp_path / "schools.csv").write_text(
        SCHOOLS_HEADER + "\n"
        "1,U.S\x00\x00. Government,9,D\n"
        '2,"Tab\tand a line\nbreak are fine",9,D\n'
        "3,Unit\x1fSeparator,9,D\n"
        "4,B,9\x7f,D\n"
        "5,Fine,9,D\n"
    )
    result, _ = ingest_source(SCHOOLS, _district(tmp_path))
    assert (result.rows_added, result.rows_with_errors) == (5, 3)
    kept = dict(_query("select _source_row, _error from raw.powerschool__schools"))
    assert kept[2] is None and kept[5] is None
    assert kept[1].startswith("School Name: contains a control character")
    assert kept[4].startswith("District Number: contains a control character")
    errors = _query(
        "select location, field, value, fix from ops.error_log where target = ? order by location",
        [SCHOOLS.name],
    )
    assert [(loc, fld) for loc, fld, _, _ in errors] == [
        ("schools.csv row 1", "School Name"),
        ("schools.csv row 3", "School Name"),
        ("schools.csv row 4", "District Number"),
    ]
    assert errors[0][2] == "U.S\x00\x00. Government"  # the value is in ops.error_log only
    assert all("schools.csv row" in fix for *_, fix in errors)
    assert _query("select count(*) from raw.powerschool__schools where \"School Number\" = '5'") == [(1,)]


# --- 5. One key, two contents in one load: both rows are errors ---------------------------------------


def test_two_rows_with_one_key_and_different_content_are_both_error_rows(tmp_path, warehouse):
    lines = [ENROLLMENTS_HEADER, "E1,P1,C1,2025-08-20,,N", "E2,P2,C1,2025-08-20,,N", "E1,P1,C2,2025-08-21,,N"]
    lines += ["E3,P3,C1,2025-08-20,,N", "E3,P3,C1,2025-08-20,,N"]  # an exact duplicate: deduplicated
    (tmp_path / "enrollments.csv").write_text("\n".join(lines) + "\n")
    result, _ = ingest_source(ENROLLMENTS, _district(tmp_path))
    assert (result.rows_read, result.rows_added, result.rows_with_errors) == (5, 4, 2)
    kept = _query("select _source_row, enrollment_id, _error from raw.campus__enrollments order by 1")
    assert [(r, e) for r, e, err in kept if err] == [(1, "E1"), (3, "E1")]
    assert (
        "2 rows in this load share this key (enrollment_id) but differ in calendar_id, start_date"
        in kept[0][2]
    )
    assert [(r, e) for r, e, err in kept if not err] == [(2, "E2"), (4, "E3")]
    errors = _query(
        "select record_key_hash, field, value, cause, fix, location from ops.error_log where target = ? "
        "order by field",
        [ENROLLMENTS.name],
    )
    key_hash = _query("select md5(concat_ws(chr(31), 'E1'))")[0][0]
    assert [(k, f, v, loc) for k, f, v, _, _, loc in errors] == [
        (key_hash, "calendar_id", None, "enrollments.csv rows 1, 3"),
        (key_hash, "start_date", None, "enrollments.csv rows 1, 3"),
    ]
    assert errors[0][3] == "2 rows in this load share this key but differ in calendar_id, start_date"
    assert "appears once" in errors[0][4] and "enrollment_id" in errors[0][4]

    lines.pop(3)  # the source is corrected: the key appears once; the errors resolve
    (tmp_path / "enrollments.csv").write_text("\n".join(lines) + "\n")
    ingest_source(ENROLLMENTS, _district(tmp_path))
    assert _open_errors(ENROLLMENTS.name) == []


SPED = SOURCES_BY_NAME["samegoal__special_education_enrollment"]
SAMEGOAL_DISTRICT = District(
    id="twice",
    name="Twice ISD",
    state="TX",
    timezone="America/Chicago",
    samegoal={
        "base_url": "http://127.0.0.1:9",
        "client_id_env": "X_ID",
        "client_secret_env": "X_SECRET",
        "cutover_dates": {"special_education": "2024-08-01"},
    },
)


def _sped(doc_id: str, disability: str, start: str = "2024-09-01", student: str = "1") -> dict:
    return {
        "document_id": doc_id,
        "document_status": "complete",
        "completed_at": "2024-09-02T10:00:00Z",
        "samegoal_student_id": f"SG{student}",
        "student_local_id": f"L{student}",
        "start_date": start,
        "state_instructional_setting": "40",
        "state_disability": disability,
    }


def test_a_samegoal_document_twice_with_different_content_waits_and_the_earlier_version_stays_current(
    tmp_path, warehouse
):
    from sg_orchestration.ingest.load import load
    from sg_orchestration.ingest.readers import records_to_batches
    from sg_orchestration.transform.dbt import invoke, prepare, record_cutover_dates

    def send(records: list[dict], source=SPED):
        with connect() as con:
            return load(con, source, SAMEGOAL_DISTRICT.id, records_to_batches(source, "api", [records]))

    students = SOURCES_BY_NAME["qmlativ__students"]
    send([{"StudentID": 100 + i, "StudentNumber": f"L{i}"} for i in (1, 2)], students)
    with connect() as con:
        record_cutover_dates(con, SAMEGOAL_DISTRICT)
    send([_sped("E1", "08")])
    # The next export has E1 twice, differing; and a new document E2 twice, differing.
    second = send(
        [
            _sped("E1", "10"),
            _sped("E1", "09", start="2024-09-03"),
            _sped("E2", "08", student="2"),
            _sped("E2", "10", student="2"),
        ]
    )
    assert (second.rows_added, second.rows_with_errors) == (4, 4)
    e1 = _query("select md5(concat_ws(chr(31), 'E1'))")[0][0]
    errors = _query(
        "select field, cause from ops.error_log where target = ? and record_key_hash = ? "
        "and resolved_at is null order by field",
        [SPED.name, e1],
    )
    assert errors == [
        (f, "2 rows in this load share this key but differ in start_date, state_disability")
        for f in ("start_date", "state_disability")
    ]

    prepare()

    def current() -> dict:
        """The rules (a table) built over what raw holds now, as the nightly's dbt step does."""
        invoke("run", "--select", "+int_samegoal__special_education_enrollment")
        return dict(
            _query(
                "select document_id, state_disability from intermediate.int_samegoal__special_education_enrollment "
                "where district_id = 'twice' and integrated"
            )
        )

    # What is sent for E1 waits: the earlier clean version stays current; E2 has none and is not sent.
    assert current() == {"E1": "08"}

    third = send([_sped("E1", "10"), _sped("E2", "10", student="2")])  # the key comes once: applied
    assert (third.rows_added, third.rows_with_errors) == (2, 0)
    assert current() == {"E1": "10", "E2": "10"}
    assert _query(
        "select count(*) from ops.error_log where target = ? and resolved_at is null", [SPED.name]
    ) == [(0,)]


def test_an_api_that_cannot_be_read_is_an_error_log_row_and_a_failed_load(warehouse, monkeypatch):
    """A SameGoal API that is down (nothing listens on its port) is recorded like a file that cannot be
    used: a failed load, one error row naming the endpoint and the fix, the last good load kept."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free, and closed when we leave
    monkeypatch.setenv("SG_TEST_SG_ID", "id")
    monkeypatch.setenv("SG_TEST_SG_SECRET", "secret")
    district = District(
        id="api",
        name="API ISD",
        state="TX",
        timezone="America/Chicago",
        samegoal={
            "base_url": f"http://127.0.0.1:{port}",
            "client_id_env": "SG_TEST_SG_ID",
            "client_secret_env": "SG_TEST_SG_SECRET",
            "cutover_dates": {},
        },
    )
    source = SOURCES_BY_NAME["samegoal__dyslexia"]
    with pytest.raises(SourceFileError) as raised:
        ingest_source(source, district)
    assert f"127.0.0.1:{port}" in raised.value.cause and "could not be read" in raised.value.cause
    [(key, _, _, cause, fix, location)] = _open_errors(source.name)
    assert key == FILE_KEY and "could not be read" in cause and "reachable" in fix
    assert location == "samegoal API"
    assert [status for status, *_ in _loads(source.name)] == ["failed"]
