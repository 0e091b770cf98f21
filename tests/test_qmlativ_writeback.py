"""The Qmlativ writeback end to end: SameGoal over the sandbox API → dbt → the publish engine → the
sandbox Qmlativ store, counted by the sandbox's request statistics."""

import hashlib
import os
from datetime import date

import httpx
import pytest

from sg_orchestration.catalog import SOURCES, SOURCES_BY_NAME
from sg_orchestration.ingest.pipeline import ingest_source
from sg_orchestration.publish.qmlativ import FORMS, access_expiry_status, publish_writeback
from sg_orchestration.sandbox import Sandbox
from sg_orchestration.transform.dbt import invoke, prepare, record_cutover_dates
from sg_orchestration.warehouse import connect


class Writeback:
    """A district with its own sandbox store and warehouse, published once."""

    def __init__(self, sandbox: Sandbox, district):
        self.sandbox = sandbox
        self.district = district
        self.qmlativ = sandbox.urls["qmlativ"]

    def writes(self) -> dict[str, int]:
        stats = httpx.get(f"{self.qmlativ}/_sandbox/qmlativ/stats").json()["writeback"]
        return {
            method: sum(v for k, v in by_status.items())
            for method, by_status in stats.items()
            if method != "GET"
        }

    def reset_stats(self) -> None:
        httpx.delete(f"{self.qmlativ}/_sandbox/qmlativ/stats")

    def store(self, form) -> list[dict]:
        cfg = self.district.qmlativ
        names = cfg.objects[form.table]
        with httpx.Client(base_url=self.qmlativ) as client:
            token = client.get(
                "/oauth/token",
                params={"grant_type": "client_credentials"},
                auth=(os.environ[cfg.client_key_env], os.environ[cfg.client_secret_env]),
            ).json()["access_token"]
            url = f"/Generic/{cfg.entity_id}/{names.module}/{names.object}/1/1000"
            objects = []
            while url:
                body = client.get(url, headers={"Authorization": f"Bearer {token}"}).json()
                objects += body["Objects"]
                url = body["Paging"]["Next"]
        return objects

    def post_samegoal(self, form: str, record: dict) -> None:
        response = httpx.post(
            f"{self.sandbox.urls['samegoal']}/_sandbox/samegoal/{form}", json={"records": [record]}
        )
        assert response.status_code == 200

    def ingest(self, *names: str) -> None:
        """New SameGoal documents read, then the rules built over them (the nightly's dbt step)."""
        for name in names:
            ingest_source(SOURCES_BY_NAME[name], self.district)
        _build_marts()


def _build_marts() -> None:
    invoke("run", "--select", "+path:models/marts/qmlativ")


def _writeback(tmp_path, monkeypatch, sandbox, districts, district_inputs, faults=None) -> Writeback:
    monkeypatch.setenv("SG_WAREHOUSE_PATH", str(tmp_path / "warehouse.duckdb"))
    sb = Sandbox(
        district_inputs, credentials=sandbox.credentials, state_dir=tmp_path / "store", qmlativ_faults=faults
    )
    sb.__enter__()
    demo = districts.get("demo")
    district = demo.model_copy(
        update={
            "samegoal": demo.samegoal.model_copy(update={"base_url": sb.urls["samegoal"]}),
            "qmlativ": demo.qmlativ.model_copy(update={"base_url": sb.urls["qmlativ"]}),
        }
    )
    wb = Writeback(sb, district)
    for source in SOURCES:
        if source.system in ("samegoal", "qmlativ"):
            ingest_source(source, district)
    with connect() as con:
        record_cutover_dates(con, district)
    prepare()
    _build_marts()
    return wb


@pytest.fixture
def writeback(tmp_path, monkeypatch, sandbox, districts, district_inputs):
    wb = _writeback(tmp_path, monkeypatch, sandbox, districts, district_inputs)
    yield wb
    wb.sandbox.__exit__(None, None, None)


