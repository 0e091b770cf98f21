"""Source API clients: the SameGoal state-reporting export and the Qmlativ student read.

Both use OAuth client credentials; the token is fetched once per client, refreshed shortly before it
expires and once on a 401. Transient failures (429, 5xx, timeouts) are retried with backoff, honouring
Retry-After. Credentials and record contents never reach a log.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import cache

import httpx
import orjson

RETRY_STATUSES = {429, 500, 502, 503, 504}
MAX_ATTEMPTS = 5
CURSOR_OVERLAP = timedelta(minutes=1)  # re-read a little: rows are deduplicated, late commits are not lost


class SourceApiError(RuntimeError):
    """An API answer we cannot use; names the endpoint and status, never the payload."""


@cache
def _tls() -> ssl.SSLContext:
    """One TLS context per process: building one (CA bundle included) costs ~30 ms, once per source read."""
    return httpx.create_ssl_context()


class _OAuthClient:
    def __init__(self, base_url: str, fetch_token: Callable[[httpx.Client], dict], timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self._fetch_token = fetch_token
        self._http = httpx.Client(timeout=timeout, verify=_tls())
        self._token: str | None = None
        self._expires_at = 0.0

    def close(self) -> None:
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _bearer(self, force: bool = False) -> str:
        if force or self._token is None or time.monotonic() > self._expires_at - 60:
            body = self._fetch_token(self._http)
            self._token = body["access_token"]
            self._expires_at = time.monotonic() + float(body.get("expires_in", 3600))
        return self._token

    def get(self, url: str, params: dict | None = None) -> httpx.Response:
        refreshed = False
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                response = self._http.get(
                    url, params=params, headers={"Authorization": f"Bearer {self._bearer()}"}
                )
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                if attempt == MAX_ATTEMPTS:
                    raise SourceApiError(
                        f"GET {httpx.URL(url).path}: {type(exc).__name__} after {attempt} tries"
                    ) from None
                time.sleep(min(2**attempt * 0.1, 5))
                continue
            if response.status_code == 401 and not refreshed:
                refreshed = True
                self._bearer(force=True)
                continue
            if response.status_code in RETRY_STATUSES and attempt < MAX_ATTEMPTS:
                time.sleep(_retry_after(response, attempt))
                continue
            if response.status_code != 200:
                raise SourceApiError(f"GET {httpx.URL(url).path}: HTTP {response.status_code}")
            return response
        raise SourceApiError(f"GET {httpx.URL(url).path}: gave up after {MAX_ATTEMPTS} tries")


def _retry_after(response: httpx.Response, attempt: int) -> float:
    value = response.headers.get("Retry-After")
    if value:
        try:
            return min(float(value), 30.0)
        except ValueError:
            try:
                return max(0.0, min((parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds(), 30.0))
            except (TypeError, ValueError):
                pass
    return min(2**attempt * 0.1, 5.0)


def _token_error(name: str, response: httpx.Response) -> SourceApiError:
    return SourceApiError(
        f"{name} token request refused: HTTP {response.status_code} (check the client key/secret)"
    )


class SameGoalClient(_OAuthClient):
    def __init__(self, base_url: str, client_id: str, client_secret: str):
        def fetch(http: httpx.Client) -> dict:
            response = http.post(
                f"{base_url.rstrip('/')}/oauth/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": client_id,
                    "client_secret": client_secret,
                },
            )
            if response.status_code != 200:
                raise _token_error("SameGoal", response)
            return response.json()

        super().__init__(base_url, fetch)

    def pages(
        self, form: str, completed_since: str | None, limit: int
    ) -> Iterator[tuple[list[dict], datetime]]:
        """Each page of one form changed since `completed_since`, with the server's clock at the first page."""
        url = f"{self.base_url}/api/v1/state-reporting/{form}"
        since = {"completed_since": completed_since} if completed_since else {}
        params: dict = {"limit": limit, **since}
        server_now: datetime | None = None
        while True:
            response = self.get(url, params=params)
            server_now = server_now or _server_time(response)
            body = response.json()
            if not isinstance(body.get("records"), list):
                raise SourceApiError(f"GET {httpx.URL(url).path}: answer has no `records` list")
            yield body["records"], server_now
            if not body.get("next_cursor"):
                return
            params = {"limit": limit, "cursor": body["next_cursor"], **since}

    def export(self, form: str, completed_since: str | None, limit: int) -> tuple[list[list[dict]], str]:
        """All pages of one form changed since the cursor, and the next cursor (the server's clock)."""
        pages = list(self.pages(form, completed_since, limit))
        return [records for records, _ in pages], _iso(pages[0][1] - CURSOR_OVERLAP)

    def new_complete_documents(self, form: str, since: str | None, limit: int) -> tuple[bool, str]:
        """Whether a complete document changed since `since`, and the server's clock as the next `since`;
        stops at the first one found, so a sensor's poll costs a page or two."""
        for records, server_now in self.pages(form, since, limit):
            if any(r.get("document_status") == "complete" for r in records):
                return True, _iso(server_now)
        return False, _iso(server_now)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _server_time(response: httpx.Response) -> datetime:
    header = response.headers.get("Date")
    if header:
        try:
            return parsedate_to_datetime(header).astimezone(UTC)
        except (TypeError, ValueError):
            pass
    return datetime.now(UTC)


