"""The publish engine (SPEC §5) against a small in-test target on 127.0.0.1: a store of things with
create (PUT), update (POST, If-Match), delete and lookup by `doc`, and injectable failures."""

from __future__ import annotations

import asyncio
import hashlib
import json
import multiprocessing
import os
import signal
import threading
from collections import Counter

import pytest
from aiohttp import web

from sg_orchestration.publish import Reply, Request, RetryPolicy, publish
from sg_orchestration.publish.engine import DeleteGuard, deletes_confirmed, resync
from sg_orchestration.warehouse import connect

FAST = RetryPolicy(max_attempts=8, backoff_s=0.01, max_backoff_s=0.05, timeout_s=10)
GUARD = DeleteGuard()  # the default: more than 20% and at least 10 deletes is refused


# --- the target --------------------------------------------------------------------------------------------
class Target:
    def __init__(self):
        self.objects: dict[str, dict] = {}
        self.etags: dict[str, str] = {}
        self.requests: Counter = Counter()  # by method
        self.token = "tok-1"
        self.fail_every = 0  # every Nth request answers 429 or 500
        self.drop_creates = 0  # the next N creates are applied, then the connection is dropped
        self.hang_after_creates: int | None = None  # later creates are applied and never answered
        self.hanging = threading.Event()
        self.next_id = 0
        self.seen = 0
        self.on_create = None  # called with each create's body as it arrives

    def docs(self) -> dict[str, dict]:
        return {o["doc"]: o for o in self.objects.values()}

    def app(self) -> web.Application:
        @web.middleware
        async def gate(request, handler):
            self.seen += 1
            self.requests[request.method] += 1
            if request.headers.get("Authorization") != f"Bearer {self.token}":
                return web.json_response({"message": "token expired"}, status=401)
            if self.fail_every and self.seen % self.fail_every == 0:
                status = 429 if self.seen % (2 * self.fail_every) else 500
                return web.json_response({}, status=status, headers={"Retry-After": "0"})
            return await handler(request)

        async def create(request):
            body = await request.json()
            if self.on_create:
                self.on_create(body)
            if body.get("code") == "XX":
                return web.json_response(
                    {"message": f"code '{body['code']}' is not in table C053"}, status=400
                )
            self.next_id += 1
            oid = str(self.next_id)
            self.objects[oid], self.etags[oid] = body, f'"{oid}-1"'
            if self.drop_creates:
                self.drop_creates -= 1
                request.transport.close()
            elif self.hang_after_creates is not None and len(self.objects) > self.hang_after_creates:
                self.hanging.set()
                await asyncio.Event().wait()
            return web.json_response({"id": oid}, status=201, headers={"ETag": self.etags[oid]})

        async def update(request):
            oid = request.match_info["id"]
            if oid not in self.objects:
                return web.json_response({"message": "not found"}, status=404)
            if request.headers.get("If-Match", self.etags[oid]) != self.etags[oid]:
                return web.json_response({"message": "stale etag"}, status=412)
            self.objects[oid] = await request.json()
            self.etags[oid] = f'"{oid}-{int(self.etags[oid].strip(chr(34)).split("-")[1]) + 1}"'
            return web.Response(status=204, headers={"ETag": self.etags[oid]})

        async def delete(request):
            found = self.objects.pop(request.match_info["id"], None)
            return web.Response(status=204 if found else 404)

        async def lookup(request):
            doc = request.query["doc"]
            return web.json_response({"ids": [i for i, o in self.objects.items() if o.get("doc") == doc]})

        async def page(request):  # the listing a resync reads: offset / limit
            offset, limit = int(request.query["offset"]), int(request.query["limit"])
            items = [{"id": i, **o} for i, o in self.objects.items()]
            more = offset + limit < len(items)
            return web.json_response({"items": items[offset : offset + limit], "more": more})

        app = web.Application(middlewares=[gate])
        app.router.add_put("/things", create)
        app.router.add_get("/things", lookup)
        app.router.add_get("/things/page", page)
        app.router.add_post("/things/{id}", update)
        app.router.add_delete("/things/{id}", delete)
        return app