def _desired(form) -> set[str]:
    with connect() as con:
        rows = con.execute(f"select document_id from marts.qmlativ__{form.table} where district_id = 'demo'")
        return {r[0] for r in rows.fetchall()}


def _assert_store_equals_desired(wb: Writeback) -> None:
    for form in FORMS:
        stored = [o["SourceDocumentID"] for o in wb.store(form)]
        assert len(stored) == len(set(stored)), f"{form.table}: duplicate creates"
        assert set(stored) == _desired(form), form.table


def test_publish_twice_with_no_change_sends_zero_requests(writeback):
    first = publish_writeback(writeback.district)
    assert sum(r.counts["created"] for r in first) > 0
    _assert_store_equals_desired(writeback)
    writeback.reset_stats()
    second = publish_writeback(writeback.district)
    assert writeback.writes() == {}
    assert sum(r.counts["sent"] for r in second) == 0


def test_a_screen_unchanged_since_a_complete_publish_is_not_planned_again_and_counts_as_its_plan_would(
    writeback,
):
    """Issue 7: an unchanged night costs what changed. A screen whose desired state (its dbt builds, what
    validation holds back) and ledger are those its last complete publish left is reported, not planned;
    any change to either plans it again."""
    first = publish_writeback(writeback.district)
    assert not any(r.settled for r in first) and sum(r.counts["created"] for r in first) > 0
    planned = {r.resource: r.planned for r in publish_writeback(writeback.district, dry_run=True)}
    writeback.reset_stats()
    second = publish_writeback(writeback.district)
    assert writeback.writes() == {}
    assert all(r.settled for r in second)
    for r in second:
        assert r.planned == planned[r.resource], r.resource
        assert {k: r.counts[k] for k in ("unchanged", "skipped", "held")} == {
            k: planned[r.resource][k] for k in ("unchanged", "skipped", "held")
        }
    # The ledger changed (a record failed on a later run, say): that screen is planned, and the plan
    # sends the record again.
    with connect() as con:
        con.execute(
            "update ops.publish_ledger set last_status = 'failed', content_hash = 'x' where key_hash = "
            "(select min(key_hash) from ops.publish_ledger where resource = 'dyslexia' and target_id is not null)"
        )
    third = {r.resource: r for r in publish_writeback(writeback.district)}
    assert not third["dyslexia"].settled and third["dyslexia"].counts["updated"] == 1
    assert all(r.settled for name, r in third.items() if name != "dyslexia")
    # A dbt build gives every table a new build id: every screen is planned again, and sends nothing.
    _build_marts()
    writeback.reset_stats()
    assert not any(r.settled for r in publish_writeback(writeback.district))
    assert writeback.writes() == {}
    assert all(r.settled for r in publish_writeback(writeback.district))


def test_each_qmlativ_mart_is_a_view_of_its_intermediate_table_only():
    """What `desired_versions` relies on: a screen's desired state changes only when dbt builds its
    intermediate table (or the mart view), whose build ids it reads."""
    import json

    from sg_orchestration.transform.dbt import dbt_project
    from sg_orchestration.transform.staging import intermediate_name, mart_name

    nodes = json.loads(dbt_project().manifest_path.read_text())["nodes"]
    for form in FORMS:
        mart = nodes[f"model.sg_orchestration.{mart_name(form)}"]
        table = f"model.sg_orchestration.{intermediate_name(form)}"
        assert mart["config"]["materialized"] == "view" and mart["depends_on"]["nodes"] == [table], form.table
        assert nodes[table]["config"]["materialized"] == "table", form.table


