"""The sandbox honours the SameGoal (SPEC §3.1) and Qmlativ (SPEC §3.2, §4.1) contracts, over real sockets."""

from __future__ import annotations

import csv
import json
import os
import time
from datetime import date, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx
import pytest

from sg_orchestration import sandbox
from sg_orchestration.catalog import SAMEGOAL_FORMS, SOURCES_BY_NAME
from sg_orchestration.cli import main as cli_main
from sg_orchestration.config import load_districts
from sg_orchestration.generate import generate_district, next_day
from sg_orchestration.sandbox import Sandbox
from sg_orchestration.sandbox.data import DISTRICT_KEYS, OPTIONAL_DISTRICT_KEYS, InputsError
from sg_orchestration.sandbox.server import (
    EDFI_KEY,
    EDFI_SECRET,
    QMLATIV_KEY,
    QMLATIV_SECRET,
    SAMEGOAL_CLIENT_ID,
    SAMEGOAL_CLIENT_SECRET,
)

FORM = "special_education_enrollment"
COLUMNS = SOURCES_BY_NAME[f"samegoal__{FORM}"].column_names
# (document_id, document_status, completed_at): completed ones in 2024, plus two with no completed_at
DOCUMENTS = [
    ("SE-001", "complete", "2024-08-05T10:00:00Z"),
    ("SE-002", "complete", "2024-08-20T09:30:00+00:00"),
    ("SE-003", "complete", "2024-09-02T14:00:00Z"),
    ("SE-004", "draft", ""),
    ("SE-005", "complete", "2024-09-15T08:00:00"),  # no offset: UTC
    ("SE-006", "voided", ""),
    ("SE-007", "complete", "2024-10-01T12:00:00Z"),
]
STUDENTS = [
    ("101", "9001", "L001", "S001", "Ana", "Diaz", "2012-03-04", "7"),
    ("102", "9002", "L002", "S002", "Ben", "Ng", "2011-13-40", "7"),  # a bad date is still served
    ("103", "9003", "L003", "S003", "Cy", "Ott", "2013-01-09", "7"),
    ("104", "9004", "L004", "S004", "Di", "Park", "2012-07-21", "7"),
    ("105", "9005", "L005"),  # short row: served with the fields it has
]


def _write_csv(path: Path, header: tuple[str, ...], rows: list[tuple[str, ...]], bom: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(header), *(",".join(row) for row in rows)]
    path.write_text(("\ufeff" if bom else "") + "\r\n".join(lines) + "\r\n", encoding="utf-8")


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    root = tmp_path / "inputs"
    rows = [
        (
            doc_id,
            status,
            completed,
            f"SG{n}",
            f"L00{n}",
            f"S00{n}",
            "101",
            "2024-08-01",
            "",
            "01",
            "1",
            "N",
            "01",
        )
        for n, (doc_id, status, completed) in enumerate(DOCUMENTS, start=1)
    ]
    rows.append(("SE-008", "complete", "2024-10-02T00:00:00Z", "SG8"))  # short row
    _write_csv(root / "samegoal" / f"{FORM}.csv", COLUMNS, rows, bom=True)
    _write_csv(root / "qmlativ" / "students.csv", SOURCES_BY_NAME["qmlativ__students"].column_names, STUDENTS)
    district = {
        "id": "sandbox-isd",
        "name": "Sandbox Independent School District",
        "state": "TX",
        "timezone": "America/Chicago",
        "cutover_dates": {"special_education": "2024-08-01", "dyslexia": None},
        "qmlativ_entity_id": 7,
        "qmlativ_access_expires": "2027-07-31",
        "edfi_district_number": "5375",
        "school_years": [2025, 2026],
        "as_of": "2024-10-15",
    }
    (root / "district.json").write_text(json.dumps(district))
    return root


@pytest.fixture
def sb(inputs: Path):
    with Sandbox(inputs) as running:
        yield running


def _samegoal(sb: Sandbox) -> httpx.Client:
    """A client of sb's SameGoal export API holding a fresh token (use it in a `with`)."""
    token = httpx.post(
        f"{sb.urls['samegoal']}/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": sb.credentials[SAMEGOAL_CLIENT_ID],
            "client_secret": sb.credentials[SAMEGOAL_CLIENT_SECRET],
        },
    )
    assert token.status_code == 200
    return httpx.Client(
        base_url=sb.urls["samegoal"], headers={"Authorization": f"Bearer {token.json()['access_token']}"}
    )


