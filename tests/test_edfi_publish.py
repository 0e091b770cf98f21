"""The Ed-Fi accommodations end to end (seed 002): the generated district's campus files → dbt → validation
→ the publish engine → the sandbox's Ed-Fi ODS/API emulator, over real sockets, counted by its stats."""

import json
import os
from datetime import date

import httpx
import pytest

from sg_orchestration.catalog import SOURCES
from sg_orchestration.config import Edfi
from sg_orchestration.edfi.names import natural_key_sql
from sg_orchestration.ingest.pipeline import ingest_source
from sg_orchestration.publish.edfi import publish_accommodations
from sg_orchestration.sandbox import Sandbox
from sg_orchestration.sandbox.server import EDFI_KEY, EDFI_SECRET
from sg_orchestration.transform.dbt import TARGET_MODELS, invoke, prepare
from sg_orchestration.transform.edfi import record_run_inputs
from sg_orchestration.validate.edfi import record_findings
from sg_orchestration.warehouse import connect

PATH = "/data/v3/ed-fi/studentEducationOrganizationAssessmentAccommodations"


class Ods:
    """A district publishing to its own emulator, with its own warehouse."""

    def __init__(self, sandbox: Sandbox, district, as_of: date):
        self.sandbox, self.district, self.as_of = sandbox, district, as_of
        self.url = sandbox.urls["edfi"]

    def token(self) -> str:
        reply = httpx.post(
            f"{self.url}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(os.environ[EDFI_KEY], os.environ[EDFI_SECRET]),
        )
        return reply.raise_for_status().json()["access_token"]

    def records(self, path: str = PATH) -> list[dict]:
        headers = {"Authorization": f"Bearer {self.token()}"}
        out, offset = [], 0
        while page := httpx.get(
            f"{self.url}{path}", params={"offset": offset, "limit": 500}, headers=headers
        ).json():
            out += page
            offset += len(page)
        return out

    def writes(self) -> dict[str, int]:
        stats = httpx.get(f"{self.url}/_sandbox/edfi/stats").json()["requests"]
        return {m: sum(by.values()) for m, by in stats.items() if m in ("POST", "PUT", "DELETE")}

    def reset_stats(self) -> None:
        httpx.delete(f"{self.url}/_sandbox/edfi/stats")

    def build(self) -> None:
        """The nightly's Ed-Fi steps before publish: the run inputs, dbt, validation."""
        with connect() as con:
            record_run_inputs(con, self.district, self.as_of)
        invoke("build", "--select", TARGET_MODELS["edfi"])
        with connect() as con:
            record_findings(con, self.district)

    def desired(self) -> set[tuple]:
        with connect() as con:
            rows = con.execute(
                "select student_unique_id, education_organization_id from "
                "marts.edfi__ds52_assessment_accommodations where district_id = ?",
                [self.district.id],
            ).fetchall()
        return {(s, int(e)) for s, e in rows}


def _stored(ods: Ods) -> list[tuple]:
    return [
        (
            r["studentReference"]["studentUniqueId"],
            r["educationOrganizationReference"]["educationOrganizationId"],
        )
        for r in ods.records()
    ]


@pytest.fixture
def ods(tmp_path, monkeypatch, sandbox, districts, district_inputs):
    monkeypatch.setenv("SG_WAREHOUSE_PATH", str(tmp_path / "warehouse.duckdb"))
    sb = Sandbox(district_inputs, credentials=sandbox.credentials, state_dir=tmp_path / "store")
    sb.__enter__()
    info = json.loads((district_inputs / "district.json").read_text())
    connection = {
        "name": "idoe",
        "base_url": sb.urls["edfi"],
        "key_env": EDFI_KEY,
        "secret_env": EDFI_SECRET,
        "district_number": str(info["edfi_district_number"]),
        "school_years": [int(y) for y in info["school_years"]],
    }
    district = districts.get("filedrop").model_copy(
        update={"edfi": Edfi(connections=[connection], profile="ds52")}
    )
    for source in SOURCES:
        if source.system == "campus":
            ingest_source(source, district)
    prepare()
    wb = Ods(sb, district, date.fromisoformat(info["as_of"]))
    wb.build()
    yield wb
    sb.__exit__(None, None, None)