def test_one_field_changed_sends_exactly_one_update_and_a_voided_document_one_delete(writeback):
    publish_writeback(writeback.district)
    with connect() as con:
        doc = (
            con.execute(
                "select * from intermediate.int_samegoal__dyslexia where district_id = 'demo' and integrated limit 1"
            )
            .df()
            .iloc[0]
        )
    source = SOURCES_BY_NAME["samegoal__dyslexia"]
    record = {
        c: (None if doc[c] is None or str(doc[c]) in ("NaT", "None") else str(doc[c]))
        for c in source.column_names
    }
    record.update(start_date=str(doc["start_date"])[:10], end_date=None, completed_at="2099-01-01T00:00:00Z")
    record["state_dyslexia_services_codes"] = "99" if doc["state_dyslexia_services_codes"] != "99" else "98"
    writeback.post_samegoal("dyslexia", record)
    writeback.ingest("samegoal__dyslexia")
    writeback.reset_stats()
    results = publish_writeback(writeback.district)
    assert writeback.writes() == {"POST": 1}
    assert {r.resource: r.counts["updated"] for r in results}["dyslexia"] == 1

    writeback.post_samegoal("dyslexia", {**record, "document_status": "voided", "completed_at": None})
    writeback.ingest("samegoal__dyslexia")
    writeback.reset_stats()
    publish_writeback(writeback.district)
    assert writeback.writes() == {"DELETE": 1}
    _assert_store_equals_desired(writeback)


def test_twenty_percent_injected_429_and_500_completes_with_nothing_lost(
    tmp_path, monkeypatch, sandbox, districts, district_inputs
):
    faults = {"error_rate": 0.2, "statuses": [429, 500], "seed": 7}
    wb = _writeback(tmp_path, monkeypatch, sandbox, districts, district_inputs, faults=faults)
    try:
        results = publish_writeback(wb.district)
        assert sum(r.counts["failed"] for r in results) == 0
        # the check reads the store itself: no fault may answer it (the faults' order follows the publish's)
        set_faults(wb)
        _assert_store_equals_desired(wb)
    finally:
        wb.sandbox.__exit__(None, None, None)


@pytest.mark.parametrize(
    ("days_left", "passed", "warned"),
    [(31, True, False), (30, True, True), (0, True, True), (-1, False, False)],
)
def test_credential_expiry_warns_30_days_ahead_and_fails_after(days_left, passed, warned):
    today = date(2026, 11, 24)
    ok, warning = access_expiry_status(date.fromordinal(today.toordinal() + days_left), today)
    assert ok is passed
    assert (warning is not None) == (warned or not passed)


def test_a_record_qmlativ_refuses_is_not_retried_and_goes_to_the_error_log(
    tmp_path, monkeypatch, sandbox, districts, district_inputs
):
    wb = _writeback(
        tmp_path,
        monkeypatch,
        sandbox,
        districts,
        district_inputs,
        faults={"error_rate": 1.0, "statuses": [400]},
    )
    try:
        results = publish_writeback(wb.district)
        failed = sum(r.counts["failed"] for r in results)
        assert failed == sum(len(_desired(form)) for form in FORMS) > 0
        with connect() as con:
            rows = con.execute(
                "select cause, fix from ops.error_log where district_id = 'demo' and stage = 'publish' "
                "and resolved_at is null"
            ).fetchall()
        assert len(rows) == failed
        assert {cause for cause, _ in rows} == {
            "400"
        }  # the status and the target's short message, never data
        assert all("Qmlativ refused" in fix for _, fix in rows)
        wb.reset_stats()
        publish_writeback(wb.district)  # refused content is not sent again until it changes
        assert wb.writes() == {}
    finally:
        wb.sandbox.__exit__(None, None, None)


def test_lost_answers_after_applied_writes_leave_no_duplicates_and_nothing_lost(
    tmp_path, monkeypatch, sandbox, districts, district_inputs
):
    """What a run killed mid-publish looks like from Qmlativ's side: writes applied, answers never heard."""
    faults = {"drop_after_write_rate": 0.2, "seed": 3}
    wb = _writeback(tmp_path, monkeypatch, sandbox, districts, district_inputs, faults=faults)
    try:
        first = publish_writeback(wb.district)
        publish_writeback(wb.district)  # the next run resolves whatever was left pending
        assert sum(r.counts["created"] + r.counts["resolved"] for r in first) > 0
        _assert_store_equals_desired(wb)
    finally:
        wb.sandbox.__exit__(None, None, None)


