"""The SameGoal integration rules (seed 000, SPEC §3.1–3.2), each a test, run by dbt against DuckDB.

One small district is loaded into raw through the real loader, in two loads (the second voids a
document), then dbt builds the staging and intermediate models.
"""

import os
from datetime import date

import pytest

from sg_orchestration.catalog import SOURCES_BY_NAME
from sg_orchestration.config import District
from sg_orchestration.ingest.load import load
from sg_orchestration.ingest.readers import records_to_batches
from sg_orchestration.transform.dbt import invoke, prepare, record_cutover_dates
from sg_orchestration.warehouse import connect

DISTRICT = District(
    id="rules",
    name="Rules ISD",
    state="TX",
    timezone="America/Chicago",
    samegoal={
        "base_url": "http://127.0.0.1:9",
        "client_id_env": "X_ID",
        "client_secret_env": "X_SECRET",
        "cutover_dates": {
            "special_education": "2024-08-01",
            "dyslexia": "2024-08-01",
            "restraint": "2024-08-01",
            "intervention_strategy": None,  # blank: the program is not integrated at all
        },
    },
)
STUDENTS = [
    {"StudentID": 101, "StudentNumber": "L1", "StateID": "S1"},
    {"StudentID": 102, "StudentNumber": "L2", "StateID": "S2"},
    {"StudentID": 103, "StudentNumber": "L3", "StateID": "S3"},
    {"StudentID": 104, "StudentNumber": "LDUP", "StateID": "S4"},
    {"StudentID": 105, "StudentNumber": "LDUP", "StateID": "S5"},
]


def _doc(doc_id, status, student, local, state, start, completed=None, **fields):
    return {
        "document_id": doc_id,
        "document_status": status,
        "completed_at": completed if status == "complete" else None,
        "samegoal_student_id": student,
        "student_local_id": local,
        "student_state_id": state,
        "start_date": start,
        **fields,
    }


FIRST_LOAD = {
    "samegoal__dyslexia": [
        _doc("D1", "complete", "SG1", "L1", "S1", "2024-09-01", "2024-09-02T10:00:00Z"),
        _doc("D2", "draft", "SG1", "L1", "S1", "2024-10-01"),
        _doc("D3", "in_review", "SG1", "L1", "S1", "2024-10-02"),
        _doc("D4", "complete", "SG2", "L2", "S2", "2024-09-01", "2024-09-05T10:00:00Z"),
        _doc("D5", "complete", "SG2", "L2", "S2", "2024-09-01", "2024-09-10T10:00:00Z"),
        _doc("D6", "complete", "SG3", "L3", "S3", "2024-07-01", "2024-07-02T10:00:00Z"),
        _doc("D7", "complete", "SG3", None, "S3", "2024-09-01", "2024-09-03T10:00:00Z"),
        _doc("D8", "complete", "SG4", "L404", "S404", "2024-09-01", "2024-09-03T10:00:00Z"),
        _doc("D9", "complete", "SG1", "L1", "S1", "2024-11-01", "2024-11-02T10:00:00Z"),
        _doc("D10", "complete", "SG5", "LDUP", "S5", "2024-09-01", "2024-09-03T10:00:00Z"),
    ],
    "samegoal__disability": [
        _doc("R1", "complete", "SG1", "L1", "S1", "2024-09-01", "2024-09-02T10:00:00Z", disability_rank="1"),
        _doc("R2", "complete", "SG1", "L1", "S1", "2024-09-01", "2024-09-02T11:00:00Z", disability_rank="2"),
    ],
    "samegoal__restraint": [
        {
            **_doc("X1", "complete", "SG1", "L1", "S1", None, "2024-09-02T10:00:00Z"),
            "restraint_date": "2024-07-15",
        },
        {
            **_doc("X2", "complete", "SG1", "L1", "S1", None, "2024-09-03T10:00:00Z"),
            "restraint_date": "2024-09-01",
        },
    ],
    "samegoal__special_education_enrollment": [
        _doc(
            "E1",
            "complete",
            "SG1",
            "L1",
            "S1",
            "2024-09-01",
            "2024-09-02T10:00:00Z",
            state_instructional_setting="47",
            state_disability="08",
        ),
        _doc(
            "E2",
            "complete",
            "SG2",
            "L2",
            "S2",
            "2024-09-01",
            "2024-09-02T10:00:00Z",
            end_date="2024-08-01",
            state_instructional_setting="40",
            state_disability="08",
        ),
        _doc(
            "E3",
            "complete",
            "SG3",
            "L3",
            "S3",
            "2024-09-01",
            "2024-09-02T10:00:00Z",
            state_instructional_setting="41",
            state_disability="10",
            multiply_disabled="N",
        ),
    ],
    "samegoal__intervention_strategy": [
        _doc("I1", "complete", "SG1", "L1", "S1", "2024-09-01", "2024-09-02T10:00:00Z"),
    ],
}
SECOND_LOAD = {"samegoal__dyslexia": [_doc("D9", "voided", "SG1", "L1", "S1", "2024-11-01")]}