def test_publish_twice_with_no_change_sends_zero_requests_and_the_ods_equals_the_desired_state(ods):
    first = publish_accommodations(ods.district)
    assert sum(r.counts["created"] for r in first) > 0
    stored = _stored(ods)
    assert len(stored) == len(set(stored)) and set(stored) == ods.desired()
    ods.reset_stats()
    second = publish_accommodations(ods.district)
    assert sum(r.counts["sent"] for r in second) == 0 and ods.writes() == {}


def test_the_identity_mapping_holds_the_ods_id_of_every_record_sent_by_campus_person(ods):
    """Seed 002: Identity Mapping Object Key — campusObjectType `Person`, Object Key `personID`."""
    publish_accommodations(ods.district)
    ids = {r["id"] for r in ods.records()}
    with connect() as con:
        rows = con.execute(
            "select campus_object_type, object_key, edfi_id from ops.edfi_identity_mapping"
        ).fetchall()
    assert {t for t, _, _ in rows} == {"Person"}
    assert {e for *_, e in rows} == ids and all(k for _, k, _ in rows)


def test_if_a_resource_is_toggled_off_after_data_has_sent_all_sent_data_remains_and_no_new_data_sends(ods):
    """Seed 002: "If a resource is toggled to 'OFF' after data has sent, all sent data will remain in the
    ODS but no new data will send." """
    publish_accommodations(ods.district)
    before = _stored(ods)
    off = ods.district.model_copy(
        update={
            "edfi": ods.district.edfi.model_copy(
                update={"resources": {"studentEducationOrganizationAssessmentAccommodations": "off"}}
            )
        }
    )
    with connect() as con:  # a withdrawn accommodation would be a delete: nothing is sent while off
        con.execute(
            "delete from raw.campus__test_accommodations where rowid in (select min(rowid) from raw.campus__test_accommodations)"
        )
    ods.build()
    ods.reset_stats()
    assert publish_accommodations(off) == []
    assert ods.writes() == {} and _stored(ods) == before


def test_a_record_killed_mid_publish_and_run_again_ends_with_the_desired_state_and_no_duplicates(ods):
    """20% lost answers after applied writes: what a kill mid-publish looks like from the ODS's side."""
    httpx.post(f"{ods.url}/_sandbox/edfi/faults", json={"drop_after_write_rate": 0.2, "seed": 4})
    publish_accommodations(ods.district)
    httpx.post(f"{ods.url}/_sandbox/edfi/faults", json={})
    publish_accommodations(ods.district)
    stored = _stored(ods)
    assert len(stored) == len(set(stored)) and set(stored) == ods.desired()


def test_a_put_whose_etag_went_stale_is_412_then_read_again_and_sent_once_more(ods):
    """Somebody changed the record in the ODS after we sent it: our PUT's If-Match is stale (412
    optimistic-lock-failed); the engine reads the record's current etag and sends the PUT once more."""
    publish_accommodations(ods.district)
    record = ods.records()[0]
    headers = {"Authorization": f"Bearer {ods.token()}"}
    body = {k: v for k, v in record.items() if k not in ("id", "_etag", "_lastModifiedDate")}
    httpx.put(f"{ods.url}{PATH}/{record['id']}", json=body, headers=headers).raise_for_status()  # new etag
    with connect() as con:  # the record changed at the source: our next publish updates it
        con.execute(
            "update ops.publish_ledger set content_hash = 'changed' where target_id = ?", [record["id"]]
        )
    ods.reset_stats()
    (result,) = publish_accommodations(ods.district)
    assert (result.counts["updated"], result.counts["failed"]) == (1, 0)
    puts = httpx.get(f"{ods.url}/_sandbox/edfi/stats").json()["requests"]["PUT"]
    assert puts == {"412": 1, "204": 1}


