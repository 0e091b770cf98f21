"""The sandbox's Qmlativ writeback target (SPEC §4.1): create, update, delete and read over real sockets, a
store that survives a restart, injected faults, and the request counters."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from sg_orchestration.catalog import SOURCES_BY_NAME
from sg_orchestration.sandbox import Sandbox
from sg_orchestration.sandbox.server import QMLATIV_KEY, QMLATIV_SECRET

ENROLLMENT = "/Generic/7/SpecialEducation/SpecialEducationEnrollment"
DYSLEXIA = "/Generic/7/SpecialPrograms/Dyslexia"
STUDENTS = [("101", "9001", "L001", "S001"), ("102", "9002", "L002", "S002")]
NO_FAULTS = {"error_rate": 0.0}


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """The least a Sandbox starts on: district.json and two Qmlativ students (no SameGoal forms)."""
    root = tmp_path / "inputs"
    (root / "qmlativ").mkdir(parents=True)
    header = ",".join(SOURCES_BY_NAME["qmlativ__students"].column_names)
    (root / "qmlativ" / "students.csv").write_text("\n".join([header, *(",".join(s) for s in STUDENTS)]))
    district = {
        "id": "sandbox-isd",
        "name": "Sandbox ISD",
        "state": "TX",
        "timezone": "America/Chicago",
        "cutover_dates": {"special_education": "2024-08-01"},
        "qmlativ_entity_id": 7,
        "qmlativ_access_expires": "2027-07-31",
    }
    (root / "district.json").write_text(json.dumps(district))
    return root


def _client(sb: Sandbox) -> httpx.Client:
    """A client of sb's Qmlativ API holding a fresh token (use it in a `with`)."""
    url = sb.urls["qmlativ"]
    token = httpx.get(
        f"{url}/oauth/token?grant_type=client_credentials",
        auth=(sb.credentials[QMLATIV_KEY], sb.credentials[QMLATIV_SECRET]),
    )
    assert token.status_code == 200
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token.json()['access_token']}"})


@pytest.fixture
def qm(inputs: Path):
    with Sandbox(inputs) as sb, _client(sb) as client:
        yield client


def _enrollment(student: int = 101, **fields) -> dict:
    return {
        "DataObject": {"StudentID": student, "StartDate": "2024-08-01", "SourceDocumentID": "SE-1"} | fields
    }


def _all(client: httpx.Client, path: str) -> list[dict]:
    objects, url = [], f"{path}/1/2"
    while url:
        body = client.get(url)
        assert body.status_code == 200, body.text
        objects += body.json()["Objects"]
        url = body.json()["Paging"]["Next"]
    return objects


def _set_faults(client: httpx.Client, **faults) -> dict:
    response = client.post("/_sandbox/qmlativ/faults", json=faults)
    assert response.status_code == 200, response.text
    return response.json()


def test_create_update_delete_and_read_round_trip(qm: httpx.Client):
    created = [qm.put(ENROLLMENT, json=_enrollment(101, StateDisability=s)) for s in ("01", "02", "03")]
    assert [r.status_code for r in created] == [201, 201, 201]
    first = created[0].json()
    ids = [r.json()["ID"] for r in created]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert first == {
        "ID": ids[0],
        "DataObject": {
            "StudentID": 101,
            "StartDate": "2024-08-01",
            "SourceDocumentID": "SE-1",
            "StateDisability": "01",
            "SpecialEducationEnrollmentID": ids[0],
        },
    }
    # the server assigns IDs: one given in the body is ignored
    other = qm.put(DYSLEXIA, json={"DataObject": {"StudentID": 102, "DyslexiaID": 1, "Extra": [1, 2]}})
    assert (
        other.status_code == 201 and other.json()["DataObject"]["DyslexiaID"] == other.json()["ID"] > ids[-1]
    )
    assert _all(qm, DYSLEXIA) == [other.json()["DataObject"]]  # unknown fields are stored as given

    updated = qm.post(
        f"{ENROLLMENT}/{ids[1]}", json={"DataObject": {"EndDate": "2025-05-30", "StudentID": 102}}
    )
    assert updated.status_code == 200
    assert updated.json()["DataObject"] == created[1].json()["DataObject"] | {
        "EndDate": "2025-05-30",
        "StudentID": 102,
    }
    assert qm.get(f"{ENROLLMENT}/{ids[1]}").json() == updated.json()

    deleted = qm.delete(f"{ENROLLMENT}/{ids[0]}")
    assert deleted.status_code == 200 and deleted.json() == {"ID": ids[0]}
    objects = _all(qm, ENROLLMENT)  # pages of 2: follows Paging.Next
    assert [o["SpecialEducationEnrollmentID"] for o in objects] == ids[1:]
    assert objects[0] == updated.json()["DataObject"]

    for missing in (ids[0], 999999):
        assert qm.post(f"{ENROLLMENT}/{missing}", json=_enrollment()).status_code == 404
        assert qm.delete(f"{ENROLLMENT}/{missing}").status_code == 404
        assert qm.get(f"{ENROLLMENT}/{missing}").status_code == 404
    assert qm.put("/Generic/7/SpecialEducation/NoSuchObject", json=_enrollment()).status_code == 404
    assert (
        qm.put("/Generic/8/SpecialEducation/SpecialEducationEnrollment", json=_enrollment()).status_code
        == 404
    )
    assert qm.put("/Generic/7/Student/Student", json=_enrollment()).status_code == 404  # students: read only
    assert [s["StudentID"] for s in _all(qm, "/Generic/7/Student/Student")] == [101, 102]


