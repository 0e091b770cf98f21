"""An Ed-Fi ODS/API 7.x emulator (SPEC §4.2, §6): the studentEducationOrganizationAssessmentAccommodations
of Data Standard 5.2 (`ds52`) and the Indiana resource (`indiana`), with the reference records they name.

DATA is `/data/v3`, or `/data/v3/{year}` for a server built with `years` (Year Specific mode; a year not
configured is 404). Endpoints:
- `GET /` (anonymous): the discovery document (`version`, `apiMode`, `dataModels`, `urls` with
  `dependencies`, `openApiMetadata`, `oauth`, `dataManagementApi`, `changeQueries`, absolute URLs).
- `GET /metadata/data/v3/dependencies` -> `[{"resource": "/ed-fi/students", "order", "operations"}]`;
  `GET /metadata/` -> `[{"name", "endpointUri", "prefix"}]` for the Resources and Descriptors OpenAPI
  documents at `GET /metadata/data/v3/{resources|descriptors}/swagger.json` (schemas named as the ODS
  names them, e.g. `edFi_studentReference`, which lightbeam relies on).
- `POST /oauth/token`, `grant_type=client_credentials`, key:secret as HTTP Basic or `client_id` /
  `client_secret` in the form (or JSON) body -> `{"access_token", "expires_in", "token_type": "bearer"}`.
- Everything below needs a bearer token (else 401):
  - `GET /changeQueries/v1[/{year}]/availableChangeVersions` -> `{"oldestChangeVersion", "newestChangeVersion"}`.
  - `GET DATA/{namespace}/{resource}`: `offset`, `limit` (0..500, default 25), `totalCount=true` (the
    `Total-Count` header), `minChangeVersion` / `maxChangeVersion`, and any other parameter an equality
    filter on a field or a reference's field (`?studentUniqueId=...`); creation order.
  - `POST DATA/{namespace}/{resource}`: upsert on the natural key -> 201 created / 200 updated, `Location`
    and `ETag`; a body with `id` is 400.
  - `GET|PUT|DELETE DATA/{namespace}/{resource}/{id}`: PUT -> 204 and a new `ETag` (the natural key must
    stay that of the record: 400), DELETE -> 204; an unknown id 404; `If-Match` with a stale etag 412
    `urn:ed-fi:api:optimistic-lock-failed`. PATCH, and POST to an id, are 405.
  - `GET DATA/{namespace}/{resource}/deletes` -> `[{"id", "changeVersion", "keyValues"}]` of deleted
    records; `.../keyChanges` -> `[]` (natural keys cannot change here).
  Records read back carry `id`, `_etag` and `_lastModifiedDate`.
- Resources (`RESOURCES`): `/ed-fi/studentEducationOrganizationAssessmentAccommodations` (validated with
  `edfi.schema`'s DS 5.2 schema, key student + education organization), the Indiana resource at
  `indiana_resource` (default `/indiana/studentAssessmentAccommodations`, validated with
  `indiana_schema.json`, every element in its key) and `/ed-fi/students` (DS 5.2 `EdFi_Student`) are
  written; `/ed-fi/schools`, `/ed-fi/assessments`, `/ed-fi/accommodationDescriptors` and
  `/ed-fi/academicSubjectDescriptors` are read only (writes 405). Reference records come from the inputs:
  `campus/persons.csv` (`edfi_id`: studentUniqueId), `campus/schools.csv` (schoolId = int("10" + district
  number + state school number)) and the dbt seeds (assessment mapping, descriptor tables). A write is 400
  `urn:ed-fi:api:bad-request:data-validation-failed` with `validationErrors` by JSON path for a schema
  violation or an unknown accommodation / academic subject descriptor (`{namespace}#{codeValue}`; other
  descriptor types are not checked), 409 `urn:ed-fi:api:data-conflict:unresolved-reference` for an
  unknown student, school or assessment. Errors are problem details `{"detail", "type", "title",
  "status", "correlationId", "validationErrors", "errors"}`.

Store: written records persist in SQLite (WAL) at `store_path`, ids stable (uuid hex) across restarts; one
change version sequence for all writes and deletes (reference records from the inputs are version 0).
One server per store at a time: each serves from its own in-memory copy.

Test hooks (no token; not counted):
- `GET|POST /_sandbox/edfi/faults`: as the Qmlativ sandbox's (`qmlativ.Faults`), on DATA requests.
- `GET /_sandbox/edfi/stats` -> `{"total": n, "requests": {method: {status: n}}, "writeback": {...}}`
  ("dropped" for a closed connection): every request (token and discovery included) and, under
  "writeback", those to a written resource (`schema` set: what a publish reads and writes); `DELETE`
  resets them.
- `GET|POST /_sandbox/edfi/change_queries` `{"enabled": bool}`: off, the emulator is an ODS without change
  queries: `availableChangeVersions`, `/deletes` and `/keyChanges` are 404 and `minChangeVersion` /
  `maxChangeVersion` 400.
"""