@pytest.fixture
def samegoal(sb: Sandbox):
    with _samegoal(sb) as client:
        yield client


def _read_all(client: httpx.Client, form: str = FORM, **params) -> tuple[list[dict], httpx.Response]:
    """Every record of `form` following next_cursor, and the first response."""
    records, cursor, first = [], None, None
    while True:
        response = client.get(
            f"/api/v1/state-reporting/{form}", params={**params, **({"cursor": cursor} if cursor else {})}
        )
        assert response.status_code == 200, response.text
        first = first or response
        records += response.json()["records"]
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return records, first


def test_samegoal_token_flow_and_refusals(inputs: Path, sb: Sandbox):
    url = sb.urls["samegoal"]
    client_id, secret = sb.credentials[SAMEGOAL_CLIENT_ID], sb.credentials[SAMEGOAL_CLIENT_SECRET]
    grant = {"grant_type": "client_credentials"}
    as_fields = {**grant, "client_id": client_id}

    basic = httpx.post(f"{url}/oauth/token", data=grant, auth=(client_id, secret))
    assert basic.status_code == 200
    assert basic.json()["token_type"] == "bearer" and basic.json()["expires_in"] == 3600
    assert httpx.post(f"{url}/oauth/token", data={**as_fields, "client_secret": secret}).status_code == 200
    wrong = httpx.post(f"{url}/oauth/token", data={**as_fields, "client_secret": "x"})
    assert wrong.status_code == 401 and wrong.json() == {"error": "invalid_client"}
    assert httpx.post(f"{url}/oauth/token", data=grant, auth=(client_id, "x")).status_code == 401

    export = f"{url}/api/v1/state-reporting/{FORM}"
    good = {"Authorization": f"Bearer {basic.json()['access_token']}"}
    assert httpx.get(export).status_code == 401
    assert httpx.get(export, headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    assert httpx.get(export, headers=good).status_code == 200
    assert httpx.get(f"{url}/api/v1/state-reporting/no_such_form", headers=good).status_code == 404
    for bad in ({"limit": 1001}, {"limit": 0}, {"cursor": "garbage"}, {"completed_since": "yesterday"}):
        assert httpx.get(export, headers=good, params=bad).status_code == 400, bad

    with Sandbox(inputs, token_ttl=0) as expiring, _samegoal(expiring) as client:
        assert client.get(f"/api/v1/state-reporting/{FORM}").status_code == 401


def test_samegoal_pages_return_every_record_exactly_once(samegoal: httpx.Client):
    first = samegoal.get(f"/api/v1/state-reporting/{FORM}", params={"limit": 3}).json()
    assert len(first["records"]) == 3 and first["next_cursor"]
    # a document arriving mid-paging neither shifts nor repeats the pages still to come
    hook = samegoal.post(
        f"/_sandbox/samegoal/{FORM}",
        json={"records": [{"document_id": "SE-100", "document_status": "draft"}]},
    )
    assert hook.json() == {"created": 1, "updated": 0}
    rest, _ = _read_all(samegoal, limit=3, cursor=first["next_cursor"])

    ids = [r["document_id"] for r in first["records"] + rest]
    assert sorted(ids) == [d[0] for d in DOCUMENTS] + ["SE-008", "SE-100"]
    assert ids[-1] == "SE-100"
    assert all(tuple(r) == COLUMNS for r in first["records"] + rest)

    by_id = {r["document_id"]: r for r in first["records"] + rest}
    assert by_id["SE-001"]["student_local_id"] == "L001"  # the BOM did not leak into the first column name
    assert by_id["SE-001"]["end_date"] is None  # blank -> null
    assert by_id["SE-008"]["samegoal_student_id"] == "SG8" and by_id["SE-008"]["start_date"] is None


def test_completed_since_is_inclusive_and_includes_unfinished_documents(samegoal: httpx.Client):
    records, _ = _read_all(samegoal, completed_since="2024-09-02T14:00:00Z", limit=2)
    # SE-003 sits exactly on the boundary; drafts and voided carry the server's load time
    assert {r["document_id"] for r in records} == {"SE-003", "SE-004", "SE-005", "SE-006", "SE-007", "SE-008"}
    records, _ = _read_all(samegoal, completed_since="2024-09-15T08:00:01+00:00")
    assert {r["document_id"] for r in records} == {"SE-004", "SE-006", "SE-007", "SE-008"}


def test_documents_posted_after_a_read_appear_when_reading_from_its_date(samegoal: httpx.Client):
    everything, first = _read_all(samegoal)
    assert len(everything) == 8
    read_at = parsedate_to_datetime(first.headers["Date"])

    new = {"document_id": "SE-200", "document_status": "complete", "completed_at": "2024-08-03T00:00:00Z"}
    voided = {**next(r for r in everything if r["document_id"] == "SE-001"), "document_status": "voided"}
    hook = samegoal.post(f"/_sandbox/samegoal/{FORM}", json={"records": [new, voided]})
    assert hook.json() == {"created": 1, "updated": 1}

    changed, _ = _read_all(samegoal, completed_since=read_at.isoformat())
    by_id = {r["document_id"]: r for r in changed}
    assert by_id["SE-200"]["completed_at"] == "2024-08-03T00:00:00Z"
    assert by_id["SE-001"]["document_status"] == "voided"
    assert not {"SE-002", "SE-003", "SE-005", "SE-007"} & set(by_id)  # completed long before the read


def test_qmlativ_token_and_paging(sb: Sandbox):
    url = sb.urls["qmlativ"]
    key, secret = sb.credentials[QMLATIV_KEY], sb.credentials[QMLATIV_SECRET]
    token_url = f"{url}/oauth/token?grant_type=client_credentials"
    assert httpx.get(token_url).status_code == 401
    assert httpx.get(token_url, auth=(key, "wrong")).status_code == 401
    token = httpx.get(token_url, auth=(key, secret)).json()
    assert token["token_type"] == "bearer"
    assert httpx.get(f"{url}/Generic/7/Student/Student/1/2").status_code == 401

    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token['access_token']}"}) as client:
        assert client.get("/Generic/8/Student/Student/1/2").status_code == 404
        assert client.get("/Generic/7/Student/Nope/1/2").status_code == 404
        assert client.get("/Generic/7/Student/Student/1/1001").status_code == 400

        students, next_url = [], f"{url}/Generic/7/Student/Student/1/2"
        while next_url:
            body = client.get(next_url).json()
            students += body["Objects"]
            next_url = body["Paging"]["Next"]
    assert body["Paging"] == {
        "Next": None,
        "Previous": f"{url}/Generic/7/Student/Student/2/2",
        "Page": 3,
        "PageSize": 2,
        "TotalCount": len(STUDENTS),
    }
    assert [s["StudentID"] for s in students] == [101, 102, 103, 104, 105]
    assert students[0] == {
        "StudentID": 101,
        "NameID": 9001,
        "StudentNumber": "L001",
        "StateID": "S001",
        "FirstName": "Ana",
        "LastName": "Diaz",
        "BirthDate": "2012-03-04",
        "EntityID": 7,
    }
    assert students[1]["BirthDate"] == "2011-13-40" and students[4]["LastName"] is None


