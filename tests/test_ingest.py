"""Ingest (SPEC §3): every source, over files and over the sandbox APIs, stamped, idempotent, and every
malformed row kept with its reason and reported."""

import csv
import json
import shutil

import duckdb
import httpx
import pytest

from sg_orchestration.catalog import SOURCES, SOURCES_BY_NAME
from sg_orchestration.ingest.pipeline import ingest_source, transport
from sg_orchestration.ingest.readers import SourceFileError, read_csv
from sg_orchestration.warehouse import connect


def _query(sql: str, params=None):
    with connect() as con:
        return con.execute(sql, params or []).fetchall()


def _data_rows(path) -> int:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return sum(1 for _ in csv.reader(f)) - 1


def test_every_source_is_ingested_from_files_with_every_row_stamped(districts, district_inputs, warehouse):
    district = districts.get("filedrop")
    for source in SOURCES:
        assert transport(source, district) == "files"
        result, _ = ingest_source(source, district)
        path = district_inputs / source.system / source.file
        assert result.rows_read == _data_rows(path), source.name
        assert result.rows_added == result.rows_read, source.name
    unstamped = _query(
        "select count(*) from raw.powerschool__students where _load_id is null or _loaded_at is null "
        "or _origin is null or _source_row is null or _district_id <> 'filedrop'"
    )
    assert unstamped == [(0,)]


def test_reingesting_the_same_data_adds_nothing(districts, warehouse):
    district = districts.get("filedrop")
    for source in SOURCES:
        ingest_source(source, district)
    before = {s.name: _query(f'select count(*) from raw."{s.name}"')[0][0] for s in SOURCES}
    for source in SOURCES:
        result, _ = ingest_source(source, district)
        assert result.rows_added == 0, source.name
        assert result.status == ("unchanged" if source.mode == "snapshot" else "loaded"), source.name
    after = {s.name: _query(f'select count(*) from raw."{s.name}"')[0][0] for s in SOURCES}
    assert after == before


def test_samegoal_api_ingest_matches_the_files_and_keeps_a_cursor(districts, district_inputs, warehouse):
    district = districts.get("demo")
    for source in (s for s in SOURCES if s.system == "samegoal"):
        assert transport(source, district) == "api"
        result, _ = ingest_source(source, district)
        assert result.rows_read == _data_rows(district_inputs / "samegoal" / source.file), source.name
        assert _query(
            "select count(*) from ops.cursors where district_id = 'demo' and source = ?", [source.name]
        ) == [(1,)]


def test_samegoal_api_reingest_is_idempotent_and_picks_up_only_new_documents(districts, sandbox, warehouse):
    district = districts.get("demo")
    source = SOURCES_BY_NAME["samegoal__dyslexia"]
    first, _ = ingest_source(source, district)
    assert first.rows_added > 0
    again, _ = ingest_source(source, district)
    assert again.rows_added == 0  # the overlap re-reads boundary records; they are recognised

    record = {c: None for c in source.column_names}
    record.update(
        document_id="DOC-NEW-1",
        document_status="complete",
        completed_at="2099-01-01T00:00:00Z",
        samegoal_student_id="SG-NEW",
        student_local_id="L-NEW",
        start_date="2025-09-01",
        state_dyslexia_services_codes="01",
    )
    response = httpx.post(
        f"{sandbox.urls['samegoal']}/_sandbox/samegoal/dyslexia", json={"records": [record]}
    )
    assert response.status_code == 200
    new, _ = ingest_source(source, district)
    assert new.rows_added == 1
    assert new.rows_read < first.rows_read  # incremental: only what changed since the cursor is read


def test_qmlativ_student_api_ingest_matches_the_file(districts, district_inputs, warehouse):
    source = SOURCES_BY_NAME["qmlativ__students"]
    result, _ = ingest_source(source, districts.get("demo"))
    assert transport(source, districts.get("demo")) == "api"
    assert result.rows_read == _data_rows(district_inputs / "qmlativ" / "students.csv")
    again, _ = ingest_source(source, districts.get("demo"))
    assert (again.status, again.rows_added) == ("unchanged", 0)


