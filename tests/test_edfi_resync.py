"""Seed 002, "Resource Toggle and Resync Logic": the Ed-Fi resync (`publish.edfi.resync_accommodations`, the
`resync` job's `publish/edfi_resync` and the `resync_scheduled` sensor) against the sandbox's Ed-Fi ODS/API
emulator over real sockets and a real DuckDB warehouse. Someone working in the ODS directly deletes and
posts records through its API with a token of their own; the emulator's stats count what the resync sent."""

import json
from datetime import datetime

import dagster as dg
import httpx
import pytest
import test_edfi_publish
from test_edfi_publish import Ods

from sg_orchestration.automation import resync as resync_module
from sg_orchestration.config import DistrictsFile
from sg_orchestration.edfi.names import RESOURCES, natural_key
from sg_orchestration.publish.edfi import mapping_digest, publish_accommodations, resync_accommodations
from sg_orchestration.warehouse import connect

ods = test_edfi_publish.ods  # the fixture: a district publishing to its own emulator and warehouse
PROFILES = pytest.mark.parametrize("ods", ["ds52", "indiana"], indirect=True)


def _label(ods: Ods) -> str:
    """The resync metadata's name of the fixture's one route: `<connection>/<resource>`."""
    return f"idoe/{RESOURCES[ods.district.edfi.profile]}"


class Hand:
    """Somebody working in the ODS directly, with a token of their own."""

    def __init__(self, ods: Ods):
        self.ods = ods
        self.client = httpx.Client(base_url=ods.url, headers={"Authorization": f"Bearer {ods.token()}"})

    def delete(self, record_id: str) -> None:
        reply = self.client.delete(f"{self.ods.path}/{record_id}")
        assert reply.status_code == 204, reply.text

    def post(self, body: dict) -> str:
        reply = self.client.post(self.ods.path, json=body)
        assert reply.status_code == 201, reply.text  # a new record, not an update of one of ours
        return reply.headers["Location"].rsplit("/", 1)[-1]

    def students(self) -> list[str]:
        """The studentUniqueId of every student the ODS knows."""
        out, offset = [], 0
        while page := self.client.get(
            "/data/v3/ed-fi/students", params={"offset": offset, "limit": 500}
        ).json():
            out += [s["studentUniqueId"] for s in page]
            offset += len(page)
        return out

    def foreign_record(self) -> dict:
        """A valid record nobody at the source has: one of ours given to a student the ODS knows who has
        no eligible test accommodation (so neither the desired state nor the mapping has its key)."""
        desired = {json.loads(k)["studentUniqueId"] for k in self.ods.desired()}
        student = next(s for s in sorted(self.students()) if s not in desired)
        record = self.ods.records()[0]
        body = {k: v for k, v in record.items() if k not in ("id", "_etag", "_lastModifiedDate")}
        body["studentReference"] = {**body["studentReference"], "studentUniqueId": student}
        return body


def _mapping() -> dict[str, tuple[str, str]]:
    """`ops.edfi_identity_mapping`: edfi_id -> (key_hash, campus personID)."""
    with connect() as con:
        rows = con.execute("select edfi_id, key_hash, object_key from ops.edfi_identity_mapping").fetchall()
    return {edfi_id: (key_hash, person) for edfi_id, key_hash, person in rows}


def _change_queries(ods: Ods, enabled: bool) -> None:
    reply = httpx.post(f"{ods.url}/_sandbox/edfi/change_queries", json={"enabled": enabled})
    assert reply.raise_for_status().json() == {"enabled": enabled}


def _assert_mapping_names_every_record_of_the_ods(ods: Ods) -> None:
    assert set(_mapping()) == {r["id"] for r in ods.records()}


def _run_resync_job(ods: Ods, monkeypatch, instance, district=None, tags=None) -> dict:
    """The `resync` job for the fixture's district (or `district`, the same one configured otherwise), in
    process; the metadata of its `publish/edfi_resync` materialization."""
    district = district or ods.district
    monkeypatch.setattr(resync_module, "current_districts", lambda: DistrictsFile(districts=[district]))
    result = resync_module.resync_job.execute_in_process(
        partition_key=district.id, instance=instance, tags=tags or {}
    )
    assert result.success
    [materialization] = [
        e.event_specific_data.materialization
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
    ]
    assert materialization.asset_key == resync_module.EDFI_RESYNC_KEY
    assert materialization.partition == district.id
    return {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}


