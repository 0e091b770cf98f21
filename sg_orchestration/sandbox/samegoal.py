"""The SameGoal state-reporting export API (SPEC §3.1), serving the generated `samegoal/{form}.csv` files.

Endpoints: `POST /oauth/token` (client credentials, as form fields or HTTP Basic) and
`GET /api/v1/state-reporting/{form}?completed_since=&cursor=&limit=` with a bearer token.

Incremental semantics, which clients rely on:
- Every record has an internal *change time*: its `completed_at` when that parses (no offset means UTC),
  otherwise the moment the server loaded it. So drafts, in-review and voided documents (blank
  `completed_at`) reach once any reader whose `completed_since` is before the server started.
- `completed_since` returns the records whose change time is >= it; without it, every record. Inclusive
  on purpose: a reader resuming from the `Date` header of its last read re-reads the boundary records
  rather than missing any, and deduplicates by `document_id`.
- Records come in (change time, document_id) order, `limit` per page (default 500, at most 1000).
  `next_cursor` is opaque (base64 of the form and the last position sent) and continues strictly after
  that position, so paging neither repeats nor skips a record while others are added: a new or changed
  record's change time is "now", which puts it after every page already read.
- The server holds one version per `document_id`; a file listing a document twice serves the later one.
  Malformed rows are served with the fields they have (see `data`).

Test hook: `POST /_sandbox/samegoal/{form}` with `{"records": [...]}` upserts by `document_id` with change
time = now, to model documents completed, edited or voided after a first read. `POST /_sandbox/reload`
re-reads the form files (e.g. after `sg-orch generate --next-day`): each document new or different from
the version held is stored with change time = now, so a reader resuming from the `Date` of its last read
gets exactly those; the others keep their change time, and a document no longer listed stays served.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from bisect import bisect_left, bisect_right, insort
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from sg_orchestration.catalog import SAMEGOAL_FORMS, SOURCES_BY_NAME
from sg_orchestration.sandbox.auth import Tokens, basic_credentials, json_error, same_client
from sg_orchestration.sandbox.data import read_records

DEFAULT_LIMIT, MAX_LIMIT = 500, 1000
Position = tuple[int, str]  # (change time in microseconds since the epoch, document key)


def _now() -> int:
    return time.time_ns() // 1000


def _instant(text: str) -> int:
    """Microseconds since the epoch of an ISO date-time; ValueError if it is not one."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


class FormStore:
    """The documents of one form, with their positions kept sorted for cursor paging."""

    def __init__(self, records: list[dict], loaded_at: int):
        self._docs: dict[str, tuple[int, dict]] = {}
        for n, record in enumerate(records):
            try:
                changed = _instant(record["completed_at"] or "")
            except ValueError:
                changed = loaded_at
            # a row without a document_id is still served, under a key no real id can take
            key = record["document_id"] or f"\x00row {n}"
            if key not in self._docs or self._docs[key][0] <= changed:
                self._docs[key] = (changed, record)
        self._order: list[Position] = sorted((changed, key) for key, (changed, _) in self._docs.items())

    def get(self, key: str) -> dict | None:
        held = self._docs.get(key)
        return held and held[1]

    def upsert(self, record: dict, changed: int, key: str | None = None) -> bool:
        """Store `record` as changed at `changed`; True if its document is new."""
        key = key or record["document_id"]
        old = self._docs.get(key)
        if old:
            del self._order[bisect_left(self._order, (old[0], key))]
        self._docs[key] = (changed, record)
        insort(self._order, (changed, key))
        return old is None

    def page(
        self, since: int | None, after: Position | None, limit: int
    ) -> tuple[list[dict], Position | None]:
        """Up to `limit` records from `after` (exclusive) or else `since` (inclusive); the last position
        sent if more follow, else None."""
        if after is not None:
            start = bisect_right(self._order, after)
        else:
            start = bisect_left(self._order, (since,)) if since is not None else 0
        positions = self._order[start : start + limit]
        more = start + limit < len(self._order)
        return [self._docs[key][1] for _, key in positions], positions[-1] if more else None


def _encode_cursor(form: str, position: Position) -> str:
    return base64.urlsafe_b64encode(json.dumps([form, *position]).encode()).decode()