def _load(con, name: str, records: list[dict]) -> None:
    load(
        con, SOURCES_BY_NAME[name], DISTRICT.id, records_to_batches(SOURCES_BY_NAME[name], "test", [records])
    )


def _build() -> None:
    """dbt builds the rules over what raw holds now (the intermediate models are tables)."""
    invoke("build", "--select", "+path:models/marts", "resource_type:seed")


@pytest.fixture(scope="module")
def current(tmp_path_factory):
    """Runs the rules once; returns a query helper over the intermediate models."""
    previous = os.environ.get("SG_WAREHOUSE_PATH")
    os.environ["SG_WAREHOUSE_PATH"] = str(tmp_path_factory.mktemp("rules") / "warehouse.duckdb")
    try:
        with connect() as con:
            _load(con, "qmlativ__students", STUDENTS)
            for name, records in FIRST_LOAD.items():
                _load(con, name, records)
            for name, records in SECOND_LOAD.items():
                _load(con, name, records)
            record_cutover_dates(con, DISTRICT)
        prepare()
        _build()

        def query(form: str) -> dict[str, tuple]:
            with connect() as con:
                rows = con.execute(
                    f"select document_id, integrated, not_integrated_reason, qmlativ_student_id, mapped_by "
                    f"from intermediate.int_samegoal__{form} where district_id = 'rules'"
                ).fetchall()
            return {r[0]: r[1:] for r in rows}

        yield query
    finally:
        if previous is None:
            os.environ.pop("SG_WAREHOUSE_PATH", None)
        else:
            os.environ["SG_WAREHOUSE_PATH"] = previous


def test_only_complete_documents_are_integrated(current):
    dyslexia = current("dyslexia")
    assert "D2" not in dyslexia and "D3" not in dyslexia  # draft, in review
    assert dyslexia["D1"] == (True, None, 101, "local_id")


def test_a_later_complete_document_supersedes_an_earlier_one(current):
    dyslexia = current("dyslexia")
    assert "D4" not in dyslexia  # same student, form and start date, completed earlier
    assert dyslexia["D5"][0] is True


def test_supersession_keeps_each_disability_rank(current):
    disability = current("disability")
    assert disability["R1"][0] and disability["R2"][0]


def test_a_voided_document_withdraws_what_it_had_sent(current):
    assert "D9" not in current("dyslexia")  # complete in the first load, voided in the second


def test_a_record_dated_before_its_programs_cutover_is_not_integrated(current):
    assert current("dyslexia")["D6"][:2] == (False, "before the program's cutover date")
    restraint = current("restraint")  # dated by restraint_date, not start_date
    assert restraint["X1"][:2] == (False, "before the program's cutover date")
    assert restraint["X2"][0] is True


def test_a_blank_cutover_date_means_the_program_is_not_integrated_at_all(current):
    assert current("intervention_strategy")["I1"][:2] == (
        False,
        "program not integrated (blank cutover date)",
    )


def test_students_map_to_qmlativ_by_local_id_then_state_id(current):
    dyslexia = current("dyslexia")
    assert dyslexia["D7"] == (True, None, 103, "state_id")  # no local id: the state id maps
    assert dyslexia["D10"] == (True, None, 105, "state_id")  # local id names two students: not guessed