def test_the_qmlativ_students_are_read_pages_at_a_time_in_order_and_a_total_that_changes_fails_the_read(
    inputs: Path, sb: Sandbox
):
    """The ingest's client reads the pages after the first several at a time, and yields them in order;
    an object that grows while it is read is not taken as one state of it."""
    from sg_orchestration.ingest.apis import QmlativClient, SourceApiError

    url = sb.urls["qmlativ"]
    key, secret = sb.credentials[QMLATIV_KEY], sb.credentials[QMLATIV_SECRET]
    with QmlativClient(url, key, secret) as client:
        pages = [records for records, _ in client.read_all(7, "Student", "Student", 2)]
        assert [[s["StudentID"] for s in page] for page in pages] == [[101, 102], [103, 104], [105]]
        [(whole, content)] = client.read_all(7, "Student", "Student", 5)
        assert whole == [s for page in pages for s in page] == json.loads(content)["Objects"]
        read = client.read_all(7, "Student", "Student", 2)
        assert [s["StudentID"] for s in next(read)[0]] == [101, 102]
        _write_csv(
            inputs / "qmlativ" / "students.csv",
            SOURCES_BY_NAME["qmlativ__students"].column_names,
            [*STUDENTS, ("106", "9006", "L006", "S006", "Eli", "Ng", "2012-01-01", "7")],
        )
        httpx.post(f"{url}/_sandbox/qmlativ/reload").raise_for_status()
        with pytest.raises(SourceApiError, match="changed while it was read"):
            list(read)