# Pages of the Qmlativ student object read at a time once the first gives the total.
PAGE_READERS = 4


class QmlativClient(_OAuthClient):
    def __init__(self, base_url: str, key: str, secret: str):
        def fetch(http: httpx.Client) -> dict:
            response = http.get(
                f"{base_url.rstrip('/')}/oauth/token",
                params={"grant_type": "client_credentials"},
                auth=(key, secret),
            )
            if response.status_code != 200:
                raise _token_error("Qmlativ", response)
            return response.json()

        super().__init__(base_url, fetch)

    def read_all(
        self, entity_id: int, module: str, obj: str, page_size: int
    ) -> Iterator[tuple[list[dict], bytes]]:
        """Every page of the object, in order: its records and the JSON answer they came in. When the first
        page gives the total, the others are read PAGE_READERS at a time (the server works on one while
        this process decodes another); a total that changes while they are read fails the read: the pages
        would not be one state of the object."""
        base = f"{self.base_url}/Generic/{entity_id}/{module}/{obj}"
        body, content = self._page(f"{base}/1/{page_size}")
        yield body["Objects"], content
        paging = body.get("Paging") or {}
        total = paging.get("TotalCount")
        if isinstance(total, int) and paging.get("Next"):
            pages = range(2, -(-total // page_size) + 1)
            with ThreadPoolExecutor(PAGE_READERS) as pool:
                for body, content in pool.map(lambda page: self._page(f"{base}/{page}/{page_size}"), pages):
                    paging = body.get("Paging") or {}
                    if paging.get("TotalCount") != total:
                        raise SourceApiError(
                            f"GET {httpx.URL(base).path}: the object changed while it was read ({total:,} "
                            f"then {paging.get('TotalCount')} records): run again"
                        )
                    yield body["Objects"], content
            if paging.get("Next"):
                raise SourceApiError(f"GET {httpx.URL(base).path}: more pages than its {total:,} records")
            return
        url = paging.get("Next")
        while url:  # no total: follow the links
            body, content = self._page(url)
            yield body["Objects"], content
            url = (body.get("Paging") or {}).get("Next")

    def _page(self, url: str) -> tuple[dict, bytes]:
        content = self.get(url).content
        body = orjson.loads(content)  # ~2x the stdlib's speed: 200,000 students a night
        if not isinstance(body, dict) or not isinstance(body.get("Objects"), list):
            raise SourceApiError(f"GET {httpx.URL(url).path}: answer has no `Objects` list")
        return body, content
