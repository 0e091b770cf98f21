"""The publish engine every target shares (SPEC §5): diff, send, record, report.

One call of `publish` handles one (district, target, resource):
1. pending creates left by a killed run are resolved with the adapter's lookup (found: recorded as sent;
   not found: planned again), so a re-run never creates a duplicate;
2. the desired state is diffed against `ops.publish_ledger` in SQL (`ledger.plan`);
3. creates are marked `pending` a chunk at a time, in their own transaction, before they are sent;
4. requests go out `concurrency` at a time (`sender.Sender`) and results are written to the ledger as
   they arrive, in batches of `batch_size` or every `flush_s` seconds, each batch one transaction: a kill
   loses at most the unwritten batch, whose requests the next run re-sends (updates, deletes) or looks up
   (creates).

Nothing here logs or reports a key or a payload: counts, key hashes and error causes (HTTP status and the
target's short message, with any payload value scrubbed out) only.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import duckdb

from sg_orchestration.publish import ledger
from sg_orchestration.publish.sender import GaveUp, Reply, Request, RetryPolicy, Sender, TokenProvider

log = logging.getLogger(__name__)

CAUSE_CHARS = 120
ConnectionFactory = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]


class Adapter(Protocol):
    """How one target resource is written: pure functions from ledger state to requests and back."""

    def request(self, action: str, payload: dict | None, target_id: str | None, etag: str | None) -> Request:
        """The request for `create` / `update` (payload given) or `delete` (payload None)."""

    def applied(self, action: str, reply: Reply) -> tuple[str | None, str | None]:
        """(target id, etag) from a 2xx answer; the id may be None for an update or delete."""

    def lookup(self, payload: dict) -> Request:
        """The request that finds an existing object by the record's natural key (e.g. SourceDocumentID)."""

    def found(self, reply: Reply) -> str | None:
        """The target id in a 2xx lookup answer, or None when the target does not have the record."""


@dataclass
class PublishResult:
    """Counts for one resource. `planned`: create/update/delete/unchanged/skipped from the diff.
    `counts`: sent (requests that succeeded), created, updated, deleted, resolved (pending creates found
    applied), skipped (refused before and unchanged), unchanged, failed. `actions`: the dry run's
    (key_hash, action) pairs."""

    district_id: str
    target: str
    resource: str
    dry_run: bool
    planned: dict[str, int] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    actions: list[tuple[str, str]] = field(default_factory=list)

    def top_error_causes(self, n: int = 10) -> str:
        """A markdown table of the `n` commonest causes (status and short message), for Dagster metadata."""
        lines = ["| cause | count |", "| --- | ---: |"]
        lines += ["| {} | {} |".format(c.replace("|", "\\|"), k) for c, k in self.errors.most_common(n)]
        return "\n".join(lines) if self.errors else "No errors."

    def metadata(self) -> dict[str, Any]:
        """Flat values for a Dagster materialization (wrap `top_error_causes` in `MetadataValue.md`)."""
        names = (
            "sent",
            "created",
            "updated",
            "deleted",
            "resolved",
            "skipped",
            "unchanged",
            "pending",
            "failed",
        )
        source = self.planned if self.dry_run else self.counts
        values: dict[str, Any] = {f"{self.resource}/{k}": int(source.get(k, 0)) for k in names}
        if self.dry_run:
            values.update({f"{self.resource}/planned_{a}": n for a, n in self.planned.items()})
        values[f"{self.resource}/top_error_causes"] = self.top_error_causes()
        return values


def publish(
    con_factory: ConnectionFactory,
    district_id: str,
    target: str,
    resource: str,
    desired: ledger.Desired,
    adapter: Adapter,
    base_url: str,
    token_provider: TokenProvider,
    *,
    concurrency: int = 16,
    dry_run: bool = False,
    retry: RetryPolicy | None = None,
    retry_rejected: bool = False,
    batch_size: int = 200,
    flush_s: float = 0.5,
) -> PublishResult:
    """Publish one resource's desired state; runs its own asyncio loop (call it from a sync asset).

    `con_factory()` is a context manager yielding a DuckDB connection (e.g. `warehouse.connect`); one is
    held for the run to write the ledger. `desired` is a SQL query or table name with columns
    (key_hash, content_hash, payload JSON), or such tuples. `retry_rejected` re-sends records a target
    refused with a 4xx even though they have not changed.
    """
    run = _Run(
        district_id,
        target,
        resource,
        adapter,
        base_url,
        token_provider,
        concurrency,
        retry or RetryPolicy(),
        batch_size,
        flush_s,
    )
    with con_factory() as con:
        ledger.ensure_ledger(con)
        ledger.register_desired(con, desired)
        run.con = con
        return asyncio.run(run.run(dry_run, retry_rejected))


