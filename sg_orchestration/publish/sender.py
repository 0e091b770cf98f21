"""Async HTTP for the publish engine: one aiohttp session per run, bearer tokens, retries.

The transport is raw aiohttp (one `ClientSession`, a `TCPConnector` limited to the run's concurrency,
keep-alive) because it alone met the ≤ 100 µs client-CPU-per-request target; see `measure.py` for the
measurement against httpx's default transport and httpx over aiohttp.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any, Protocol

import aiohttp

# A token the provider gave is reused this long without asking it again (its lock, its expiry check): far
# less than any provider's refresh margin (`QmlativTokens` refreshes a minute before expiry). A 401 still
# refreshes it at once.
TOKEN_REUSE_S = 5.0
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Answers that say the request was not applied; after any other failure a create may have happened.
NOT_APPLIED_STATUSES = frozenset({429, 503})


class TokenProvider(Protocol):
    """A bearer token for one target connection: cached, refreshed before expiry, and on `force`."""

    async def token(self, force: bool = False) -> str: ...


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    backoff_s: float = 0.5  # the first wait's upper bound; doubles each attempt, full jitter
    max_backoff_s: float = 30.0
    max_retry_after_s: float = 60.0  # a server asking for longer is waited on this long at most
    timeout_s: float = 60.0  # per request


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # appended to the base URL
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str] | None = None
    data: bytes | None = None  # a body already encoded (set its Content-Type in `headers`): sent as it is


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes


class GaveUp(Exception):
    """Transient failures until the last attempt. `cause` is a status or exception name, never data;
    `ambiguous` when some attempt may have been applied by the server without us hearing back."""

    def __init__(self, cause: str, ambiguous: bool):
        super().__init__(cause)
        self.cause = cause
        self.ambiguous = ambiguous


class Sender:
    """Use as `async with Sender(...) as sender: reply = await sender.send(request)`."""

    def __init__(self, base_url: str, tokens: TokenProvider, concurrency: int, retry: RetryPolicy):
        self._base_url = base_url.rstrip("/")
        self._tokens = tokens
        self._concurrency = concurrency
        self._retry = retry
        self._refresh_lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self._token: str | None = None
        self._token_until = 0.0

    async def __aenter__(self) -> Sender:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._concurrency),
            timeout=aiohttp.ClientTimeout(total=self._retry.timeout_s),
        )
        # aiohttp silently re-sends a PUT or DELETE once when a kept-alive connection drops; Qmlativ creates
        # are PUTs, so that would duplicate an applied create. `send` retries itself, looking up first.
        # There is no public switch (aiohttp 3.x); the dropped-connection test fails if this stops working.
        self._session._retry_connection = False
        return self

    async def __aexit__(self, *exc) -> None:
        await self._session.close()

    async def send(
        self, request: Request, recover: Callable[[], Awaitable[bool]] | None = None
    ) -> Reply | None:
        """The final answer: a 2xx, or a status not worth retrying (the caller records it as a failure).

        Retries 408/429/5xx, timeouts and connection errors (raising `GaveUp` after the last attempt);
        refreshes the token once on a 401. For a request that must not be applied twice (a create), pass
        `recover`: after a failure that may have been applied it runs before the next attempt, and a True
        (the target has it) ends `send` with None.
        """
        refreshed = False
        ambiguous = False
        attempt = 0
        while True:
            attempt += 1
            if ambiguous and recover is not None and await recover():
                return None
            token = self._token
            if token is None or asyncio.get_running_loop().time() > self._token_until:
                token = await self._token_now()
            headers = {**request.headers, "Authorization": f"Bearer {token}"}
            try:
                async with self._session.request(
                    request.method,
                    self._base_url + request.path,
                    json=request.json,
                    data=request.data,
                    params=request.params,
                    headers=headers,
                ) as response:
                    reply = Reply(response.status, response.headers, await response.read())
            except aiohttp.ClientConnectorError as exc:  # never reached the server
                cause, wait = type(exc).__name__, None
            except (TimeoutError, aiohttp.ClientError) as exc:
                cause, wait, ambiguous = type(exc).__name__, None, True
            else:
                if reply.status == 401 and not refreshed:
                    refreshed = True
                    await self._refresh(token)
                    attempt -= 1  # an expired token is not the server failing
                    continue
                if reply.status not in RETRY_STATUSES:
                    return reply
                ambiguous = ambiguous or reply.status not in NOT_APPLIED_STATUSES
                cause, wait = f"{reply.status} {_reason(reply.status)}", _retry_after(reply, self._retry)
            if attempt >= self._retry.max_attempts:
                raise GaveUp(f"{cause} (gave up after {attempt} attempts)", ambiguous)
            await asyncio.sleep(wait if wait is not None else self._backoff(attempt))

    async def _token_now(self) -> str:
        """The provider's token, remembered for `TOKEN_REUSE_S`."""
        token = await self._tokens.token(False)
        self._token, self._token_until = token, asyncio.get_running_loop().time() + TOKEN_REUSE_S
        return token

    async def _refresh(self, stale: str) -> None:
        """One refresh for a burst of 401s: requests in flight with the same stale token share it."""
        async with self._refresh_lock:
            self._token = None  # the next request asks the provider again
            if await self._tokens.token(False) == stale:
                await self._tokens.token(True)

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self._retry.max_backoff_s, self._retry.backoff_s * 2 ** (attempt - 1)))


def _retry_after(reply: Reply, retry: RetryPolicy) -> float | None:
    """`Retry-After` in seconds or as an HTTP date, capped; None when absent or unreadable."""
    value = reply.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            return None
    return max(0.0, min(seconds, retry.max_retry_after_s))


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