def test_a_qmlativ_read_that_fails_on_a_page_stops_fetching_the_pages_left(monkeypatch):
    """A page that cannot be read fails the read at once: the pages queued behind it are not fetched (each
    would be tried MAX_ATTEMPTS times with back-off against an API that is down)."""
    from sg_orchestration.ingest import apis

    total, fetched = 400, []

    def page(self, url: str):
        number = int(url.rsplit("/", 2)[-2])
        fetched.append(number)
        if number == 2:
            raise apis.SourceApiError(f"GET {url}: HTTP 503")
        time.sleep(0.005)
        paging = {"TotalCount": total, "Next": f"{url}/next" if number < total else None}
        return {"Objects": [{"StudentID": number}], "Paging": paging}, b"{}"

    monkeypatch.setattr(apis.QmlativClient, "_page", page)
    with apis.QmlativClient("http://127.0.0.1:9", "key", "secret") as client:
        read = client.read_all(7, "Student", "Student", 1)
        assert next(read)[0] == [{"StudentID": 1}]
        with pytest.raises(apis.SourceApiError, match="HTTP 503"):
            list(read)
    assert len(fetched) < total // 4, len(fetched)


def test_districts_file_loads_and_points_at_the_servers(inputs: Path, sb: Sandbox, tmp_path: Path):
    env_file = sb.write_districts_file(tmp_path / "out" / "districts.yaml")
    assert env_file == tmp_path / "out" / "districts.env"
    district = load_districts(tmp_path / "out" / "districts.yaml").get("sandbox-isd")

    assert (
        district.samegoal.base_url == sb.urls["samegoal"] and district.qmlativ.base_url == sb.urls["qmlativ"]
    )
    assert district.qmlativ.entity_id == 7 and str(district.qmlativ.access_expires) == "2027-07-31"
    assert str(district.samegoal.cutover_dates["special_education"]) == "2024-08-01"
    assert district.samegoal.cutover_dates["dyslexia"] is None
    # Only the file drops the inputs have (none here but the API systems' own): a named folder that is not
    # there would fail its ingest.
    assert district.inputs.campus_dir is None and district.inputs.samegoal_dir is None
    (inputs / "campus").mkdir()
    sb.write_districts_file(tmp_path / "out" / "districts.yaml")
    assert (
        load_districts(tmp_path / "out" / "districts.yaml").districts[0].inputs.campus_dir
        == inputs / "campus"
    )

    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert env == sb.credentials
    assert env[district.samegoal.client_secret_env] == sb.credentials[SAMEGOAL_CLIENT_SECRET]
    assert not any(value in (tmp_path / "out" / "districts.yaml").read_text() for value in env.values())
    assert env_file.stat().st_mode & 0o077 == 0


def test_with_campus_extracts_the_districts_file_has_an_indiana_district_on_the_edfi_emulator(
    inputs: Path, sb: Sandbox, tmp_path: Path
):
    """The Ed-Fi target gets a district of its own (state IN), so the first district's nightly stays the
    Qmlativ writeback's; without campus extracts there is none."""
    path = tmp_path / "out" / "districts.yaml"
    sb.write_districts_file(path)
    assert load_districts(path).ids == ["sandbox-isd"]
    (inputs / "campus").mkdir()
    env_file = sb.write_districts_file(path)
    first, indiana = load_districts(path).districts
    assert first.edfi is None and (indiana.id, indiana.state) == ("sandbox-isd-in", "IN")
    assert indiana.inputs.campus_dir == inputs / "campus" and indiana.qmlativ is indiana.samegoal is None
    assert indiana.edfi.profile == "indiana" and indiana.edfi.resources == {}
    (connection,) = indiana.edfi.connections
    assert connection.base_url == sb.urls["edfi"] and not connection.year_specific
    assert (connection.district_number, connection.school_years) == ("5375", [2025, 2026])
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert env[connection.key_env] == sb.credentials[EDFI_KEY]
    assert env[connection.secret_env] == sb.credentials[EDFI_SECRET]