@PROFILES
def test_a_mapping_row_whose_record_is_not_in_the_ods_is_deleted_from_the_mapping(ods):
    """Seed 002: "If a record is in the Ed-Fi Identity Mapping table and not in the ODS, it will be deleted
    from the Ed-Fi Identity Mapping table." By the product's design the record, still an eligible test
    accommodation, is then sent again (`recreated_missing`) under a new ODS id with a mapping row of its
    own: the ODS ends as the desired state and the mapping names exactly what it holds."""
    publish_accommodations(ods.district)
    _assert_mapping_names_every_record_of_the_ods(ods)
    record = ods.records()[0]
    key = natural_key(ods.district.edfi.profile, record)
    mapping = _mapping()
    key_hash, person = mapping[record["id"]]
    Hand(ods).delete(record["id"])
    assert key not in ods.stored()

    ods.reset_stats()
    (result,) = resync_accommodations(ods.district)
    assert result.counts["mapping_deleted"] == 1
    assert (result.counts["recreated_missing"], result.counts["deleted_orphan"]) == (1, 0)
    assert (result.counts["failed"], result.read) == (0, "full")
    assert ods.writes() == {"POST": 1}

    after = _mapping()
    assert record["id"] not in after  # the row of the record the ODS no longer held is gone
    assert len(after) == len(mapping)
    (new_id,) = set(after) - set(mapping)
    assert after[new_id] == (key_hash, person)  # the record sent again, the same campus person
    assert new_id != record["id"] and key in ods.stored()
    ods.assert_holds_the_desired_state()
    _assert_mapping_names_every_record_of_the_ods(ods)


@PROFILES
def test_a_mapping_row_whose_withdrawn_record_is_not_in_the_ods_is_deleted_and_nothing_is_sent(ods):
    """Seed 002: "If a record is in the Ed-Fi Identity Mapping table and not in the ODS, it will be deleted
    from the Ed-Fi Identity Mapping table." — for a record that is no longer eligible (its enrollments No
    Show) when the resync finds it gone: its row goes and nothing is sent (`cleared_missing`)."""
    publish_accommodations(ods.district)
    by_student: dict[str, list[dict]] = {}
    for r in ods.records():
        by_student.setdefault(r["studentReference"]["studentUniqueId"], []).append(r)
    record = next(rs[0] for rs in by_student.values() if len(rs) == 1)
    key = natural_key(ods.district.edfi.profile, record)
    Hand(ods).delete(record["id"])
    ods.withdraw([key])
    assert key not in ods.desired()

    ods.reset_stats()
    (result,) = resync_accommodations(ods.district)
    assert (result.counts["mapping_deleted"], result.counts["cleared_missing"]) == (1, 1)
    assert result.counts["recreated_missing"] == 0 and ods.writes() == {}
    assert record["id"] not in _mapping()
    ods.assert_holds_the_desired_state()
    _assert_mapping_names_every_record_of_the_ods(ods)
    ods.reset_stats()
    assert sum(r.counts["sent"] for r in publish_accommodations(ods.district)) == 0  # the ledger agrees


@PROFILES
def test_an_ods_record_with_no_matching_source_record_and_no_mapping_row_is_deleted_from_the_ods(
    ods, monkeypatch
):
    """Seed 002: "If a record is in the ODS and it does not have a matching record in Campus or the Ed-Fi
    Identity Mapping table, it will be deleted from the ODS." A valid record posted in the ODS directly,
    of a student the ODS knows who has no eligible test accommodation: the resync job deletes it and
    says so in `publish/edfi_resync` (per connection/resource and in total)."""
    publish_accommodations(ods.district)
    sent = len(ods.records())
    hand = Hand(ods)
    foreign = hand.post(hand.foreign_record())
    assert foreign not in _mapping() and len(ods.records()) == sent + 1

    ods.reset_stats()
    metadata = _run_resync_job(ods, monkeypatch, dg.DagsterInstance.ephemeral())
    assert ods.writes() == {"DELETE": 1}
    assert foreign not in {r["id"] for r in ods.records()}
    ods.assert_holds_the_desired_state()
    assert metadata[f"{_label(ods)}/deleted_orphan"] == 1 and metadata["total_deleted_orphan"] == 1
    assert metadata[f"{_label(ods)}/listed"] == sent + 1 and metadata[f"{_label(ods)}/not_ours"] == 0
    for cause in (
        "adopted",
        "recreated_missing",
        "overwritten_changed",
        "cleared_missing",
        "mapping_deleted",
    ):
        assert metadata[f"{_label(ods)}/{cause}"] == 0, cause
    assert (metadata[f"{_label(ods)}/failed"], metadata[f"{_label(ods)}/refused"], metadata["fixed"]) == (
        0,
        0,
        1,
    )
    assert metadata[f"{_label(ods)}/read"] == "full"
    assert metadata[resync_module.MAPPING_DIGEST] == mapping_digest(ods.district)
    _assert_mapping_names_every_record_of_the_ods(ods)


