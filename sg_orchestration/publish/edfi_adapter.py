"""How the publish engine writes one Ed-Fi ODS/API resource (seed 002, SPEC §4.2): requests from ledger
state and back, for both payload profiles.

- create: `POST {resource}` (an upsert on the natural key) -> 201/200, the id the last segment of
  `Location`, the version in `ETag`;
- update: `PUT {resource}/{id}` with `If-Match` (the etag the ledger holds) -> 204 and a new `ETag`; a 412
  (changed in the ODS since) is read again and sent once more with the current etag (`engine`);
- delete: `DELETE {resource}/{id}` with `If-Match`;
- a create whose answer was lost is found by its natural key (`GET {resource}?studentUniqueId=...`), the
  natural key being the profile's key fields as query parameters (`edfi.names.NATURAL_KEYS`);
- a resync pages the resource (`offset`/`limit` <= 500, `totalCount=true`), or reads only what changed
  since its last one by the ODS's change queries (`availableChangeVersions`, then the resource, `/deletes`
  and `/keyChanges` with `minChangeVersion`/`maxChangeVersion`).

The payload goes as the mart's JSON text (`raw_payload`): no decode and re-encode per request.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sg_orchestration.edfi.names import natural_key
from sg_orchestration.publish.sender import Reply, Request

PAGE_LIMIT = 500  # the ODS/API's largest page
# What the ODS adds to a record it serves: never part of what this integration writes.
SERVED_ONLY = frozenset({"id", "_etag", "_lastModifiedDate", "link"})
_JSON = {"Content-Type": "application/json"}


def _written(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _written(v) for k, v in sorted(node.items()) if k not in SERVED_ONLY}
    if isinstance(node, list):
        return [_written(v) for v in node]
    return node


@dataclass(frozen=True)
class EdfiAdapter:
    """One resource of one connection: `path` is the resource's path under the base URL, with the year
    segment of a year-specific ODS (e.g. `/data/v3/2026/ed-fi/studentEducationOrganizationAssessmentAccommodations`)."""

    path: str
    profile: str
    versions_path: str = "/changeQueries/v1/availableChangeVersions"  # the ODS's (year's) change versions
    raw_payload = True

    def _if_match(self, etag: str | None) -> dict[str, str]:
        return {"If-Match": etag} if etag else {}

    def request(self, action: str, payload: Any, target_id: str | None, etag: str | None) -> Request:
        if action == "delete":
            return Request("DELETE", f"{self.path}/{target_id}", headers=self._if_match(etag))
        body = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        if action == "create":
            return Request("POST", self.path, headers=_JSON, data=body)
        return Request(
            "PUT", f"{self.path}/{target_id}", headers={**_JSON, **self._if_match(etag)}, data=body
        )

    def applied(self, action: str, reply: Reply) -> tuple[str | None, str | None]:
        location = reply.headers.get("Location")
        target_id = location.rstrip("/").rsplit("/", 1)[-1] if action == "create" and location else None
        return target_id, reply.headers.get("ETag")

    def lookup(self, natural_key_text: str) -> Request:
        return Request("GET", self.path, params=json.loads(natural_key_text))

    def found(self, reply: Reply) -> str | None:
        objects = json.loads(reply.body) if reply.body else []
        return str(objects[0]["id"]) if objects else None

    # --- a 412: the object as the ODS holds it now -----------------------------------------------------
    def current(self, target_id: str) -> Request:
        return Request("GET", f"{self.path}/{target_id}")

    def etag(self, reply: Reply) -> str | None:
        return reply.headers.get("ETag") or json.loads(reply.body).get("_etag")

    # --- resync: page through the resource -------------------------------------------------------------
    def listing(self, cursor: int | None) -> Request:
        return self._page(self.path, cursor)

    def _page(self, path: str, cursor: int | None, **params: str) -> Request:
        paging = {"offset": str(cursor or 0), "limit": str(PAGE_LIMIT), "totalCount": "true"}
        return Request("GET", path, params={**paging, **params})

    def listed(self, cursor: int | None, reply: Reply) -> tuple[list[dict], int | None]:
        objects = json.loads(reply.body) if reply.body else []
        offset = (cursor or 0) + len(objects)
        total = reply.headers.get("Total-Count")
        more = offset < int(total) if total is not None else len(objects) == PAGE_LIMIT
        return objects, offset if more and objects else None

    def object_id(self, obj: dict) -> str:
        return str(obj["id"])

    def natural_key(self, obj: dict) -> str | None:
        return natural_key(self.profile, obj)

    def fingerprint(self, record: dict) -> str:
        return hashlib.md5(json.dumps(_written(record), sort_keys=True, default=str).encode()).hexdigest()

    # --- resync by change queries ----------------------------------------------------------------------
    def change_versions(self) -> Request:
        return Request("GET", self.versions_path)

    def newest(self, reply: Reply) -> int:
        return int(json.loads(reply.body)["newestChangeVersion"])

    def changes(self, kind: str, window: tuple[int, int], cursor: int | None) -> Request:
        path = self.path if kind == "changed" else f"{self.path}/{kind}"
        low, high = window
        return self._page(path, cursor, minChangeVersion=str(low), maxChangeVersion=str(high))

    def removed_id(self, item: dict) -> str:
        return str(item["id"])