def test_an_unmapped_student_is_not_sent_and_says_run_the_demographics_integration(current):
    assert current("dyslexia")["D8"] == (
        False,
        "student not mapped: run the demographics integration",
        None,
        None,
    )


def test_cutover_dates_come_from_the_districts_file(current):
    with connect() as con:
        rows = dict(
            con.execute(
                "select program, cutover_date from ops.samegoal_cutover where district_id = 'rules'"
            ).fetchall()
        )
    assert rows["dyslexia"] == date(2024, 8, 1)
    assert rows["intervention_strategy"] is None and rows["child_find"] is None


def test_unmapped_students_go_to_the_error_log_with_the_seeds_hint_and_resolve_once_mapped(current):
    from sg_orchestration.validate.student_mapping import MAPPING_HINT, record_unmapped

    with connect() as con:
        assert record_unmapped(con, "rules") == {"qmlativ/dyslexia": 1}
        record_unmapped(con, "rules")  # a second run does not duplicate the open error
        open_errors = con.execute(
            "select target, cause, fix from ops.error_log where district_id = 'rules' and resolved_at is null"
        ).fetchall()
        assert open_errors == [("qmlativ/dyslexia", MAPPING_HINT, open_errors[0][2])]
        assert "demographics integration" in open_errors[0][2]
        # The demographics integration runs and now knows the student: the error resolves.
        _load(
            con,
            "qmlativ__students",
            [*STUDENTS, {"StudentID": 106, "StudentNumber": "L404", "StateID": "S404"}],
        )
    _build()
    with connect() as con:
        assert record_unmapped(con, "rules") == {}
        assert (
            con.execute(
                "select count(*) from ops.error_log where district_id = 'rules' and resolved_at is null"
            ).fetchone()[0]
            == 0
        )
        _load(con, "qmlativ__students", STUDENTS)  # back to the scenario the other tests share
    _build()


def test_a_district_whose_demographics_never_loaded_fails_its_check(current):
    from sg_orchestration.validate.student_mapping import demographics_loaded

    with connect() as con:
        assert demographics_loaded(con, "rules")
        assert not demographics_loaded(con, "never-ran")


def test_each_qmlativ_screen_has_exactly_the_seeds_fields_and_only_integrated_documents(current):
    import yaml

    from sg_orchestration.paths import PROJECT_ROOT

    fields = yaml.safe_load((PROJECT_ROOT / "sg_orchestration/config/qmlativ_fields.yaml").read_text())
    with connect() as con:
        for form, mapping in fields.items():
            # The names a query gets (DuckDB's `describe` of a view keeps a source column's own case
            # where an alias differs from it only in case, e.g. `eb as "EB"` over a table).
            columns = [d[0] for d in con.execute(f"select * from marts.qmlativ__{form} limit 0").description]
            assert columns == [
                "district_id",
                "document_id",
                "StudentID",
                "SourceDocumentID",
                *mapping.values(),
            ]
        sent = con.execute(
            'select "SourceDocumentID", "StudentID", "StartDate" from marts.qmlativ__dyslexia '
            "where district_id = 'rules' order by 1"
        ).fetchall()
    assert [r[0] for r in sent] == ["D1", "D10", "D5", "D7"]
    assert dict((r[0], r[1]) for r in sent) == {"D1": 101, "D10": 105, "D5": 102, "D7": 103}
    assert fields["special_education_enrollment"] == {
        "start_date": "StartDate",
        "end_date": "EndDate",
        "state_instructional_setting": "StateInstructionalSetting",
        "state_child_count_fund": "StateChildCountFund",
        "multiply_disabled": "MultiplyDisabled",
        "state_disability": "StateDisability",
    }


def _validation_errors() -> dict[str, list[tuple]]:
    from sg_orchestration.validate.qmlativ import record_mart_failures

    with connect() as con:
        record_mart_failures(con, "rules")
        rows = con.execute(
            "select record_key_hash, field, value, cause, fix from ops.error_log "
            "where district_id = 'rules' and target = 'qmlativ/special_education_enrollment' and resolved_at is null"
        ).fetchall()
        keys = dict(con.execute("select md5(d), d from (values ('E1'), ('E2'), ('E3')) t(d)").fetchall())
    out: dict[str, list[tuple]] = {}
    for key, *rest in rows:
        out.setdefault(keys[key], []).append(tuple(rest))
    return out


