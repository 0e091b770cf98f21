"""The Skyward Qmlativ Generic API (SPEC §3.2, §4.1): the student read that maps SameGoal students, and the
writeback objects (one per SameGoal screen) that the publish engine creates, updates and deletes.

Endpoints, all but the token with a bearer token (else 401):
- `GET /oauth/token?grant_type=client_credentials` with HTTP Basic key:secret -> `{"access_token", ...}`.
- `GET /Generic/{EntityID}/{Module}/{Object}/{page}/{pageSize}` (page from 1, pageSize at most 1000), for
  students and writeback objects alike -> `{"Objects": [...], "Paging": {"Next", "Previous", "Page",
  "PageSize", "TotalCount"}}` where Next and Previous are absolute URLs or null; creation order.
- writeback objects only, the (Module, Object) pairs of `config/qmlativ_objects.yaml` other than students:
  - create `PUT /Generic/{EntityID}/{Module}/{Object}` with `{"DataObject": {...}}` -> 201
    `{"ID": n, "DataObject": {..., "{Object}ID": n}}` (e.g. `SpecialEducationEnrollmentID`);
  - update `POST .../{Object}/{ID}` with `{"DataObject": {...}}` -> 200, same shape; the given fields
    replace the stored ones, fields not given are kept, and the ID field always stays the URL's;
  - delete `DELETE .../{Object}/{ID}` -> 200 `{"ID": n}`;
  - read one `GET .../{Object}/{ID}` -> 200 `{"ID": n, "DataObject": {...}}`.
  An unknown ID is 404. `StudentID` must be an existing student's StudentID (a JSON integer; required on
  create): else 400 `{"Errors": [{"Field": "StudentID", "Message": "..."}]}`; a body that is not
  `{"DataObject": {...}}` is 400 with the same shape, Field null. Other fields are not checked and stored
  as given. An unknown entity or object stays 404 `{"message": "..."}` as for the student read.

Store: writeback objects persist in SQLite (WAL; one row per object, the ID its rowid) at the file
`QmlativApi(store_path=...)`, which `Sandbox` puts in `{inputs}/.qmlativ-store/qmlativ.sqlite3` unless
given a `state_dir`. A server over the same file serves what an earlier one stored, and IDs, one sequence
across all objects, are never reused (AUTOINCREMENT), even after a delete or a restart. One server per
store at a time: each serves from its own in-memory copy. Delete the folder to start afresh.

Test hooks (no token; not counted in the stats):
- `GET|POST /_sandbox/qmlativ/faults` reads or replaces the fault injection (`Faults`): the JSON given
  replaces the whole configuration (omitted keys take their defaults) and restarts its random sequence.
- `GET /_sandbox/qmlativ/stats` -> `{"total": n, "requests": {method: {status: n}}, "writeback": {...}}`:
  every API request (token and reads included) and, under "writeback", those to writeback objects; a
  dropped connection counts under status "dropped". `DELETE` resets them.
- `POST /_sandbox/qmlativ/reload` re-reads `qmlativ/students.csv` (e.g. after `sg-orch generate
  --next-day`, which withdraws students) -> `{"students": n}`; the writeback objects are kept.

Students are loaded from `qmlativ/students.csv` under the names `config/qmlativ_objects.yaml` gives them,
with the catalog's int columns (StudentID, NameID, EntityID) as JSON numbers when they parse.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, fields
from itertools import islice
from pathlib import Path

from aiohttp import web

from sg_orchestration.catalog import SOURCES_BY_NAME
from sg_orchestration.config import DEFAULT_QMLATIV_OBJECTS
from sg_orchestration.sandbox.auth import Tokens, basic_credentials, json_error, same_client
from sg_orchestration.sandbox.data import read_records

MAX_PAGE_SIZE = 1000
WRITEBACK = web.RequestKey("writeback", bool)  # the request is to a writeback object: faults apply
DROPPED = web.RequestKey("dropped", bool)  # its connection was closed without a response
WRITEBACK_OBJECTS = {
    (names["module"], names["object"]) for key, names in DEFAULT_QMLATIV_OBJECTS.items() if key != "students"
}


@dataclass
class ObjectTable:
    """The objects of one (Module, Object) by ID, served in insertion order."""

    id_field: str
    rows: dict[object, dict] = field(default_factory=dict)

    def put(self, row: dict) -> None:
        # a repeated ID replaces the object, as in any store keyed by ID; a row without one is still served
        key = row.get(self.id_field)
        self.rows[key if key is not None else ("no id", len(self.rows))] = row


@dataclass(frozen=True)
class Faults:
    """What goes wrong on writeback-object requests, decided per request before anything is applied.

    `error_rate`: answer one of `statuses` instead, each in turn (429 and 503 with `Retry-After: {retry_after}`);
    `slow_rate`: wait `slow_seconds` first; `drop_rate`: close the connection without a response;
    `drop_after_write_rate` (create, update, delete): apply the write, then close without a response,
    the lost response of a publish killed mid-request. `seed` makes the sequence of decisions repeatable.
    """

    error_rate: float = 0.0
    statuses: tuple[int, ...] = (429, 500, 503)
    retry_after: int = 0
    slow_rate: float = 0.0
    slow_seconds: float = 1.0
    drop_rate: float = 0.0
    drop_after_write_rate: float = 0.0
    seed: int | None = None

    @classmethod
    def parse(cls, value: dict | None) -> Faults:
        """From JSON, ValueError naming what is wrong."""
        value = {} if value is None else value
        if not isinstance(value, dict):
            raise ValueError("faults must be a JSON object")
        unknown = sorted(set(value) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown fault option(s) {unknown}")
        faults = cls(**{**value, "statuses": tuple(value.get("statuses", cls.statuses))})

        def number(x) -> bool:
            return isinstance(x, int | float) and not isinstance(x, bool)

        for name in ("error_rate", "slow_rate", "drop_rate", "drop_after_write_rate"):
            if not (number(getattr(faults, name)) and 0 <= getattr(faults, name) <= 1):
                raise ValueError(f"{name} must be a number from 0 to 1")
        if not faults.statuses or not all(
            isinstance(s, int) and not isinstance(s, bool) and 400 <= s <= 599 for s in faults.statuses
        ):
            raise ValueError("statuses must be a non-empty list of HTTP error statuses (400..599)")
        if not (number(faults.slow_seconds) and 0 <= faults.slow_seconds <= 60):
            raise ValueError("slow_seconds must be a number from 0 to 60")
        if not (isinstance(faults.retry_after, int) and not isinstance(faults.retry_after, bool)):
            raise ValueError("retry_after must be an integer")
        if faults.retry_after < 0 or not (faults.seed is None or type(faults.seed) is int):
            raise ValueError("retry_after must be >= 0 and seed an integer or null")
        return faults

    def as_json(self) -> dict:
        return asdict(self) | {"statuses": list(self.statuses)}


class Store:
    """Writeback objects in SQLite. Autocommit: every write is durable once its response is sent, and WAL
    with synchronous=NORMAL keeps that to an append (no fsync per request), so thousands a second."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        # the server's event loop runs in another thread than the one building the app
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        # the object's fields without its ID field: the ID is the rowid, so it cannot disagree
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS objects (id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " module TEXT NOT NULL, object TEXT NOT NULL, data TEXT NOT NULL)"
        )

    def load(self) -> list[tuple[int, str, str, dict]]:
        rows = self.db.execute("SELECT id, module, object, data FROM objects ORDER BY id")
        return [(i, module, name, json.loads(data)) for i, module, name, data in rows]

    def insert(self, module: str, name: str, data: dict) -> int:
        cursor = self.db.execute(
            "INSERT INTO objects (module, object, data) VALUES (?, ?, ?)", (module, name, json.dumps(data))
        )
        return cursor.lastrowid

    def update(self, object_id: int, data: dict) -> None:
        self.db.execute("UPDATE objects SET data = ? WHERE id = ?", (json.dumps(data), object_id))

    def delete(self, object_id: int) -> None:
        self.db.execute("DELETE FROM objects WHERE id = ?", (object_id,))

    def close(self) -> None:
        self.db.close()