def test_validation_and_auth_refusals_change_nothing(qm: httpx.Client):
    created = qm.put(ENROLLMENT, json=_enrollment()).json()
    for student in (999, "101", None, True):
        refused = qm.put(ENROLLMENT, json=_enrollment(student))
        assert refused.status_code == 400, student
        [error] = refused.json()["Errors"]
        assert error["Field"] == "StudentID" and json.dumps(student) in error["Message"]
    assert (
        qm.put(ENROLLMENT, json={"DataObject": {"StartDate": "2024-08-01"}}).status_code == 400
    )  # no student
    assert qm.post(f"{ENROLLMENT}/{created['ID']}", json=_enrollment(999)).status_code == 400
    for body in (b"not json", b"[]", b'{"DataObject": [1]}', b'{"Data": {}}'):
        refused = qm.put(ENROLLMENT, content=body)
        assert refused.status_code == 400 and refused.json()["Errors"][0]["Field"] is None, body

    with httpx.Client(base_url=str(qm.base_url)) as anonymous:
        assert anonymous.put(ENROLLMENT, json=_enrollment()).status_code == 401
        assert anonymous.post(f"{ENROLLMENT}/{created['ID']}", json=_enrollment(102)).status_code == 401
        assert anonymous.delete(f"{ENROLLMENT}/{created['ID']}").status_code == 401
        assert anonymous.get(f"{ENROLLMENT}/1/10").status_code == 401
        bad_token = anonymous.put(ENROLLMENT, json=_enrollment(), headers={"Authorization": "Bearer nope"})
        assert bad_token.status_code == 401
    assert _all(qm, ENROLLMENT) == [created["DataObject"]]


def test_the_store_survives_a_restart_and_ids_keep_increasing(inputs: Path, tmp_path: Path):
    state = tmp_path / "store"
    with Sandbox(inputs, state_dir=state) as sb, _client(sb) as qm:
        ids = [
            qm.put(ENROLLMENT, json=_enrollment(SourceDocumentID=f"SE-{n}")).json()["ID"] for n in range(3)
        ]
        qm.post(f"{ENROLLMENT}/{ids[0]}", json={"DataObject": {"EndDate": "2025-01-01"}})
        qm.delete(f"{ENROLLMENT}/{ids[2]}")  # the highest ID: still never reused
        before = _all(qm, ENROLLMENT)
    assert (state / "qmlativ.sqlite3").is_file()

    with Sandbox(inputs, state_dir=state) as sb, _client(sb) as qm:
        assert _all(qm, ENROLLMENT) == before and before[0]["EndDate"] == "2025-01-01"
        new_id = qm.put(ENROLLMENT, json=_enrollment()).json()["ID"]
        assert new_id > ids[2]
        assert qm.delete(f"{ENROLLMENT}/{ids[1]}").status_code == 200

    # the default store is inside the inputs; a sandbox with its own state_dir does not see it
    with Sandbox(inputs) as sb, _client(sb) as qm:
        assert sb.state_dir == inputs / ".qmlativ-store" and _all(qm, ENROLLMENT) == []
        qm.put(ENROLLMENT, json=_enrollment())
    assert (inputs / ".qmlativ-store" / "qmlativ.sqlite3").is_file()
    with Sandbox(inputs, state_dir=state) as sb, _client(sb) as qm:
        assert [o["SpecialEducationEnrollmentID"] for o in _all(qm, ENROLLMENT)] == [ids[0], new_id]


