"""Qmlativ state-reporting writeback (seed 000, SPEC §4.1): one resource per screen, sent by the engine.

create `PUT /Generic/{EntityID}/{Module}/{Object}` with `{"DataObject": {...}}`; update `POST .../{ID}`;
delete `DELETE .../{ID}`; a create whose answer was lost is found again by its SourceDocumentID (the
SameGoal document id: the records' natural key). A resync pages the screen's objects
(`GET .../{Object}/{page}/{pageSize}`); those carrying a SourceDocumentID are ours.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path

import duckdb

from sg_orchestration.catalog import SAMEGOAL_SOURCES, Source
from sg_orchestration.config import QMLATIV_FIELDS, District, secret
from sg_orchestration.publish import errors, ledger
from sg_orchestration.publish.engine import (
    DeleteGuard,
    PublishResult,
    Resource,
    ResyncResult,
    deletes_confirmed,
    publish_resources,
    resync,
)
from sg_orchestration.publish.sender import Reply, Request, RetryPolicy
from sg_orchestration.publish.tokens import ClientCredentials
from sg_orchestration.transform.staging import intermediate_name, mart_name
from sg_orchestration.validate.student_mapping import MAPPING_HINT
from sg_orchestration.warehouse import connect, literal

TARGET = "qmlativ"
FORMS = SAMEGOAL_SOURCES
EXPIRY_WARNING_DAYS = 30
NATURAL_KEY = "SourceDocumentID"
LIST_PAGE_SIZE = 1000  # the Generic API's largest page
SCREEN_WORKERS = 3  # screens resynced side by side (`resync_writeback`)


def payload_fields(table: str) -> tuple[str, ...]:
    """The Qmlativ fields the writeback sends for a screen, in payload order."""
    return ("StudentID", NATURAL_KEY, *QMLATIV_FIELDS[table].values())


class QmlativTokens(ClientCredentials):
    """One bearer token per connection: `GET /oauth/token?grant_type=client_credentials` with Basic
    key:secret (`ClientCredentials`)."""

    def __init__(self, base_url: str, key: str, secret_value: str):
        super().__init__(
            f"{base_url.rstrip('/')}/oauth/token", key, secret_value, method="GET", system="Qmlativ"
        )


@dataclass(frozen=True)
class QmlativAdapter:
    entity_id: int
    module: str
    obj: str
    fields: tuple[str, ...] = ()  # what the writeback sends: what a resync compares (`fingerprint`)

    @property
    def path(self) -> str:
        return f"/Generic/{self.entity_id}/{self.module}/{self.obj}"

    def request(self, action: str, payload: dict | None, target_id: str | None, etag: str | None) -> Request:
        if action == "create":
            return Request("PUT", self.path, json={"DataObject": payload})
        if action == "update":
            return Request("POST", f"{self.path}/{target_id}", json={"DataObject": payload})
        return Request("DELETE", f"{self.path}/{target_id}")

    def applied(self, action: str, reply: Reply) -> tuple[str | None, str | None]:
        return (str(json.loads(reply.body)["ID"]) if action == "create" else None), None

    def lookup(self, natural_key: str) -> Request:
        return Request("GET", f"{self.path}/1/1", params={NATURAL_KEY: natural_key})

    def found(self, reply: Reply) -> str | None:
        objects = json.loads(reply.body).get("Objects") or []
        return str(objects[0][f"{self.obj}ID"]) if objects else None

    # --- resync: page through the screen's objects --------------------------------------------------
    def listing(self, cursor: int | None) -> Request:
        return Request("GET", f"{self.path}/{cursor or 1}/{LIST_PAGE_SIZE}")

    def listed(self, cursor: int | None, reply: Reply) -> tuple[list[dict], int | None]:
        body = json.loads(reply.body)
        paging = body.get("Paging") or {}
        return list(body.get("Objects") or []), ((cursor or 1) + 1 if paging.get("Next") else None)

    def object_id(self, obj: dict) -> str:
        return str(obj[f"{self.obj}ID"])

    def natural_key(self, obj: dict) -> str | None:
        value = obj.get(NATURAL_KEY)
        return None if value is None or str(value).strip() == "" else str(value)

    def fingerprint(self, record: dict) -> str:
        values = {f: record.get(f) for f in self.fields}
        return hashlib.md5(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def desired_sql(form: Source, district_id: str) -> str:
    """The screen's desired state: key = the SameGoal document, content = the exact payload sent.

    A record that failed validation, or whose student no longer maps to a Qmlativ student, is held back:
    never sent, and what Qmlativ already holds for it stays as it is (it keeps its ledger content, so it
    is neither updated nor deleted) until the source or the mapping is fixed. A demographics feed that
    misses a student for a night must not delete that student's state-reporting records.
    """
    fields = payload_fields(form.table)
    payload = "to_json({" + ", ".join(f"'{f}': \"{f}\"" for f in fields) + "})::varchar"
    return f"""
        with mart as (
            select md5(document_id) as key_hash, {payload} as payload, document_id as lookup_key
            from marts.{mart_name(form)} where district_id = '{district_id}'
        ), held as (
            select distinct record_key_hash as key_hash from ops.error_log
            where district_id = '{district_id}' and stage = 'validate' and target = 'qmlativ/{form.table}'
              and resolved_at is null
        ), ledger as (
            select key_hash, content_hash from ops.publish_ledger
            where district_id = '{district_id}' and target = '{TARGET}' and resource = '{form.table}'
              and target_id is not null
        ), unmapped as (
            select md5(document_id) as key_hash, document_id as lookup_key
            from intermediate.{intermediate_name(form)}
            where district_id = '{district_id}' and not_integrated_reason = {literal(MAPPING_HINT)}
        )
        select m.key_hash,
            if(h.key_hash is null, md5(m.payload), l.content_hash) as content_hash,
            if(h.key_hash is null, m.payload, null) as payload,
            m.lookup_key
        from mart m left join held h using (key_hash) left join ledger l using (key_hash)
        union all
        select u.key_hash, l.content_hash, null, u.lookup_key
        from unmapped u left join ledger l using (key_hash)
    """


def desired_versions(con, district: District) -> dict[str, str | None]:
    """Per screen, a version of what `desired_sql` reads (`engine.publish`'s `desired_version`): its text,
    where it is sent, the build ids of the mart view and the intermediate table beneath it
    (`ops.relation_builds`: a table changes only when dbt builds it; the mart is a view of that table
    only, which a test pins), the records validation holds back, and the publish code itself (a release
    plans every screen again once). None when a build id is not known (a warehouse built before the ids
    were recorded)."""
    relations = {f.table: (f"marts.{mart_name(f)}", f"intermediate.{intermediate_name(f)}") for f in FORMS}
    try:
        builds = dict(
            con.execute(
                "select relation, arg_max(build_id, built_at) from ops.relation_builds "
                "where list_contains(?, relation) group by relation",
                [[r for pair in relations.values() for r in pair]],
            ).fetchall()
        )
    except duckdb.CatalogException:  # no dbt build has recorded ids yet
        return dict.fromkeys(relations)
    held = {
        target: (n, x)
        for target, n, x in con.execute(
            "select target, count(distinct record_key_hash), bit_xor(distinct hash(record_key_hash)) "
            "from ops.error_log where district_id = ? and stage = 'validate' and resolved_at is null "
            "group by target",
            [district.id],
        ).fetchall()
    }
    versions: dict[str, str | None] = {}
    for form in FORMS:
        ids = [builds.get(r) for r in relations[form.table]]
        parts = [_code_digest(), desired_sql(form, district.id), repr(adapter(district, form))]
        parts.append(district.qmlativ.base_url)
        parts += [*ids, repr(held.get(f"{TARGET}/{form.table}"))]
        versions[form.table] = None if None in ids else hashlib.sha256("\0".join(parts).encode()).hexdigest()
    return versions


@cache
def _code_digest() -> str:
    """The publish package's source: what plans and renders the records."""
    files = sorted(Path(__file__).parent.glob("*.py"))
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()


def _tokens(district: District) -> QmlativTokens:
    cfg = district.qmlativ
    assert cfg and cfg.base_url, "the Qmlativ writeback needs qmlativ.base_url"
    return QmlativTokens(
        cfg.base_url,
        secret(cfg.client_key_env, purpose="Qmlativ client key"),
        secret(cfg.client_secret_env, purpose="Qmlativ client secret"),
    )


def adapter(district: District, form: Source) -> QmlativAdapter:
    names = district.qmlativ.objects[form.table]
    return QmlativAdapter(district.qmlativ.entity_id, names.module, names.object, payload_fields(form.table))


def delete_guard(district: District, form: Source, confirm_deletes: str | None) -> DeleteGuard:
    """The district's mass-delete guard for a screen; `confirm_deletes`: the `sg/confirm_deletes` tag."""
    guards = district.publish
    return DeleteGuard(
        guards.max_delete_share,
        guards.min_deletes_guarded,
        confirmed=deletes_confirmed(confirm_deletes, TARGET, form.table),
    )


def publish_writeback(
    district: District,
    dry_run: bool = False,
    concurrency: int = 32,
    *,
    confirm_deletes: str | None = None,
    retry: RetryPolicy | None = None,
) -> list[PublishResult]:
    """Every screen's changes, in one engine run (`engine.publish_resources`: the screens are planned
    together and their requests share `concurrency`); a screen whose plan the mass-delete guard refuses
    sends nothing (its result's `refusal` says why) while the others publish. Results in FORMS order."""
    with connect() as con:
        ledger.ensure_ledger(con)
        versions = desired_versions(con, district)
        screens = [
            Resource(
                form.table,
                desired_sql(form, district.id),
                adapter(district, form),
                delete_guard(district, form, confirm_deletes),
                versions[form.table],
            )
            for form in FORMS
        ]
        results = publish_resources(
            lambda: nullcontext(con),
            district.id,
            TARGET,
            screens,
            district.qmlativ.base_url,
            _tokens(district),
            concurrency=concurrency,
            dry_run=dry_run,
            retry=retry,
        )
        if not dry_run:
            record_publish_errors(con, district.id)
    return results


def resync_writeback(
    district: District,
    dry_run: bool = False,
    concurrency: int = 32,
    *,
    confirm_deletes: str | None = None,
    retry: RetryPolicy | None = None,
) -> list[ResyncResult]:
    """Reconcile every screen with what Qmlativ holds (`engine.resync`), `SCREEN_WORKERS` screens at a
    time, each on a cursor of one warehouse connection: a resync mostly waits on the listing of its
    screen. Each screen writes only its own ledger rows, so they never conflict; the results are in
    FORMS order, and a screen that raises does not stop the others (its exception is raised once they
    are done). `concurrency` bounds the requests in flight to Qmlativ for the whole resync."""
    tokens = _tokens(district)
    per_screen = -(-concurrency // SCREEN_WORKERS)
    with connect() as con:
        ledger.ensure_ledger(con)

        def one(form: Source) -> ResyncResult:
            with ledger.cursor(con) as cursor:
                return resync(
                    lambda: nullcontext(cursor),
                    district.id,
                    TARGET,
                    form.table,
                    desired_sql(form, district.id),
                    adapter(district, form),
                    district.qmlativ.base_url,
                    tokens,
                    concurrency=per_screen,
                    dry_run=dry_run,
                    retry=retry,
                    guard=delete_guard(district, form, confirm_deletes),
                )

        with ThreadPoolExecutor(SCREEN_WORKERS, thread_name_prefix="qmlativ-screen") as pool:
            futures = [pool.submit(one, form) for form in FORMS]
        results = [f.result() for f in futures]  # all have ended: the first failure, if any, raises
        if not dry_run:
            record_publish_errors(con, district.id)
    return results


# The fix for a record that did not reach Qmlativ, by cause (ops.error_log `fix`).
PUBLISH_FIXES = {
    "refused": "Qmlativ refused the record (a 4xx answer): correct it at the source (SameGoal) or in the "
    "code tables; it is sent again on the next run once it changes.",
    "access": "Qmlativ refused the Integration Access (401/403): check the key, the secret and the "
    "access's rights in Qmlativ; the record is sent on the next run once access works.",
    "transient": "Qmlativ did not answer or kept failing (timeouts, 5xx, 429) until the run gave up: "
    "nothing to correct, it is retried automatically on the next run.",
    "lookup": "A create was sent but its answer was lost and Qmlativ could not be asked whether it was "
    "applied: it is looked up on the next run automatically (never created twice).",
    "gone": "The record is no longer in Qmlativ (deleted there by hand): the resync job sends it again "
    "(launch `resync` for the district, or wait for its scheduled resync).",
}


def record_publish_errors(con, district_id: str) -> None:
    """The ledger's refused, failed and unresolved pending Qmlativ records as ops.error_log rows."""
    errors.record(con, district_id, TARGET, "Qmlativ", PUBLISH_FIXES)


def access_expiry_status(expires: date, today: date) -> tuple[bool, str | None]:
    """(passed, warning) for the Integration Access expiry: a warning 30 days ahead, a failure after it."""
    days = (expires - today).days
    if days < 0:
        return False, f"the Qmlativ Integration Access expired on {expires}: extend it in Qmlativ"
    if days <= EXPIRY_WARNING_DAYS:
        return (
            True,
            f"the Qmlativ Integration Access expires in {days} days ({expires}): extend it in Qmlativ",
        )
    return True, None
