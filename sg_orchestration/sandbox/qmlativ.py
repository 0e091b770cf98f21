"""The Skyward Qmlativ Generic API (SPEC §3.2, §4.1); for now the student read that maps SameGoal students.

Endpoints: `GET /oauth/token?grant_type=client_credentials` with HTTP Basic key:secret, and
`GET /Generic/{EntityID}/{Module}/{Object}/{page}/{pageSize}` (page from 1, pageSize at most 1000) with a
bearer token, answering `{"Objects": [...], "Paging": {"Next", "Previous", "Page", "PageSize", "TotalCount"}}`
where Next and Previous are absolute URLs or null.

Objects live in `QmlativApi.objects`, one `ObjectTable` per (Module, Object), so the writeback objects'
create, update and delete are further tables and routes over the same store. Students are loaded from
`qmlativ/students.csv` under the names `config/qmlativ_objects.yaml` gives them, with the catalog's int
columns (StudentID, NameID, EntityID) as JSON numbers when they parse.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from aiohttp import web

from sg_orchestration.catalog import SOURCES_BY_NAME
from sg_orchestration.config import DEFAULT_QMLATIV_OBJECTS
from sg_orchestration.sandbox.auth import Tokens, basic_credentials, json_error, same_client
from sg_orchestration.sandbox.data import read_records

MAX_PAGE_SIZE = 1000


@dataclass
class ObjectTable:
    """The objects of one (Module, Object) by ID, served in insertion order."""

    id_field: str
    rows: dict[object, dict] = field(default_factory=dict)

    def put(self, row: dict) -> None:
        # a repeated ID replaces the object, as in any store keyed by ID; a row without one is still served
        key = row.get(self.id_field)
        self.rows[key if key is not None else ("no id", len(self.rows))] = row

    def page(self, page: int, size: int) -> list[dict]:
        return list(islice(self.rows.values(), (page - 1) * size, page * size))


def _int_or_text(value: str | None) -> int | str | None:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return value


class QmlativApi:
    def __init__(self, qmlativ_dir: Path, client: tuple[str, str], entity_id: int, token_ttl: int):
        self.client = client
        self.entity_id = entity_id
        self.tokens = Tokens(token_ttl)
        self.objects: dict[tuple[str, str], ObjectTable] = {}
        students = SOURCES_BY_NAME["qmlativ__students"]
        names = DEFAULT_QMLATIV_OBJECTS["students"]
        table = self.objects[names["module"], names["object"]] = ObjectTable("StudentID")
        ints = {c.name for c in students.columns if c.type == "int"}
        for record in read_records(qmlativ_dir / students.file, students.column_names):
            table.put({k: _int_or_text(v) if k in ints else v for k, v in record.items()})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/oauth/token", self.token)
        app.router.add_get(r"/Generic/{entity}/{module}/{object}/{page:\d+}/{size:\d+}", self.read)
        return app

    async def token(self, request: web.Request) -> web.Response:
        if request.query.get("grant_type") != "client_credentials":
            raise json_error(web.HTTPBadRequest, error="unsupported_grant_type")
        if not same_client(basic_credentials(request), self.client):
            raise json_error(web.HTTPUnauthorized, {"WWW-Authenticate": "Basic"}, error="invalid_client")
        return web.json_response(self.tokens.issue())

    async def read(self, request: web.Request) -> web.Response:
        self.tokens.require(request)
        entity, module, name = (request.match_info[k] for k in ("entity", "module", "object"))
        if entity != str(self.entity_id):
            raise json_error(web.HTTPNotFound, message=f"no entity {entity}")
        table = self.objects.get((module, name))
        if table is None:
            raise json_error(web.HTTPNotFound, message=f"no object {module}/{name}")
        page, size = int(request.match_info["page"]), int(request.match_info["size"])
        if page < 1 or not 1 <= size <= MAX_PAGE_SIZE:
            raise json_error(
                web.HTTPBadRequest, message=f"page starts at 1 and pageSize is 1..{MAX_PAGE_SIZE}"
            )
        base = request.url.with_path(f"/Generic/{entity}/{module}/{name}")
        total = len(table.rows)
        return web.json_response(
            {
                "Objects": table.page(page, size),
                "Paging": {
                    "Next": str(base / str(page + 1) / str(size)) if page * size < total else None,
                    "Previous": str(base / str(page - 1) / str(size)) if page > 1 else None,
                    "Page": page,
                    "PageSize": size,
                    "TotalCount": total,
                },
            }
        )