class _Run:
    def __init__(
        self, district_id, target, resource, adapter, base_url, tokens, concurrency, retry, batch, flush_s
    ):
        self.scope = (district_id, target, resource)
        self.adapter: Adapter = adapter
        self.base_url = base_url
        self.tokens = tokens
        self.concurrency = concurrency
        self.retry = retry
        self.batch_size = batch
        self.flush_s = flush_s
        self.con: duckdb.DuckDBPyConnection
        self.result = PublishResult(district_id, target, resource, dry_run=False)
        self.buffer: list[tuple] = []

    async def run(self, dry_run: bool, retry_rejected: bool) -> PublishResult:
        result = self.result
        result.dry_run = dry_run
        if dry_run:
            result.planned = ledger.plan(self.con, *self.scope, retry_rejected=retry_rejected)
            result.actions = self.con.execute(
                f"select key_hash, action from {ledger.PLAN_TABLE} order by seq"
            ).fetchall()
            return result
        async with Sender(self.base_url, self.tokens, self.concurrency, self.retry) as self.sender:
            try:
                await self._resolve_pending()
                result.planned = ledger.plan(self.con, *self.scope, retry_rejected=retry_rejected)
                result.counts.update({k: result.planned[k] for k in ("unchanged", "skipped", "pending")})
                await self._send_plan()
            finally:
                self._flush()  # a cancelled or failing run still keeps what it heard back
        log.info("publish %s/%s/%s: %s", *self.scope, dict(result.counts))
        return result

    # --- pending creates from a run that did not finish ---------------------------------------------
    async def _resolve_pending(self) -> None:
        district_id, target, resource = self.scope
        pending = self.con.execute(
            """
            select l.key_hash, l.content_hash, d.payload::varchar
            from ops.publish_ledger l left join publish_desired d using (key_hash)
            where l.district_id = ? and l.target = ? and l.resource = ? and l.last_status = 'pending'
            """,
            [district_id, target, resource],
        ).fetchall()
        absent: list[str] = []

        async def resolve(key_hash: str, content_hash: str, payload: str | None) -> None:
            if payload is None:
                # Withdrawn before we could look it up (the lookup needs the natural key): the target's
                # resync reconciles it.
                self._failed(
                    key_hash, "resolve", "pending create withdrawn", content_hash, None, None, "failed"
                )
                return
            try:
                target_id = await self._lookup(json.loads(payload))
            except GaveUp as exc:
                self.result.errors[f"lookup {exc.cause}"] += 1
                return  # stays pending; creates are not planned for it until it is resolved
            if target_id is None:
                absent.append(key_hash)
            else:
                self.result.counts["resolved"] += 1
                self._record(key_hash, content_hash, target_id, None, "sent", "resolve", None)

        await asyncio.gather(*(resolve(*row) for row in pending))
        self._flush()
        ledger.forget(self.con, *self.scope, absent)

    async def _lookup(self, payload: dict) -> str | None:
        reply = await self.sender.send(self.adapter.lookup(payload))
        if not 200 <= reply.status < 300:
            raise GaveUp(f"{reply.status} on lookup", ambiguous=True)
        return self.adapter.found(reply)

    # --- the plan --------------------------------------------------------------------------------------
    async def _send_plan(self) -> None:
        queue: asyncio.Queue = asyncio.Queue(maxsize=2 * self.concurrency)

        async def produce() -> None:
            seq = 0
            while rows := self.con.execute(
                f"select seq, key_hash, action, content_hash, payload, target_id, etag, held_hash "
                f"from {ledger.PLAN_TABLE} where seq > ? order by seq limit ?",
                [seq, self.batch_size],
            ).fetchall():
                seq = rows[-1][0]
                # Committed before any of these creates is sent: a kill leaves them to be looked up.
                creates = [r for r in rows if r[2] == "create"]
                ledger.write(
                    self.con,
                    *self.scope,
                    [(r[1], r[3], None, None, "pending", "create", None, None) for r in creates],
                )
                for row in rows:
                    await queue.put(row[1:])
            for _ in range(self.concurrency):
                await queue.put(None)

        async def work() -> None:
            while (item := await queue.get()) is not None:
                await self._perform(*item)

        async def tick() -> None:
            while True:
                await asyncio.sleep(self.flush_s)
                self._flush()

        ticker = asyncio.create_task(tick())
        try:
            await asyncio.gather(produce(), *(work() for _ in range(self.concurrency)))
        finally:
            ticker.cancel()

    async def _perform(
        self, key_hash, action, content_hash, payload_json, target_id, etag, held_hash
    ) -> None:
        payload = json.loads(payload_json) if payload_json is not None else None
        found: list[str] = []

        async def recover() -> bool:
            if (existing := await self._lookup(payload)) is not None:
                found.append(existing)
            return bool(found)

        try:
            request = self.adapter.request(action, payload, target_id, etag)
            reply = await self.sender.send(request, recover if action == "create" else None)
            if reply is None:  # an unanswered create had been applied
                self._succeeded(key_hash, action, content_hash, found[0], None)
            elif 200 <= reply.status < 300 or (action == "delete" and reply.status in (404, 410)):
                new_id, new_etag = self.adapter.applied(action, reply) if reply.status < 300 else (None, None)
                if action == "create" and new_id is None:
                    raise GaveUp(f"{reply.status} answer without an id", ambiguous=True)
                self._succeeded(key_hash, action, content_hash, new_id or target_id, new_etag)
            else:
                cause = _cause(reply, payload)
                held = (None, None, None) if action == "create" else (held_hash, target_id, etag)
                self._failed(key_hash, action, cause, *held, "failed", content_hash or ledger.WITHDRAWN)
        except GaveUp as exc:
            if action == "create":
                # Maybe applied: stays pending for the next run's lookup. Certainly not: planned afresh.
                status = "pending" if exc.ambiguous else "failed"
                self._failed(
                    key_hash, action, exc.cause, content_hash if exc.ambiguous else None, None, None, status
                )
            else:
                self._failed(key_hash, action, exc.cause, held_hash, target_id, etag, "failed")
        except Exception as exc:  # an adapter bug or an unreadable answer: one record fails, not the run
            held = (None, None, None) if action == "create" else (held_hash, target_id, etag)
            self._failed(key_hash, action, f"client error {type(exc).__name__}", *held, "failed")

    def _succeeded(self, key_hash, action, content_hash, target_id, etag) -> None:
        counts = self.result.counts
        counts["sent"] += 1
        counts[{"create": "created", "update": "updated", "delete": "deleted"}[action]] += 1
        if action == "delete":
            self._record(key_hash, None, None, None, "deleted", action, None)
        else:
            self._record(key_hash, content_hash, target_id, etag, "sent", action, None)

    def _failed(self, key_hash, action, cause, content_hash, target_id, etag, status, rejected=None) -> None:
        self.result.counts["failed"] += 1
        self.result.errors[f"{action}: {cause}"] += 1
        self._record(key_hash, content_hash, target_id, etag, status, action, cause, rejected)

    # --- the ledger ------------------------------------------------------------------------------------
    def _record(self, key_hash, content_hash, target_id, etag, status, action, error, rejected=None) -> None:
        self.buffer.append((key_hash, content_hash, target_id, etag, status, action, error, rejected))
        if len(self.buffer) >= self.batch_size:
            self._flush()

    def _flush(self) -> None:
        rows, self.buffer = self.buffer, []
        ledger.write(self.con, *self.scope, rows)