def test_malformed_rows_are_kept_in_raw_with_their_reason_and_reported(districts, manifest, warehouse):
    district = districts.get("filedrop")
    for source in SOURCES:
        ingest_source(source, district)
    bad_rows = [m for m in manifest["malformed"] if m.get("row")]
    assert bad_rows
    for case in bad_rows:
        system, file_name = case["file"].split("/")
        source = next(s for s in SOURCES if s.system == system and s.file == file_name)
        kept = _query(f'select _error from raw."{source.name}" where _source_row = ?', [case["row"]])
        assert kept and kept[0][0], f"{case} was not kept with a reason"
        logged = _query(
            "select field, cause, fix from ops.error_log where target = ? and location = ? and resolved_at is null",
            [source.name, f"{file_name} row {case['row']}"],
        )
        assert logged, f"{case} is not in ops.error_log"
        assert all(file_name in fix for _, _, fix in logged)


@pytest.fixture
def drop_folder(district_inputs, tmp_path):
    folder = tmp_path / "powerschool"
    shutil.copytree(district_inputs / "powerschool", folder)
    return folder


def test_a_fixed_row_resolves_its_error_and_a_changed_snapshot_replaces_the_old(drop_folder, warehouse):
    from sg_orchestration.config import District

    source = SOURCES_BY_NAME["powerschool__schools"]
    path = drop_folder / source.file
    rows = list(csv.reader(path.open(newline="", encoding="utf-8-sig")))
    rows.append(["9999", "Broken School", "1", "District"])
    rows.append(["9998", "Short Row"])
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    district = District(
        id="drop",
        name="Drop",
        state="TX",
        timezone="America/Chicago",
        inputs={"powerschool_dir": drop_folder},
    )
    first, _ = ingest_source(source, district)
    assert first.rows_with_errors == 1
    assert _query(
        "select count(*) from ops.error_log where resolved_at is null and target = ?", [source.name]
    ) == [(1,)]
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows[:-1])  # the district fixes its export
    second, _ = ingest_source(source, district)
    assert second.status == "loaded" and second.load_id != first.load_id
    assert _query(
        "select count(*) from ops.error_log where resolved_at is null and target = ?", [source.name]
    ) == [(0,)]


def test_unknown_extra_columns_are_kept_and_a_bom_is_tolerated(drop_folder, warehouse):
    source = SOURCES_BY_NAME["powerschool__terms"]
    path = drop_folder / source.file
    text = path.read_text(encoding="utf-8-sig").splitlines()
    text[0] += ",Locker Combination"
    text[1:] = [line + ",12-34-56" for line in text[1:]]
    path.write_bytes(("\ufeff" + "\n".join(text) + "\n").encode())
    batches = read_csv(source, path)
    assert batches.extra_columns == ["Locker Combination"]
    with connect() as con:
        from sg_orchestration.ingest.load import load

        result = load(con, source, "drop", batches)
        extra = con.execute(
            "select _extra->>'Locker Combination', \"Term Id\" from raw.powerschool__terms"
        ).fetchall()
    assert result.rows_added == len(text) - 1
    assert all(value == "12-34-56" and term for value, term in extra)


def test_a_file_missing_a_column_is_refused_naming_the_file_and_column(tmp_path):
    path = tmp_path / "schools.csv"
    path.write_text("School Number,School Name\n1,A\n")
    with pytest.raises(SourceFileError) as info:
        read_csv(SOURCES_BY_NAME["powerschool__schools"], path)
    assert str(path) in str(info.value) and "District Number" in str(info.value)


def test_bad_utf8_is_kept_and_flagged(tmp_path, warehouse):
    source = SOURCES_BY_NAME["powerschool__schools"]
    path = tmp_path / "schools.csv"
    path.write_bytes(b"School Number,School Name,District Number,District Name\n1,Caf\xe9,2,D\n")
    with connect() as con:
        from sg_orchestration.ingest.load import load

        load(con, source, "drop", read_csv(source, path))
    assert _query("select _error from raw.powerschool__schools") == [("School Name: not valid UTF-8",)]


def test_raw_is_a_duckdb_table_analysts_can_read(warehouse, districts):
    ingest_source(SOURCES_BY_NAME["campus__schools"], districts.get("filedrop"))
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        assert con.execute("select count(*) from raw.campus__schools").fetchone()[0] > 0
    finally:
        con.close()