def test_an_ods_record_that_matches_a_source_record_or_a_mapping_row_is_not_deleted(ods):
    """Seed 002: "If a record is in the ODS and it does not have a matching record in Campus or the Ed-Fi
    Identity Mapping table, it will be deleted from the ODS." — and only then: a record the ledger lost
    whose key is an eligible accommodation (it matches Campus), and one the ledger lost that is no longer
    eligible but the identity mapping names, are kept (adopted), not deleted."""
    publish_accommodations(ods.district)
    records = sorted(ods.records(), key=lambda r: natural_key(ods.district.edfi.profile, r))
    by_student: dict[str, list[dict]] = {}
    for r in records:
        by_student.setdefault(r["studentReference"]["studentUniqueId"], []).append(r)
    mapped_only = next(rs[0] for rs in by_student.values() if len(rs) == 1)
    campus = next(r for r in records if r["studentReference"] != mapped_only["studentReference"])
    ods.withdraw(
        [natural_key(ods.district.edfi.profile, mapped_only)]
    )  # no longer in Campus: only the mapping names it
    with connect() as con:  # the ledger lost both (the mapping still has them)
        con.execute(
            "delete from ops.publish_ledger where list_contains(?, target_id)",
            [[mapped_only["id"], campus["id"]]],
        )
    assert {mapped_only["id"], campus["id"]} <= set(_mapping())

    ods.reset_stats()
    (result,) = resync_accommodations(ods.district)
    assert (result.counts["adopted"], result.counts["deleted_orphan"], result.counts["failed"]) == (2, 0, 0)
    assert ods.writes() == {}
    assert {mapped_only["id"], campus["id"]} <= {r["id"] for r in ods.records()}
    # Recorded in the ledger again without content (`engine.resync`: a row the mapping names): the next
    # publish's rules apply to them, the withdrawn one deleted (No Show), the other sent once to be sure.
    ods.reset_stats()
    publish_accommodations(ods.district)
    assert ods.writes() == {"DELETE": 1, "PUT": 1}
    ods.assert_holds_the_desired_state()
    ods.reset_stats()
    assert sum(r.counts["sent"] for r in publish_accommodations(ods.district)) == 0 and ods.writes() == {}


def _with_district_number(district, number: str):
    edfi = district.edfi
    (connection,) = edfi.connections
    changed = connection.model_copy(update={"district_number": number})
    return district.model_copy(update={"edfi": edfi.model_copy(update={"connections": [changed]})})


def _evaluate_sensor(monkeypatch, instance, district, cursor: str | None):
    monkeypatch.setattr(resync_module, "current_districts", lambda: DistrictsFile(districts=[district]))
    # a Thursday: no district's weekly (Sunday) resync falls between two evaluations
    monkeypatch.setattr(
        resync_module, "_now", lambda: datetime.fromisoformat("2026-01-15T12:00:00+00:00").timestamp()
    )
    result = resync_module.resync_scheduled(dg.build_sensor_context(instance=instance, cursor=cursor))
    return result.run_requests, result.cursor


def test_a_mapping_change_in_configuration_marks_the_district_for_resync(ods, monkeypatch):
    """Seed 002: "If a mapping is changed in Resource Preferences, a resync will need to be done to reflect
    the changes." The sensor starts no run while the district's Ed-Fi mapping configuration is the one its
    last resync reconciled; once the district number changes, it requests a (full) resync of that
    district, and none once that resync reconciled the new configuration."""
    publish_accommodations(ods.district)
    instance = dg.DagsterInstance.ephemeral()
    changed = _with_district_number(
        ods.district, str(int(ods.district.edfi.connections[0].district_number) + 1)
    )
    assert mapping_digest(changed) != mapping_digest(ods.district)

    # before any Ed-Fi resync there is nothing to compare with: the scheduled resync makes the first
    requests, cursor = _evaluate_sensor(monkeypatch, instance, changed, None)
    assert requests == []

    first = _run_resync_job(ods, monkeypatch, instance)
    assert first[resync_module.MAPPING_DIGEST] == mapping_digest(ods.district)
    assert first[f"{_label(ods)}/read"] == "full"
    requests, cursor = _evaluate_sensor(monkeypatch, instance, ods.district, cursor)
    assert requests == []  # reconciled, and no scheduled time passed

    requests, cursor = _evaluate_sensor(monkeypatch, instance, changed, cursor)
    assert [(r.partition_key, r.run_key) for r in requests] == [
        (ods.district.id, f"resync:{ods.district.id}:mapping:{mapping_digest(changed)}")
    ]
    (request,) = requests
    assert request.tags == {resync_module.TRIGGER_TAG: resync_module.MAPPING_CHANGED}

    # the run it requests pages through the ODS (an earlier resync recorded a change version to read
    # from) and records the configuration it reconciled: nothing more is requested for it
    again = _run_resync_job(ods, monkeypatch, instance, district=changed, tags=request.tags)
    assert again[f"{_label(ods)}/read"] == "full" and again[f"{_label(ods)}/failed"] == 0
    assert again[resync_module.MAPPING_DIGEST] == mapping_digest(changed)
    requests, cursor = _evaluate_sensor(monkeypatch, instance, changed, cursor)
    assert requests == []