from __future__ import annotations

import csv
import json
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from sg_orchestration.catalog import SOURCES_BY_NAME
from sg_orchestration.edfi.schema import DS52_RESOURCE, load_ds52_schema, load_indiana_schema, violations
from sg_orchestration.paths import DBT_PROJECT_DIR
from sg_orchestration.sandbox.auth import Tokens, basic_credentials, json_error, same_client
from sg_orchestration.sandbox.data import read_records
from sg_orchestration.sandbox.qmlativ import DROPPED, WRITEBACK, Faults, QmlativApi, _drop, _Reply

MAX_LIMIT = 500
DEFAULT_LIMIT = 25
DEFAULT_INDIANA_RESOURCE = "/indiana/studentAssessmentAccommodations"
SEEDS = DBT_PROJECT_DIR / "seeds"
PAGING = {"offset", "limit", "totalCount", "minChangeVersion", "maxChangeVersion"}
ID_NAMESPACE = uuid.UUID("5b7ed2b4-5e3a-4c8e-9c61-edf1000e5c52")  # reference records' ids, stable per key


@dataclass(frozen=True)
class Resource:
    path: str  # "/{namespace}/{name}", as the dependencies list it
    key: tuple[str, ...]  # natural key fields, dotted through references
    order: int  # dependency order: references first
    schema: str | None = (
        None  # what a write is validated with: a DS 5.2 definition, "indiana"; None: read only
    )

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[1]

    def key_of(self, body: dict) -> tuple:
        def value(dotted: str):
            node = body
            for part in dotted.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            return node

        return tuple(value(k) for k in self.key)

    def key_values(self, key: tuple) -> dict:
        return {k.rsplit(".", 1)[-1]: v for k, v in zip(self.key, key, strict=True)}


STUDENTS = Resource("/ed-fi/students", ("studentUniqueId",), 2, "EdFi_Student")
SCHOOLS = Resource("/ed-fi/schools", ("schoolId",), 2)
ASSESSMENTS = Resource("/ed-fi/assessments", ("assessmentIdentifier", "namespace"), 2)
DESCRIPTOR_SEEDS = {  # the descriptor properties checked on write -> the dbt seed of their values
    "accommodationDescriptor": "edfi_accommodation_descriptors.csv",
    "academicSubjectDescriptor": "edfi_academic_subject_descriptors.csv",
}
DESCRIPTORS = {name: Resource(f"/ed-fi/{name}s", ("namespace", "codeValue"), 1) for name in DESCRIPTOR_SEEDS}
DS52 = Resource(
    "/ed-fi/studentEducationOrganizationAssessmentAccommodations",
    ("studentReference.studentUniqueId", "educationOrganizationReference.educationOrganizationId"),
    3,
    DS52_RESOURCE,
)
INDIANA_KEY = (
    "studentReference.studentUniqueId",
    "educationOrganizationReference.educationOrganizationId",
    "assessmentReference.assessmentIdentifier",
    "assessmentReference.namespace",
    "academicSubjectDescriptor",
    "accommodationDescriptor",
)
# A collection property -> the field identifying its items, as the ODS keys its child tables: an item
# repeating another is 400, and the served OpenAPI flags the field `x-Ed-Fi-isIdentity` as the ODS's does
# (lightbeam's uniqueness check reads it; the DS 5.2 file, written for the DMS, leaves it out).
COLLECTIONS = {
    "generalAccommodations": (
        "EdFi_StudentEducationOrganizationAssessmentAccommodation_GeneralAccommodation",
        "accommodationDescriptor",
    )
}
# a reference property -> the resource it names; its fields are that resource's key, in order
REFERENCES = {
    "studentReference": (STUDENTS, ("studentUniqueId",)),
    "educationOrganizationReference": (SCHOOLS, ("educationOrganizationId",)),
    "assessmentReference": (ASSESSMENTS, ("assessmentIdentifier", "namespace")),
}


@dataclass(slots=True)
class Record:
    id: str
    key: tuple
    body: dict
    modified: str
    version: int

    @property
    def etag(self) -> str:
        return str(self.version)  # each write has its own version, so a stale etag is one of an older write

    def as_json(self) -> dict:
        return {"id": self.id, **self.body, "_etag": self.etag, "_lastModifiedDate": self.modified}