@pytest.fixture
def target():
    """A Target served from a thread of its own on a free port; yields (target, base_url)."""
    state = Target()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder = {}

    async def start():
        runner = web.AppRunner(state.app(), access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        holder.update(runner=runner, port=runner.addresses[0][1])
        ready.set()

    thread = threading.Thread(
        target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True
    )
    thread.start()
    ready.wait(10)
    yield state, f"http://127.0.0.1:{holder['port']}"
    asyncio.run_coroutine_threadsafe(holder["runner"].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


@pytest.fixture
def warehouse(tmp_path, monkeypatch):
    monkeypatch.setenv("SG_WAREHOUSE_PATH", str(tmp_path / "w.duckdb"))


# --- the adapter and tokens -------------------------------------------------------------------------------
class ThingsAdapter:
    def request(self, action, payload, target_id, etag):
        if action == "create":
            return Request("PUT", "/things", payload)
        if action == "update":
            return Request("POST", f"/things/{target_id}", payload, {"If-Match": etag} if etag else {})
        return Request("DELETE", f"/things/{target_id}")

    def applied(self, action, reply: Reply):
        body = json.loads(reply.body) if reply.body else {}
        return body.get("id"), reply.headers.get("ETag")

    def lookup(self, natural_key):
        return Request("GET", "/things", params={"doc": natural_key})

    def found(self, reply: Reply):
        ids = json.loads(reply.body)["ids"]
        return ids[0] if ids else None

    # the listing a resync needs: pages of 7 (small, to page several times)
    def listing(self, cursor):
        return Request("GET", "/things/page", params={"offset": str(cursor or 0), "limit": "7"})

    def listed(self, cursor, reply: Reply):
        body = json.loads(reply.body)
        return body["items"], ((cursor or 0) + 7 if body["more"] else None)

    def object_id(self, obj):
        return obj["id"]

    def natural_key(self, obj):
        return obj.get("doc")

    def fingerprint(self, record):
        fields = {k: v for k, v in record.items() if k != "id"}
        return hashlib.md5(json.dumps(fields, sort_keys=True).encode()).hexdigest()


class Tokens:
    """Hands out tok-1, then tok-2 after a forced refresh, and so on."""

    def __init__(self):
        self.number = 1
        self.forced = 0

    async def token(self, force=False):
        if force:
            self.forced += 1
            self.number += 1
        return f"tok-{self.number}"


def things(n: int, **changes) -> dict[str, dict]:
    records = {f"doc-{i:04d}": {"doc": f"doc-{i:04d}", "value": i} for i in range(n)}
    for doc, fields in changes.items():
        records[doc.replace("_", "-")].update(fields)
    return records


def desired(records: dict[str, dict]) -> list[tuple[str, str, str, str]]:
    """(key_hash, content_hash, payload, lookup_key): the natural key is the `doc`."""
    rows = []
    for doc, payload in records.items():
        text = json.dumps(payload, sort_keys=True)
        key_hash, content_hash = hashlib.md5(doc.encode()).hexdigest(), hashlib.md5(text.encode()).hexdigest()
        rows.append((key_hash, content_hash, text, doc))
    return rows


def run(base_url, records, *, tokens=None, dry_run=False, concurrency=8, batch_size=200, guard=GUARD):
    return publish(
        connect, "d1", "things-api", "things", desired(records), ThingsAdapter(), base_url,
        tokens or Tokens(), concurrency=concurrency, dry_run=dry_run, retry=FAST, batch_size=batch_size,
        guard=guard,
    )  # fmt: skip


def assert_store_matches(state: Target, records: dict[str, dict]):
    docs = [o["doc"] for o in state.objects.values()]
    assert len(docs) == len(set(docs)), "duplicate creates"
    assert state.docs() == records


# --- the rules ----------------------------------------------------------------------------------------------
def test_publish_twice_without_change_sends_zero_requests_the_second_time(target, warehouse):
    state, url = target
    first = run(url, things(50))
    assert first.counts["created"] == 50 and first.counts["sent"] == 50
    assert_store_matches(state, things(50))
    before = state.seen
    second = run(url, things(50))
    assert state.seen == before
    assert second.counts["sent"] == 0 and second.planned["unchanged"] == 50


def test_desired_state_as_sql_one_changed_field_is_exactly_one_update(target, warehouse):
    state, url = target
    with connect() as con:
        con.execute(
            "create table wanted (key_hash varchar, content_hash varchar, payload json, lookup_key varchar)"
        )
        con.executemany("insert into wanted values (?, ?, ?, ?)", desired(things(20)))
    sql = "select key_hash, content_hash, payload, lookup_key from wanted"
    call = dict(adapter=ThingsAdapter(), base_url=url, token_provider=Tokens(), retry=FAST)
    publish(connect, "d1", "things-api", "things", sql, **call)
    with connect() as con:
        changed = desired(things(20, doc_0007={"value": 700}))[7]
        con.execute(
            "update wanted set content_hash = ?, payload = ? where key_hash = ?", [*changed[1:3], changed[0]]
        )
    before = state.requests.copy()
    result = publish(connect, "d1", "things-api", "things", sql, **call)
    assert result.counts["updated"] == 1 and result.counts["sent"] == 1
    assert state.requests - before == Counter(POST=1)
    assert_store_matches(state, things(20, doc_0007={"value": 700}))


def test_a_withdrawn_record_is_one_delete(target, warehouse):
    state, url = target
    run(url, things(10))
    remaining = things(10)
    del remaining["doc-0003"]
    before = state.requests.copy()
    result = run(url, remaining)
    assert result.counts["deleted"] == 1
    assert state.requests - before == Counter(DELETE=1)
    assert_store_matches(state, remaining)
    assert run(url, remaining).counts["sent"] == 0


def _publish_in_child(url: str, n: int) -> None:
    run(url, things(n), concurrency=4, batch_size=5)


def _kill_a_publish_mid_run(state, url: str) -> None:
    """SIGKILL a process publishing 120 creates once the 30 after which creates are applied but never
    answered have gone out."""
    state.hang_after_creates = 30
    child = multiprocessing.get_context("spawn").Process(target=_publish_in_child, args=(url, 120))
    child.start()
    try:
        assert state.hanging.wait(60), "the child never reached the hang"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)


def test_a_run_killed_mid_publish_and_run_again_ends_with_the_desired_state_and_no_duplicates(
    target, warehouse
):
    state, url = target
    _kill_a_publish_mid_run(state, url)
    assert 30 < len(state.objects) < 120
    state.hang_after_creates = None
    result = run(url, things(120))
    assert result.counts["resolved"] >= 1  # the applied-but-unanswered creates were found, not re-created
    assert_store_matches(state, things(120))
    assert run(url, things(120)).counts["sent"] == 0


def test_a_create_whose_connection_drops_after_it_was_applied_is_not_duplicated(target, warehouse):
    state, url = target
    state.drop_creates = 5
    result = run(url, things(30))
    assert state.drop_creates == 0
    assert result.counts["failed"] == 0 and result.counts["created"] == 30
    assert_store_matches(state, things(30))


def test_twenty_percent_429_and_500_complete_with_nothing_lost(target, warehouse):
    state, url = target
    state.fail_every = 5
    first = run(url, things(200))
    assert first.counts["failed"] == 0 and first.counts["created"] == 200
    changed = things(200, **{f"doc_{i:04d}": {"value": -1 - i} for i in range(0, 200, 4)})
    del changed["doc-0001"]
    second = run(url, changed)
    assert second.counts["failed"] == 0
    assert (second.counts["updated"], second.counts["deleted"]) == (50, 1)
    assert_store_matches(state, changed)


def test_a_400_validation_error_is_not_retried_and_is_a_top_error_cause(target, warehouse):
    state, url = target
    records = things(10, doc_0004={"code": "XX"})
    result = run(url, records)
    assert state.requests["PUT"] == 10  # one attempt for the refused record
    assert (result.counts["created"], result.counts["failed"]) == (9, 1)
    table = result.top_error_causes(5)
    assert "| create: 400 code '…' is not in table C053 | 1 |" in table
    assert "XX" not in table and "doc-0004" not in table
    again = run(url, records)  # refused content is not re-sent until it changes
    assert again.counts["sent"] == 0 and again.counts["skipped"] == 1
    fixed = run(url, things(10))
    assert fixed.counts["created"] == 1
    assert_store_matches(state, things(10))


def test_a_401_triggers_exactly_one_token_refresh(target, warehouse):
    state, url = target
    state.token = "tok-2"  # the token the provider holds (tok-1) has expired at the target
    tokens = Tokens()
    result = run(url, things(40), tokens=tokens, concurrency=8)
    assert tokens.forced == 1
    assert result.counts["created"] == 40 and result.counts["failed"] == 0


def test_dry_run_sends_nothing_and_reports_the_plan(target, warehouse):
    state, url = target
    run(url, things(10))
    wanted = things(12, doc_0002={"value": 200})
    del wanted["doc-0005"]
    before = state.seen
    result = run(url, wanted, dry_run=True)
    assert state.seen == before
    assert {k: v for k, v in result.planned.items() if v} == {
        "create": 2,
        "update": 1,
        "delete": 1,
        "unchanged": 8,
    }
    key_hash = {doc: hashlib.md5(doc.encode()).hexdigest() for doc in things(12)}
    assert len(result.actions) == 4
    assert set(result.actions) == {
        (key_hash["doc-0010"], "create"),
        (key_hash["doc-0011"], "create"),
        (key_hash["doc-0005"], "delete"),
        (key_hash["doc-0002"], "update"),
    }
    assert result.metadata()["things/planned_create"] == 2
    assert run(url, wanted).counts["sent"] == 4


# --- issue 6: withdrawn pending creates, the mass-delete guard, resync ------------------------------------
def _ledger(key_hashes=None) -> dict[str, tuple]:
    """key_hash -> (last_status, target_id, lookup_key) of the test resource."""
    with connect() as con:
        rows = con.execute(
            "select key_hash, last_status, target_id, lookup_key from ops.publish_ledger "
            "where district_id = 'd1' and resource = 'things'"
        ).fetchall()
    return {k: tuple(rest) for k, *rest in rows if key_hashes is None or k in key_hashes}


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def test_pending_creates_of_a_killed_run_withdrawn_before_the_next_run_are_deleted_or_forgotten(
    target, warehouse
):
    state, url = target
    _kill_a_publish_mid_run(state, url)
    state.hang_after_creates = None
    docs = {_md5(doc): doc for doc in things(120)}
    pending = [docs[k] for k, (status, *_) in _ledger().items() if status == "pending"]
    assert pending, "the kill left no pending create"
    applied = set(pending) & set(state.docs())
    assert applied, "no pending create had been applied"
    assert all(lookup_key == docs[k] for k, (_, _, lookup_key) in _ledger().items() if docs[k] in pending)

    remaining = {doc: r for doc, r in things(120).items() if doc not in pending}  # withdrawn meanwhile
    result = run(url, remaining)
    assert result.counts["deleted"] == len(applied)
    assert not set(pending) & set(state.docs()), "a withdrawn pending create stayed in the target"
    ledger_rows = _ledger({_md5(d) for d in pending})
    assert {ledger_rows[_md5(d)] for d in applied} == {("deleted", None, None)}
    assert not {_md5(d) for d in set(pending) - applied} & set(ledger_rows)  # never applied: forgotten
    assert result.incomplete == 0
    assert_store_matches(state, remaining)


def test_a_ledger_from_before_lookup_keys_is_migrated_and_its_pending_creates_resolved(target, warehouse):
    state, url = target
    run(url, things(5))
    with connect() as con:  # the ledger as the previous version left it: no lookup_key, one create pending
        con.execute("alter table ops.publish_ledger drop column lookup_key")
        con.execute(
            "update ops.publish_ledger set last_status = 'pending', target_id = null where key_hash = ?",
            [_md5("doc-0002")],
        )
    result = run(url, things(5))
    assert result.counts["resolved"] == 1 and result.counts["sent"] == 0
    assert _ledger({_md5("doc-0002")})[_md5("doc-0002")][:2] == (
        "sent",
        [k for k, o in state.objects.items() if o["doc"] == "doc-0002"][0],
    )
    assert_store_matches(state, things(5))


def test_a_plan_deleting_more_than_the_allowed_share_is_refused_and_sends_nothing(target, warehouse):
    state, url = target
    run(url, things(50))
    wanted = {d: r for d, r in things(51).items() if int(d[-4:]) >= 15}  # 15 of 50 withdrawn, one new
    before = state.seen
    dry = run(url, wanted, dry_run=True)
    assert dry.planned["delete"] == 15 and dry.counts["refused"] == 15  # the dry run shows the plan
    result = run(url, wanted)
    assert state.seen == before, "a refused plan sent something"
    assert result.refusal == "things-api/things: plan deletes 15 of 50 records (30%) > 20%"
    assert result.counts["refused"] == 15 and result.incomplete == 15
    metadata = result.metadata()
    assert (metadata["things/refused"], metadata["things/incomplete"]) == (15, 15)
    assert metadata["things/planned_delete"] == 15
    assert_store_matches(state, things(50))

    confirmed = run(url, wanted, guard=DeleteGuard(confirmed=True))
    assert (confirmed.counts["deleted"], confirmed.counts["created"], confirmed.refusal) == (15, 1, None)
    assert_store_matches(state, wanted)


def test_fewer_deletes_than_the_guarded_minimum_or_share_are_sent(target, warehouse):
    state, url = target
    run(url, things(20))
    small = {d: r for d, r in things(20).items() if int(d[-4:]) >= 9}  # 9 of 20: 45%, but fewer than 10
    assert run(url, small).counts["deleted"] == 9
    run(url, things(100))
    share = {d: r for d, r in things(100).items() if int(d[-4:]) >= 20}  # 20 of 100: not more than 20%
    assert run(url, share).counts["deleted"] == 20
    guard = DeleteGuard(max_share=0.5, min_deletes=3)
    assert run(url, {d: r for d, r in share.items() if int(d[-4:]) >= 70}, guard=guard).refusal is not None


def test_confirm_deletes_tag_names_all_or_target_resources():
    assert deletes_confirmed("all", "qmlativ", "disability")
    assert deletes_confirmed("qmlativ/dyslexia, qmlativ/disability", "qmlativ", "disability")
    assert not deletes_confirmed("qmlativ/dyslexia", "qmlativ", "disability")
    assert not deletes_confirmed(None, "qmlativ", "disability")


def _resync(url, records, **kwargs):
    return resync(
        connect, "d1", "things-api", "things", desired(records), ThingsAdapter(), url, Tokens(), retry=FAST,
        **kwargs,
    )  # fmt: skip


def test_resync_fixes_each_difference_between_target_ledger_and_desired_state(target, warehouse):
    state, url = target
    records = things(30)
    run(url, records)
    ids = {o["doc"]: i for i, o in state.objects.items()}
    with connect() as con:  # (a) the ledger forgets two records: one still desired, one withdrawn since
        con.execute(
            "delete from ops.publish_ledger where list_contains(?, key_hash)",
            [[_md5("doc-0001"), _md5("doc-0002")]],
        )
    del records["doc-0002"]
    state.next_id += 1
    state.objects[str(state.next_id)] = {"doc": "doc-0001", "value": 1}  # a duplicate the ledger never knew
    state.objects["900"] = {"value": "made by hand"}  # no natural key: not ours
    del state.objects[ids["doc-0003"]]  # (b) deleted in the target by hand
    state.objects[ids["doc-0004"]] = {"doc": "doc-0004", "value": "changed by hand"}  # (c)
    state.objects[ids["doc-0001"]] = {"doc": "doc-0001", "value": "changed too"}  # adopted, then updated

    dry = _resync(url, records, dry_run=True)
    assert state.objects[ids["doc-0004"]]["value"] == "changed by hand"  # a dry run changes nothing
    result = _resync(url, records)
    expected = {"adopted": 1, "deleted_orphan": 2, "recreated_missing": 1, "overwritten_changed": 1}
    assert {c: result.counts[c] for c in expected} == expected == {c: dry.counts[c] for c in expected}
    assert (result.counts["not_ours"], result.counts["failed"]) == (1, 0)
    assert state.objects.pop("900") == {"value": "made by hand"}  # left alone
    assert_store_matches(state, records)
    assert run(url, records).counts["sent"] == 0  # the ledger agrees with the target again
    assert not any(_resync(url, records).counts[c] for c in expected)


def test_resync_deleting_a_large_share_of_orphans_is_refused(target, warehouse):
    state, url = target
    run(url, things(40))
    with connect() as con:
        con.execute("delete from ops.publish_ledger")  # a lost ledger, and the desired state shrank too
    before = dict(state.objects)
    result = _resync(url, things(20))
    assert result.refusal == "things-api/things: plan deletes 20 of 40 records (50%) > 20%"
    assert result.counts["refused"] == 20 and result.counts["adopted"] == 0
    assert state.objects == before
    confirmed = _resync(url, things(20), guard=DeleteGuard(confirmed=True))
    assert (confirmed.counts["adopted"], confirmed.counts["deleted_orphan"]) == (20, 20)
    assert_store_matches(state, things(20))


def test_a_pending_create_from_before_lookup_keys_withdrawn_since_is_settled_by_the_resync(target, warehouse):
    state, url = target
    run(url, things(5))
    with connect() as con:  # left by the previous version (no lookup key), then the record is withdrawn
        con.execute("alter table ops.publish_ledger drop column lookup_key")
        con.execute(
            "update ops.publish_ledger set last_status = 'pending', target_id = null where key_hash = ?",
            [_md5("doc-0002")],
        )
    remaining = {d: r for d, r in things(5).items() if d != "doc-0002"}
    published = run(url, remaining)
    assert published.counts["pending"] == 1 and published.incomplete == 1  # cannot be looked up
    assert "doc-0002" in state.docs()
    result = _resync(url, remaining)
    assert (result.counts["deleted_orphan"], result.counts["cleared_missing"]) == (1, 1)
    assert_store_matches(state, remaining)
    assert _md5("doc-0002") in _ledger() and _ledger()[_md5("doc-0002")][0] == "deleted"
    assert run(url, remaining).incomplete == 0


# --- issue 7 §2: the whole path's cost: bytes payloads, few ledger writes, the token reused ---------------
class RawThingsAdapter(ThingsAdapter):
    """Sends the desired state's JSON text as it is (`raw_payload`): no decode and re-encode."""

    raw_payload = True

    def request(self, action, payload, target_id, etag):
        if action == "delete":
            return Request("DELETE", f"/things/{target_id}")
        assert isinstance(payload, str)  # the stored text, not a dict
        headers = {"Content-Type": "application/json"}
        if action == "create":
            return Request("PUT", "/things", headers=headers, data=payload.encode())
        return Request(
            "POST", f"/things/{target_id}", headers={**headers, "If-Match": etag}, data=payload.encode()
        )


class CountingTokens(Tokens):
    def __init__(self):
        super().__init__()
        self.asked = 0

    async def token(self, force=False):
        self.asked += 1
        return await super().token(force)


def _publish(url, records, adapter, tokens=None, **kwargs):
    return publish(
        connect, "d1", "things-api", "things", desired(records), adapter, url, tokens or Tokens(),
        concurrency=8, retry=FAST, **kwargs,
    )  # fmt: skip


def test_a_raw_payload_adapter_sends_the_stored_json_text_and_errors_stay_scrubbed(target, warehouse):
    state, url = target
    records = things(30, doc_0004={"code": "XX"})
    result = _publish(url, records, RawThingsAdapter())
    assert (result.counts["created"], result.counts["failed"]) == (29, 1)
    assert "| create: 400 code '…' is not in table C053 | 1 |" in result.top_error_causes(5)
    changed = things(30, doc_0007={"value": -7})
    again = _publish(url, changed, RawThingsAdapter())
    assert (again.counts["created"], again.counts["updated"], again.counts["failed"]) == (1, 1, 0)
    assert_store_matches(state, changed)
    assert _publish(url, changed, RawThingsAdapter()).counts["sent"] == 0


def test_the_token_provider_is_not_asked_for_every_request(target, warehouse):
    state, url = target
    tokens = CountingTokens()
    result = _publish(url, things(300), ThingsAdapter(), tokens)
    assert result.counts["created"] == 300
    assert tokens.asked < 30  # once per reuse period and worker start, not 300 times
    state.token = "tok-2"  # expired at the target: a 401 still refreshes the token at once
    changed = things(300, doc_0001={"value": -1})
    assert _publish(url, changed, ThingsAdapter(), tokens).counts["updated"] == 1
    assert tokens.forced == 1


def test_creates_are_marked_pending_before_they_are_sent_in_few_ledger_writes(target, warehouse, monkeypatch):
    """Each page's pending marks are committed before any of its creates reaches the target, and the
    results go in the same writes: a few ledger writes for 500 creates, not one per 200 twice."""
    from sg_orchestration.publish import ledger

    state, url = target
    events: list[tuple[str, str]] = []
    lock = threading.Lock()
    write = ledger.write

    def recording_write(con, district_id, target_, rows):
        write(con, district_id, target_, rows)  # committed when it returns
        with lock:
            events.extend(("pending", r[8]) for r in rows if r[4] == "pending")
            events.append(("write", ""))

    monkeypatch.setattr(ledger, "write", recording_write)

    def arrived(body):
        with lock:
            events.append(("sent", body["doc"]))

    state.on_create = arrived
    records = things(500)
    result = _publish(url, records, ThingsAdapter(), batch_size=200)
    assert result.counts["created"] == 500
    marked = [doc for kind, doc in events if kind == "pending"]
    assert sorted(marked) == sorted(records)  # every create was marked pending, once
    pending: set[str] = set()
    for kind, doc in events:
        if kind == "pending":
            pending.add(doc)
        elif kind == "sent":
            assert doc in pending, f"{doc} reached the target before its pending mark was committed"
    writes = sum(kind == "write" for kind, _ in events)
    assert writes <= 8, writes  # 3 pages (marks + results so far), the last results, a timed flush or two
    assert all(status == "sent" for status, _, _ in _ledger().values())
    assert_store_matches(state, records)


# --- the sender's HTTP/1.1 client against real sockets -------------------------------------------------------
async def _scripted_server(answers):
    """A raw TCP server on 127.0.0.1: for each request it reads (head and Content-Length body), the next
    of `answers` is written: a list of byte strings sent with a short pause between them; `close` after
    them closes the connection; None instead of a list closes without answering. Returns (stop, port,
    log) where log lists (connection number, request head, body) and `stop()` closes it all."""
    log: list[tuple[int, bytes, bytes]] = []
    script = iter(answers)
    connections = 0
    writers = []

    async def handle(reader, writer):
        nonlocal connections
        connections += 1
        writers.append(writer)
        number = connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                log.append((number, head, body))
                answer = next(script)
                if answer is None:
                    break
                for part in answer:
                    if part == b"close":
                        writer.close()
                        return
                    writer.write(part)
                    await writer.drain()
                    await asyncio.sleep(0.01)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)

    async def stop():
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()
        await asyncio.sleep(0.05)  # the handlers see their connections end

    return stop, server.sockets[0].getsockname()[1], log