def _int_or_text(value: str | None) -> int | str | None:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return value


def _errors(cls: type[web.HTTPException], message: str, field: str | None = None, headers=None):
    return json_error(cls, headers, Errors=[{"Field": field, "Message": message}])


def _new_stats() -> dict:
    return {"total": 0, "requests": {}, "writeback": {}}


class QmlativApi:
    def __init__(
        self,
        qmlativ_dir: Path,
        client: tuple[str, str],
        entity_id: int,
        token_ttl: int,
        *,
        store_path: Path,
        faults: Faults | None = None,
    ):
        self.client = client
        self.entity_id = entity_id
        self.tokens = Tokens(token_ttl)
        self.objects: dict[tuple[str, str], ObjectTable] = {}
        self.qmlativ_dir = qmlativ_dir
        names = DEFAULT_QMLATIV_OBJECTS["students"]
        self.students = self.objects[names["module"], names["object"]] = ObjectTable("StudentID")
        self.load_students()

        for module, name in sorted(WRITEBACK_OBJECTS):
            self.objects[module, name] = ObjectTable(f"{name}ID")
        self.store = Store(store_path)
        for object_id, module, name, data in self.store.load():
            if (module, name) in self.objects:  # an object no longer configured is kept on disk, not served
                self.objects[module, name].put(data | {f"{name}ID": object_id})

        self.set_faults(faults or Faults())
        self.stats = _new_stats()

    def load_students(self) -> int:
        """(Re-)read the students file in place of the students held; their number."""
        students = SOURCES_BY_NAME["qmlativ__students"]
        ints = {c.name for c in students.columns if c.type == "int"}
        table = ObjectTable("StudentID")
        for record in read_records(self.qmlativ_dir / students.file, students.column_names):
            table.put({k: _int_or_text(v) if k in ints else v for k, v in record.items()})
        self.students.rows = table.rows
        return len(table.rows)

    def set_faults(self, faults: Faults) -> None:
        self.faults = faults
        self._random = random.Random(faults.seed)
        self._errors = 0  # error answers given: which of `statuses` the next one is

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._count])
        generic = "/Generic/{entity}/{module}/{object}"
        app.router.add_get("/oauth/token", self.token)
        app.router.add_get(generic + r"/{page:\d+}/{size:\d+}", self.read)
        app.router.add_put(generic, self.create)
        app.router.add_get(generic + r"/{id:\d+}", self.read_one)
        app.router.add_post(generic + r"/{id:\d+}", self.update)
        app.router.add_delete(generic + r"/{id:\d+}", self.delete)
        app.router.add_get("/_sandbox/qmlativ/faults", self.get_faults)
        app.router.add_post("/_sandbox/qmlativ/faults", self.post_faults)
        app.router.add_get("/_sandbox/qmlativ/stats", self.get_stats)
        app.router.add_delete("/_sandbox/qmlativ/stats", self.reset_stats)
        app.router.add_post("/_sandbox/qmlativ/reload", self.reload_students)
        app.on_cleanup.append(lambda _app: self._close())
        return app

    async def _close(self) -> None:
        self.store.close()

    @web.middleware
    async def _count(self, request: web.Request, handler: Callable[[web.Request], Awaitable]):
        if request.path.startswith("/_sandbox/"):
            return await handler(request)
        status = "500"  # anything escaping below is aiohttp's 500
        try:
            try:
                response = await handler(request)
            except _Reply as reply:
                response = reply.response
            status = str(response.status)
            return response
        except web.HTTPException as exc:
            status = str(exc.status)
            raise
        finally:
            status = "dropped" if request.get(DROPPED) else status
            self.stats["total"] += 1
            keys = ("requests", "writeback") if request.get(WRITEBACK) else ("requests",)
            for key in keys:
                counts = self.stats[key].setdefault(request.method, {})
                counts[status] = counts.get(status, 0) + 1

    async def token(self, request: web.Request) -> web.Response:
        if request.query.get("grant_type") != "client_credentials":
            raise json_error(web.HTTPBadRequest, error="unsupported_grant_type")
        if not same_client(basic_credentials(request), self.client):
            raise json_error(web.HTTPUnauthorized, {"WWW-Authenticate": "Basic"}, error="invalid_client")
        return web.json_response(self.tokens.issue())

    def _table(self, request: web.Request) -> tuple[str, ObjectTable]:
        """The URL's object table, after the token check: 401 before 404 tells nothing to a stranger."""
        self.tokens.require(request)
        entity, module, name = (request.match_info[k] for k in ("entity", "module", "object"))
        if entity != str(self.entity_id):
            raise json_error(web.HTTPNotFound, message=f"no entity {entity}")
        table = self.objects.get((module, name))
        if table is None:
            raise json_error(web.HTTPNotFound, message=f"no object {module}/{name}")
        request[WRITEBACK] = (module, name) in WRITEBACK_OBJECTS
        return name, table

    async def _writeback(self, request: web.Request) -> tuple[str, ObjectTable, bool]:
        """The writeback table of the URL once this request's faults are decided and survived, and whether
        to drop the connection after writing. A fault raises its `_Reply` here, before any write."""
        name, table = self._table(request)
        if not request[WRITEBACK]:
            raise json_error(web.HTTPNotFound, message=f"{request.match_info['module']}/{name} is read only")
        drop_after = await self._faults(request)
        return name, table, drop_after

    async def _faults(self, request: web.Request) -> bool:
        f, rng = self.faults, self._random
        if f.slow_rate and rng.random() < f.slow_rate:
            await asyncio.sleep(f.slow_seconds)
        if f.error_rate and rng.random() < f.error_rate:
            # in turn rather than drawn: a short run still sees every status it was asked for
            status, self._errors = f.statuses[self._errors % len(f.statuses)], self._errors + 1
            headers = {"Retry-After": str(f.retry_after)} if status in (429, 503) else None
            body = {"Errors": [{"Field": None, "Message": f"sandbox fault: {status}"}]}
            raise _Reply(web.json_response(body, status=status, headers=headers))
        if f.drop_rate and rng.random() < f.drop_rate:
            # closing with the body unread would reset the connection (RST): read it for a clean close
            await request.read()
            raise _drop(request)
        mutating = request.method in ("PUT", "POST", "DELETE")
        return mutating and bool(f.drop_after_write_rate) and rng.random() < f.drop_after_write_rate

    async def read(self, request: web.Request) -> web.Response:
        entity, module, name = (request.match_info[k] for k in ("entity", "module", "object"))
        _, table = self._table(request)
        if request[WRITEBACK]:
            await self._faults(request)  # a read sends nothing after, so a drop_after_write is moot
        page, size = int(request.match_info["page"]), int(request.match_info["size"])
        if page < 1 or not 1 <= size <= MAX_PAGE_SIZE:
            raise json_error(
                web.HTTPBadRequest, message=f"page starts at 1 and pageSize is 1..{MAX_PAGE_SIZE}"
            )
        base = request.url.with_path(f"/Generic/{entity}/{module}/{name}")
        # Query parameters filter by field equality (`?SourceDocumentID=D1`): how a publisher finds an
        # object whose create answer it never heard, before creating it again.
        filters = dict(request.query)
        rows = table.rows.values()
        if filters:
            rows = [r for r in rows if all(str(r.get(k)) == v for k, v in filters.items())]
        total = len(rows)
        query = f"?{request.query_string}" if filters else ""
        return web.json_response(
            {
                "Objects": list(islice(rows, (page - 1) * size, page * size)),
                "Paging": {
                    "Next": f"{base / str(page + 1) / str(size)}{query}" if page * size < total else None,
                    "Previous": f"{base / str(page - 1) / str(size)}{query}" if page > 1 else None,
                    "Page": page,
                    "PageSize": size,
                    "TotalCount": total,
                },
            }
        )

    def _existing(self, request: web.Request, table: ObjectTable) -> tuple[int, dict]:
        object_id = int(request.match_info["id"])
        row = table.rows.get(object_id)
        if row is None:
            raise _errors(web.HTTPNotFound, f"no {request.match_info['object']} with ID {object_id}")
        return object_id, row

    async def _data_object(self, request: web.Request, *, creating: bool) -> dict:
        """The body's DataObject, 400 unless it is one and names an existing student."""
        try:
            data = (await request.json())["DataObject"]
        except (ValueError, KeyError, TypeError):
            data = None
        if not isinstance(data, dict):
            raise _errors(web.HTTPBadRequest, 'expected a JSON body {"DataObject": {...}}')
        if "StudentID" in data or creating:
            student = data.get("StudentID")
            # bool is an int to Python, never to Qmlativ
            if type(student) is not int or student not in self.students.rows:
                message = f"StudentID {json.dumps(student)} is not a student of entity {self.entity_id}"
                raise _errors(web.HTTPBadRequest, message, "StudentID")
        return data

    async def create(self, request: web.Request) -> web.Response:
        name, table, drop_after = await self._writeback(request)
        id_field = table.id_field
        data = {k: v for k, v in (await self._data_object(request, creating=True)).items() if k != id_field}
        object_id = self.store.insert(request.match_info["module"], name, data)
        table.put(row := data | {id_field: object_id})
        return self._written(request, drop_after, {"ID": object_id, "DataObject": row}, status=201)

    async def update(self, request: web.Request) -> web.Response:
        name, table, drop_after = await self._writeback(request)
        object_id, row = self._existing(request, table)
        changes = await self._data_object(request, creating=False)
        row = row | {k: v for k, v in changes.items() if k != table.id_field}
        self.store.update(object_id, {k: v for k, v in row.items() if k != table.id_field})
        table.put(row)
        return self._written(request, drop_after, {"ID": object_id, "DataObject": row})

    async def delete(self, request: web.Request) -> web.Response:
        _, table, drop_after = await self._writeback(request)
        object_id, _ = self._existing(request, table)
        self.store.delete(object_id)
        del table.rows[object_id]
        return self._written(request, drop_after, {"ID": object_id})

    async def read_one(self, request: web.Request) -> web.Response:
        _, table, _ = await self._writeback(request)
        object_id, row = self._existing(request, table)
        return web.json_response({"ID": object_id, "DataObject": row})

    def _written(self, request: web.Request, drop: bool, body: dict, status: int = 200) -> web.Response:
        if drop:
            raise _drop(request)
        return web.json_response(body, status=status)

    async def get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.faults.as_json())

    async def post_faults(self, request: web.Request) -> web.Response:
        try:
            self.set_faults(Faults.parse(await request.json()))
        except (ValueError, TypeError) as exc:
            raise json_error(web.HTTPBadRequest, message=str(exc)) from None
        return web.json_response(self.faults.as_json())

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats)

    async def reset_stats(self, request: web.Request) -> web.Response:
        self.stats = _new_stats()
        return web.json_response(self.stats)

    async def reload_students(self, request: web.Request) -> web.Response:
        return web.json_response({"students": self.load_students()})


class _Reply(Exception):  # noqa: N818 - not an error: a way out of a handler with any status
    """Ends a handler with `response`: aiohttp's HTTPException has no class for some statuses a fault
    may pick (e.g. 599), and a dropped connection has none at all."""

    def __init__(self, response: web.Response):
        super().__init__(response.status)
        self.response = response


def _drop(request: web.Request) -> _Reply:
    """Close the connection without a response: the client sees the server disconnect. The response
    raised with it is never written (aiohttp skips a closed transport without complaint)."""
    request[DROPPED] = True
    if request.transport is not None:
        request.transport.close()
    return _Reply(web.Response(status=499))
