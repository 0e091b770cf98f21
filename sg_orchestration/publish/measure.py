"""Client CPU per request of each candidate HTTP transport, the measurement behind the sender's choice.

The do-nothing aiohttp server runs in a child process, so `time.process_time()` in this process counts
only the client's work: building the request, JSON encoding, the socket calls and reading the answer.
The goal (SPEC §5, the project's performance target) is at most `TARGET_US` µs of client CPU per request.

Run it with `uv run python -m sg_orchestration.publish.measure [requests] [concurrency]`.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import httpx
from aiohttp import web
from httpx_aiohttp import AiohttpTransport

TARGET_US = 100.0
TRANSPORTS = ("httpx", "httpx_aiohttp", "aiohttp")
# A body and headers the size of a real Qmlativ create, so JSON encoding is counted too.
BODY = {"DataObject": {"StudentID": 123456, "SourceDocumentID": "doc-0001", "StartDate": "2025-08-15"}}
HEADERS = {"Authorization": "Bearer " + "t" * 40}


def serve_app(app: web.Application, conn) -> None:
    """In a child process: serve `app` on a free 127.0.0.1 port, send the port through `conn`, and serve
    until the parent terminates this process."""

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        conn.send(runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(main())


@contextmanager
def server_process(serve: Callable[[Any], None], name: str) -> Iterator[str]:
    """Run `serve(conn)` (a module-level function calling `serve_app`) in a spawned child process for the
    time of the block, so none of its CPU is charged to this one; yields its base URL."""
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(target=serve, args=(child,), daemon=True)
    process.start()
    try:
        if not parent.poll(30):
            raise RuntimeError(f"the {name} did not start")
        yield f"http://127.0.0.1:{parent.recv()}"
    finally:
        process.terminate()
        process.join(10)


def _serve(conn) -> None:
    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b'{"ID": 1}', content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    serve_app(app, conn)


async def _drive(one: Callable[[], Awaitable[None]], requests: int, concurrency: int) -> None:
    """`requests` calls of `one`, `concurrency` at a time (workers, so no task per request)."""
    remaining = iter(range(requests))

    async def worker() -> None:
        for _ in remaining:
            await one()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _cpu_us(
    kind: str, url: str, requests: int, concurrency: int, body: dict = BODY, method: str = "PUT"
) -> float:
    if kind == "aiohttp":
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))

        async def one() -> None:
            async with session.request(method, url, json=body, headers=HEADERS) as response:
                await response.read()

        close = session.close
    else:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        transport = AiohttpTransport(limits=limits) if kind == "httpx_aiohttp" else None
        client = httpx.AsyncClient(transport=transport, limits=limits)

        async def one() -> None:
            (await client.put(url, json=BODY, headers=HEADERS)).read()

        close = client.aclose
    try:
        await _drive(one, min(requests, 500), concurrency)  # warm-up: connections open, code paths hot
        start = time.process_time()
        await _drive(one, requests, concurrency)
        return (time.process_time() - start) / requests * 1e6
    finally:
        await close()


def aiohttp_floor_us(url: str, requests: int, concurrency: int, body: dict, method: str = "POST") -> float:
    """Client CPU µs per request of the bare aiohttp loop (`body` JSON-encoded by aiohttp, as a client
    holding dicts would), against a server already running in another process at `url`."""
    return asyncio.run(_cpu_us("aiohttp", url, requests, concurrency, body, method))


def client_floor_us(url: str, requests: int, concurrency: int, body: bytes, method: str = "POST") -> float:
    """Client CPU µs per request of a bare loop over the engine's own HTTP/1.1 client (`sender.Client`),
    `body` sent as it is (as the engine sends a stored JSON payload): the floor of the engine's transport."""
    from sg_orchestration.publish.sender import Client

    async def run() -> float:
        client = Client(url, concurrency, 60.0)
        target = client.target("", None)
        headers = {**HEADERS, "Content-Type": "application/json"}

        async def one() -> None:
            await client.request(method, target, headers, body)

        try:
            await _drive(one, min(requests, 500), concurrency)
            start = time.process_time()
            await _drive(one, requests, concurrency)
            return (time.process_time() - start) / requests * 1e6
        finally:
            await client.close()

    return asyncio.run(run())


def measure(requests: int = 5000, concurrency: int = 32) -> dict[str, float]:
    """Client CPU µs per request for each transport in `TRANSPORTS`, against a server in another process."""
    with server_process(_serve, "measurement server") as base_url:
        url = f"{base_url}/Generic/1/Module/Object"
        return {kind: asyncio.run(_cpu_us(kind, url, requests, concurrency)) for kind in TRANSPORTS}


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    for kind, us in measure(*args).items():
        verdict = "meets" if us <= TARGET_US else "misses"
        print(f"{kind:>14}: {us:7.1f} µs client CPU per request ({verdict} the {TARGET_US:.0f} µs target)")
