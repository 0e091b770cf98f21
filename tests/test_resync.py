"""Issue 6.2, the resync: what Qmlativ holds (the sandbox over real HTTP) compared with the ledger and the
desired state, each difference fixed and reported by cause; the `resync` job and its sensor."""

import hashlib
import json
import os
from datetime import datetime

import dagster as dg
import httpx
import pytest
from test_qmlativ_writeback import FORMS, _assert_store_equals_desired, _desired, _writeback

from sg_orchestration.automation import resync as resync_module
from sg_orchestration.config import ConfigError, District, DistrictsFile, Resync, load_districts
from sg_orchestration.publish.qmlativ import publish_writeback, resync_writeback
from sg_orchestration.warehouse import connect

DYSLEXIA = next(f for f in FORMS if f.table == "dyslexia")


@pytest.fixture
def writeback(tmp_path, monkeypatch, sandbox, districts, district_inputs):
    wb = _writeback(tmp_path, monkeypatch, sandbox, districts, district_inputs)
    yield wb
    wb.sandbox.__exit__(None, None, None)


class Hand:
    """Someone working in Qmlativ directly, over the same Generic API."""

    def __init__(self, wb):
        cfg = wb.district.qmlativ
        names = cfg.objects[DYSLEXIA.table]
        self.client = httpx.Client(base_url=wb.qmlativ)
        token = self.client.get(
            "/oauth/token",
            params={"grant_type": "client_credentials"},
            auth=(os.environ[cfg.client_key_env], os.environ[cfg.client_secret_env]),
        ).json()["access_token"]
        self.client.headers["Authorization"] = f"Bearer {token}"
        self.path = f"/Generic/{cfg.entity_id}/{names.module}/{names.object}"
        self.id_field = f"{names.object}ID"

    def create(self, data: dict) -> int:
        response = self.client.put(self.path, json={"DataObject": data})
        assert response.status_code == 201, response.text
        return response.json()["ID"]

    def update(self, object_id: int, data: dict) -> None:
        assert self.client.post(f"{self.path}/{object_id}", json={"DataObject": data}).status_code == 200

    def delete(self, object_id: int) -> None:
        assert self.client.delete(f"{self.path}/{object_id}").status_code == 200


def _forget(*documents: str) -> None:
    with connect() as con:
        con.execute(
            "delete from ops.publish_ledger where resource = 'dyslexia' and list_contains(?, key_hash)",
            [[hashlib.md5(d.encode()).hexdigest() for d in documents]],
        )


def test_resync_adopts_deletes_orphans_recreates_missing_and_overwrites_changed_objects(writeback):
    wb = writeback
    publish_writeback(wb.district)
    hand = Hand(wb)
    objects = sorted(wb.store(DYSLEXIA), key=lambda o: o["SourceDocumentID"])
    assert len(objects) >= 5
    by_doc = {o["SourceDocumentID"]: o for o in objects}
    a, b, c, d, e = (o["SourceDocumentID"] for o in objects[:5])
    student = objects[0]["StudentID"]

    _forget(a, b)  # (a) the ledger lost two records: one as Qmlativ holds it, one changed there too
    hand.update(by_doc[b][hand.id_field], {"StateDyslexiaServicesCodes": "changed by hand"})
    duplicate = hand.create({**by_doc[c], hand.id_field: None})  # ours (it has a SourceDocumentID)...
    orphan = hand.create({"StudentID": student, "SourceDocumentID": "not-a-samegoal-document"})  # ...too
    foreign = hand.create({"StudentID": student, "Note": "entered in Qmlativ"})  # no SourceDocumentID
    hand.delete(by_doc[d][hand.id_field])  # (b) deleted in Qmlativ by hand
    hand.update(by_doc[e][hand.id_field], {"StartDate": "1999-01-01"})  # (c) changed in Qmlativ by hand

    wb.reset_stats()
    dry = {r.resource: r for r in resync_writeback(wb.district, dry_run=True)}
    assert set(wb.writes()) == set(), "a dry run changed Qmlativ"
    results = {r.resource: r for r in resync_writeback(wb.district)}
    fixed = results["dyslexia"].counts
    expected = {"adopted": 2, "deleted_orphan": 2, "recreated_missing": 1, "overwritten_changed": 1}
    assert {k: fixed[k] for k in expected} == expected
    assert {k: dry["dyslexia"].counts[k] for k in expected} == expected
    assert (fixed["not_ours"], fixed["failed"], fixed["refused"]) == (1, 0, 0)
    assert wb.writes() == {"POST": 2, "DELETE": 2, "PUT": 1}  # b and e updated, c's duplicate and orphan
    assert all(not r.counts[k] for r in results.values() if r.resource != "dyslexia" for k in expected)

    stored = {o[hand.id_field]: o for o in wb.store(DYSLEXIA)}
    assert stored.pop(foreign)["Note"] == "entered in Qmlativ"  # not ours: left alone
    assert duplicate not in stored and orphan not in stored
    assert stored[by_doc[e][hand.id_field]]["StartDate"] == by_doc[e]["StartDate"]
    hand.delete(foreign)
    _assert_store_equals_desired(wb)
    metadata = results["dyslexia"].metadata()
    assert metadata["dyslexia/adopted"] == 2 and metadata["dyslexia/not_ours"] == 1

    wb.reset_stats()
    assert sum(r.counts["sent"] for r in publish_writeback(wb.district)) == 0  # the ledger agrees again
    again = resync_writeback(wb.district)
    assert wb.writes() == {} and not any(r.counts[k] for r in again for k in expected)