def _client_run(answers, requests, timeout_s=5.0):
    """Send `requests` ((method, path, headers, body) each) one after another through `sender.Client`;
    returns (outcomes: a Reply or the exception, the server's log)."""
    from sg_orchestration.publish.sender import Client

    async def main():
        stop, port, log = await _scripted_server(answers)
        client = Client(f"http://127.0.0.1:{port}/api", 4, timeout_s)
        outcomes = []
        try:
            for method, path, headers, body in requests:
                try:
                    outcomes.append(await client.request(method, client.target(path, None), headers, body))
                except Exception as exc:
                    outcomes.append(exc)
        finally:
            await client.close()
            await stop()
        return outcomes, log

    return asyncio.run(main())


OK_LENGTH = [
    b'HTTP/1.1 201 Created\r\nContent-Length: 9\r\netag: "1"\r\nX-A: 1\r\nx-a: 2\r\n\r\n',
    b'{"id": 1}',
]
OK_CHUNKED = [
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n",
    b'{"id\r\n6;ext=1\r\n": 22}\r\n',
    b"0\r\nX-Trailer: t\r\n\r\n",
]


def test_the_client_reads_content_length_and_chunked_answers_on_one_kept_alive_connection():
    requests = [
        ("PUT", "/things", {"Content-Type": "application/json"}, b'{"a": 1}'),
        ("GET", "/things/1", {}, None),
        ("GET", "/things/2", {}, None),
        ("DELETE", "/things/3", {}, None),
    ]
    interim = [b'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nETag: "3"\r\n\r\n']
    outcomes, log = _client_run(
        [OK_LENGTH, OK_CHUNKED, [b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"], interim], requests
    )
    first, second, third, fourth = outcomes
    assert (first.status, first.body, first.headers["ETag"], first.headers.get("x-a")) == (
        201,
        b'{"id": 1}',
        '"1"',
        "1, 2",
    )
    assert (second.status, second.body) == (200, b'{"id": 22}')
    assert (third.status, third.body) == (200, b"")
    assert (fourth.status, fourth.body, fourth.headers.get("etag")) == (204, b"", '"3"')
    assert {number for number, _, _ in log} == {1}  # one connection, kept alive
    head, body = log[0][1], log[0][2]
    assert head.startswith(b"PUT /api/things HTTP/1.1\r\n") and b"\r\nContent-Length: 8\r\n" in head
    assert body == b'{"a": 1}'
    assert b"Content-Length" not in log[1][1]  # a GET without a body


def test_the_client_honours_connection_close_and_answers_ending_with_the_connection():
    requests = [("GET", "/a", {}, None), ("GET", "/b", {}, None), ("GET", "/c", {}, None)]
    answers = [
        [b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", b"close"],
        [b"HTTP/1.0 200 OK\r\n\r\nuntil ", b"the end", b"close"],  # no length: the body ends at close
        [b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes"],
    ]
    outcomes, log = _client_run(answers, requests)
    assert [(r.status, r.body) for r in outcomes] == [(200, b"ok"), (200, b"until the end"), (200, b"yes")]
    assert [number for number, _, _ in log] == [1, 2, 3]


def test_the_client_reports_a_dropped_or_garbled_or_late_answer_as_maybe_applied():
    from sg_orchestration.publish.sender import BadResponseError, ConnectError, ServerDisconnectedError

    requests = [("PUT", "/x", {}, b"{}")] * 4
    answers = [
        None,  # read, then closed unanswered
        [b"HTTP/1.1 201 Created\r\nContent-Length: 10\r\n\r\nshort", b"close"],
        [b"SMTP ready\r\n\r\n"],
        [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"],  # the body never comes: a timeout
    ]
    outcomes, _ = _client_run(answers, requests, timeout_s=0.5)
    assert [type(o) for o in outcomes] == [
        ServerDisconnectedError,
        ServerDisconnectedError,
        BadResponseError,
        TimeoutError,
    ]
    assert not any(isinstance(o, ConnectError) for o in outcomes)


def test_the_sender_retries_a_dropped_request_and_a_refused_connection_is_not_ambiguous():
    import socket

    from sg_orchestration.publish.sender import GaveUp, Sender

    class Fixed:
        async def token(self, force=False):
            return "t"

    retry = RetryPolicy(max_attempts=3, backoff_s=0.01, max_backoff_s=0.02, timeout_s=2)

    async def main():
        stop, port, log = await _scripted_server([None, OK_LENGTH])
        async with Sender(f"http://127.0.0.1:{port}", Fixed(), 2, retry) as sender:
            reply = await sender.send(Request("PUT", "/x", {"a": 1}))
        await stop()
        with socket.socket() as probe:  # a port nothing listens on
            probe.bind(("127.0.0.1", 0))
            closed_port = probe.getsockname()[1]
        async with Sender(f"http://127.0.0.1:{closed_port}", Fixed(), 2, retry) as sender:
            with pytest.raises(GaveUp) as refused:
                await sender.send(Request("PUT", "/x", {"a": 1}))
        return reply, log, refused.value

    reply, log, refused = asyncio.run(main())
    assert reply.status == 201 and len(log) == 2
    assert (
        b"\r\nAuthorization: Bearer t\r\n" in log[1][1]
        and b"\r\nContent-Type: application/json\r\n" in log[1][1]
    )
    assert json.loads(log[1][2]) == {"a": 1}
    assert not refused.ambiguous and "ConnectError" in refused.cause


def test_the_client_speaks_tls(tmp_path):
    import shutil
    import ssl
    import subprocess

    from sg_orchestration.publish.sender import Client

    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"]
        + ["-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))

    async def main():
        async def ok(request):
            return web.json_response({"echo": (await request.read()).decode()})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", ok)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_side)
        await site.start()
        port = runner.addresses[0][1]
        try:
            client = Client(f"https://localhost:{port}", 2, 5.0, trusting)
            replies = [await client.request("POST", "/x", {}, f"body {i}".encode()) for i in range(3)]
            await client.close()
            untrusted = Client(f"https://localhost:{port}", 2, 5.0)  # the system's CAs: refused
            with pytest.raises(OSError):
                await untrusted.request("GET", "/x", {}, None)
            await untrusted.close()
        finally:
            await runner.cleanup()
        return replies

    replies = asyncio.run(main())
    assert [json.loads(r.body)["echo"] for r in replies] == ["body 0", "body 1", "body 2"]


def test_a_desired_state_of_tuples_goes_into_duckdb_a_page_at_a_time(tmp_path, monkeypatch):
    """Tuples (a generator: read once) are registered page by page, and all of them, as they were."""
    import duckdb

    from sg_orchestration.publish import ledger

    monkeypatch.setattr(ledger, "DESIRED_PAGE_ROWS", 2)
    rows = [(f"k{i}", f"c{i}", json.dumps({"n": i}) if i % 2 else None, f"doc{i}") for i in range(5)]
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        ledger.register_desired(con, {"things": (r for r in rows)})
        assert (
            con.execute("select * exclude (resource) from publish_desired order by key_hash").fetchall()
            == rows
        )
        ledger.register_desired(con, {"things": iter(())})
        assert con.execute("select count(*) from publish_desired").fetchone() == (0,)