def test_injected_errors_and_drops_change_nothing(inputs: Path, tmp_path: Path):
    faults = {"error_rate": 1.0, "statuses": [429], "retry_after": 1, "seed": 3}
    with Sandbox(inputs, state_dir=tmp_path / "s", qmlativ_faults=faults) as sb, _client(sb) as qm:
        refused = qm.put(ENROLLMENT, json=_enrollment())
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
        assert qm.get(f"{ENROLLMENT}/1/10").status_code == 429  # writeback reads are faulted too
        # the token and the student read are not
        assert len(_all(qm, "/Generic/7/Student/Student")) == 2
        assert qm.get("/_sandbox/qmlativ/faults").json() == {
            "error_rate": 1.0,
            "statuses": [429],
            "retry_after": 1,
            "slow_rate": 0.0,
            "slow_seconds": 1.0,
            "drop_rate": 0.0,
            "drop_after_write_rate": 0.0,
            "seed": 3,
        }

        _set_faults(qm, **NO_FAULTS)
        kept = qm.put(ENROLLMENT, json=_enrollment()).json()
        _set_faults(qm, error_rate=1.0, statuses=[500, 503, 599], seed=1)
        statuses = {
            qm.put(ENROLLMENT, json=_enrollment()).status_code,
            qm.post(f"{ENROLLMENT}/{kept['ID']}", json={"DataObject": {"EndDate": "2025-01-01"}}).status_code,
            qm.delete(f"{ENROLLMENT}/{kept['ID']}").status_code,
            qm.post(f"{ENROLLMENT}/999", json=_enrollment()).status_code,  # the fault comes before the 404
        }
        assert statuses <= {500, 503, 599}

        _set_faults(qm, drop_rate=1.0)
        for send in (
            lambda: qm.put(ENROLLMENT, json=_enrollment()),
            lambda: qm.post(f"{ENROLLMENT}/{kept['ID']}", json={"DataObject": {"EndDate": "2025-01-01"}}),
            lambda: qm.delete(f"{ENROLLMENT}/{kept['ID']}"),
        ):
            with pytest.raises(httpx.RemoteProtocolError):
                send()

        _set_faults(qm, **NO_FAULTS)
        assert _all(qm, ENROLLMENT) == [kept["DataObject"]]
        for bad in ({"error_rate": 2}, {"statuses": [200]}, {"statuses": []}, {"nope": 1}, {"seed": "x"}):
            assert qm.post("/_sandbox/qmlativ/faults", json=bad).status_code == 400, bad
        assert (
            qm.get("/_sandbox/qmlativ/faults").json()["error_rate"] == 0.0
        )  # a refused change keeps the old
    with pytest.raises(ValueError, match="drop_rate"):
        Sandbox(inputs, qmlativ_faults={"drop_rate": -1})


def test_drop_after_write_applies_the_write_then_loses_the_response(qm: httpx.Client):
    kept = qm.put(ENROLLMENT, json=_enrollment()).json()
    _set_faults(qm, drop_after_write_rate=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        qm.put(ENROLLMENT, json=_enrollment(102))
    with pytest.raises(httpx.RemoteProtocolError):
        qm.post(f"{ENROLLMENT}/{kept['ID']}", json={"DataObject": {"EndDate": "2025-01-01"}})
    assert qm.put(ENROLLMENT, json=_enrollment(999)).status_code == 400  # a refused write is answered

    _set_faults(qm, **NO_FAULTS)
    objects = _all(qm, ENROLLMENT)
    assert [o["StudentID"] for o in objects] == [101, 102]
    assert objects[0]["EndDate"] == "2025-01-01"


def test_stats_count_requests_by_method_and_status(qm: httpx.Client):
    assert qm.delete("/_sandbox/qmlativ/stats").json() == {"total": 0, "requests": {}, "writeback": {}}
    created = qm.put(ENROLLMENT, json=_enrollment()).json()
    qm.put(ENROLLMENT, json=_enrollment(999))
    qm.delete(f"{ENROLLMENT}/{created['ID']}")
    qm.delete(f"{ENROLLMENT}/{created['ID']}")
    qm.get("/Generic/7/Student/Student/1/10")
    _set_faults(qm, drop_rate=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        qm.put(ENROLLMENT, json=_enrollment())

    assert qm.get("/_sandbox/qmlativ/stats").json() == {
        "total": 6,
        "requests": {
            "PUT": {"201": 1, "400": 1, "dropped": 1},
            "DELETE": {"200": 1, "404": 1},
            "GET": {"200": 1},
        },
        "writeback": {"PUT": {"201": 1, "400": 1, "dropped": 1}, "DELETE": {"200": 1, "404": 1}},
    }
