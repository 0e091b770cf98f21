"""Qmlativ state-reporting writeback (seed 000, SPEC §4.1): one resource per screen, sent by the engine.

create `PUT /Generic/{EntityID}/{Module}/{Object}` with `{"DataObject": {...}}`; update `POST .../{ID}`;
delete `DELETE .../{ID}`; a create whose answer was lost is found again by its SourceDocumentID.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from dataclasses import dataclass
from datetime import date

import aiohttp

from sg_orchestration import error_log
from sg_orchestration.catalog import SAMEGOAL_SOURCES, Source
from sg_orchestration.config import QMLATIV_FIELDS, District, secret
from sg_orchestration.publish.engine import PublishResult, publish
from sg_orchestration.publish.sender import Reply, Request
from sg_orchestration.transform.staging import mart_name
from sg_orchestration.warehouse import connect

TARGET = "qmlativ"
FORMS = SAMEGOAL_SOURCES
EXPIRY_WARNING_DAYS = 30


class QmlativTokens:
    """One bearer token per connection: `GET /oauth/token?grant_type=client_credentials` with Basic
    key:secret, cached until a minute before it expires, fetched again when the sender says it went stale."""

    def __init__(self, base_url: str, key: str, secret_value: str):
        self._url = f"{base_url.rstrip('/')}/oauth/token"
        self._auth = aiohttp.BasicAuth(key, secret_value)
        self._token: str | None = None
        self._expires_at = 0.0
        self._locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    async def token(self, force: bool = False) -> str:
        # Each screen publishes in its own event loop; the token outlives them, a lock cannot.
        lock = self._locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
        async with lock:
            if force or self._token is None or time.monotonic() > self._expires_at - 60:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(
                        self._url, params={"grant_type": "client_credentials"}, auth=self._auth
                    ) as reply,
                ):
                    if reply.status != 200:
                        raise PermissionError(
                            f"Qmlativ token request refused: HTTP {reply.status} (check the key)"
                        )
                    body = await reply.json()
                self._token = body["access_token"]
                self._expires_at = time.monotonic() + float(body.get("expires_in", 3600))
            return self._token


@dataclass(frozen=True)
class QmlativAdapter:
    entity_id: int
    module: str
    obj: str

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

    def lookup(self, payload: dict) -> Request:
        return Request(
            "GET", f"{self.path}/1/1", params={"SourceDocumentID": str(payload["SourceDocumentID"])}
        )

    def found(self, reply: Reply) -> str | None:
        objects = json.loads(reply.body).get("Objects") or []
        return str(objects[0][f"{self.obj}ID"]) if objects else None


def desired_sql(form: Source, district_id: str) -> str:
    """The screen's desired state: key = the SameGoal document, content = the exact payload sent.

    A record that failed validation is held back: never sent, and what Qmlativ already holds for it stays
    as it is (it keeps its ledger content, so it is neither updated nor deleted) until the source is fixed.
    """
    fields = ["StudentID", "SourceDocumentID", *QMLATIV_FIELDS[form.table].values()]
    payload = "to_json({" + ", ".join(f"'{f}': \"{f}\"" for f in fields) + "})::varchar"
    held = (
        f"select record_key_hash from ops.error_log where district_id = '{district_id}' "
        f"and stage = 'validate' and target = 'qmlativ/{form.table}' and resolved_at is null"
    )
    return f"""
        with mart as (
            select md5(document_id) as key_hash, {payload} as payload
            from marts.{mart_name(form)} where district_id = '{district_id}'
        )
        select key_hash, md5(payload) as content_hash, payload from mart where key_hash not in ({held})
        union all
        select l.key_hash, l.content_hash, null from ops.publish_ledger l
        where l.district_id = '{district_id}' and l.target = '{TARGET}' and l.resource = '{form.table}'
          and l.last_status = 'sent' and l.key_hash in ({held}) and l.key_hash in (select key_hash from mart)
    """


def publish_writeback(
    district: District, dry_run: bool = False, concurrency: int = 32
) -> list[PublishResult]:
    cfg = district.qmlativ
    assert cfg and cfg.base_url, "the Qmlativ writeback needs qmlativ.base_url"
    tokens = QmlativTokens(
        cfg.base_url,
        secret(cfg.client_key_env, purpose="Qmlativ client key"),
        secret(cfg.client_secret_env, purpose="Qmlativ client secret"),
    )
    results = []
    for form in FORMS:
        names = cfg.objects[form.table]
        results.append(
            publish(
                connect,
                district.id,
                TARGET,
                form.table,
                desired_sql(form, district.id),
                QmlativAdapter(cfg.entity_id, names.module, names.object),
                cfg.base_url,
                tokens,
                concurrency=concurrency,
                dry_run=dry_run,
            )
        )
    if not dry_run:
        with connect() as con:
            record_publish_errors(con, district.id)
    return results


PUBLISH_FIX = (
    "Qmlativ refused the record: correct it at the source (SameGoal) or in the code tables; it is sent "
    "again on the next run once it changes."
)


def record_publish_errors(con, district_id: str) -> None:
    """The ledger's refused and failed records as ops.error_log rows (stage `publish`), resolved once sent."""
    con.execute(
        f"""
        create or replace temp table _sg_refused as
        select '{TARGET}/' || resource as target, key_hash as record_key_hash, null as field, null as value,
            last_error as cause, ? as fix, 'Qmlativ ' || coalesce(last_action, '') as location,
            null::bigint as load_id
        from ops.publish_ledger
        where district_id = ? and target = '{TARGET}' and last_status = 'failed'
        """,
        [PUBLISH_FIX, district_id],
    )
    error_log.sync(con, district_id, "publish", "_sg_refused", scope=f"e.target like '{TARGET}/%'")


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