def test_a_nightly_resync_reads_only_what_changed_through_change_queries(ods):
    """Seed 002's resync rules applied nightly: a resync after one that read the ODS reads only what
    changed since, by the ODS's change queries (`availableChangeVersions`, `/deletes`, `/keyChanges`, the
    resource with `minChangeVersion`/`maxChangeVersion`), and still fixes a record deleted in the ODS and
    one posted there."""
    publish_accommodations(ods.district)
    held = len(ods.records())
    (first,) = resync_accommodations(ods.district)
    assert first.read == "full" and first.counts["listed"] == held
    assert sum(first.counts[c] for c in ("adopted", "deleted_orphan", "recreated_missing")) == 0

    hand = Hand(ods)
    gone = ods.records()[0]
    hand.delete(gone["id"])
    foreign = hand.post(hand.foreign_record())
    ods.reset_stats()
    (second,) = resync_accommodations(ods.district)
    assert second.read == "changes"
    assert second.counts["listed"] == 1  # the one record changed since: the foreign one
    assert (second.counts["recreated_missing"], second.counts["deleted_orphan"]) == (1, 1)
    assert (second.counts["mapping_deleted"], second.counts["failed"]) == (1, 0)
    stats = ods.stats()
    # reads: the deletes, the key changes and the changed records, a page each; writes: the two fixes
    assert stats["writeback"] == {"GET": {"200": 3}, "POST": {"201": 1}, "DELETE": {"204": 1}}
    assert stats["total"] == 1 + 1 + 3 + 2  # a token, the change versions, the reads, the fixes
    assert foreign not in {r["id"] for r in ods.records()} and gone["id"] not in _mapping()
    ods.assert_holds_the_desired_state()
    _assert_mapping_names_every_record_of_the_ods(ods)

    ods.reset_stats()  # the next night reads the resync's own writes back, and fixes nothing
    (third,) = resync_accommodations(ods.district)
    assert third.read == "changes" and ods.writes() == {}
    assert (
        sum(third.counts[c] for c in ("adopted", "deleted_orphan", "recreated_missing", "mapping_deleted"))
        == 0
    )


def test_a_resync_by_change_queries_after_a_nightly_publish_fixes_only_what_was_done_in_the_ods(ods):
    """Seed 002's resync rules between nightly publishes: the changes a resync reads include what the
    publish since sent (an update, a No Show's delete); those are ours and as desired, so only the record
    posted in the ODS by hand is fixed (deleted: "it does not have a matching record in Campus or the Ed-Fi
    Identity Mapping table")."""
    publish_accommodations(ods.district)
    resync_accommodations(ods.district)  # records the change version it read up to
    accommodation_id, code = test_edfi_publish._changed_accommodation("ds52")
    with connect() as con:
        con.execute(
            "update raw.campus__test_accommodations set accommodation = ? where accommodation_id = ?",
            [code, accommodation_id],
        )
    by_student: dict[str, list[str]] = {}
    for key in sorted(ods.desired()):
        by_student.setdefault(json.loads(key)["studentUniqueId"], []).append(key)
    ods.withdraw(next(keys for keys in by_student.values() if len(keys) == 1))  # builds again
    ods.reset_stats()
    publish_accommodations(ods.district)
    assert ods.writes() == {"PUT": 1, "DELETE": 1}
    hand = Hand(ods)
    foreign = hand.post(hand.foreign_record())

    ods.reset_stats()
    (result,) = resync_accommodations(ods.district)
    assert result.read == "changes" and result.counts["listed"] == 2  # the update and the foreign record
    assert result.counts["deleted_orphan"] == 1 and ods.writes() == {"DELETE": 1}
    others = ("adopted", "recreated_missing", "overwritten_changed", "cleared_missing", "mapping_deleted")
    assert {c: result.counts[c] for c in others} == dict.fromkeys(others, 0)
    assert foreign not in {r["id"] for r in ods.records()}
    ods.assert_holds_the_desired_state()
    _assert_mapping_names_every_record_of_the_ods(ods)