def _decode_cursor(cursor: str, form: str) -> Position:
    try:
        cursor_form, changed, key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if cursor_form == form and isinstance(changed, int) and isinstance(key, str):
            return changed, key
    except (ValueError, TypeError, binascii.Error):
        pass
    raise json_error(
        web.HTTPBadRequest, error="invalid_cursor", message="cursor is not one this form returned"
    )


class SameGoalApi:
    def __init__(self, samegoal_dir: Path, client: tuple[str, str], token_ttl: int):
        self.client = client
        self.tokens = Tokens(token_ttl)
        self.columns = {form: SOURCES_BY_NAME[f"samegoal__{form}"].column_names for form in SAMEGOAL_FORMS}
        self.samegoal_dir = samegoal_dir
        loaded_at = _now()
        self.forms = {
            form: FormStore(read_records(samegoal_dir / f"{form}.csv", columns), loaded_at)
            for form, columns in self.columns.items()
        }

    def reload(self) -> dict[str, int]:
        """Re-read the form files; a document new or changed since the version held changes now."""
        counts = {"created": 0, "updated": 0, "unchanged": 0}
        changed = _now()
        for form, columns in self.columns.items():
            store = self.forms[form]
            latest: dict[str, dict] = {}  # a file listing a document twice: its last row
            for n, record in enumerate(read_records(self.samegoal_dir / f"{form}.csv", columns)):
                latest[record["document_id"] or f"\x00row {n}"] = record
            for key, record in latest.items():
                if store.get(key) == record:
                    counts["unchanged"] += 1
                elif store.upsert(record, changed, key):
                    counts["created"] += 1
                else:
                    counts["updated"] += 1
        return counts

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/oauth/token", self.token)
        app.router.add_get("/api/v1/state-reporting/{form}", self.export)
        app.router.add_post("/_sandbox/reload", self.reload_files)
        app.router.add_post("/_sandbox/samegoal/{form}", self.upsert)
        return app

    def _form(self, request: web.Request) -> str:
        form = request.match_info["form"]
        if form not in self.forms:
            raise json_error(web.HTTPNotFound, error="not_found", message=f"unknown form {form!r}")
        return form

    async def token(self, request: web.Request) -> web.Response:
        body = await request.post()
        if body.get("grant_type") != "client_credentials":
            raise json_error(web.HTTPBadRequest, error="unsupported_grant_type")
        given = basic_credentials(request) or (body.get("client_id"), body.get("client_secret"))
        if not same_client(given, self.client):
            raise json_error(web.HTTPUnauthorized, error="invalid_client")
        return web.json_response(self.tokens.issue())

    async def export(self, request: web.Request) -> web.Response:
        self.tokens.require(request)
        form = self._form(request)
        query = request.query
        try:
            limit = int(query.get("limit", DEFAULT_LIMIT))
            since = _instant(query["completed_since"]) if "completed_since" in query else None
        except ValueError:
            raise json_error(
                web.HTTPBadRequest,
                error="invalid_request",
                message="limit must be a whole number and completed_since an ISO date-time",
            ) from None
        if not 1 <= limit <= MAX_LIMIT:
            raise json_error(
                web.HTTPBadRequest, error="invalid_request", message=f"limit must be 1..{MAX_LIMIT}"
            )
        after = _decode_cursor(query["cursor"], form) if query.get("cursor") else None
        records, last = self.forms[form].page(since, after, limit)
        return web.json_response({"records": records, "next_cursor": last and _encode_cursor(form, last)})

    async def reload_files(self, request: web.Request) -> web.Response:
        return web.json_response(self.reload())

    async def upsert(self, request: web.Request) -> web.Response:
        form = self._form(request)
        try:
            records = (await request.json())["records"]
            rows = [
                {c: str(r[c]) if r.get(c) not in (None, "") else None for c in self.columns[form]}
                for r in records
            ]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise json_error(web.HTTPBadRequest, error='expected {"records": [{...}, ...]}') from None
        if not all(row["document_id"] for row in rows):
            raise json_error(web.HTTPBadRequest, error="every record needs a document_id")
        created = sum(self.forms[form].upsert(row, _now()) for row in rows)
        return web.json_response({"created": created, "updated": len(rows) - created})