def test_if_an_edfi_id_changes_a_delete_post_will_occur(ods):
    """Seed 002: "If an Ed-Fi ID changes, a delete/post will occur" — the old record leaves the ODS."""
    publish_accommodations(ods.district)
    old = sorted(ods.desired())[0][0]
    with connect() as con:
        con.execute("update raw.campus__persons set edfi_id = 'NEW' || edfi_id where edfi_id = ?", [old])
    student = {
        "studentUniqueId": f"NEW{old}",
        "firstName": "A",
        "lastSurname": "B",
        "birthDate": "2012-01-01",
    }
    headers = {"Authorization": f"Bearer {ods.token()}"}  # the student integration sends the new ID first
    httpx.post(f"{ods.url}/data/v3/ed-fi/students", json=student, headers=headers).raise_for_status()
    ods.build()
    ods.reset_stats()
    (result,) = publish_accommodations(ods.district)
    assert result.counts["deleted"] >= 1 and result.counts["created"] >= 1
    stored = _stored(ods)
    assert set(stored) == ods.desired() and old not in {s for s, _ in stored}
    assert f"NEW{old}" in {s for s, _ in stored}


def test_a_student_the_ods_does_not_know_is_409_and_an_error_row_says_send_the_student_first(ods):
    from sg_orchestration.publish.edfi import PUBLISH_FIXES

    with connect() as con:
        (edfi_id,) = con.execute(
            "select min(student_unique_id) from marts.edfi__ds52_assessment_accommodations"
        ).fetchone()
        con.execute("update raw.campus__persons set edfi_id = '9999999999' where edfi_id = ?", [edfi_id])
    ods.build()
    (result,) = publish_accommodations(ods.district)
    assert result.counts["failed"] >= 1, (result.counts, result.errors)
    assert all(cause.startswith("create: 409") for cause in result.errors), result.errors
    with connect() as con:
        fixes = con.execute(
            "select distinct fix from ops.error_log where stage = 'publish' and resolved_at is null"
        ).fetchall()
    assert fixes == [(PUBLISH_FIXES["conflict"],)]
    assert "send the Student" in PUBLISH_FIXES["conflict"]


def test_payload_rows_judged_before_by_the_same_rules_are_not_judged_again_and_their_findings_stand(
    ods, monkeypatch
):
    """A night judges the payload rows that are new or changed (every row once the rules change): a
    row's findings stand while the row and the rules stay the same, and resolve when it is judged again."""
    from sg_orchestration.validate import edfi as validate_edfi

    judged: list[int] = []
    real_failures, real_problems = validate_edfi.failures, validate_edfi._payload_problems

    def counting(profile, frame, descriptors):
        judged.append(len(frame))
        return real_failures(profile, frame, descriptors)

    def findings(rules_changed: bool = False):
        with connect() as con:
            if rules_changed:
                con.execute("update ops.validated_marts set digest = 'older rules'")
            return record_findings(con, ods.district)

    monkeypatch.setattr(validate_edfi, "failures", counting)
    with connect() as con:
        rows, records = con.execute(
            f"select count(*), count(distinct {natural_key_sql('ds52')}) "
            f"from {validate_edfi.MARTS['ds52']} where district_id = ?",
            [ods.district.id],
        ).fetchone()
    first = findings()  # the fixture validated every row already
    assert sum(judged) == 0 and rows > 0
    assert findings(rules_changed=True) == first and sum(judged) == rows

    monkeypatch.setattr(validate_edfi, "_payload_problems", lambda profile, payload: "a made-up problem")
    flagged = findings(rules_changed=True)
    assert sum(flagged.values()) == sum(first.values()) + records  # a record per natural key
    monkeypatch.setattr(validate_edfi, "_payload_problems", real_problems)
    judged.clear()
    assert findings() == flagged and sum(judged) == 0  # unchanged rows: their findings stand
    assert findings(rules_changed=True) == first and sum(judged) == rows  # judged again: resolved