def test_an_unreadable_record_is_kept_and_reading_goes_on_after_it(tmp_path, warehouse):
    source = SOURCES_BY_NAME["powerschool__schools"]
    path = tmp_path / "schools.csv"
    oversized = "B" * 200_000  # past the csv module's field limit: the record cannot be read
    path.write_text(
        f"School Number,School Name,District Number,District Name\n1,A,2,D\n2,{oversized},2,D\n3,C,2,D\n"
    )
    with connect() as con:
        from sg_orchestration.ingest.load import load

        result = load(con, source, "drop", read_csv(source, path))
    assert result.rows_read == 3
    rows = _query('select _source_row, "School Number", _error from raw.powerschool__schools order by 1')
    assert rows[0] == (1, "1", None) and rows[2] == (3, "3", None)
    assert rows[1][0] == 2 and rows[1][2].startswith("unreadable CSV")


def _staged_by(monkeypatch) -> list:
    """What `stage_csv` returned for each load: the rows DuckDB's reader staged, or None (the csv module)."""
    from sg_orchestration.ingest import load as load_module

    returned = []
    real = load_module.stage_csv

    def spy(con, file, table):
        returned.append(real(con, file, table))
        return returned[-1]

    monkeypatch.setattr(load_module, "stage_csv", spy)
    return returned


def test_a_large_file_read_by_duckdb_keeps_each_malformed_row_with_its_row_field_and_reason(
    tmp_path, warehouse, monkeypatch
):
    from sg_orchestration.ingest.load import load

    source = SOURCES_BY_NAME["powerschool__contacts"]
    records = [
        [f"C{i}", f"S{i}", "Pat", f"Parent{i}", f"p{i}@example.org", "555-0100", "555-0101", "Mother"]
        for i in range(1, 60_001)
    ]
    for i in range(0, 60_000, 500):
        records[i][7] = "Mother,\nsee note"  # quoted line breaks: rows and lines part ways
    bad = {1: records[0] + ["extra"], 25_000: records[24_999][:5], 59_999: records[59_998][:7]}
    bad[40_000] = ["C40000", "S40000", "Pat,\nsee note"]  # a short row over two lines
    for row, record in bad.items():
        records[row - 1] = record
    path = tmp_path / "contacts.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        f.write("\ufeff")  # a BOM, and CRLF line ends (the csv module's)
        csv.writer(f).writerows([source.column_names, *records])
    staged = _staged_by(monkeypatch)
    with connect() as con:
        result = load(con, source, "drop", read_csv(source, path))
    assert staged == [60_000]  # DuckDB's reader read it
    assert (result.rows_read, result.rows_added, result.rows_with_errors) == (60_000, 60_000, 4)
    kept = _query(
        "select _source_row, _error, _extra->>'_fields' from raw.powerschool__contacts "
        "where _error is not null order by 1"
    )
    assert [(row, error) for row, error, _ in kept] == [
        (row, f"row has {len(record)} fields; the header has 8") for row, record in sorted(bad.items())
    ]
    assert [json.loads(fields) for *_, fields in kept] == [bad[row] for row in sorted(bad)]
    # Every other row keeps its place in the file as its number.
    assert _query(
        "select count(*) from raw.powerschool__contacts where _error is null and \"Contact Id\" <> 'C' || _source_row"
    ) == [(0,)]
    assert _query(
        "select location, field, cause from ops.error_log where target = ? and resolved_at is null order by 1",
        [source.name],
    ) == [
        (f"contacts.csv row {row}", None, f"row has {len(bad[row])} fields; the header has 8")
        for row in sorted(bad, key=str)
    ]