def test_the_resync_job_reports_counts_per_screen_and_cause(writeback, monkeypatch):
    wb = writeback
    publish_writeback(wb.district)
    hand = Hand(wb)
    first = sorted(wb.store(DYSLEXIA), key=lambda o: o["SourceDocumentID"])[0]
    hand.delete(first[hand.id_field])
    monkeypatch.setattr(resync_module, "current_districts", lambda: DistrictsFile(districts=[wb.district]))

    result = resync_module.resync_job.execute_in_process(
        partition_key="demo", instance=dg.DagsterInstance.ephemeral()
    )
    assert result.success
    [materialization] = [
        e.event_specific_data.materialization
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
    ]
    assert materialization.asset_key == resync_module.QMLATIV_RESYNC_KEY
    assert materialization.partition == "demo"
    metadata = {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
    assert metadata["dyslexia/recreated_missing"] == 1 and metadata["total_recreated_missing"] == 1
    assert metadata["dyslexia/deleted_orphan"] == 0 and metadata["fixed"] == 1
    assert metadata["dyslexia/listed"] == len(_desired(DYSLEXIA)) - 1
    assert first["SourceDocumentID"] not in json.dumps(metadata)  # counts only, never a key
    _assert_store_equals_desired(wb)
    op = resync_module.resync_job.graph.node_defs[0]
    assert op.pool == "duckdb_warehouse"


# --- the sensor -----------------------------------------------------------------------------------------
def _district(district_id: str, resync: dict | None = None, timezone: str = "America/Chicago") -> District:
    entry = {
        "id": district_id,
        "name": district_id,
        "state": "TX",
        "timezone": timezone,
        "qmlativ": {
            "base_url": "http://127.0.0.1:9",
            "client_key_env": "K",
            "client_secret_env": "S",
            "entity_id": 1,
            "access_expires": "2099-01-01",
        },
    }
    if resync is not None:
        entry["resync"] = resync
    return District.model_validate(entry)


def _evaluate(monkeypatch, districts: list[District], cursor: dict | None, now: str):
    monkeypatch.setattr(resync_module, "current_districts", lambda: DistrictsFile(districts=districts))
    monkeypatch.setattr(resync_module, "_now", lambda: datetime.fromisoformat(now).timestamp())
    context = dg.build_sensor_context(cursor=json.dumps(cursor) if cursor is not None else None)
    result = resync_module.resync_scheduled(context)
    return result.run_requests, json.loads(result.cursor)


def test_the_resync_sensor_requests_a_run_per_district_at_its_cron_in_its_timezone(monkeypatch):
    weekly = _district("weekly")  # default: Sundays 04:00 district time (Chicago: 10:00 UTC in January)
    daily = _district("daily", {"cron": "30 1 * * *"}, timezone="America/New_York")
    off = _district("off", {"enabled": False})
    no_target = District(id="files", name="files", state="TX", timezone="America/Chicago")
    districts = [weekly, daily, off, no_target]

    # first evaluation: the cursor is set, nothing is started
    requests, cursor = _evaluate(monkeypatch, districts, None, "2026-01-11T09:30:00+00:00")
    assert requests == []
    assert cursor == {"weekly": "2026-01-04T04:00:00-06:00", "daily": "2026-01-11T01:30:00-05:00"}

    # 09:30 UTC on Sunday is 03:30 in Chicago: not yet the weekly time; New York's 01:30 already handled
    requests, same = _evaluate(monkeypatch, districts, cursor, "2026-01-11T09:59:00+00:00")
    assert requests == [] and same == cursor

    requests, later = _evaluate(monkeypatch, districts, cursor, "2026-01-11T10:05:00+00:00")
    assert [(r.partition_key, r.run_key) for r in requests] == [
        ("weekly", "resync:weekly:2026-01-11T04:00:00-06:00")
    ]
    assert requests[0].tags == {"sg/trigger": "resync_scheduled"}
    assert later["weekly"] == "2026-01-11T04:00:00-06:00"
    assert _evaluate(monkeypatch, districts, later, "2026-01-11T10:10:00+00:00")[0] == []

    # days missed (the sensor was stopped): one run, for the latest time
    requests, _ = _evaluate(monkeypatch, districts, later, "2026-01-14T12:00:00+00:00")
    assert [(r.partition_key, r.run_key) for r in requests] == [
        ("daily", "resync:daily:2026-01-14T01:30:00-05:00")
    ]


def test_resync_settings_default_weekly_and_a_bad_cron_is_refused_at_load(tmp_path):
    assert _district("x").resync == Resync() and Resync().cron == "0 4 * * 0"
    assert resync_module.resync_settings(_district("x")) == Resync()
    path = tmp_path / "districts.yaml"
    entry = _district("x").model_dump(mode="json", exclude_none=True)
    entry["resync"] = {"cron": "every sunday"}
    path.write_text(json.dumps({"districts": [entry]}))
    with pytest.raises(ConfigError, match=r"district 'x': key `resync.cron`: .*not a cron expression"):
        load_districts(path)
    entry["publish"] = {"max_delete_share": 0.1, "min_deletes_guarded": 25}
    entry["resync"] = {"cron": "0 3 * * 6"}
    path.write_text(json.dumps({"districts": [entry]}))
    district = load_districts(path).get("x")
    assert (district.publish.max_delete_share, district.publish.min_deletes_guarded) == (0.1, 25)
    assert district.resync.cron == "0 3 * * 6"


def test_a_record_held_back_by_validation_stays_in_qmlativ_through_publish_and_resync(writeback):
    """A record failing validation is held: what Qmlativ holds for it stays, even when its last update
    was refused (ledger `failed`) or the ledger lost it (the resync must adopt it, not delete it)."""
    wb = writeback
    publish_writeback(wb.district)
    a, b = sorted(o["SourceDocumentID"] for o in wb.store(DYSLEXIA))[:2]
    with connect() as con:
        con.execute(
            "update ops.publish_ledger set last_status = 'failed', rejected_hash = 'refused content', "
            "last_error = '400 refused' "
            "where resource = 'dyslexia' and key_hash = md5(?)",
            [a],
        )
        con.executemany(
            "insert into ops.error_log (district_id, stage, target, record_key_hash, field, cause, fix, "
            "first_seen_at, last_seen_at) values ('demo', 'validate', 'qmlativ/dyslexia', md5(?), "
            "'StateDyslexiaServicesCodes', 'is not in TEDS table', 'correct it', now(), now())",
            [[a], [b]],
        )
    _forget(b)

    wb.reset_stats()
    results = {r.resource: r for r in publish_writeback(wb.district)}
    assert "DELETE" not in wb.writes()
    assert results["dyslexia"].counts["held"] == 1  # b: unknown to the ledger, nothing to compare
    resynced = {r.resource: r for r in resync_writeback(wb.district)}
    assert "DELETE" not in wb.writes()
    assert resynced["dyslexia"].counts["adopted"] == 1 and resynced["dyslexia"].counts["deleted_orphan"] == 0
    assert {a, b} <= {o["SourceDocumentID"] for o in wb.store(DYSLEXIA)}
