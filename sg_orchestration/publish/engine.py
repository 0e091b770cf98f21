"""The publish engine every target shares (SPEC §5): diff, send, record, report.

One call of `publish` handles one (district, target, resource):
1. pending creates left by a killed run are resolved with the adapter's lookup by the natural key the
   ledger keeps for them (found: recorded as sent, then updated or, when withdrawn meanwhile, deleted by
   the plan; not found: forgotten, so planned again when still wanted), so a re-run never creates a
   duplicate and never leaves a withdrawn record in the target;
2. the desired state is diffed against `ops.publish_ledger` in SQL (`ledger.plan`);
   a plan that would delete a large share of what the target holds is refused (`DeleteGuard`) unless
   confirmed;
3. the plan is read a page of `batch_size` requests at a time; a page's creates are marked `pending`
   (with their natural key), committed, before any request of the page is sent;
4. requests go out `concurrency` at a time (`sender.Sender`) and results are written to the ledger as
   they arrive: with the next page's pending marks (one ledger write, one transaction, for both), when
   `2 * batch_size` are waiting, or `flush_s` seconds after the last write. A kill loses at most those
   unwritten results, whose requests the next run re-sends (updates, deletes) or looks up (creates: they
   are still `pending` in the ledger). Each ledger write costs DuckDB a few milliseconds whatever its size,
   so the engine makes few and large ones.

`resync` compares what the target actually holds (the adapter lists it) with the ledger and the desired
state, and fixes each difference (see `RESYNC_CAUSES`).

Nothing here logs or reports a key or a payload: counts, key hashes and error causes (HTTP status and the
target's short message, with any payload value scrubbed out) only. The ledger keeps a natural key only
while a create is pending (`ledger.py`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import duckdb

from sg_orchestration.publish import ledger
from sg_orchestration.publish.sender import GaveUp, Reply, Request, RetryPolicy, Sender, TokenProvider
from sg_orchestration.warehouse import literal, text_rows

log = logging.getLogger(__name__)

CAUSE_CHARS = 120
ConnectionFactory = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]

# The run tag that confirms a plan the mass-delete guard refuses: `all`, or `target/resource` names
# separated by commas (e.g. `qmlativ/disability,qmlativ/dyslexia`). `sg-orch run --confirm-deletes` sets it.
CONFIRM_DELETES_TAG = "sg/confirm_deletes"
# What a resync fixes, one count each (see `resync`); `cleared_missing` is a ledger row of a withdrawn or
# held-back record whose object is gone from the target: recorded as deleted, nothing to send.
RESYNC_CAUSES = ("adopted", "deleted_orphan", "recreated_missing", "overwritten_changed", "cleared_missing")
RESYNC_TABLE = "publish_resync"


class ResyncError(RuntimeError):
    """A resync that could not list the target: nothing was changed."""


class Adapter(Protocol):
    """How one target resource is written: pure functions from ledger state to requests and back.

    An adapter with a true `raw_payload` attribute is given the payload as the desired state's JSON text
    (`str`) instead of a decoded `dict`, and sends it as it is (`Request.data`): no decode and re-encode
    per request when the target takes the stored JSON unchanged."""

    def request(self, action: str, payload: dict | None, target_id: str | None, etag: str | None) -> Request:
        """The request for `create` / `update` (payload given) or `delete` (payload None)."""

    def applied(self, action: str, reply: Reply) -> tuple[str | None, str | None]:
        """(target id, etag) from a 2xx answer; the id may be None for an update or delete."""

    def lookup(self, natural_key: str) -> Request:
        """The request that finds an existing object by the record's natural key (the desired state's
        `lookup_key`, e.g. Qmlativ's SourceDocumentID). Works without the payload: a pending create may
        have been withdrawn from the desired state before it is looked up."""

    def found(self, reply: Reply) -> str | None:
        """The target id in a 2xx lookup answer, or None when the target does not have the record."""


class ListingAdapter(Adapter, Protocol):
    """An adapter that can also list what the target holds for the resource, for `resync`."""

    def listing(self, cursor: Any | None) -> Request:
        """The request for the first page (`cursor` None) or the page `cursor` names."""

    def listed(self, cursor: Any | None, reply: Reply) -> tuple[list[dict], Any | None]:
        """The objects of a 2xx page answer and the cursor of the next page (None after the last)."""

    def object_id(self, obj: dict) -> str:
        """The target id of a listed object."""

    def natural_key(self, obj: dict) -> str | None:
        """The natural key of a listed object (matching the desired state's `lookup_key`), or None when
        it carries none: an object somebody else made, which a resync leaves alone."""

    def fingerprint(self, record: dict) -> str:
        """A hash of the fields this integration writes, of a listed object or of a payload: equal when
        the target holds what the payload says."""


class ChangeQueryAdapter(ListingAdapter, Protocol):
    """A listing adapter whose target answers change queries (the Ed-Fi ODS/API's): a resync after one
    that recorded the target's change version reads only the objects changed since, and the ids of the
    objects deleted (or whose natural key changed) since, instead of paging through everything. A 400 or
    404 answer to any of these requests means the target does not answer them: the resync pages through
    everything instead."""

    def change_versions(self) -> Request:
        """The request for the target's change versions."""

    def newest(self, reply: Reply) -> int:
        """The newest change version in a 2xx answer to `change_versions`."""

    def changes(self, kind: str, window: tuple[int, int], cursor: Any | None) -> Request:
        """The page `cursor` (None: the first) of the changes of `kind` within the change versions
        `window` (both included): `changed` (objects, as `listing` gives them), or a kind of `REMOVALS`
        (items `removed_id` reads). Paged with `listed`."""

    def removed_id(self, item: dict) -> str:
        """The target id of an item of a removals page."""


# What a change-query resync reads besides the changed objects: objects deleted, and objects whose natural
# key changed (their ledger row's key is no longer what the target holds: missing, and the object unknown).
REMOVALS = ("deletes", "keyChanges")


class OptimisticAdapter(Adapter, Protocol):
    """An adapter whose updates and deletes carry the etag the ledger holds (`If-Match`): a 412 answer
    (changed since) is followed by one read of the object and one more try with its current etag."""

    def current(self, target_id: str) -> Request:
        """The request that reads the object `target_id`."""

    def etag(self, reply: Reply) -> str | None:
        """The current etag in a 2xx read answer."""


@dataclass(frozen=True)
class DeleteGuard:
    """Refuse a plan that deletes more than `max_share` of what the target holds for the resource, when
    it deletes at least `min_deletes` records (a few deletes in a small resource are normal), unless
    `confirmed` (see `CONFIRM_DELETES_TAG`)."""

    max_share: float = 0.2
    min_deletes: int = 10
    confirmed: bool = False

    def refusal(self, name: str, deletes: int, held: int) -> str | None:
        """The one-line reason a plan of `deletes` out of `held` is refused, or None when it may go."""
        if self.confirmed or deletes < self.min_deletes or deletes <= self.max_share * held:
            return None
        share = deletes / held if held else 1.0
        return f"{name}: plan deletes {deletes} of {held} records ({share:.0%}) > {self.max_share:.0%}"


def deletes_confirmed(tag_value: str | None, target: str, resource: str) -> bool:
    """Whether the `CONFIRM_DELETES_TAG` value confirms the deletes of `target/resource`."""
    names = {n.strip() for n in (tag_value or "").split(",") if n.strip()}
    return "all" in names or f"{target}/{resource}" in names


def confirm_hint(name: str) -> str:
    return f"confirm with run tag {CONFIRM_DELETES_TAG}={name} or `sg-orch run --confirm-deletes {name}`"


@dataclass
class PublishResult:
    """Counts for one resource. `planned`: create/update/delete/unchanged/skipped/pending from the diff.
    `counts`: sent (requests that succeeded), created, updated, deleted, resolved (pending creates found
    applied), skipped (refused before and unchanged), unchanged, held (failing validation: what the
    target holds stays as it is), pending (creates whose outcome is still
    unknown: looked up on the next run), failed, refused (deletes of a plan the mass-delete guard
    refused: nothing of that plan was sent). `refusal`: the guard's one-line reason. `actions`: the dry
    run's (key_hash, action) pairs."""

    district_id: str
    target: str
    resource: str
    dry_run: bool
    planned: dict[str, int] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    actions: list[tuple[str, str]] = field(default_factory=list)
    refusal: str | None = None
    settled: bool = False  # nothing changed since a publish that left nothing to do: not planned again

    @property
    def name(self) -> str:
        return f"{self.target}/{self.resource}"

    @property
    def incomplete(self) -> int:
        """Records this run leaves not as desired: failed, pending, refused before and unchanged (still not
        in the target), and the deletes the mass-delete guard refused."""
        source = self.planned if self.dry_run else self.counts
        left = sum(int(source.get(k, 0)) for k in ("failed", "pending", "skipped"))
        return left + int(self.counts.get("refused", 0))

    def top_error_causes(self, n: int = 10) -> str:
        """A markdown table of the `n` commonest causes (status and short message), for Dagster metadata."""
        lines = ["| cause | count |", "| --- | ---: |"]
        lines += ["| {} | {} |".format(c.replace("|", "\\|"), k) for c, k in self.errors.most_common(n)]
        return "\n".join(lines) if self.errors else "No errors."

    def metadata(self, label: str | None = None) -> dict[str, Any]:
        """Flat values for a Dagster materialization (wrap `top_error_causes` in `MetadataValue.md`), each
        `{label}/{count}`, the label the resource unless given (a target of several connections names
        the connection too)."""
        label = label or self.resource
        names = (
            "sent",
            "created",
            "updated",
            "deleted",
            "resolved",
            "skipped",
            "unchanged",
            "held",
            "pending",
            "failed",
        )
        source = self.planned if self.dry_run else self.counts
        values: dict[str, Any] = {f"{label}/{k}": int(source.get(k, 0)) for k in names}
        values[f"{label}/refused"] = int(self.counts.get("refused", 0))
        values[f"{label}/incomplete"] = self.incomplete
        if self.dry_run or self.refusal:
            values.update({f"{label}/planned_{a}": n for a, n in self.planned.items()})
        values[f"{label}/top_error_causes"] = self.top_error_causes()
        return values


@dataclass
class ResyncResult:
    """What one resource's resync found and fixed. `counts`: one per `RESYNC_CAUSES` (fixed, or planned in
    a dry run), plus listed (objects the target holds), not_ours (listed objects without a natural key:
    left alone), failed (fixes whose request failed; the next resync tries again), refused (orphan
    deletes the mass-delete guard refused: nothing was fixed)."""

    district_id: str
    target: str
    resource: str
    dry_run: bool
    counts: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    refusal: str | None = None
    read: str = "full"  # how the target was read: `full` (paged through) or `changes` (change queries)

    @property
    def name(self) -> str:
        return f"{self.target}/{self.resource}"

    def metadata(self, label: str | None = None) -> dict[str, int | str]:
        """Flat counts under `{label}/` (default: the resource's name), and how the target was read."""
        label = label or self.resource
        names = ("listed", "not_ours", *RESYNC_CAUSES, "failed", "refused")
        return {f"{label}/{k}": int(self.counts.get(k, 0)) for k in names} | {f"{label}/read": self.read}


@dataclass(frozen=True)
class Resource:
    """One resource of a target for `publish_resources`: as `publish`'s arguments of the same names."""

    name: str
    desired: ledger.Desired
    adapter: Adapter
    guard: DeleteGuard | None = DeleteGuard()  # noqa: RUF009 - frozen
    desired_version: str | None = None


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
    guard: DeleteGuard | None = DeleteGuard(),  # noqa: B008 - frozen
    desired_version: str | None = None,
    **options: Any,
) -> PublishResult:
    """Publish one resource's desired state; runs its own asyncio loop (call it from a sync asset).

    `con_factory()` is a context manager yielding a DuckDB connection (e.g. `warehouse.connect`); one is
    held for the run to write the ledger. `desired` is a SQL query or table name with columns
    (key_hash, content_hash, payload JSON, lookup_key), or such tuples (`ledger.register_desired`).
    `guard` (None: no guard) refuses a plan deleting too much: nothing of it is sent, `refusal` says why.
    `options`: those of `publish_resources` (concurrency, dry_run, retry, retry_rejected: re-send records
    a target refused with a 4xx even though they have not changed, batch_size, flush_s).

    `desired_version`: a digest of everything `desired` is computed from (the caller's promise: the same
    version, the same desired state). A run that leaves nothing failed or pending records it with the
    ledger's state (`ledger.settle`); while both stay the same, a later run reports the counts its plan
    would give, without evaluating the desired state or planning (an unchanged night costs one query).
    """
    only = Resource(resource, desired, adapter, guard, desired_version)
    (result,) = publish_resources(
        con_factory, district_id, target, [only], base_url, token_provider, **options
    )
    return result


def publish_resources(
    con_factory: ConnectionFactory,
    district_id: str,
    target: str,
    resources: list[Resource],
    base_url: str,
    token_provider: TokenProvider,
    *,
    concurrency: int = 16,
    dry_run: bool = False,
    retry: RetryPolicy | None = None,
    retry_rejected: bool = False,
    batch_size: int = 2000,
    flush_s: float = 2.0,
) -> list[PublishResult]:
    """Publish several resources of one target in one run, each as `publish` describes (its own plan,
    guard, counts, settled state), results in the order of `resources`: one connection, one event loop
    and one sender (`concurrency` requests in flight for them all), and each step one SQL statement for
    every resource. A statement costs DuckDB a millisecond or more whatever its size, a commit a few: ten
    screens planned one after another cost ten times the statements of ten planned at once."""
    settles = not dry_run and not retry_rejected
    results: dict[str, PublishResult] = {}
    with con_factory() as con:
        ledger.ensure_ledger(con)
        if settles:
            versions = {r.name: r.desired_version for r in resources if r.desired_version is not None}
            for name, kept in ledger.kept(con, district_id, target, versions).items():
                results[name] = settled_result(district_id, target, name, kept)
        to_do = [r for r in resources if r.name not in results]
        if to_do:
            ledger.register_desired(con, {r.name: r.desired for r in to_do})
            run = _Run(
                con,
                district_id,
                target,
                to_do,
                base_url,
                token_provider,
                concurrency,
                retry,
                batch_size,
                flush_s,
            )
            results.update(asyncio.run(run.run(dry_run, retry_rejected)))
            if settles:
                settled = {
                    r.name: (r.desired_version, counts)
                    for r in to_do
                    if r.desired_version is not None and (counts := _settles(results[r.name])) is not None
                }
                ledger.settle(con, district_id, target, settled)
    return [results[r.name] for r in resources]


def _settles(result: PublishResult) -> dict | None:
    """What the next plan of the same desired state gives, when this run left nothing to do (what it
    created or updated is then unchanged); None when it left something failed, pending or refused."""
    done = result.counts
    if result.refusal or done["failed"] or done["pending"] or done["refused"]:
        return None
    unchanged = done["unchanged"] + done["created"] + done["updated"]
    return {"unchanged": unchanged, "skipped": done["skipped"], "held": done["held"]}


def settled_result(district_id: str, target: str, resource: str, kept: dict) -> PublishResult:
    """The result of a resource settled since its last publish (`ledger.kept`): the counts its plan gives."""
    log.info("publish %s/%s/%s: settled, nothing to send: %s", district_id, target, resource, kept)
    planned = {**dict.fromkeys((*ledger.ACTIONS, "pending"), 0), **kept}
    return PublishResult(
        district_id, target, resource, dry_run=False, planned=planned, counts=Counter(kept), settled=True
    )


def resync(
    con_factory: ConnectionFactory,
    district_id: str,
    target: str,
    resource: str,
    desired: ledger.Desired,
    adapter: ListingAdapter,
    base_url: str,
    token_provider: TokenProvider,
    *,
    concurrency: int = 16,
    dry_run: bool = False,
    retry: RetryPolicy | None = None,
    guard: DeleteGuard | None = DeleteGuard(),  # noqa: B008 - frozen
    batch_size: int = 2000,
    flush_s: float = 2.0,
    mapped: str | None = None,
    full: bool = False,
) -> ResyncResult:
    """Reconcile one resource: list what the target holds and fix every difference with the ledger and
    the desired state (arguments as for `publish`). Pending creates are resolved first, as in `publish`.

    - adopted: an object carrying a natural key the ledger knows no object for, whose key is desired: its
      target id is recorded, and it is updated when its content differs (a second object with the same
      key is an orphan); or an object the target's own id mapping (`mapped`) names that the ledger lost:
      its row is recorded again (no content: the next publish updates it, or deletes it if withdrawn);
    - deleted_orphan: an object with a natural key that is neither desired (or is a duplicate) nor known
      to the ledger or `mapped`: deleted;
    - recreated_missing: a ledger (or `mapped`) row whose object is gone from the target, still desired:
      created again;
    - cleared_missing: the same for a record no longer desired or held back: recorded as deleted;
    - overwritten_changed: an object whose fields differ from the payload whose hash the ledger holds
      (changed by hand in the target): updated with the payload.
    Objects without a natural key are not ours and left alone. Orphan deletes are subject to `guard`,
    over the objects the target holds that carry a natural key; a refused resync fixes nothing.

    `mapped`: a SQL query of (key_hash, target_id) rows of the target's own id mapping (Ed-Fi's identity
    mapping), which name objects as ours as the ledger does. After the call the connection's temp table
    `publish_gone(target_id)` holds the ids of the ledger's and `mapped`'s objects the target no longer
    holds.

    An adapter that answers change queries (`ChangeQueryAdapter`) is read by them when an earlier resync
    of the resource recorded the change version it read up to (`ledger.change_version`) and `full` is
    false: only the objects changed since and the ids removed since (`REMOVALS`); otherwise, or when the
    target answers them 400/404, it is paged through. A resync that is not a dry run and leaves nothing
    refused or failed records the newest change version it read (`result.read` says how it read).
    """
    with con_factory() as con:
        ledger.ensure_ledger(con)
        ledger.register_desired(con, {resource: desired})
        only = Resource(resource, desired, adapter, guard)
        run = _Run(
            con,
            district_id,
            target,
            [only],
            base_url,
            token_provider,
            concurrency,
            retry,
            batch_size,
            flush_s,
        )
        return asyncio.run(run.resync(dry_run, mapped, full))


class _Run:
    """One run over `resources` of a target. Every row it plans, sends and records carries its resource."""

    def __init__(
        self,
        con,
        district_id,
        target,
        resources: list[Resource],
        base_url,
        tokens,
        concurrency,
        retry,
        batch_size,
        flush_s,
    ):
        self.con: duckdb.DuckDBPyConnection = con
        self.district_id, self.target = district_id, target
        self.resources = {r.name: r for r in resources}
        self.raw_payload = {r.name: bool(getattr(r.adapter, "raw_payload", False)) for r in resources}
        self.base_url = base_url
        self.tokens = tokens
        self.concurrency = concurrency
        self.retry = retry or RetryPolicy()
        self.batch_size = batch_size
        self.flush_s = flush_s
        self.results = {r.name: PublishResult(district_id, target, r.name, dry_run=False) for r in resources}
        self.fixes: Counter | None = None  # a resync's counts per cause, as its fixes succeed
        self.buffer: list[tuple] = []
        self.flushed_at = 0.0  # time.monotonic() of the last ledger write of results

    async def run(self, dry_run: bool, retry_rejected: bool) -> dict[str, PublishResult]:
        names = list(self.resources)
        if dry_run:
            planned = ledger.plan(self.con, self.district_id, self.target, names, retry_rejected)
            for name, key_hash, action in self.con.execute(
                f"select resource, key_hash, action from {ledger.PLAN_TABLE} order by seq"
            ).fetchall():
                self.results[name].actions.append((key_hash, action))
            for name, result in self.results.items():
                result.dry_run = True
                result.planned = planned[name]
                self._guard(name, result, planned[name]["delete"])
            return self.results
        async with Sender(self.base_url, self.tokens, self.concurrency, self.retry) as self.sender:
            try:
                await self._resolve_pending()
                planned = ledger.plan(self.con, self.district_id, self.target, names, retry_rejected)
                refused = []
                for name, result in self.results.items():
                    result.planned = planned[name]
                    result.counts.update(
                        {k: planned[name][k] for k in ("unchanged", "skipped", "pending", "held")}
                    )
                    if self._guard(name, result, planned[name]["delete"]):
                        refused.append(name)
                if refused:  # nothing of a refused plan is sent
                    self.con.execute(
                        f"delete from {ledger.PLAN_TABLE} where list_contains(?, resource)", [refused]
                    ).fetchall()
                await self._send_plan(ledger.PLAN_TABLE)
            finally:
                self._flush()  # a cancelled or failing run still keeps what it heard back
        for name, result in self.results.items():
            log.info("publish %s/%s/%s: %s", self.district_id, self.target, name, dict(result.counts))
        return self.results

    def _guard(
        self, name: str, result: PublishResult | ResyncResult, deletes: int, held: int | None = None
    ) -> bool:
        """Whether the mass-delete guard refuses these deletes (recorded in `result`) out of `held`, by
        default what the ledger says the target holds (asked only when there are deletes enough to guard)."""
        guard = self.resources[name].guard
        refusal = None
        if guard and deletes >= guard.min_deletes:
            if held is None:
                held = ledger.held(self.con, self.district_id, self.target, name)
            refusal = guard.refusal(f"{self.target}/{name}", deletes, held)
        if refusal:
            result.refusal = refusal
            result.counts["refused"] = deletes
            log.warning("publish %s: refused: %s", self.district_id, refusal)
        return refusal is not None

    # --- resync -------------------------------------------------------------------------------------
    @property
    def _only(self) -> Resource:
        """The resource of a single-resource run (a resync)."""
        (only,) = self.resources.values()
        return only

    async def resync(self, dry_run: bool, mapped: str | None, full: bool) -> ResyncResult:
        resource = self._only.name
        result = ResyncResult(self.district_id, self.target, resource, dry_run)
        async with Sender(self.base_url, self.tokens, self.concurrency, self.retry) as self.sender:
            try:
                if not dry_run:
                    await self._resolve_pending()
                newest = await self._read_target(result, full)
                fixes, adopted_now, cleared = self._resync_plan(mapped, result.read)
                # what the target holds of ours: as listed, or (read by its changes) as the ledger says
                ours = result.counts["listed"] - result.counts["not_ours"] if result.read == "full" else None
                if self._guard(resource, result, fixes["deleted_orphan"], ours):
                    pass  # nothing fixed: `refused` says why
                elif dry_run:
                    result.counts.update(fixes)  # what it would fix
                else:
                    for key_hash, content_hash, target_id in adopted_now:
                        self._record(
                            resource, key_hash, content_hash, target_id, None, "sent", "resync", None
                        )
                    for key_hash in cleared:
                        self._record(resource, key_hash, None, None, None, "deleted", "resync", None)
                    self._flush()
                    result.counts.update(adopted=len(adopted_now), cleared_missing=len(cleared))
                    self.fixes = result.counts  # the requests' successes and failures count here
                    await self._send_plan(RESYNC_TABLE)
            finally:
                self._flush()
        if not dry_run and not result.refusal and not result.counts["failed"]:
            # a fix that failed is found again only by reading its change again (or paging through)
            ledger.record_change_version(self.con, self.district_id, self.target, resource, newest)
        result.errors.update(self.results[resource].errors)
        log.info("resync %s/%s/%s: %s", self.district_id, self.target, resource, dict(result.counts))
        return result

    async def _read_target(self, result: ResyncResult, full: bool) -> int | None:
        """What the target holds into the temp tables `publish_target(target_id, natural_key,
        fingerprint)` and `publish_removed(target_id)`: every object (`result.read` `full`), or, by change
        queries, the objects changed and the ids removed since the version the last resync read up to
        (`changes`). No field of an object is kept beyond its fingerprint. Returns the target's newest
        change version when it answers change queries."""
        adapter = self._only.adapter
        self.con.execute("create or replace temp table publish_removed (target_id varchar)")
        newest = None
        if hasattr(adapter, "change_versions"):
            reply = await self.sender.send(adapter.change_versions())
            if reply.status not in (400, 404):
                self._read_ok(reply, "reading the change versions")
                newest = adapter.newest(reply)
        if newest is not None and not full:
            since = ledger.change_version(self.con, self.district_id, self.target, self._only.name)
            if since is not None and since <= newest and await self._read_changes(result, since, newest):
                result.read = "changes"
                return newest
            log.info(
                "resync %s/%s: paging through (no change version to start from)", self.target, self._only.name
            )
        await self._list_target(result, adapter.listing)
        return newest

    async def _read_changes(self, result: ResyncResult, since: int, newest: int) -> bool:
        """The changes after the change version `since` up to `newest` (`ChangeQueryAdapter`); False when
        the target does not serve them (nothing kept)."""
        adapter: ChangeQueryAdapter = self._only.adapter  # type: ignore[assignment]
        window = (since + 1, newest)
        removed: list[str] = []

        def each(items: list[dict]) -> None:
            removed.extend(adapter.removed_id(i) for i in items)

        for kind in REMOVALS if since < newest else ():
            if not await self._pages(functools.partial(adapter.changes, kind, window), each, may_refuse=True):
                return False
        changed = functools.partial(adapter.changes, "changed", window)
        if since == newest:  # nothing changed: nothing to read
            await self._list_target(result, None)
        elif not await self._list_target(result, changed, may_refuse=True):
            return False
        query, params = text_rows(("target_id",), (removed,))
        self.con.execute(f"insert into publish_removed select * from {query}", params)
        return True

    def _read_ok(self, reply: Reply, what: str) -> None:
        if not 200 <= reply.status < 300:
            raise ResyncError(f"{self.target}/{self._only.name}: {what} failed: {_cause(reply, None)}")

    async def _pages(
        self, request_of: Callable[[Any], Request], each: Callable[[list[dict]], None], may_refuse: bool
    ) -> bool:
        """Hand every page of a paged read (`request_of(cursor)`, paged by the adapter's `listed`) to
        `each`; False when `may_refuse` and the target answers 400 or 404 (it does not serve the read)."""
        adapter: ListingAdapter = self._only.adapter  # type: ignore[assignment]
        cursor = None
        while True:
            reply = await self.sender.send(request_of(cursor))
            if may_refuse and reply.status in (400, 404):
                return False
            self._read_ok(reply, "listing the target")
            objects, cursor = adapter.listed(cursor, reply)
            each(objects)
            if cursor is None:
                return True

    async def _list_target(
        self, result: ResyncResult, request_of: Callable[[Any], Request] | None, may_refuse: bool = False
    ) -> bool:
        """The objects of the paged read `request_of` (None: none) into `publish_target`; False (nothing
        kept) when the target does not serve the read (see `_pages`)."""
        adapter: ListingAdapter = self._only.adapter  # type: ignore[assignment]
        ids, keys, prints = [], [], []

        def each(objects: list[dict]) -> None:
            for obj in objects:
                ids.append(adapter.object_id(obj))
                keys.append(adapter.natural_key(obj))
                prints.append(adapter.fingerprint(obj))

        if request_of is not None and not await self._pages(request_of, each, may_refuse):
            return False
        result.counts["listed"] = len(ids)
        result.counts["not_ours"] = sum(k is None for k in keys)
        query, params = text_rows(("target_id", "natural_key", "fingerprint"), (ids, keys, prints))
        self.con.execute(f"create or replace temp table publish_target as select * from {query}", params)
        return True

    def _resync_plan(self, mapped: str | None, read: str) -> tuple[Counter, list[tuple], list[str]]:
        """The fixes that need a request into `RESYNC_TABLE` (the plan's columns and `cause`); returns the
        count per cause, the adoptions that need no request (key_hash, content_hash, target_id) and the
        ledger rows to record as deleted (`cleared_missing`). `read`: how `_read_target` read the target
        (by its changes, an object not listed is held still unless its id was removed)."""
        district_id, target, resource = self.district_id, self.target, self._only.name
        adapter: ListingAdapter = self._only.adapter  # type: ignore[assignment]
        mapped_rows = (
            f"""union all by name
            select m.key_hash, m.target_id, 'sent' as last_status, true as restored from ({mapped}) m
            where m.key_hash not in (select key_hash from known) and m.target_id is not null"""
            if mapped
            else ""
        )
        # the ledger's rows, and those of the target's own id mapping that the ledger lost
        self.con.execute(
            f"""
            create or replace temp table _resync_ledger as
            with known as (
                select * from ops.publish_ledger where district_id = $d and target = $t and resource = $r
            )
            select *, false as restored from known {mapped_rows}
            """,
            {"d": district_id, "t": target, "r": resource},
        )
        # the ids the ledger and the mapping name that the target no longer holds
        named = "select target_id from _resync_ledger" + (
            f" union all select target_id from ({mapped})" if mapped else ""
        )
        gone = (
            "select target_id from publish_removed"
            if read == "changes"
            else f"select target_id from ({named}) where target_id not in (select target_id from publish_target)"
        )
        self.con.execute(
            f"create or replace temp table publish_gone as select distinct target_id from ({gone}) "
            "where target_id is not null"
        )
        self.con.execute(
            """
            create or replace temp table _resync_all as
            with l as (
                select * from _resync_ledger
            ), live as (  -- ledger rows whose object the target still holds
                select * from l
                where target_id is not null and target_id not in (select target_id from publish_gone)
            ), unknown as (  -- our objects the ledger does not know
                select t.*, row_number() over (
                    partition by t.natural_key order by try_cast(t.target_id as bigint), t.target_id
                ) as nth  -- the oldest is adopted
                from publish_target t
                where t.natural_key is not null and t.target_id not in (select target_id from live)
            ), adopt as (  -- the first unknown object of a desired key that has no live object
                select u.target_id, u.fingerprint, d.key_hash, d.content_hash, d.payload::varchar as payload
                from unknown u join publish_desired d on d.lookup_key = u.natural_key
                where u.nth = 1 and d.key_hash not in (select key_hash from live)
            )
            select 'adopted' as cause, key_hash, 'update' as action, content_hash, payload, target_id,
                null as etag, null as held_hash, null as lookup_key, fingerprint
            from adopt
            union all  -- a live object only the mapping names: its ledger row again, nothing to send
            select 'adopted', key_hash, 'update', null, null, target_id, null, null, null, null
            from live where restored
            union all
            select 'deleted_orphan', null, 'delete', null, null, u.target_id, null, null, null, null
            from unknown u where u.target_id not in (select target_id from adopt)
            union all
            select case when d.payload is null then 'cleared_missing' else 'recreated_missing' end,
                l.key_hash, 'create', d.content_hash, d.payload::varchar, null, null, null, d.lookup_key, null
            from l left join publish_desired d using (key_hash)
            where l.target_id in (select target_id from publish_gone)
              and l.key_hash not in (select key_hash from adopt)
            union all  -- a pending create from before lookup keys, withdrawn: its object, if any, is an orphan
            select 'cleared_missing', l.key_hash, 'create', null, null, null, null, null, null, null
            from l where l.last_status = 'pending' and l.lookup_key is null
              and l.key_hash not in (select key_hash from publish_desired)
            union all
            -- no held content: should the overwrite fail, the next publish sends it again
            select 'overwritten_changed', l.key_hash, 'update', l.content_hash, d.payload::varchar,
                l.target_id, l.etag, null, null, t.fingerprint
            from live l join publish_target t using (target_id) join publish_desired d using (key_hash)
            where l.last_status = 'sent' and d.payload is not null and l.content_hash = d.content_hash
            """
        )
        # The fields Qmlativ (or any target) holds against the payload: only the target's own fingerprint
        # can compare them. An adopted object whose content already matches needs no request.
        # Every live record's payload: read a page at a time, never all of them in Python at once.
        result = self.con.execute(
            "select rowid, payload, fingerprint from _resync_all "
            "where cause in ('adopted', 'overwritten_changed') and payload is not null"
        )
        same: list[int] = []
        while page := result.fetchmany(self.batch_size):
            same += [rowid for rowid, payload, fp in page if adapter.fingerprint(json.loads(payload)) == fp]
        self.con.execute("create or replace temp table _resync_same (id bigint)")
        if same:
            self.con.executemany("insert into _resync_same values (?)", [(i,) for i in same])
        adopted_now = self.con.execute(
            "select key_hash, content_hash, target_id from _resync_all where cause = 'adopted' "
            "and (payload is null or rowid in (select id from _resync_same))"
        ).fetchall()
        self.con.execute(
            "delete from _resync_all where (cause = 'adopted' and (payload is null "
            "or rowid in (select id from _resync_same))) "
            "or (cause = 'overwritten_changed' and rowid in (select id from _resync_same))"
        )
        cleared = [
            r[0]
            for r in self.con.execute(
                "select key_hash from _resync_all where cause = 'cleared_missing'"
            ).fetchall()
        ]
        self.con.execute("delete from _resync_all where cause = 'cleared_missing'")
        self.con.execute(
            f"create or replace temp table {RESYNC_TABLE} as select row_number() over () as seq, "
            f"{literal(resource)} as resource, * exclude (fingerprint) from _resync_all"
        )
        fixes: Counter = Counter(
            dict(self.con.execute(f"select cause, count(*) from {RESYNC_TABLE} group by 1").fetchall())
        )
        fixes["adopted"] += len(adopted_now)
        fixes["cleared_missing"] += len(cleared)
        return fixes, adopted_now, cleared

    # --- pending creates from a run that did not finish ---------------------------------------------
    async def _resolve_pending(self) -> None:
        """Look up each pending create by the natural key kept with it. Found: recorded as sent, so the
        plan updates it, or deletes it when it has been withdrawn meanwhile. Not found: forgotten (planned
        as a create again when still wanted). Not answered: stays pending, for the next run."""
        pending = self.con.execute(
            """
            select l.resource, l.key_hash, l.content_hash, coalesce(l.lookup_key, d.lookup_key)
            from ops.publish_ledger l left join publish_desired d using (resource, key_hash)
            where l.district_id = ? and l.target = ? and list_contains(?, l.resource)
              and l.last_status = 'pending'
            """,
            [self.district_id, self.target, list(self.resources)],
        ).fetchall()
        absent: list[tuple[str, str]] = []

        async def resolve(resource: str, key_hash: str, content_hash: str, lookup_key: str | None) -> None:
            result = self.results[resource]
            if lookup_key is None:
                # Left by a version that did not keep the natural key, and withdrawn since: only the
                # resync, which lists the target, can settle it.
                result.errors["lookup: pending create without its natural key (resync settles it)"] += 1
                return
            try:
                target_id = await self._lookup(resource, lookup_key)
            except GaveUp as exc:
                result.errors[f"lookup {exc.cause}"] += 1
                return  # stays pending; creates are not planned for it until it is resolved
            if target_id is None:
                absent.append((resource, key_hash))
            else:
                result.counts["resolved"] += 1
                self._record(resource, key_hash, content_hash, target_id, None, "sent", "resolve", None)

        await asyncio.gather(*(resolve(*row) for row in pending))
        self._flush()
        ledger.forget(self.con, self.district_id, self.target, absent)

    async def _lookup(self, resource: str, natural_key: str) -> str | None:
        adapter = self.resources[resource].adapter
        reply = await self.sender.send(adapter.lookup(natural_key))
        if not 200 <= reply.status < 300:
            raise GaveUp(f"{reply.status} on lookup", ambiguous=True)
        return adapter.found(reply)

    # --- the plan --------------------------------------------------------------------------------------
    async def _send_plan(self, table: str) -> None:
        """Send the requests of `table` (`ledger.PLAN_TABLE`, or a resync's fixes, which add `cause`).

        The plan is read a page of `batch_size` rows at a time; the page's creates are marked pending in
        one ledger write before any row of the page is handed to a worker. The workers share one plain
        iterator (no queue): it never awaits, so each `next` runs to its end before another worker's."""
        cause = "cause" if table != ledger.PLAN_TABLE else "null"

        def rows():
            seq = 0
            while seq is not None and (
                page := self.con.execute(
                    f"select seq, resource, key_hash, action, content_hash, payload, target_id, etag, "
                    f"held_hash, lookup_key, {cause} from {table} where seq > ? order by seq limit ?",
                    [seq, self.batch_size],
                ).fetchall()
            ):
                seq = page[-1][0] if len(page) == self.batch_size else None  # a short page is the last
                # Committed before any of these creates is sent, with the natural key: a kill leaves them
                # to be looked up, even if they are withdrawn before the next run. The results heard
                # back so far go in the same write.
                marks = [
                    (r[2], r[4], None, None, "pending", "create", None, None, r[9], r[1])
                    for r in page
                    if r[3] == "create"
                ]
                self._flush(marks)
                for row in page:
                    yield row[1:]

        plan = rows()
        perform = self._perform

        async def work() -> None:
            for item in plan:
                await perform(*item)

        async def tick() -> None:  # results wait at most `flush_s` after the last write
            while True:
                await asyncio.sleep(max(0.05, self.flushed_at + self.flush_s - time.monotonic()))
                if time.monotonic() >= self.flushed_at + self.flush_s:
                    self._flush()

        ticker = asyncio.create_task(tick())
        try:
            await asyncio.gather(*(work() for _ in range(self.concurrency)))
        finally:
            ticker.cancel()

    async def _perform(
        self,
        resource,
        key_hash,
        action,
        content_hash,
        payload_json,
        target_id,
        etag,
        held_hash,
        lookup_key,
        cause,
    ) -> None:
        """One request and its ledger row. `key_hash` None: an object the ledger does not know (a resync's
        orphan), nothing recorded. `cause`: the resync cause counted when it succeeds. An adapter with
        `raw_payload` gets the stored JSON text (to send as it is), any other the decoded payload."""
        adapter = self.resources[resource].adapter
        raw = payload_json is None or self.raw_payload[resource]
        payload = payload_json if raw else json.loads(payload_json)
        found: list[str] = []
        done = functools.partial(self._succeeded, resource, key_hash, action, content_hash)
        failed = functools.partial(self._failed, resource, key_hash, action)

        async def recover() -> bool:
            if (existing := await self._lookup(resource, lookup_key)) is not None:
                found.append(existing)
            return bool(found)

        try:
            request = adapter.request(action, payload, target_id, etag)
            reply = await self.sender.send(request, recover if action == "create" else None)
            if (
                reply is not None
                and reply.status == 412
                and action != "create"
                and hasattr(adapter, "current")
            ):
                reply = await self._with_current_etag(adapter, action, payload, target_id, reply)
            if reply is None:  # an unanswered create had been applied
                done(found[0], None, cause)
            elif 200 <= reply.status < 300 or (action == "delete" and reply.status in (404, 410)):
                new_id, new_etag = adapter.applied(action, reply) if reply.status < 300 else (None, None)
                if action == "create" and new_id is None:
                    raise GaveUp(f"{reply.status} answer without an id", ambiguous=True)
                done(new_id or target_id, new_etag, cause)
            else:
                error = _cause(reply, json.loads(payload_json) if payload_json is not None else None)
                held = (None, None, None) if action == "create" else (held_hash, target_id, etag)
                failed(error, *held, "failed", content_hash or ledger.WITHDRAWN)
        except GaveUp as exc:
            if action == "create":
                # Maybe applied: stays pending for the next run's lookup. Certainly not: planned afresh.
                if exc.ambiguous:
                    failed(exc.cause, content_hash, None, None, "pending", None, lookup_key)
                else:
                    failed(exc.cause, None, None, None, "failed")
            else:
                failed(exc.cause, held_hash, target_id, etag, "failed")
        except Exception as exc:  # an adapter bug or an unreadable answer: one record fails, not the run
            held = (None, None, None) if action == "create" else (held_hash, target_id, etag)
            failed(f"client error {type(exc).__name__}", *held, "failed")

    async def _with_current_etag(self, adapter, action, payload, target_id, stale: Reply) -> Reply:
        """A 412 (the object changed since the etag the ledger holds): read its current etag and send the
        request once more with it (`OptimisticAdapter`); the stale answer stands when the read fails."""
        current = await self.sender.send(adapter.current(target_id))
        if not 200 <= current.status < 300:
            return stale
        return await self.sender.send(adapter.request(action, payload, target_id, adapter.etag(current)))

    def _succeeded(self, resource, key_hash, action, content_hash, target_id, etag, cause=None) -> None:
        counts = self.results[resource].counts
        counts["sent"] += 1
        counts[{"create": "created", "update": "updated", "delete": "deleted"}[action]] += 1
        if cause and self.fixes is not None:
            self.fixes[cause] += 1
        if action == "delete":
            self._record(resource, key_hash, None, None, None, "deleted", action, None)
        else:
            self._record(resource, key_hash, content_hash, target_id, etag, "sent", action, None)

    def _failed(
        self,
        resource,
        key_hash,
        action,
        cause,
        content_hash,
        target_id,
        etag,
        status,
        rejected=None,
        lookup_key=None,
    ) -> None:
        # `pending`: the outcome is unknown (the next run looks it up); `failed`: it certainly failed
        result = self.results[resource]
        result.counts["pending" if status == "pending" else "failed"] += 1
        if self.fixes is not None:
            self.fixes["failed"] += 1
        result.errors[f"{action}: {cause}"] += 1
        self._record(
            resource, key_hash, content_hash, target_id, etag, status, action, cause, rejected, lookup_key
        )

    # --- the ledger ------------------------------------------------------------------------------------
    def _record(
        self,
        resource,
        key_hash,
        content_hash,
        target_id,
        etag,
        status,
        action,
        error,
        rejected=None,
        lookup_key=None,
    ) -> None:
        if key_hash is None:  # an object the ledger does not know: nothing to record
            return
        row = (key_hash, content_hash, target_id, etag, status, action, error, rejected, lookup_key, resource)
        self.buffer.append(row)
        if len(self.buffer) >= 2 * self.batch_size:
            self._flush()

    def _flush(self, marks: list[tuple] = ()) -> None:
        """Write the results heard back and `marks` (pending creates about to be sent) in one transaction.
        A key in both (never in a plan) keeps its result."""
        rows, self.buffer = self.buffer, []
        if marks:
            if rows:
                done = {(r[9], r[0]) for r in rows}
                marks = [m for m in marks if (m[9], m[0]) not in done]
            rows += marks
        self.flushed_at = time.monotonic()
        ledger.write(self.con, self.district_id, self.target, rows)


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
