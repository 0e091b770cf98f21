"""A do-nothing Ed-Fi API stub for the bench, served from a child process of its own.

It answers what `lightbeam send` needs and nothing more: the API root (`GET /`, whose `urls` name the
oauth, dependencies and OpenAPI metadata addresses), the token (`POST /oauth/token`), the dependencies
(`GET /metadata/data/v3/dependencies`: `/ed-fi/students` and the Indiana accommodations), and `201 Created` (with a
`Location` and an `ETag`, as Ed-Fi answers) to every `POST` under `/data/v3/`, without looking at the
body beyond reading it. It counts the POSTs it answered (`GET /_stats`; `DELETE /_stats` resets them), so
the bench can check that every request arrived. Running in another process, it charges none of its CPU
to the client being measured.

    with EdFiStub() as stub:
        stub.base_url, stub.posts(), stub.reset()
"""

from __future__ import annotations

import json
import urllib.request

from aiohttp import web

from sg_orchestration.publish.measure import serve_app, server_process
from sg_orchestration.publish.sender import Request
from sg_orchestration.publish.tokens import ClientCredentials

RESOURCE = "students"
NAMESPACE = "ed-fi"
# What the dependencies list: the students, and the Indiana accommodations the bench's `edfi` group sends.
RESOURCE_PATHS = (f"/{NAMESPACE}/{RESOURCE}", "/indiana/studentAssessmentAccommodations")
TOKEN = "stub-token-" + "t" * 29


def _serve(conn) -> None:
    counts = {"posts": 0}

    async def root(request: web.Request) -> web.Response:
        base = f"http://{request.host}"
        return web.json_response(
            {
                "version": "7.1",
                "apiMode": "Sandbox",
                "dataModels": [{"name": "Ed-Fi", "version": "5.0.0"}],
                "urls": {
                    "dependencies": f"{base}/metadata/data/v3/dependencies",
                    "openApiMetadata": f"{base}/metadata/",
                    "oauth": f"{base}/oauth/token",
                    "dataManagementApi": f"{base}/data/v3/",
                },
            }
        )

    async def token(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"access_token": TOKEN, "expires_in": 3600, "token_type": "bearer"})

    async def dependencies(request: web.Request) -> web.Response:
        operations = ["Create", "Update", "Delete"]
        return web.json_response(
            [{"resource": path, "order": 1, "operations": operations} for path in RESOURCE_PATHS]
        )

    async def post(request: web.Request) -> web.Response:
        await request.read()
        counts["posts"] += 1
        oid = f"{counts['posts']:032x}"
        headers = {"Location": f"http://{request.host}{request.path}/{oid}", "ETag": f'"{oid}"'}
        return web.Response(status=201, headers=headers)

    async def stats(request: web.Request) -> web.Response:
        if request.method == "DELETE":
            counts["posts"] = 0
        return web.Response(body=json.dumps(counts).encode(), content_type="application/json")

    app = web.Application()
    app.router.add_get("/", root)
    app.router.add_post("/oauth/token", token)
    app.router.add_get("/metadata/data/v3/dependencies", dependencies)
    app.router.add_post("/data/v3/{tail:.*}", post)
    app.router.add_route("*", "/_stats", stats)
    serve_app(app, conn)


class EdFiStub:
    """The stub in a spawned child process, for the time of a `with` block."""

    def __init__(self) -> None:
        self.base_url = ""
        self._server = server_process(_serve, "Ed-Fi stub server")

    def __enter__(self) -> EdFiStub:
        self.base_url = self._server.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._server.__exit__(*exc)

    def _stats(self, method: str) -> dict:
        request = urllib.request.Request(f"{self.base_url}/_stats", method=method)
        with urllib.request.urlopen(request, timeout=30) as reply:
            return json.loads(reply.read())

    def posts(self) -> int:
        """The POSTs answered since the start or the last `reset`."""
        return self._stats("GET")["posts"]

    def reset(self) -> None:
        self._stats("DELETE")


# --- the engine's side: an Ed-Fi adapter, tokens and records for the stub ---------------------------------
def student_records(n: int) -> list[str]:
    """`n` Ed-Fi student records as compact JSON text, about 330 bytes each, deterministic."""
    first = ("Ava", "Liam", "Mia", "Noah", "Zoe", "Eli", "Ivy", "Owen")
    last = ("Garcia", "Nguyen", "Smith", "Johnson", "Martinez", "Okafor", "Brown", "Patel")
    sex = ("Female", "Male")
    records = []
    for i in range(n):
        record = {
            "studentUniqueId": f"S{i:08d}",
            "firstName": first[i % len(first)],
            "lastSurname": last[(i // 3) % len(last)],
            "birthDate": f"20{10 + i % 8:02d}-{1 + i % 12:02d}-{1 + i % 28:02d}",
            "birthCity": "Indianapolis",
            "birthSexDescriptor": f"uri://ed-fi.org/SexDescriptor#{sex[i % 2]}",
            "birthCountryDescriptor": "uri://ed-fi.org/CountryDescriptor#US",
            "birthStateAbbreviationDescriptor": "uri://ed-fi.org/StateAbbreviationDescriptor#IN",
        }
        records.append(json.dumps(record, separators=(",", ":")))
    return records


def stub_tokens(base_url: str) -> ClientCredentials:
    """Client-credentials tokens from the stub, as the engine gets them from a real Ed-Fi ODS/API."""
    return ClientCredentials(f"{base_url.rstrip('/')}/oauth/token", "bench", "bench", system="Ed-Fi stub")


class EdFiAdapter:
    """Creates (POST) of one Ed-Fi resource; the id is the last segment of the answer's `Location`.
    `raw_payload`: the engine hands over the stored JSON text, sent as it is."""

    raw_payload = True
    path = f"/data/v3/{NAMESPACE}/{RESOURCE}"
    _json = {"Content-Type": "application/json"}

    def request(self, action, payload, target_id, etag):
        if action == "delete":
            return Request("DELETE", f"{self.path}/{target_id}")
        path = self.path if action == "create" else f"{self.path}/{target_id}"
        method = "POST" if action == "create" else "PUT"
        if isinstance(payload, str):
            return Request(method, path, headers=self._json, data=payload.encode())
        return Request(method, path, json=payload)

    def applied(self, action, reply):
        location = reply.headers.get("Location")
        return (location.rsplit("/", 1)[-1] if location else None), reply.headers.get("ETag")

    def lookup(self, natural_key):
        return Request("GET", self.path, params={"studentUniqueId": natural_key})

    def found(self, reply):
        objects = json.loads(reply.body) if reply.body else []
        return objects[0]["id"] if objects else None