@dataclass
class Table:
    """One resource's records of one ODS (a year), by id in creation order and by natural key."""

    rows: dict[str, Record] = field(default_factory=dict)
    by_key: dict[tuple, str] = field(default_factory=dict)
    deletes: list[dict] = field(default_factory=list)

    def put(self, record: Record) -> None:
        key = _text_key(record.key)
        replaced = self.by_key.get(key)
        if replaced is not None and replaced != record.id:  # one record per natural key
            del self.rows[replaced]
        self.rows[record.id] = record  # an update keeps its place
        self.by_key[key] = record.id

    def remove(self, record: Record) -> None:
        del self.rows[record.id]
        del self.by_key[_text_key(record.key)]


class Store:
    """Written records and deletes in SQLite; autocommit with WAL, as the Qmlativ sandbox's store."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.executescript(
            """PRAGMA journal_mode=WAL;
            PRAGMA synchronous=NORMAL;
            CREATE TABLE IF NOT EXISTS records (id TEXT PRIMARY KEY, scope TEXT NOT NULL, resource TEXT NOT NULL,
                body TEXT NOT NULL, modified TEXT NOT NULL, version INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS deletes (version INTEGER PRIMARY KEY, scope TEXT NOT NULL,
                resource TEXT NOT NULL, id TEXT NOT NULL, key_values TEXT NOT NULL);"""
        )

    def records(self) -> Iterable[tuple[str, str, str, dict, str, int]]:
        rows = self.db.execute(
            "SELECT id, scope, resource, body, modified, version FROM records ORDER BY rowid"
        )
        return ((i, s, r, json.loads(b), m, v) for i, s, r, b, m, v in rows)

    def deletes(self) -> Iterable[tuple[str, str, dict]]:
        rows = self.db.execute(
            "SELECT scope, resource, id, key_values, version FROM deletes ORDER BY version"
        )
        return ((s, r, {"id": i, "changeVersion": v, "keyValues": json.loads(k)}) for s, r, i, k, v in rows)

    def write(self, scope: str, resource: str, record: Record) -> None:
        # an update keeps its rowid, so the creation order survives a restart
        self.db.execute(
            "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
            " body = excluded.body, modified = excluded.modified, version = excluded.version",
            (record.id, scope, resource, json.dumps(record.body), record.modified, record.version),
        )

    def delete(self, scope: str, resource: str, deleted: dict) -> None:
        with self.db:  # both or neither
            self.db.execute("DELETE FROM records WHERE id = ?", (deleted["id"],))
            self.db.execute(
                "INSERT INTO deletes VALUES (?, ?, ?, ?, ?)",
                (deleted["changeVersion"], scope, resource, deleted["id"], json.dumps(deleted["keyValues"])),
            )

    def close(self) -> None:
        self.db.close()


def problem(
    status: int, kind: str, title: str, detail: str, validation: dict | None = None, headers=None
) -> _Reply:
    """An Ed-Fi problem-details answer (ODS/API 7.2+), raised to end the handler."""
    body = {
        "detail": detail,
        "type": f"urn:ed-fi:api:{kind}",
        "title": title,
        "status": status,
        "correlationId": uuid.uuid4().hex,
        "validationErrors": validation or {},
        "errors": [] if validation else [detail],
    }
    return _Reply(
        web.json_response(body, status=status, headers=headers, content_type="application/problem+json")
    )


def _invalid(validation: dict[str, list[str]]) -> _Reply:
    detail = "Data validation failed. See 'validationErrors' for details."
    return problem(400, "bad-request:data-validation-failed", "Data Validation Failed", detail, validation)


def _bad_request(detail: str) -> _Reply:
    return problem(400, "bad-request", "Bad Request", detail)


def _not_found() -> _Reply:
    return problem(404, "not-found", "Not Found", "The specified resource could not be found.")


def _not_allowed(allowed: str) -> _Reply:
    detail = "The request method is not supported by this resource."
    return problem(405, "method-not-allowed", "Method Not Allowed", detail, headers={"Allow": allowed})


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _csv(path: Path) -> list[dict[str, str]]:
    # the seeds are the project's own files, read strictly: not data to serve leniently as `read_records`
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def reference_records(campus_dir: Path, district_number: str | None) -> dict[Resource, list[dict]]:
    """The students, schools, assessments and descriptors an ODS of the district holds already."""
    persons = read_records(campus_dir / "persons.csv", SOURCES_BY_NAME["campus__persons"].column_names)
    schools = read_records(campus_dir / "schools.csv", SOURCES_BY_NAME["campus__schools"].column_names)
    students = [
        {"studentUniqueId": p["edfi_id"], "firstName": p["first_name"], "lastSurname": p["last_name"]}
        for p in persons
        if p["edfi_id"]
    ]
    mapping = _csv(SEEDS / "edfi_assessment_mapping.csv")
    numbers = [(str(district_number or ""), s["state_school_number"] or "", s["name"]) for s in schools]
    records = {
        STUDENTS: students,
        SCHOOLS: [
            {"schoolId": int(f"10{d}{n}"), "nameOfInstitution": name}
            for d, n, name in numbers
            if d.isdigit() and n.isdigit()  # the seed's 10+District+School
        ],
        ASSESSMENTS: [
            {"assessmentIdentifier": a, "namespace": ns, "assessmentTitle": a}
            for a, ns in sorted({(r["assessment_identifier"], r["namespace"]) for r in mapping})
        ],
    }
    for name, resource in DESCRIPTORS.items():
        rows = _csv(SEEDS / DESCRIPTOR_SEEDS[name])
        records[resource] = [
            {
                f"{name}Id": i,
                "codeValue": r["code_value"],
                "namespace": r["namespace"],
                "shortDescription": (r.get("short_description") or r["description"])[:75],
                "description": r["description"],
            }
            for i, r in enumerate(rows, start=1)
        ]
    return records


def _text(value) -> str:
    """A key value as a query string gives it: the one form keys are compared in."""
    return json.dumps(value) if isinstance(value, bool) or value is None else str(value)


def _text_key(key: Iterable) -> tuple[str, ...]:
    return tuple(_text(v) for v in key)


def _query_fields(record: Record) -> dict:
    """What a collection GET filters on: the scalar fields and, flattened as the ODS does, each
    reference's fields (`?studentUniqueId=` for studentReference.studentUniqueId)."""
    body = record.body
    fields = {k: v for k, v in body.items() if not isinstance(v, dict | list)}
    for name, value in body.items():
        if name.endswith("Reference") and isinstance(value, dict):
            fields.update(value)
    return fields | {"id": record.id}


def _descriptor_values(node, path: str = "$") -> Iterable[tuple[str, str, str]]:
    """(JSON path, descriptor property, value) of every checked descriptor in a body."""
    if isinstance(node, dict):
        for name, value in node.items():
            if name in DESCRIPTORS and isinstance(value, str):
                yield f"{path}.{name}", name, value
            else:
                yield from _descriptor_values(value, f"{path}.{name}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _descriptor_values(value, f"{path}[{i}]")


def _ods_name(name: str) -> str:
    """`EdFi_Student_Reference` -> `edFi_studentReference`: the ODS/API's schema names, which lightbeam
    relies on (a resource's schema is camelCase(namespace) + "_" + the resource in the singular)."""
    prefix, _, rest = name.partition("_")
    first, *others = rest.split("_")
    return f"{prefix[:1].lower()}{prefix[1:]}_{first[:1].lower()}{first[1:]}{''.join(others)}"


def _schema_name(resource: Resource) -> str:
    namespace = "".join(part.title() for part in resource.path.split("/")[1].split("-"))
    return _ods_name(f"{namespace}_{resource.name.removesuffix('s')}")  # our resources are plain plurals


def _with_ods_refs(node):
    if isinstance(node, dict):
        return {
            k: f"#/components/schemas/{_ods_name(v.rsplit('/', 1)[1])}" if k == "$ref" else _with_ods_refs(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_with_ods_refs(v) for v in node]
    return node


def _descriptor_schema(name: str) -> dict:
    def text(n: int, identity: bool = False) -> dict:
        return {"type": "string", "maxLength": n} | ({"x-Ed-Fi-isIdentity": True} if identity else {})

    return {
        "type": "object",
        "required": ["codeValue", "namespace", "shortDescription"],
        "properties": {
            f"{name}Id": {"type": "integer"},
            "codeValue": text(50, True),
            "namespace": text(255, True),
            "shortDescription": text(75),
            "description": text(1024),
        },
    }


def _paths(resource: Resource) -> dict:
    """The OpenAPI paths of one resource: what a client needs to know it can read, filter and write."""
    ref = {"$ref": f"#/components/schemas/{_schema_name(resource)}"}
    query = [*sorted(PAGING), *(k.rsplit(".", 1)[-1] for k in resource.key)]
    ok = {"description": "OK"}
    listing = {
        "parameters": [{"name": n, "in": "query", "schema": {"type": "string"}} for n in query],
        "responses": {
            "200": {
                "description": "OK",
                "content": {"application/json": {"schema": {"type": "array", "items": ref}}},
            }
        },
    }
    collection, item = {"get": listing}, {"get": {"responses": {"200": ok, "404": ok}}}
    if resource.schema:
        collection["post"] = {
            "requestBody": {"content": {"application/json": {"schema": ref}}, "required": True},
            "responses": {"200": ok, "201": ok, "400": ok, "409": ok},
        }
        item |= {"put": collection["post"] | {"responses": {"204": ok}}, "delete": {"responses": {"204": ok}}}
    return {resource.path: collection, f"{resource.path}/{{id}}": item}


def _new_stats() -> dict:
    return {"total": 0, "requests": {}, "writeback": {}}


class EdFiApi:
    def __init__(
        self,
        campus_dir: Path,
        client: tuple[str, str],
        district_number: str | None,
        token_ttl: int,
        *,
        store_path: Path,
        faults: Faults | None = None,
        years: Sequence[int] | None = None,
        indiana_resource: str = DEFAULT_INDIANA_RESOURCE,
    ):
        """`indiana_resource` is the Indiana profile's path under DATA, "/{namespace}/{name}"."""
        if len(indiana_resource.strip("/").split("/")) != 2:
            raise ValueError(f"indiana_resource must be /namespace/name, not {indiana_resource!r}")
        self.client = client
        self.tokens = Tokens(token_ttl)
        self.years = tuple(int(y) for y in years or ())
        self.indiana = Resource("/" + indiana_resource.strip("/"), INDIANA_KEY, 3, "indiana")
        resources = (DS52, self.indiana, STUDENTS, SCHOOLS, ASSESSMENTS, *DESCRIPTORS.values())
        self.resources = {r.path: r for r in resources}
        scopes = [str(y) for y in self.years] or [""]  # one ODS per school year, or the one
        self.tables = {(scope, path): Table() for scope in scopes for path in self.resources}
        self._load_reference_records(reference_records(campus_dir, district_number), scopes)
        self.store = Store(store_path)
        self.version = 0
        self._load_store()
        self.swagger = self._swagger_documents()
        self.set_faults(faults or Faults())
        self.stats = _new_stats()
        self.change_queries = True

    def _load_reference_records(self, records: dict[Resource, list[dict]], scopes: list[str]) -> None:
        loaded = _now()
        for resource, bodies in records.items():
            for body in bodies:
                key = resource.key_of(body)
                record = Record(uuid.uuid5(ID_NAMESPACE, f"{resource.path}{key}").hex, key, body, loaded, 0)
                for scope in scopes:  # one object shared by every year's ODS until a write replaces it
                    self.tables[scope, resource.path].put(record)

    def _load_store(self) -> None:
        """What earlier servers over the store wrote and deleted, over the reference records."""
        for record_id, scope, path, body, modified, version in self.store.records():
            if (scope, path) in self.tables:  # a year no longer configured stays on disk, not served
                key = self.resources[path].key_of(body)
                self.tables[scope, path].put(Record(record_id, key, body, modified, version))
            self.version = max(self.version, version)
        for scope, path, deleted in self.store.deletes():
            table = self.tables.get((scope, path))
            if table is not None:
                table.deletes.append(deleted)
                record = table.rows.get(deleted["id"])
                if record is not None and record.version == 0:  # a deleted reference record stays deleted
                    table.remove(record)
            self.version = max(self.version, deleted["changeVersion"])

    def _swagger_documents(self) -> dict[str, dict]:
        definitions = json.loads(json.dumps(load_ds52_schema()["definitions"]))  # a copy to mark
        for item, identity in COLLECTIONS.values():
            definitions[item]["properties"][identity]["x-Ed-Fi-isIdentity"] = True
        indiana = {k: v for k, v in load_indiana_schema().items() if k not in ("$schema", "title")}
        descriptors = list(DESCRIPTORS.values())
        sections = {
            "resources": (
                [r for r in self.resources.values() if r not in descriptors],
                {_ods_name(n): _with_ods_refs(s) for n, s in definitions.items()}
                | {_schema_name(self.indiana): indiana},
            ),
            "descriptors": (
                descriptors,
                {_schema_name(r): _descriptor_schema(n) for n, r in DESCRIPTORS.items()},
            ),
        }
        return {
            section: {
                "openapi": "3.0.1",
                "info": {"title": f"Ed-Fi ODS/API sandbox: {section}", "version": "3"},
                "paths": {p: v for r in served for p, v in _paths(r).items()},
                "components": {"schemas": schemas},
            }
            for section, (served, schemas) in sections.items()
        }

    # Faults, their hooks, the stats hook and the request counting are the Qmlativ sandbox's: they use only
    # self.faults, self._random and self.stats ({"total", "requests", "writeback"}).
    set_faults = QmlativApi.set_faults
    get_faults = QmlativApi.get_faults
    post_faults = QmlativApi.post_faults
    get_stats = QmlativApi.get_stats
    _count = QmlativApi._count
    _faults = QmlativApi._faults  # decided on every DATA request; True: drop the connection after writing

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._count])
        router = app.router
        year = r"/{year:\d{4}}" if self.years else ""
        router.add_get("/", self.discovery)
        router.add_get("/metadata/", self.metadata)
        router.add_get("/metadata/data/v3/dependencies", self.dependencies)
        router.add_get("/metadata/data/v3/{section:resources|descriptors}/swagger.json", self.openapi)
        router.add_post("/oauth/token", self.token)
        router.add_get(f"/changeQueries/v1{year}/availableChangeVersions", self.change_versions)
        router.add_route("*", f"/data/v3{year}/{{namespace}}/{{name}}", self.collection)
        router.add_route("*", f"/data/v3{year}/{{namespace}}/{{name}}/{{id}}", self.item)
        router.add_get("/_sandbox/edfi/faults", self.get_faults)
        router.add_post("/_sandbox/edfi/faults", self.post_faults)
        router.add_get("/_sandbox/edfi/stats", self.get_stats)
        router.add_delete("/_sandbox/edfi/stats", self.reset_stats)
        router.add_route("*", "/_sandbox/edfi/change_queries", self.change_queries_switch)
        app.on_cleanup.append(lambda _app: self._close())
        return app

    async def _close(self) -> None:
        self.store.close()

    # --- anonymous: discovery, metadata, token ---

    async def discovery(self, request: web.Request) -> web.Response:
        base = str(request.url.origin())
        return web.json_response(
            {
                "version": "7.3",
                "informationalVersion": "7.3",
                "suite": "3",
                "build": "sg-orch sandbox",
                "apiMode": "Year Specific" if self.years else "Shared Instance",
                "dataModels": [{"name": "Ed-Fi", "version": "5.2.0", "informationalVersion": "Ed-Fi DS 5.2"}],
                "urls": {
                    "dependencies": f"{base}/metadata/data/v3/dependencies",
                    "openApiMetadata": f"{base}/metadata/",
                    "oauth": f"{base}/oauth/token",
                    "dataManagementApi": f"{base}/data/v3/",
                    "changeQueries": f"{base}/changeQueries/v1/",
                },
            }
        )

    async def dependencies(self, request: web.Request) -> web.Response:
        # every resource is listed for Create as the real ODS lists it: lightbeam reads descriptors and
        # picks what to send only among resources that can be created
        listed = sorted(self.resources.values(), key=lambda r: (r.order, r.path))
        return web.json_response(
            [{"resource": r.path, "order": r.order, "operations": ["Create", "Update"]} for r in listed]
        )

    async def metadata(self, request: web.Request) -> web.Response:
        base = str(request.url.origin())
        return web.json_response(
            [
                {
                    "name": name.title(),
                    "endpointUri": f"{base}/metadata/data/v3/{name}/swagger.json",
                    "prefix": "",
                }
                for name in self.swagger
            ]
        )

    async def openapi(self, request: web.Request) -> web.Response:
        data = f"{request.url.origin()}/data/v3"
        server = (
            {
                "url": data + "/{schoolYearFromRoute}",
                "variables": {
                    "schoolYearFromRoute": {
                        "enum": [str(y) for y in self.years],
                        "default": str(self.years[-1]),
                    }
                },
            }
            if self.years
            else {"url": data}
        )
        return web.json_response(self.swagger[request.match_info["section"]] | {"servers": [server]})

    async def token(self, request: web.Request) -> web.Response:
        if request.content_type == "application/json":  # some Ed-Fi clients send the grant as JSON
            try:
                form = await request.json()
            except ValueError:
                form = None
            form = form if isinstance(form, dict) else {}
        else:
            form = await request.post()
        if form.get("grant_type") != "client_credentials":
            raise json_error(web.HTTPBadRequest, error="unsupported_grant_type")
        given = basic_credentials(request) or (form.get("client_id"), form.get("client_secret"))
        if not same_client(given, self.client):
            raise json_error(web.HTTPUnauthorized, {"WWW-Authenticate": "Basic"}, error="invalid_client")
        return web.json_response(self.tokens.issue())

    # --- with a token: change versions and resources ---

    def _authorized(self, request: web.Request) -> str:
        """The request's ODS (its year, "" for the one) once its token is checked: 401 before 404."""
        try:
            self.tokens.require(request)
        except web.HTTPUnauthorized:
            raise problem(
                401,
                "security:authentication",
                "Authentication Failed",
                "The caller could not be authenticated: the bearer token is missing, invalid or expired.",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            ) from None
        scope = request.match_info.get("year", "")
        if scope and int(scope) not in self.years:
            raise _not_found()
        return scope

    async def change_versions(self, request: web.Request) -> web.Response:
        self._authorized(request)
        if not self.change_queries:
            raise _not_found()
        return web.json_response({"oldestChangeVersion": 0, "newestChangeVersion": self.version})

    async def _target(self, request: web.Request) -> tuple[str, Resource, Table, bool]:
        """The URL's ODS, resource and table once this request's faults are survived, and whether to drop
        the connection after writing."""
        scope = self._authorized(request)
        path = f"/{request.match_info['namespace']}/{request.match_info['name']}"
        if (scope, path) not in self.tables:
            raise _not_found()
        request[WRITEBACK] = self.resources[path].schema is not None
        try:
            drop_after = await self._faults(request)
        except _Reply as fault:  # a fault's error, Qmlativ-shaped: answered as the problem details of an ODS
            status = fault.response.status
            if request.get(DROPPED):
                raise
            retry = {k: v for k, v in fault.response.headers.items() if k == "Retry-After"}
            raise problem(
                status, "system", "Sandbox Fault", f"sandbox fault: {status}", headers=retry
            ) from None
        return scope, self.resources[path], self.tables[scope, path], drop_after

    async def collection(self, request: web.Request) -> web.Response:
        scope, resource, table, drop_after = await self._target(request)
        if request.method == "GET":
            return self._listing(request, resource, table)
        if request.method == "POST" and resource.schema:
            return await self._upsert(request, scope, resource, table, drop_after)
        raise _not_allowed("GET, POST" if resource.schema else "GET")

    async def item(self, request: web.Request) -> web.Response:
        scope, resource, table, drop_after = await self._target(request)
        record_id = request.match_info["id"]
        if request.method == "GET" and record_id in ("deletes", "keyChanges"):
            if not self.change_queries:
                raise _not_found()
            # natural keys never change here (a PUT may not change one), so there are no key changes
            changes = table.deletes if record_id == "deletes" else []
            return self._page(request, changes, lambda d: d["changeVersion"], lambda d: d)
        if request.method not in ("GET", "PUT", "DELETE") or (
            request.method != "GET" and not resource.schema
        ):
            raise _not_allowed("GET, PUT, DELETE" if resource.schema else "GET")
        record = table.rows.get(record_id)
        if record is None:
            raise _not_found()
        if request.method == "GET":
            return web.json_response(record.as_json(), headers={"ETag": f'"{record.etag}"'})
        _check_if_match(request, record)
        if request.method == "DELETE":
            self.version += 1
            deleted = {
                "id": record.id,
                "changeVersion": self.version,
                "keyValues": resource.key_values(record.key),
            }
            self.store.delete(scope, resource.path, deleted)
            table.remove(record)
            table.deletes.append(deleted)
            return _written(request, drop_after, web.Response(status=204))
        body = await _body(request)
        if body.pop("id", record.id) != record.id:
            raise _bad_request("The id in the request body does not match the id in the URL.")
        key = self._validated(scope, resource, body)
        if _text_key(key) != _text_key(record.key):
            detail = "Key values for this resource cannot be changed: delete it and create it again instead."
            raise problem(400, "bad-request:key-change-not-supported", "Key Change Not Supported", detail)
        record = self._write(scope, resource, table, record.id, key, body)
        return _written(request, drop_after, web.Response(status=204, headers={"ETag": f'"{record.etag}"'}))

    def _listing(self, request: web.Request, resource: Resource, table: Table) -> web.Response:
        filters = {k: v for k, v in request.query.items() if k not in PAGING}
        names = [k.rsplit(".", 1)[-1] for k in resource.key]
        if filters and sorted(filters) == sorted(names):  # the natural key: a lookup rather than a scan
            found = table.by_key.get(tuple(filters[n] for n in names))
            records = [table.rows[found]] if found else []
        else:
            records = list(table.rows.values())
            if filters:
                records = [
                    r
                    for r in records
                    if all(k in (q := _query_fields(r)) and _text(q[k]) == v for k, v in filters.items())
                ]
        return self._page(request, records, lambda r: r.version, Record.as_json)

    def _page(self, request: web.Request, items: list, version: Callable, render: Callable) -> web.Response:
        query = request.query
        offset = _int_parameter(query, "offset", 0, 0)
        limit = _int_parameter(query, "limit", DEFAULT_LIMIT, 0, MAX_LIMIT)
        if not self.change_queries and {"minChangeVersion", "maxChangeVersion"} & set(query):
            detail = "Change queries are not enabled on this ODS/API."
            raise problem(400, "bad-request:parameter", "Parameter Validation Failed", detail)
        low = _int_parameter(query, "minChangeVersion", None, 0)
        high = _int_parameter(query, "maxChangeVersion", None, 0)
        if low is not None or high is not None:
            items = [i for i in items if (low or 0) <= version(i) <= (self.version if high is None else high)]
        headers = {"Total-Count": str(len(items))} if query.get("totalCount", "").lower() == "true" else None
        return web.json_response([render(i) for i in items[offset : offset + limit]], headers=headers)

    async def _upsert(
        self, request: web.Request, scope: str, resource: Resource, table: Table, drop_after: bool
    ):
        body = await _body(request)
        if "id" in body:
            raise _bad_request(
                "Resource identifiers cannot be assigned by the client: the 'id' property must not be in the body."
            )
        key = self._validated(scope, resource, body)
        existing = table.by_key.get(_text_key(key))
        record = self._write(scope, resource, table, existing or uuid.uuid4().hex, key, body)
        headers = {
            "Location": f"{request.url.origin()}{request.path}/{record.id}",
            "ETag": f'"{record.etag}"',
        }
        return _written(request, drop_after, web.Response(status=200 if existing else 201, headers=headers))

    def _validated(self, scope: str, resource: Resource, body: dict) -> tuple:
        """The body's natural key once it is valid: 400 for a schema violation or an unknown descriptor,
        409 for a reference to a record this ODS does not hold."""
        found = violations(body, None if resource.schema == "indiana" else resource.schema)
        for name, (_, identity) in COLLECTIONS.items():
            seen = [item.get(identity) for item in body.get(name) or [] if isinstance(item, dict)]
            found |= {
                f"$.{name}[{i}]": ["repeats an earlier item"] for i, v in enumerate(seen) if v in seen[:i]
            }
        if found:
            raise _invalid(found)
        for path, name, value in _descriptor_values(body):
            namespace, _, code = value.partition("#")
            if (namespace, code) not in self.tables[scope, DESCRIPTORS[name].path].by_key:
                found[path] = [
                    f"is not a known {name} (a {{namespace}}#{{codeValue}} of its descriptor table)"
                ]
        if found:
            raise _invalid(found)
        for name, (target, fields) in REFERENCES.items():
            reference = body.get(name)
            known = self.tables[scope, target.path].by_key
            if isinstance(reference, dict) and _text_key(reference.get(f) for f in fields) not in known:
                kind = target.name.removesuffix("s")
                detail = f"The referenced '{kind[:1].upper()}{kind[1:]}' resource does not exist."
                raise problem(409, "data-conflict:unresolved-reference", "Unresolved Reference", detail)
        return resource.key_of(body)

    def _write(
        self, scope: str, resource: Resource, table: Table, record_id: str, key: tuple, body: dict
    ) -> Record:
        self.version += 1
        record = Record(record_id, key, body, _now(), self.version)
        self.store.write(scope, resource.path, record)
        table.put(record)
        return record

    # --- test hooks ---

    async def reset_stats(self, request: web.Request) -> web.Response:
        self.stats = _new_stats()
        return web.json_response(self.stats)

    async def change_queries_switch(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            self.change_queries = bool((await _body(request)).get("enabled", True))
        elif request.method != "GET":
            raise _not_allowed("GET, POST")
        return web.json_response({"enabled": self.change_queries})


async def _body(request: web.Request) -> dict:
    """The JSON object a write sends, without the `_etag` / `_lastModifiedDate` a client may echo back."""
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise _bad_request("The request body must be a JSON object.")
    return {k: v for k, v in body.items() if not k.startswith("_")}


def _check_if_match(request: web.Request, record: Record) -> None:
    given = request.headers.get("If-Match", "*").strip()
    if given != "*" and given.removeprefix("W/").strip('"') != record.etag:
        detail = "The resource item has been modified by another user since the given ETag."
        raise problem(412, "optimistic-lock-failed", "Optimistic Lock Failed", detail)


def _int_parameter(query, name: str, default: int | None, low: int, high: int | None = None) -> int | None:
    text = query.get(name)
    if text is None:
        return default
    value = int(text) if text.strip().isdigit() else -1
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"an integer of at least {low}"
        detail = f"{name} must be omitted or set to {bounds}."
        raise problem(400, "bad-request:parameter", "Parameter Validation Failed", detail, {name: [detail]})
    return value


def _written(request: web.Request, drop: bool, response: web.Response) -> web.Response:
    if drop:  # the write is applied; its answer is lost, as when a publish is killed mid-request
        raise _drop(request)
    return response
