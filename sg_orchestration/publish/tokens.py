"""OAuth client-credentials bearer tokens, as Qmlativ and the Ed-Fi ODS/API hand them out (`TokenProvider`)."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
import weakref

import aiohttp


def basic_authorization(key: str, secret_value: str) -> str:
    """The `Authorization` header value for HTTP Basic key:secret."""
    encode = getattr(aiohttp, "encode_basic_auth", None)  # aiohttp >= 3.13
    if encode is not None:
        return encode(key, secret_value)
    return "Basic " + base64.b64encode(f"{key}:{secret_value}".encode()).decode("ascii")


class ClientCredentials:
    """A bearer token from `url` (`grant_type=client_credentials`, HTTP Basic key:secret; `method` GET puts
    the grant in the query, as Qmlativ wants; POST in a form body, as Ed-Fi does), cached until a minute
    before it expires, fetched again when the sender says it went stale. One fetch at a time for every
    event loop and thread that shares it (a resync runs screens in threads, each with its own loop)."""

    def __init__(
        self, url: str, key: str, secret_value: str, *, method: str = "POST", system: str = "the API"
    ):
        self._url = url
        self._method = method
        self._system = system
        self._auth = {"Authorization": basic_authorization(key, secret_value)}
        self._token: str | None = None
        self._expires_at = 0.0
        self._locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._fetching = threading.Lock()

    def _fresh(self) -> bool:
        return self._token is not None and time.monotonic() <= self._expires_at - 60

    async def token(self, force: bool = False) -> str:
        # A lock per event loop: the token outlives the loops, an asyncio lock cannot.
        lock = self._locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
        async with lock:
            if force or not self._fresh():
                held = self._token
                # One fetch at a time across threads. Polled, not awaited in a thread: a task cancelled
                # while waiting must not leave the lock taken.
                while not self._fetching.acquire(blocking=False):
                    await asyncio.sleep(0.01)
                try:
                    # another thread may have fetched it meanwhile
                    if (force and self._token == held) or not self._fresh():
                        await self._fetch()
                finally:
                    self._fetching.release()
            return self._token

    async def _fetch(self) -> None:
        grant = {"grant_type": "client_credentials"}
        where = {"params": grant} if self._method == "GET" else {"data": grant}
        async with (
            aiohttp.ClientSession() as session,
            session.request(self._method, self._url, headers=self._auth, **where) as reply,
        ):
            if reply.status != 200:
                raise PermissionError(
                    f"{self._system} token request refused: HTTP {reply.status} (check the key)"
                )
            body = await reply.json()
        self._token = body["access_token"]
        self._expires_at = time.monotonic() + float(body.get("expires_in", 3600))