def test_up_and_down_run_a_detached_process(inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SG_STATE_DIR", str(tmp_path / "state"))
    state = sandbox.up(inputs, tmp_path / "districts.yaml")
    try:
        assert json.loads((tmp_path / "state" / "sandbox.json").read_text())["pid"] == state["pid"]
        assert os.getsid(state["pid"]) == state["pid"]  # its own session: survives the shell that started it
        env = dict(line.split("=", 1) for line in Path(state["env_file"]).read_text().splitlines())
        district = load_districts(state["districts_file"]).get("sandbox-isd")
        token = httpx.post(
            f"{district.samegoal.base_url}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(env[district.samegoal.client_id_env], env[district.samegoal.client_secret_env]),
        )
        assert token.status_code == 200
    finally:
        assert sandbox.down()
    assert not (tmp_path / "state" / "sandbox.json").exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(state["urls"]["samegoal"])
    assert not sandbox.down()


# --- the next day's export --------------------------------------------------------------------------------
def _versions(records: list[dict], form: str) -> set[tuple[str, str, str, str | None]]:
    return {(form, r["document_id"], r["document_status"], r["completed_at"]) for r in records}


@pytest.fixture
def generated(tmp_path: Path) -> Path:
    root = tmp_path / "generated"
    generate_district(root, students=120, seed=5, as_of=date(2025, 11, 3))
    return root


def test_the_sandbox_serves_the_next_day_and_an_incremental_read_gets_only_its_changes(generated: Path):
    with Sandbox(generated) as sb, _samegoal(sb) as client:
        time.sleep(1.1)  # the Date header has whole seconds: read after the second the server loaded in
        first_day, read_at = set(), None
        for form in SAMEGOAL_FORMS:
            records, response = _read_all(client, form)
            first_day |= _versions(records, form)
            read_at = read_at or parsedate_to_datetime(response.headers["Date"])

        manifest = next_day(generated)
        changes = manifest["next_day"]["changes"]
        # the versions completed after the previous day's last completion: exactly the day's changes
        expected = set()
        for form in SAMEGOAL_FORMS:
            with (generated / "samegoal" / f"{form}.csv").open(newline="", encoding="utf-8-sig") as fh:
                expected |= {
                    (form, r["document_id"], r["document_status"], r["completed_at"])
                    for r in csv.DictReader(fh)
                    if r["completed_at"] > manifest["next_day"]["changes_after"]
                }
        assert len(expected) == sum(v for k, v in changes.items() if k != "withdrawn_students")
        assert not expected & first_day

        # a running sandbox, after a reload: a reader resuming from its last read gets exactly those
        reload = client.post("/_sandbox/reload")
        assert reload.status_code == 200
        assert reload.json()["created"] == changes["new"] + changes["superseded"]
        assert reload.json()["updated"] == changes["edited"] + changes["voided"]
        incremental = set()
        for form in SAMEGOAL_FORMS:
            records, _ = _read_all(client, form, completed_since=read_at.isoformat(), limit=7)
            incremental |= _versions(records, form)
        assert incremental == expected
        assert {v[2] for v in incremental} == {"complete", "voided"}

    # a sandbox started on the folder afterwards: reading from the previous day's last completion gives
    # the changes, and besides them only the unfinished documents it dates at its start
    with Sandbox(generated) as sb, _samegoal(sb) as client:
        since = (
            datetime.fromisoformat(manifest["next_day"]["changes_after"]) + timedelta(seconds=1)
        ).isoformat()
        served = set()
        for form in SAMEGOAL_FORMS:
            records, _ = _read_all(client, form, completed_since=since)
            served |= _versions(records, form)
        assert {v for v in served if v[3]} == expected
        assert all(v[2] != "complete" for v in served - expected)
        everything = set()
        for form in SAMEGOAL_FORMS:
            everything |= _versions(_read_all(client, form)[0], form)
        assert (
            expected <= everything
            and len(everything) == len(first_day) + changes["new"] + changes["superseded"]
        )


# --- a folder not written by `sg-orch generate` -----------------------------------------------------------
def test_sandbox_up_on_a_folder_without_district_json_says_what_it_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    monkeypatch.setenv("SG_STATE_DIR", str(tmp_path / "state"))
    folder = tmp_path / "mine"
    (folder / "samegoal").mkdir(parents=True)
    argv = ["sandbox", "up", "--inputs", str(folder), "--districts-out", str(tmp_path / "d.yaml")]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert f"{folder}/district.json not found" in err
    for key in (*DISTRICT_KEYS, *OPTIONAL_DISTRICT_KEYS, "samegoal/<form>.csv", "qmlativ/students.csv"):
        assert key in err, key
    assert "Traceback" not in err and not (tmp_path / "state" / "sandbox.log").exists()  # nothing started

    (folder / "district.json").write_text(json.dumps({"id": "mine", "name": "Mine ISD", "state": "TX"}))
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "lacks the keys timezone, cutover_dates, qmlativ_entity_id, qmlativ_access_expires" in err
    with pytest.raises(InputsError, match="district.json"):
        Sandbox(folder)