def test_nothing_is_sent_while_no_qmlativ_students_are_loaded(defs, sandbox, warehouse):
    """Every document would be unmapped and the diff would withdraw all Qmlativ holds: send nothing."""
    import dagster as dg

    from sg_orchestration.publish.assets import QMLATIV_KEY

    with connect():
        pass  # creates the raw and ops tables: the district's demographics never loaded
    prepare()
    invoke("run", "--select", "stg_qmlativ__students")
    qmlativ = sandbox.urls["qmlativ"]
    httpx.delete(f"{qmlativ}/_sandbox/qmlativ/stats")
    asset = next(a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and QMLATIV_KEY in a.keys)
    result = dg.materialize([asset], partition_key="demo", raise_on_error=False)
    materialization = result.asset_materializations_for_node(asset.node_def.name)[0]
    assert "run the demographics integration" in materialization.metadata["reason"].value
    assert httpx.get(f"{qmlativ}/_sandbox/qmlativ/stats").json()["writeback"] == {}


def _integrated_records(form: str, n: int) -> list[dict]:
    """`n` integrated documents of a form as SameGoal export records, to post back changed or voided."""
    with connect() as con:
        docs = con.execute(
            f"select * from intermediate.int_samegoal__{form} where district_id = 'demo' and integrated "
            f"order by document_id limit {n}"
        ).df()
    source = SOURCES_BY_NAME[f"samegoal__{form}"]
    records = []
    for _, doc in docs.iterrows():
        record = {}
        for column in source.columns:
            value = doc[column.name]
            text = None if value is None or str(value) in ("NaT", "None", "nan", "<NA>") else str(value)
            if text is not None and column.type == "date":
                text = text[:10]
            elif text is not None and column.type == "bool":
                text = text.lower()
            record[column.name] = text
        records.append(record)
    return records


def void_documents(wb: Writeback, form: str, n: int) -> list[str]:
    """Void `n` integrated documents of `form` in SameGoal and ingest them; their document ids."""
    records = _integrated_records(form, n)
    voided = [{**r, "document_status": "voided", "completed_at": None} for r in records]
    response = httpx.post(f"{wb.sandbox.urls['samegoal']}/_sandbox/samegoal/{form}", json={"records": voided})
    assert response.status_code == 200
    wb.ingest(f"samegoal__{form}")
    assert not _desired(next(f for f in FORMS if f.table == form)) & {r["document_id"] for r in records}
    return [r["document_id"] for r in records]


def set_faults(wb: Writeback, **faults) -> None:
    assert httpx.post(f"{wb.qmlativ}/_sandbox/qmlativ/faults", json=faults).status_code == 200