def _cause(reply: Reply, payload: dict | None) -> str:
    """Status and the target's short message, with any of the record's values scrubbed out."""
    message = ""
    try:
        body = json.loads(reply.body)
    except ValueError:
        body = None
    if isinstance(body, dict):
        errors = body.get("validationErrors")
        if isinstance(errors, dict) and errors:
            name, texts = next(iter(errors.items()))
            message = f"{name}: {texts[0] if isinstance(texts, list) and texts else texts}"
        else:
            message = next((str(body[k]) for k in ("message", "detail", "title", "error") if body.get(k)), "")
    elif reply.body and not reply.body.lstrip().startswith(b"<"):
        message = reply.body.decode("utf-8", "replace")
    for value in sorted(_values(payload), key=len, reverse=True):
        message = message.replace(value, "…")
    message = " ".join(message.split())[:CAUSE_CHARS]
    return f"{reply.status} {message}".strip()


def _values(payload: Any) -> set[str]:
    """Every scalar in the payload as text (two characters or more), to keep it out of error causes."""
    if isinstance(payload, dict):
        return set().union(*(_values(v) for v in payload.values()))
    if isinstance(payload, list):
        return set().union(*(_values(v) for v in payload))
    text = "" if payload is None or isinstance(payload, bool) else str(payload)
    return {text} if len(text) >= 2 else set()
