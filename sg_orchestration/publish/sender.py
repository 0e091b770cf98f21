"""Async HTTP for the publish engine: bearer tokens, retries, and its own HTTP/1.1 keep-alive client.

The transport is a small HTTP/1.1 client over asyncio protocols (`Client`): a pool of at most the run's
concurrency keep-alive connections (plain TCP or TLS), one request in flight on each, the request written
in one `write`, the answer parsed from the bytes as they arrive (`Content-Length`, chunked, or until the
server closes; `Connection: close` and HTTP/1.0 honoured). aiohttp's client costs more CPU per request than
the whole engine may spend (the bench's "publish engine vs lightbeam" stage measures both); this client does
only what the engine needs: no redirects (a 3xx is an answer like any other), no cookies, no compression
(no `Accept-Encoding` is sent), no proxies. It never re-sends a request by itself: `Sender.send` decides,
after a failure on a connection that carried the request, that the request may have been applied.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import quote, urlencode, urlsplit

# A token the provider gave is reused this long without asking it again (its lock, its expiry check): far
# less than any provider's refresh margin (`QmlativTokens` refreshes a minute before expiry). A 401 still
# refreshes it at once.
TOKEN_REUSE_S = 5.0
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Answers that say the request was not applied; after any other failure a create may have happened.
NOT_APPLIED_STATUSES = frozenset({429, 503})
# A kept-alive connection idle longer than this is closed rather than reused: servers close idle
# connections (aiohttp's after 75 s, nginx's after 75 s, many load balancers after 60 s), and a request
# written as the server closes is one whose fate is unknown.
IDLE_KEEPALIVE_S = 15.0
MAX_HEAD_BYTES = 64 * 1024  # a status line and headers longer than this are refused


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


class ConnectError(OSError):
    """The connection could not be made: the request never reached the server."""


class ServerDisconnectedError(ConnectionError):
    """The connection closed before the whole answer arrived: the request may have been applied."""


class BadResponseError(ValueError):
    """An answer that is not HTTP/1.x: the request may have been applied."""


class Headers(dict):
    """Answer headers: names case-insensitive (kept in lower case); a repeated header's values joined by
    `, ` (as HTTP allows for every header the engine reads)."""

    __slots__ = ()

    def __getitem__(self, name: str) -> str:
        return dict.__getitem__(self, name.lower())

    def get(self, name: str, default: Any = None) -> Any:
        return dict.get(self, name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and dict.__contains__(self, name.lower())


_LENGTH, _CHUNKED, _UNTIL_CLOSE = 0, 1, 2
_PATH_OK = re.compile(r"[A-Za-z0-9/._~!$&'()*+,;=:@%-]*")


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: at most one request in flight, its answer parsed as bytes arrive and handed
    to the waiting future as (Reply, reusable)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.waiter: asyncio.Future | None = None
        self.deadline = 0.0
        self.idle_since = 0.0
        self._buf = bytearray()
        self._no_body = False
        self._status = 0  # 0: the head is not parsed yet
        self._headers: Headers | None = None
        self._keep_alive = False
        self._mode = _LENGTH
        self._left = 0  # _LENGTH: body bytes still to come
        self._body = bytearray()

    # --- the client's side ---------------------------------------------------------------------------
    def start(self, waiter: asyncio.Future, no_body: bool, deadline: float) -> None:
        self.waiter, self._no_body, self.deadline, self._status = waiter, no_body, deadline, 0

    def fail(self, exc: BaseException) -> None:
        """End the request in flight with `exc` and close the connection (its state is unknown)."""
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # --- asyncio's side -------------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # nothing asked: a server closing (e.g. its 408) or not speaking HTTP/1.1
            self.close()
            return
        buf = self._buf
        buf += data
        try:
            reply = self._parse(buf)
        except (ValueError, IndexError) as exc:
            self.fail(BadResponseError(f"unreadable answer: {exc}"))
            return
        if reply is not None:
            if buf:  # bytes past the answer: the connection cannot be trusted for another request
                self._keep_alive = False
                buf.clear()
            self._deliver(reply)

    def eof_received(self) -> bool:
        if self.waiter is not None and self._status and self._mode == _UNTIL_CLOSE:
            self._deliver(Reply(self._status, self._headers, bytes(self._body)))
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None:
            if self._status and self._mode == _UNTIL_CLOSE:
                self._deliver(Reply(self._status, self._headers, bytes(self._body)))
            else:
                cause = f": {exc}" if exc else ""
                self.fail(ServerDisconnectedError(f"the server closed the connection{cause}"))

    def _deliver(self, reply: Reply) -> None:
        waiter, self.waiter = self.waiter, None
        keep = self._keep_alive
        if not keep:
            self.close()
        if not waiter.done():
            waiter.set_result((reply, keep))

    # --- parsing --------------------------------------------------------------------------------------
    def _parse(self, buf: bytearray) -> Reply | None:
        while not self._status:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    raise ValueError("headers too long")
                return None
            lines = bytes(buf[:end]).split(b"\r\n")
            del buf[: end + 4]
            version, _, rest = lines[0].partition(b" ")
            status = int(rest[:3])
            if not version.startswith(b"HTTP/1.") or not 100 <= status <= 599 or rest[3:4] not in (b"", b" "):
                raise ValueError("not an HTTP/1.x status line")
            if status < 200 and status != 101:
                continue  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            self._head(version, status, lines)
        if self._mode == _LENGTH:
            if len(buf) < self._left:
                return None
            body = bytes(buf[: self._left])
            del buf[: self._left]
        elif self._mode == _CHUNKED:
            if not self._chunks(buf):
                return None
            body = bytes(self._body)
        else:
            self._body += buf
            buf.clear()
            return None  # the answer ends when the server closes
        return Reply(self._status, self._headers, body)

    def _head(self, version: bytes, status: int, lines: list[bytes]) -> None:
        headers = Headers()
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                raise ValueError("a malformed header line")
            key = name.decode("latin-1").lower()
            text = value.strip().decode("latin-1")
            if key in headers:
                text = f"{dict.__getitem__(headers, key)}, {text}"
            dict.__setitem__(headers, key, text)
        connection = dict.get(headers, "connection", "").lower()
        if version == b"HTTP/1.1":
            self._keep_alive = "close" not in connection
        else:
            self._keep_alive = "keep-alive" in connection
        self._body = bytearray()
        encoding = dict.get(headers, "transfer-encoding")
        length = dict.get(headers, "content-length")
        if self._no_body or status in (204, 304):
            self._mode, self._left = _LENGTH, 0
        elif encoding is not None:
            if encoding.lower().rsplit(",", 1)[-1].strip() != "chunked":
                raise ValueError(f"unsupported transfer-encoding {encoding!r}")
            self._mode, self._left = _CHUNKED, -1
        elif length is not None:
            values = {v.strip() for v in length.split(",")}
            if len(values) != 1 or not (value := values.pop()).isdigit():
                raise ValueError("an invalid content-length")
            self._mode, self._left = _LENGTH, int(value)
        else:
            self._mode, self._keep_alive = _UNTIL_CLOSE, False
        self._status, self._headers = status, headers

    def _chunks(self, buf: bytearray) -> bool:
        """Move the complete chunks in `buf` to the body; True once the last chunk and trailers are in.
        `_left`: -1 awaiting a size line, -2 awaiting the trailers, else the bytes of the current chunk."""
        while True:
            if self._left == -1:
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD_BYTES:
                        raise ValueError("a chunk size line too long")
                    return False
                size = bytes(buf[:end]).split(b";", 1)[0].strip()
                if not size or size.strip(b"0123456789abcdefABCDEF"):
                    raise ValueError("an invalid chunk size")
                del buf[: end + 2]
                self._left = int(size, 16) or -2
            elif self._left == -2:  # the trailer section: empty, or header lines and an empty line
                if buf[:2] == b"\r\n":
                    del buf[:2]
                    return True
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD_BYTES:
                        raise ValueError("trailers too long")
                    return False
                del buf[: end + 4]
                return True
            else:
                if len(buf) < self._left + 2:
                    return False
                if buf[self._left : self._left + 2] != b"\r\n":
                    raise ValueError("a chunk without its CRLF")
                self._body += buf[: self._left]
                del buf[: self._left + 2]
                self._left = -1


class Client:
    """HTTP/1.1 to one origin (`base_url`: scheme, host, port and an optional path prefix), at most `limit`
    connections, kept alive. `request` raises `ConnectError` when the request never left (the connection
    could not be made), and `ServerDisconnectedError`, `BadResponseError` or `TimeoutError` when it was
    written and no whole answer came back (it may have been applied)."""

    def __init__(
        self, base_url: str, limit: int, timeout_s: float, ssl_context: ssl.SSLContext | None = None
    ):
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self._host = url.hostname
        self._tls = url.scheme == "https"
        self._port = url.port or (443 if self._tls else 80)
        self._ssl = (ssl_context or ssl.create_default_context()) if self._tls else None
        host = f"[{self._host}]" if ":" in self._host else self._host
        default_port = 443 if self._tls else 80
        authority = host if self._port == default_port else f"{host}:{self._port}"
        self._prefix = url.path.rstrip("/")
        self._head = f"Host: {authority}\r\nUser-Agent: sg-orchestration\r\nAccept: */*\r\n"
        self._timeout = timeout_s
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self._slots = asyncio.Semaphore(max(1, limit))
        self._loop = asyncio.get_running_loop()
        self._watchdog = self._loop.create_task(self._watch())

    async def close(self) -> None:
        self._watchdog.cancel()
        for conn in (*self._idle, *self._busy):
            conn.fail(ServerDisconnectedError("the client closed"))
        self._idle.clear()
        self._busy.clear()
        await asyncio.sleep(0)  # the transports finish closing

    def target(self, path: str, params: Mapping[str, str] | None) -> str:
        """The request target: the prefix and `path` (percent-encoded where needed) and the query."""
        target = self._prefix + path
        if not _PATH_OK.fullmatch(target):
            target = quote(target, safe="/%:@!$&'()*+,;=-._~?")
        if params:
            target += ("&" if "?" in target else "?") + urlencode(params)
        return target

    async def request(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None
    ) -> Reply:
        lines = [f"{method} {target or '/'} HTTP/1.1\r\n{self._head}"]
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
                raise ValueError(f"a header with a line break or colon: {name!r}")
            if name.lower() not in ("host", "content-length", "transfer-encoding", "connection"):
                lines.append(f"{name}: {value}\r\n")
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body) if body else 0}\r\n")
        lines.append("\r\n")
        data = "".join(lines).encode("latin-1")
        if body:
            data += body
        conn = await self._acquire()
        reusable = False
        try:
            waiter = self._loop.create_future()
            conn.start(waiter, method == "HEAD", self._loop.time() + self._timeout)
            conn.transport.write(data)
            reply, reusable = await waiter
            return reply
        finally:
            self._release(conn, reusable)

    async def _acquire(self) -> _Connection:
        await self._slots.acquire()
        try:
            now = self._loop.time()
            while self._idle:
                conn = self._idle.pop()
                if (
                    not conn.closed
                    and not conn.transport.is_closing()
                    and now - conn.idle_since < IDLE_KEEPALIVE_S
                ):
                    break
                conn.close()
            else:
                conn = await self._connect()
        except BaseException:
            self._slots.release()
            raise
        self._busy.add(conn)
        return conn

    async def _connect(self) -> _Connection:
        try:
            async with asyncio.timeout(self._timeout):
                _, conn = await self._loop.create_connection(
                    _Connection,
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._tls else None,
                )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise ConnectError(f"cannot connect to {self._host}:{self._port}: {exc}") from exc
        return conn

    def _release(self, conn: _Connection, reusable: bool) -> None:
        self._busy.discard(conn)
        if reusable and not conn.closed:
            conn.idle_since = self._loop.time()
            self._idle.append(conn)
        else:
            conn.fail(ServerDisconnectedError("the request ended without its answer"))
        self._slots.release()

    async def _watch(self) -> None:
        """End requests that have waited longer than the timeout (one timer for all, not one each)."""
        tick = max(0.05, min(1.0, self._timeout / 20))
        while True:
            await asyncio.sleep(tick)
            now = self._loop.time()
            for conn in [c for c in self._busy if c.waiter is not None and now > c.deadline]:
                conn.fail(TimeoutError(f"no answer within {self._timeout:g} s"))


class Sender:
    """Use as `async with Sender(...) as sender: reply = await sender.send(request)`."""

    def __init__(
        self,
        base_url: str,
        tokens: TokenProvider,
        concurrency: int,
        retry: RetryPolicy,
        ssl_context: ssl.SSLContext | None = None,
    ):
        self._base_url = base_url.rstrip("/")
        self._tokens = tokens
        self._concurrency = concurrency
        self._retry = retry
        self._ssl = ssl_context
        self._refresh_lock = asyncio.Lock()
        self._client: Client | None = None
        self._token: str | None = None
        self._token_until = 0.0

    async def __aenter__(self) -> Sender:
        self._client = Client(self._base_url, self._concurrency, self._retry.timeout_s, self._ssl)
        return self

    async def __aexit__(self, *exc) -> None:
        await self._client.close()

    async def send(
        self, request: Request, recover: Callable[[], Awaitable[bool]] | None = None
    ) -> Reply | None:
        """The final answer: a 2xx, or a status not worth retrying (the caller records it as a failure).

        Retries 408/429/5xx, timeouts and connection errors (raising `GaveUp` after the last attempt);
        refreshes the token once on a 401. For a request that must not be applied twice (a create), pass
        `recover`: after a failure that may have been applied it runs before the next attempt, and a True
        (the target has it) ends `send` with None.
        """
        client = self._client
        loop = asyncio.get_running_loop()
        target = client.target(request.path, request.params)
        body = request.data
        if body is None and request.json is not None:
            body = json.dumps(request.json).encode()
            base = {"Content-Type": "application/json", **request.headers}
        else:
            base = request.headers
        refreshed = False
        ambiguous = False
        attempt = 0
        while True:
            attempt += 1
            if ambiguous and recover is not None and await recover():
                return None
            token = self._token
            if token is None or loop.time() > self._token_until:
                token = await self._token_now()
            headers = {**base, "Authorization": f"Bearer {token}"}
            try:
                reply = await client.request(request.method, target, headers, body)
            except ConnectError as exc:  # never reached the server
                cause, wait = type(exc).__name__, None
            except (TimeoutError, ServerDisconnectedError, BadResponseError, OSError) as exc:
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