def test_a_pending_create_voided_before_the_next_run_is_deleted_from_qmlativ(writeback, monkeypatch):
    """Issue 6.1: a run killed while its creates were in flight leaves them `pending`; documents voided
    before the next run must not stay in Qmlativ. The kill is modelled by Qmlativ applying every create
    and the answer never arriving, with no attempt left to look it up (one attempt per request)."""
    import functools

    from sg_orchestration.publish import engine
    from sg_orchestration.publish.sender import RetryPolicy

    wb = writeback
    dyslexia = next(f for f in FORMS if f.table == "dyslexia")
    set_faults(wb, drop_after_write_rate=1.0)
    with monkeypatch.context() as m:
        m.setattr(engine, "RetryPolicy", functools.partial(RetryPolicy, max_attempts=1))
        publish_writeback(wb.district)
    set_faults(wb)
    stored = {o["SourceDocumentID"] for o in wb.store(dyslexia)}
    assert stored == _desired(dyslexia)  # Qmlativ applied every create ...
    with connect() as con:
        statuses = con.execute(
            "select distinct last_status from ops.publish_ledger where resource = 'dyslexia'"
        ).fetchall()
    assert statuses == [("pending",)]  # ... and the ledger knows none of their ids

    voided = void_documents(wb, "dyslexia", 3)
    results = {r.resource: r for r in publish_writeback(wb.district)}
    assert results["dyslexia"].counts["deleted"] == 3
    assert not {o["SourceDocumentID"] for o in wb.store(dyslexia)} & set(voided)
    with connect() as con:
        rows = con.execute(
            "select last_status, lookup_key from ops.publish_ledger where resource = 'dyslexia' "
            "and list_contains(?, key_hash)",
            [[hashlib.md5(d.encode()).hexdigest() for d in voided]],
        ).fetchall()
        pending_keys = con.execute(
            "select count(*) from ops.publish_ledger where lookup_key is not null"
        ).fetchone()[0]
    assert rows == [("deleted", None)] * 3
    assert pending_keys == 0  # the natural key is kept only while a create is pending
    _assert_store_equals_desired(wb)
    wb.reset_stats()
    assert sum(r.counts["sent"] for r in publish_writeback(wb.district)) == 0


def test_a_student_who_no_longer_maps_keeps_their_records_in_qmlativ(writeback):
    """Seed 000: "A student with no match is not sent" — not sending is not deleting. A demographics feed
    that misses a student for a night must not withdraw their state-reporting records; the error log
    says "student not mapped: run the demographics integration" and they are held as they are."""
    wb = writeback
    publish_writeback(wb.district)
    dyslexia = next(f for f in FORMS if f.table == "dyslexia")
    student = wb.store(dyslexia)[0]["StudentID"]
    held = {f.table: {o["SourceDocumentID"] for o in wb.store(f) if o["StudentID"] == student} for f in FORMS}
    with connect() as con:
        con.execute(
            'update raw."qmlativ__students" set "StudentNumber" = null, "StateID" = null where "StudentID" = ?',
            [str(student)],
        )
    wb.reset_stats()
    results = publish_writeback(wb.district)
    assert wb.writes() == {} and sum(len(docs) for docs in held.values()) > 0
    assert not any(r.planned["delete"] for r in results)
    for form in FORMS:
        assert held[form.table] <= {o["SourceDocumentID"] for o in wb.store(form)}, form.table


def _publish_in_child(district) -> None:
    publish_writeback(district)


def test_a_writeback_killed_mid_publish_across_screens_leaves_no_duplicates_and_nothing_lost(
    tmp_path, monkeypatch, sandbox, districts, district_inputs
):
    """Every screen is in one run: SIGKILL it while requests of several screens are in flight (some
    applied with their answer lost), then run again: each screen holds its desired documents once."""
    import multiprocessing
    import signal
    import time

    faults = {"slow_rate": 1.0, "slow_seconds": 0.02, "drop_after_write_rate": 0.2, "seed": 5}
    wb = _writeback(tmp_path, monkeypatch, sandbox, districts, district_inputs, faults=faults)
    try:
        desired = sum(len(_desired(form)) for form in FORMS)
        child = multiprocessing.get_context("spawn").Process(target=_publish_in_child, args=(wb.district,))
        child.start()
        deadline = time.monotonic() + 60
        while sum(wb.writes().values()) < desired // 3:
            assert child.is_alive() and time.monotonic() < deadline, "the child ended before the kill"
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        assert 0 < sum(len(wb.store(form)) for form in FORMS) < desired  # killed half-way
        set_faults(wb)
        publish_writeback(wb.district)
        _assert_store_equals_desired(wb)
        wb.reset_stats()
        assert sum(r.counts["sent"] for r in publish_writeback(wb.district)) == 0
        assert wb.writes() == {}
    finally:
        wb.sandbox.__exit__(None, None, None)