def test_a_code_not_in_its_teds_table_is_a_validation_error_naming_field_value_and_table(current):
    errors = _validation_errors()
    assert [e[:2] for e in errors["E1"]] == [("StateInstructionalSetting", "47")]
    assert "TEDS table C035" in errors["E1"][0][2]
    assert "teds_codes.csv" in errors["E1"][0][3]  # the fix says how a district extends the table


def test_an_end_date_before_the_start_date_is_a_validation_error(current):
    errors = _validation_errors()
    assert [e[0] for e in errors["E2"]] == ["EndDate"]
    assert "E3" not in errors


def test_a_record_that_fails_validation_is_never_sent(current):
    from sg_orchestration.catalog import SOURCES_BY_NAME as S
    from sg_orchestration.publish.ledger import ensure_ledger
    from sg_orchestration.publish.qmlativ import desired_sql

    _validation_errors()
    with connect() as con:
        ensure_ledger(con)
        desired = con.execute(
            f"select key_hash, payload from ({desired_sql(S['samegoal__special_education_enrollment'], 'rules')})"
        ).fetchall()
        e3 = con.execute("select md5('E3')").fetchone()[0]
    assert [k for k, payload in desired if payload is not None] == [e3]
    assert len(desired) == 3  # the two failing records are held: no payload, what Qmlativ holds stays


def test_an_unchanged_mart_is_not_validated_again_and_its_errors_stay_open(current):
    from sg_orchestration.validate.qmlativ import record_mart_failures

    with connect() as con:
        first, _ = record_mart_failures(con, "rules")
        again, validated = record_mart_failures(con, "rules")
    assert validated == {} and again == first and first["special_education_enrollment"] >= 2
    assert [e[:2] for e in _validation_errors()["E1"]] == [("StateInstructionalSetting", "47")]
    # A new or changed row (here: one whose judgement is forgotten) is the only one validated again.
    with connect() as con:
        con.execute(
            "delete from ops.validated_rows where district_id = 'rules' and mart = 'qmlativ__disability' "
            "and row_hash = (select min(row_hash) from ops.validated_rows where district_id = 'rules' "
            "and mart = 'qmlativ__disability')"
        )
        again, validated = record_mart_failures(con, "rules")
    assert validated == {"qmlativ__disability": 1} and again == first
    assert [e[:2] for e in _validation_errors()["E1"]] == [("StateInstructionalSetting", "47")]
    # A code the district adds changes what the marts are checked against: they are validated again.
    with connect() as con:
        con.execute("insert into reference.teds_codes values ('C035', '47', 'test only', 'rules')")
        try:
            counts, validated = record_mart_failures(con, "rules")
            assert "qmlativ__special_education_enrollment" in validated
            assert counts["special_education_enrollment"] == first["special_education_enrollment"] - 1
        finally:
            con.execute("delete from reference.teds_codes where district_id = 'rules' and code = '47'")
    assert "E1" in _validation_errors()


def test_validation_in_chunks_finds_exactly_what_one_frame_of_all_rows_finds(current, monkeypatch):
    """A cold run judges a large mart's rows a chunk at a time; each check is row-local, so one row per
    chunk must find what one frame of every row finds."""
    from sg_orchestration.transform.staging import mart_name
    from sg_orchestration.validate import qmlativ as v

    found = 0
    with connect() as con:
        codes = v._codes(con, "rules")
        for form in v.FORMS:
            rows = f"select * from marts.{mart_name(form)} where district_id = 'rules'"
            frame = con.execute(rows).df()
            whole = v.failures(form, frame, codes) if len(frame) else []
            con.execute(f"create or replace temp table _sg_new as {rows}")
            monkeypatch.setattr(v, "VALIDATION_CHUNK_ROWS", 1)
            assert v._judge_new_rows(con, form, codes) == (len(frame), whole), form.table
            found += len(whole)
    assert found >= 2  # the failing E1 and E2 among them