def test_a_record_deleted_and_entered_again_in_the_ods_is_adopted_and_its_mapping_row_follows(ods):
    """Seed 002: "If a record is in the Ed-Fi Identity Mapping table and not in the ODS, it will be deleted
    from the Ed-Fi Identity Mapping table." — read by change queries, a record deleted in the ODS and
    entered there again (a new id, the same natural key, an eligible accommodation) matches its Campus
    record: the new one is adopted (not deleted, not sent twice) and the mapping row names its new id."""
    publish_accommodations(ods.district)
    resync_accommodations(ods.district)  # records the change version it read up to
    record = ods.records()[0]
    key_hash, person = _mapping()[record["id"]]
    hand = Hand(ods)
    hand.delete(record["id"])
    again = hand.post({k: v for k, v in record.items() if k not in ("id", "_etag", "_lastModifiedDate")})

    ods.reset_stats()
    (result,) = resync_accommodations(ods.district)
    assert result.read == "changes"
    assert (result.counts["adopted"], result.counts["mapping_deleted"]) == (1, 1)
    assert sum(result.counts[c] for c in ("deleted_orphan", "recreated_missing", "failed")) == 0
    assert ods.writes() == {}  # its content is what we sent: nothing to send
    mapping = _mapping()
    assert record["id"] not in mapping and mapping[again] == (key_hash, person)
    ods.assert_holds_the_desired_state()
    _assert_mapping_names_every_record_of_the_ods(ods)
    ods.reset_stats()
    assert sum(r.counts["sent"] for r in publish_accommodations(ods.district)) == 0 and ods.writes() == {}


def test_the_resync_pages_through_the_ods_when_it_cannot_answer_change_queries(ods):
    """Seed 002: "If a record is in the ODS and it does not have a matching record in Campus or the Ed-Fi
    Identity Mapping table, it will be deleted from the ODS." — on an ODS that answers no change queries
    (404 / 400) the resync that would read the changes since its last one pages through the resource
    instead, and still deletes the orphan."""
    publish_accommodations(ods.district)
    (first,) = resync_accommodations(ods.district)  # records the change version it read up to
    assert first.read == "full"
    _change_queries(ods, False)
    hand = Hand(ods)
    foreign = hand.post(hand.foreign_record())
    held = len(ods.records())

    ods.reset_stats()
    (second,) = resync_accommodations(ods.district)
    assert second.read == "full" and second.counts["listed"] == held
    assert (second.counts["deleted_orphan"], second.counts["failed"]) == (1, 0)
    stats = ods.stats()
    assert stats["requests"]["GET"].get("404") == 1  # the change versions: not served
    assert stats["writeback"]["DELETE"] == {"204": 1}
    assert foreign not in {r["id"] for r in ods.records()}
    ods.assert_holds_the_desired_state()


def test_the_configuration_last_reconciled_is_found_behind_any_number_of_resyncs_that_recorded_none():
    """A resync that failed or was refused records no `mapping_digest`: three weeks of them (an ODS down
    every night) must not hide the configuration the last good one reconciled, or a mapping changed since
    would never be resynced."""
    district = DistrictsFile.model_validate(
        {"districts": [{"id": "d1", "name": "D", "state": "IN", "timezone": "America/Indiana/Indianapolis"}]}
    ).districts[0]
    instance = dg.DagsterInstance.ephemeral()

    def resync(**metadata) -> None:
        event = dg.AssetMaterialization(
            resync_module.EDFI_RESYNC_KEY, partition=district.id, metadata=metadata
        )
        instance.report_runless_asset_event(event)

    assert resync_module.reconciled_digest(instance, district) is None
    resync(**{resync_module.MAPPING_DIGEST: "reconciled"})
    for _ in range(45):
        resync(failed=1)
    assert resync_module.reconciled_digest(instance, district) == "reconciled"
    resync(**{resync_module.MAPPING_DIGEST: "newer"})
    assert resync_module.reconciled_digest(instance, district) == "newer"