@pytest.mark.parametrize(
    "body, expected",
    [
        # A blank line: DuckDB's reader skips it, the csv module reads a record of no fields.
        (
            "1,A,9,D\n\n2,B,9,D\n",
            [(1, "1", "A", None), (2, None, None, "row has 0 fields; the header has 4"), (3, "2", "B", None)],
        ),
        # Spaces after a closing quote: DuckDB's reader drops them, the csv module keeps them.
        ('1,"A" ,9,D\n2,B,9,D\n', [(1, "1", "A ", None), (2, "2", "B", None)]),
        # A CRLF line end in a file of LF ones: DuckDB's reader refuses the file.
        ("1,A,9,D\r\n2,B,9,D\n", [(1, "1", "A", None), (2, "2", "B", None)]),
        # Bytes that are not UTF-8: DuckDB's reader sets the row aside; the csv module keeps its fields.
        (
            b"1,Caf\xe9,9,D\n2,B,9,D\n",
            [(1, "1", "Caf\ufffd", "School Name: not valid UTF-8"), (2, "2", "B", None)],
        ),
    ],
    ids=["blank_line", "spaces_after_quote", "mixed_line_ends", "bad_utf8"],
)
def test_a_file_duckdbs_reader_reads_otherwise_is_read_by_the_csv_module(
    body, expected, tmp_path, warehouse, monkeypatch
):
    from sg_orchestration.ingest.load import load

    source = SOURCES_BY_NAME["powerschool__schools"]
    path = tmp_path / "schools.csv"
    header = b"School Number,School Name,District Number,District Name\n"
    path.write_bytes(header + (body if isinstance(body, bytes) else body.encode()))
    staged = _staged_by(monkeypatch)
    with connect() as con:
        load(con, source, "drop", read_csv(source, path))
    assert staged == [None]
    assert (
        _query(
            'select _source_row, "School Number", "School Name", _error from raw.powerschool__schools order by 1'
        )
        == expected
    )


def test_a_load_lets_go_of_its_copies_of_the_read_and_of_api_records(warehouse):
    """Its temp tables (each a copy of the whole read, in DuckDB's memory) are dropped once it is done,
    and API records are let go page by page as they become batches."""
    from sg_orchestration.ingest.load import _TEMP_TABLES, load
    from sg_orchestration.ingest.readers import records_to_batches

    source = SOURCES_BY_NAME["qmlativ__students"]
    pages = [[{"StudentID": 1, "StudentNumber": "L1", "StateID": "S1"}], [], [{"StudentID": 2}]]
    batches = records_to_batches(source, "test", pages)
    with connect() as con:
        result = load(con, source, "drop", batches)
        temp = {
            t for (t,) in con.execute("select table_name from duckdb_tables() where temporary").fetchall()
        }
        rows = con.execute('select "StudentID", _source_row from raw.qmlativ__students order by 2').fetchall()
    assert result.rows_added == 2 and rows == [("1", 1), ("2", 2)]
    assert not temp & set(_TEMP_TABLES)
    assert len(pages) == 3  # the caller's list is the caller's


def test_api_pages_kept_as_their_json_are_staged_as_the_same_rows_with_the_same_digest():
    """The Qmlativ student pages are kept as the JSON they came in until staged: the same batches and
    digest as the decoded records give."""
    import orjson

    from sg_orchestration.ingest.readers import ApiRead, records_to_batches

    source = SOURCES_BY_NAME["qmlativ__students"]
    pages = [[{"StudentID": 1, "StudentNumber": "L1", "Extra": True}], [{"StudentID": 2, "StateID": None}]]
    read = ApiRead(source)
    for page in pages:
        read.add(page, orjson.dumps({"Objects": page, "Paging": {"Next": None}}))
    kept, decoded = read.batches("api"), records_to_batches(source, "api", pages)
    assert kept.digest == decoded.digest and kept.extra_columns == decoded.extra_columns == ["Extra"]
    assert [t.to_pylist() for t in kept.batches] == [t.to_pylist() for t in decoded.batches]
    assert read.pages == []  # the read lets its pages go to the batches it made


def test_a_snapshot_read_from_an_api_is_known_unchanged_by_its_records_digest():
    from sg_orchestration.ingest.readers import records_to_batches

    source = SOURCES_BY_NAME["qmlativ__students"]
    pages = [[{"StudentID": 1, "StudentNumber": "L1"}], [{"StudentID": 2, "StudentNumber": "L2"}]]

    def digest(pages):
        return records_to_batches(source, "api", [[dict(r) for r in p] for p in pages]).digest

    assert digest(pages) == digest(pages)  # the same students, the same digest: nothing is staged
    assert digest([[{"StudentNumber": "L1", "StudentID": 1}], pages[1]]) == digest(pages)  # key order
    changed = [[{"StudentID": 1, "StudentNumber": "L9"}], pages[1]]
    assert digest(changed) != digest(pages)
    assert digest([pages[0]]) != digest(pages)  # a student gone
    assert digest([pages[0] + pages[1]]) == digest([[], *pages])  # pages of another size: the same
    assert records_to_batches(SOURCES_BY_NAME["samegoal__dyslexia"], "api", [[]]).digest is None
