"""The sandbox's Ed-Fi ODS/API emulator (SPEC §4.2, §6) over real sockets: discovery, OAuth, upserts and
their validation, optimistic locking, paging, change queries, year routes, a store that survives a restart,
faults and stats; its DS 5.2 schema; and a third-party Ed-Fi client, lightbeam, validating and sending to it."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
import yaml
from aiohttp import web

from sg_orchestration.edfi.schema import ds52_errors, indiana_errors, load_ds52_schema
from sg_orchestration.paths import PROJECT_ROOT
from sg_orchestration.sandbox import Sandbox
from sg_orchestration.sandbox.edfi import EdFiApi
from sg_orchestration.sandbox.server import EDFI_KEY, EDFI_SECRET

CLIENT = ("edfi-key", "edfi-secret")
DISTRICT_NUMBER = "5375"
SCHOOL = 1053750101  # 10 + district 5375 + state school number 0101
OTHER_SCHOOL = 1053750202
ACCOMMODATIONS = "/ed-fi/studentEducationOrganizationAssessmentAccommodations"
INDIANA = "/indiana/studentAssessmentAccommodations"
EXTRA_TIME = "http://doe.in.gov/Descriptor/AccommodationDescriptor.xml#ET"
BREAKS = "http://doe.in.gov/Descriptor/AccommodationDescriptor.xml#AB"
MATH = "http://doe.in.gov/Descriptor/AcademicSubjectDescriptor.xml#02"
ILEARN = {"assessmentIdentifier": "ILEARN", "namespace": "uri://ed-fi.org/assessments/ilearn"}
SHARED_OPENAPI = PROJECT_ROOT.parent / "shared" / "reference" / "edfi-ds52-resources-openapi.json"


@pytest.fixture
def campus(tmp_path: Path) -> Path:
    folder = tmp_path / "inputs" / "campus"
    folder.mkdir(parents=True)
    (folder / "persons.csv").write_text(
        "person_id,edfi_id,student_number,first_name,last_name\n"
        "1,E1001,S1,Ann,Lee\n2,E1002,S2,Bo,Kim\n3,E1003,S3,Cy,Ray\n4,,S4,No,EdfiId\n"
    )
    (folder / "schools.csv").write_text(
        "school_id,state_school_number,name,state_exclude\n10,0101,North,false\n20,0202,South,true\n"
    )
    return folder


class Emulator:
    """An `EdFiApi` on 127.0.0.1 in a thread of its own, and a client holding a fresh token."""

    def __init__(self, api: EdFiApi):
        self.api = api
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> Emulator:
        self._thread.start()
        self.url = self._call(self._start())
        self.client = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token()}"})
        return self

    def __exit__(self, *exc_info) -> None:
        self.client.close()
        self._call(self._runner.cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _start(self) -> str:
        self._runner = web.AppRunner(self.api.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        return f"http://{host}:{port}"

    def token(self) -> str:
        response = httpx.post(
            f"{self.url}/oauth/token", data={"grant_type": "client_credentials"}, auth=CLIENT
        )
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    def post(self, resource: str, body: dict, data: str = "/data/v3") -> httpx.Response:
        return self.client.post(f"{data}{resource}", json=body)


def _api(campus: Path, **options) -> EdFiApi:
    options.setdefault("store_path", campus.parent / "store" / "edfi.sqlite3")
    return EdFiApi(campus, CLIENT, DISTRICT_NUMBER, options.pop("token_ttl", 3600), **options)


@pytest.fixture
def edfi(campus: Path):
    with Emulator(_api(campus)) as emulator:
        yield emulator


def _accommodation(student: str = "E1001", school: int = SCHOOL, *descriptors: str) -> dict:
    return {
        "studentReference": {"studentUniqueId": student},
        "educationOrganizationReference": {"educationOrganizationId": school},
        "generalAccommodations": [{"accommodationDescriptor": d} for d in descriptors or (EXTRA_TIME,)],
    }


def _indiana(student: str = "E1001", assessment: dict = ILEARN, subject: str = MATH) -> dict:
    return {
        "studentReference": {"studentUniqueId": student},
        "educationOrganizationReference": {"educationOrganizationId": SCHOOL},
        "assessmentReference": assessment,
        "academicSubjectDescriptor": subject,
        "accommodationDescriptor": EXTRA_TIME,
    }


def _location(response: httpx.Response) -> str:
    return httpx.URL(response.headers["Location"]).path


# --- the schemas ---


def test_ds52_errors_name_the_json_path_never_the_value():
    bad = _accommodation("E" * 40, SCHOOL, EXTRA_TIME) | {"educationOrganizationReference": {}}
    bad["generalAccommodations"].append({})
    errors = ds52_errors(bad)
    assert errors == [
        "$.educationOrganizationReference.educationOrganizationId: is required",
        "$.generalAccommodations[1].accommodationDescriptor: is required",
        "$.studentReference.studentUniqueId: must be at most 32 characters",
    ]
    assert ds52_errors(_accommodation()) == []


def test_indiana_errors_require_the_seed_elements_and_an_integer_education_organization():
    payload = _indiana() | {"educationOrganizationReference": {"educationOrganizationId": str(SCHOOL)}}
    del payload["academicSubjectDescriptor"]
    assert indiana_errors(payload) == [
        "$.academicSubjectDescriptor: is required",
        "$.educationOrganizationReference.educationOrganizationId: must be of type integer",
    ]
    assert indiana_errors(_indiana()) == []


def test_the_shipped_schema_is_the_extract_script_output():
    """Re-running scripts/extract_edfi_schema.py over the real OpenAPI file reproduces the committed file."""
    schema = load_ds52_schema()
    assert schema["resource"] == "EdFi_StudentEducationOrganizationAssessmentAccommodation"
    assert not json.dumps(schema).count("#/components/")  # every $ref is local to the file
    if not SHARED_OPENAPI.is_file():
        pytest.skip(f"{SHARED_OPENAPI} is absent: only the shipped file is checked")
    sys.path.insert(0, str(PROJECT_ROOT / "scripts"))
    try:
        import extract_edfi_schema
    finally:
        sys.path.pop(0)
    shipped = (PROJECT_ROOT / "sg_orchestration" / "edfi" / "ds52_schema.json").read_text()
    assert extract_edfi_schema.render(SHARED_OPENAPI) == shipped


# --- discovery, metadata and tokens ---


def test_the_discovery_document_names_ds52_and_absolute_urls_of_this_server(edfi: Emulator):
    root = httpx.get(edfi.url + "/").json()
    assert root["dataModels"] == [
        {"name": "Ed-Fi", "version": "5.2.0", "informationalVersion": "Ed-Fi DS 5.2"}
    ]
    assert root["apiMode"] == "Shared Instance"
    urls = root["urls"]
    assert urls["oauth"] == f"{edfi.url}/oauth/token" and urls["dataManagementApi"] == f"{edfi.url}/data/v3/"
    dependencies = httpx.get(urls["dependencies"]).json()
    order = {d["resource"]: d["order"] for d in dependencies}
    for resource in ("/ed-fi/students", "/ed-fi/schools", "/ed-fi/assessments", ACCOMMODATIONS, INDIANA):
        assert resource in order
    assert order["/ed-fi/students"] < order[ACCOMMODATIONS]
    sections = {s["name"]: s["endpointUri"] for s in httpx.get(urls["openApiMetadata"]).json()}
    resources = httpx.get(sections["Resources"]).json()
    schemas = resources["components"]["schemas"]
    assert schemas["edFi_studentEducationOrganizationAssessmentAccommodation"]["properties"][
        "studentReference"
    ] == {
        "$ref": "#/components/schemas/edFi_studentReference",
        "x-Ed-Fi-isIdentity": True,
    }
    assert "indiana_studentAssessmentAccommodation" in schemas and ACCOMMODATIONS in resources["paths"]
    assert (
        "edFi_accommodationDescriptor" in httpx.get(sections["Descriptors"]).json()["components"]["schemas"]
    )


def test_a_token_needs_the_client_credentials_as_basic_or_in_the_form(edfi: Emulator):
    url = f"{edfi.url}/oauth/token"
    grant = {"grant_type": "client_credentials"}
    token = httpx.post(url, data=grant, auth=CLIENT).json()
    assert token["token_type"] == "bearer" and token["expires_in"] == 3600 and token["access_token"]
    in_form = httpx.post(url, data=grant | {"client_id": CLIENT[0], "client_secret": CLIENT[1]})
    assert in_form.status_code == 200
    assert httpx.post(url, data=grant, auth=(CLIENT[0], "wrong")).status_code == 401
    assert httpx.post(url, data={"grant_type": "password"}, auth=CLIENT).status_code == 400


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token", "Basic ZWRmaS1rZXk6ZWRmaS1zZWNyZXQ="])
def test_a_data_request_without_a_valid_bearer_token_is_401(edfi: Emulator, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    for method, path in [
        ("GET", ACCOMMODATIONS),
        ("POST", ACCOMMODATIONS),
        ("DELETE", f"{ACCOMMODATIONS}/x"),
    ]:
        response = httpx.request(method, f"{edfi.url}/data/v3{path}", headers=headers, json=_accommodation())
        assert response.status_code == 401
        assert response.json()["type"] == "urn:ed-fi:api:security:authentication"
    assert edfi.client.get(f"/data/v3{ACCOMMODATIONS}").status_code == 200


def test_an_expired_token_is_401(campus: Path):
    with Emulator(_api(campus, token_ttl=0)) as expiring:
        assert expiring.client.get(f"/data/v3{ACCOMMODATIONS}").status_code == 401


# --- writes ---


def test_post_upserts_on_the_natural_key_201_then_200_with_location_and_etag(edfi: Emulator):
    created = edfi.post(ACCOMMODATIONS, _accommodation())
    assert created.status_code == 201
    location = _location(created)
    assert location.startswith(f"/data/v3{ACCOMMODATIONS}/")
    updated = edfi.post(ACCOMMODATIONS, _accommodation("E1001", SCHOOL, EXTRA_TIME, BREAKS))
    assert updated.status_code == 200 and _location(updated) == location
    assert updated.headers["ETag"] != created.headers["ETag"]
    record = edfi.client.get(location).json()
    assert record["id"] == location.rsplit("/", 1)[1]
    assert record["_etag"] == updated.headers["ETag"].strip('"') and record["_lastModifiedDate"]
    assert [a["accommodationDescriptor"] for a in record["generalAccommodations"]] == [EXTRA_TIME, BREAKS]
    other_school = edfi.post(ACCOMMODATIONS, _accommodation("E1001", OTHER_SCHOOL))
    assert other_school.status_code == 201  # the education organization is part of the key
    assert len(edfi.client.get(f"/data/v3{ACCOMMODATIONS}").json()) == 2


def test_a_body_carrying_id_is_400(edfi: Emulator):
    response = edfi.post(ACCOMMODATIONS, _accommodation() | {"id": "0123456789abcdef0123456789abcdef"})
    assert response.status_code == 400
    assert response.json()["type"].startswith("urn:ed-fi:api:bad-request")


def test_put_is_204_with_a_new_etag_and_may_not_change_the_natural_key(edfi: Emulator):
    location = _location(edfi.post(ACCOMMODATIONS, _accommodation()))
    before = edfi.client.get(location).json()
    put = edfi.client.put(location, json=_accommodation("E1001", SCHOOL, BREAKS))
    assert put.status_code == 204 and put.headers["ETag"].strip('"') != before["_etag"]
    after = edfi.client.get(location).json()
    assert after["generalAccommodations"] == [{"accommodationDescriptor": BREAKS}]
    assert after["_etag"] == put.headers["ETag"].strip('"')
    moved = edfi.client.put(location, json=_accommodation("E1002"))
    assert moved.status_code == 400
    assert edfi.client.put(location, json=before | {"id": "another"}).status_code == 400
    assert edfi.client.get(location).json()["studentReference"] == {"studentUniqueId": "E1001"}


def test_a_stale_if_match_is_412_optimistic_lock_failed(edfi: Emulator):
    created = edfi.post(ACCOMMODATIONS, _accommodation())
    location, stale = _location(created), created.headers["ETag"]
    fresh = edfi.client.put(location, json=_accommodation("E1001", SCHOOL, BREAKS)).headers["ETag"]
    for method, body in (("PUT", _accommodation()), ("DELETE", None)):
        response = edfi.client.request(method, location, json=body, headers={"If-Match": stale})
        assert response.status_code == 412
        assert response.json()["type"] == "urn:ed-fi:api:optimistic-lock-failed"
    assert edfi.client.put(location, json=_accommodation(), headers={"If-Match": fresh}).status_code == 204


def test_delete_is_204_and_then_the_id_is_404(edfi: Emulator):
    location = _location(edfi.post(ACCOMMODATIONS, _accommodation()))
    assert edfi.client.delete(location).status_code == 204
    assert edfi.client.get(location).status_code == 404
    assert edfi.client.delete(location).status_code == 404
    assert edfi.client.put(location, json=_accommodation()).status_code == 404


def test_patch_and_post_to_an_id_are_405_and_reference_resources_are_read_only(edfi: Emulator):
    location = _location(edfi.post(ACCOMMODATIONS, _accommodation()))
    assert edfi.client.patch(location, json={}).status_code == 405
    assert edfi.client.post(location, json=_accommodation()).status_code == 405
    school = {"schoolId": 1, "nameOfInstitution": "New"}
    assert edfi.post("/ed-fi/schools", school).status_code == 405
    student = {"studentUniqueId": "E2001", "firstName": "Di", "lastSurname": "Fox", "birthDate": "2015-04-01"}
    assert edfi.post("/ed-fi/students", student).status_code == 201  # lightbeam may send students
    assert edfi.post(ACCOMMODATIONS, _accommodation("E2001")).status_code == 201


def test_a_schema_violation_is_400_with_validation_errors_naming_the_path(edfi: Emulator):
    bad = _accommodation() | {"educationOrganizationReference": {"educationOrganizationId": "not a number"}}
    bad["generalAccommodations"] = [{}]
    response = edfi.post(ACCOMMODATIONS, bad)
    assert response.status_code == 400
    problem = response.json()
    assert problem["type"] == "urn:ed-fi:api:bad-request:data-validation-failed"
    assert set(problem["validationErrors"]) == {
        "$.educationOrganizationReference.educationOrganizationId",
        "$.generalAccommodations[0].accommodationDescriptor",
    }
    assert "not a number" not in response.text
    assert set(problem) >= {
        "detail",
        "type",
        "title",
        "status",
        "correlationId",
        "validationErrors",
        "errors",
    }
    indiana = _indiana()
    del indiana["assessmentReference"]
    response = edfi.post(INDIANA, indiana)
    assert response.status_code == 400 and list(response.json()["validationErrors"]) == [
        "$.assessmentReference"
    ]


def test_an_unknown_or_repeated_descriptor_is_400_naming_its_path(edfi: Emulator):
    unknown = "http://doe.in.gov/Descriptor/AccommodationDescriptor.xml#NOPE"
    response = edfi.post(ACCOMMODATIONS, _accommodation("E1001", SCHOOL, EXTRA_TIME, unknown))
    assert response.status_code == 400
    assert list(response.json()["validationErrors"]) == ["$.generalAccommodations[1].accommodationDescriptor"]
    repeated = edfi.post(ACCOMMODATIONS, _accommodation("E1001", SCHOOL, EXTRA_TIME, BREAKS, EXTRA_TIME))
    assert list(repeated.json()["validationErrors"]) == ["$.generalAccommodations[2]"]
    no_namespace = edfi.post(INDIANA, _indiana(subject="02"))
    assert list(no_namespace.json()["validationErrors"]) == ["$.academicSubjectDescriptor"]
    assert edfi.post(INDIANA, _indiana()).status_code == 201


@pytest.mark.parametrize(
    "resource, body",
    [
        (ACCOMMODATIONS, _accommodation("E9999")),
        (ACCOMMODATIONS, _accommodation("E1001", 1053759999)),
        (INDIANA, _indiana(assessment={"assessmentIdentifier": "SAT", "namespace": "uri://x"})),
    ],
    ids=["student", "school", "assessment"],
)
def test_an_unknown_student_school_or_assessment_is_409_unresolved_reference(edfi: Emulator, resource, body):
    response = edfi.post(resource, body)
    assert response.status_code == 409
    assert response.json()["type"] == "urn:ed-fi:api:data-conflict:unresolved-reference"


def test_the_indiana_key_is_every_element(edfi: Emulator):
    first = edfi.post(INDIANA, _indiana())
    assert edfi.post(INDIANA, _indiana()).status_code == 200
    reading = _indiana(subject="http://doe.in.gov/Descriptor/AcademicSubjectDescriptor.xml#01")
    assert edfi.post(INDIANA, reading).status_code == 201
    assert _location(first).startswith(f"/data/v3{INDIANA}/")


# --- reads ---


def test_paging_limits_and_total_count(edfi: Emulator):
    for student in ("E1001", "E1002", "E1003"):
        for school in (SCHOOL, OTHER_SCHOOL):
            assert edfi.post(ACCOMMODATIONS, _accommodation(student, school)).status_code == 201
    url = f"/data/v3{ACCOMMODATIONS}"
    page = edfi.client.get(url, params={"offset": 2, "limit": 3, "totalCount": "true"})
    assert page.headers["Total-Count"] == "6" and len(page.json()) == 3
    everything = edfi.client.get(url).json()
    assert [r["id"] for r in everything[2:5]] == [r["id"] for r in page.json()]  # creation order
    assert "Total-Count" not in edfi.client.get(url).headers
    counted = edfi.client.get(url, params={"limit": 0, "totalCount": "true"})
    assert counted.json() == [] and counted.headers["Total-Count"] == "6"
    for bad in ({"limit": 501}, {"limit": -1}, {"offset": "x"}):
        response = edfi.client.get(url, params=bad)
        assert (
            response.status_code == 400 and response.json()["type"] == "urn:ed-fi:api:bad-request:parameter"
        )
    assert len(edfi.client.get(url, params={"limit": 500}).json()) == 6
    students = edfi.client.get("/data/v3/ed-fi/students", params={"totalCount": "true"})
    assert students.headers["Total-Count"] == "3"  # the person without an Ed-Fi id is no student


def test_a_query_filters_by_a_reference_field_flattened(edfi: Emulator):
    for student, school in (("E1001", SCHOOL), ("E1001", OTHER_SCHOOL), ("E1002", SCHOOL)):
        edfi.post(ACCOMMODATIONS, _accommodation(student, school))
    url = f"/data/v3{ACCOMMODATIONS}"
    assert len(edfi.client.get(url, params={"studentUniqueId": "E1001"}).json()) == 2
    one = edfi.client.get(
        url, params={"studentUniqueId": "E1001", "educationOrganizationId": OTHER_SCHOOL}
    ).json()
    assert [r["educationOrganizationReference"]["educationOrganizationId"] for r in one] == [OTHER_SCHOOL]
    assert edfi.client.get(url, params={"studentUniqueId": "E0000"}).json() == []
    assert edfi.client.get(url, params={"noSuchField": "1"}).json() == []  # a typo matches nothing
    schools = edfi.client.get("/data/v3/ed-fi/schools", params={"schoolId": SCHOOL}).json()
    assert [s["nameOfInstitution"] for s in schools] == ["North"]
    assessments = edfi.client.get("/data/v3/ed-fi/assessments").json()
    assert {a["assessmentIdentifier"] for a in assessments} == {"ILEARN", "I AM", "IREAD-3", "WIDA"}


def test_every_write_bumps_the_change_version_and_deletes_are_listed(edfi: Emulator):
    def newest() -> int:
        versions = edfi.client.get("/changeQueries/v1/availableChangeVersions").json()
        assert versions["oldestChangeVersion"] == 0
        return versions["newestChangeVersion"]

    start = newest()
    kept = _location(edfi.post(ACCOMMODATIONS, _accommodation("E1001")))
    gone = _location(edfi.post(ACCOMMODATIONS, _accommodation("E1002")))
    assert newest() == start + 2
    edfi.client.put(kept, json=_accommodation("E1001", SCHOOL, BREAKS))
    assert edfi.client.delete(gone).status_code == 204
    assert newest() == start + 4
    url = f"/data/v3{ACCOMMODATIONS}"
    changed = edfi.client.get(url, params={"minChangeVersion": start + 3}).json()
    assert [r["id"] for r in changed] == [kept.rsplit("/", 1)[1]]
    assert edfi.client.get(url, params={"maxChangeVersion": start + 2}).json() == []
    deletes = edfi.client.get(f"{url}/deletes").json()
    assert deletes == [
        {
            "id": gone.rsplit("/", 1)[1],
            "changeVersion": start + 4,
            "keyValues": {"studentUniqueId": "E1002", "educationOrganizationId": SCHOOL},
        }
    ]
    assert edfi.client.get(f"{url}/deletes", params={"minChangeVersion": start + 5}).json() == []
    assert edfi.client.get(f"{url}/keyChanges").json() == []


def test_year_specific_routes_serve_each_configured_year_and_404_another(campus: Path):
    with Emulator(_api(campus, years=[2025, 2026], indiana_resource="/indiana/accommodations")) as edfi:
        assert httpx.get(edfi.url + "/").json()["apiMode"] == "Year Specific"
        assert edfi.post(ACCOMMODATIONS, _accommodation(), data="/data/v3/2025").status_code == 201
        assert edfi.client.get(f"/data/v3/2025{ACCOMMODATIONS}").json()[0]["studentReference"]
        assert edfi.client.get(f"/data/v3/2026{ACCOMMODATIONS}").json() == []
        assert edfi.client.get(f"/data/v3/2024{ACCOMMODATIONS}").status_code == 404
        assert edfi.client.get(f"/data/v3{ACCOMMODATIONS}").status_code == 404
        assert edfi.post("/indiana/accommodations", _indiana(), data="/data/v3/2026").status_code == 201
        assert edfi.client.get(f"/data/v3/2026{INDIANA}").status_code == 404
        versions = edfi.client.get("/changeQueries/v1/2026/availableChangeVersions")
        assert versions.json()["newestChangeVersion"] == 2


def test_records_survive_a_restart_with_the_same_ids(campus: Path):
    with Emulator(_api(campus)) as first:
        kept = _location(first.post(ACCOMMODATIONS, _accommodation("E1001")))
        gone = _location(first.post(ACCOMMODATIONS, _accommodation("E1002")))
        first.client.delete(gone)
        student = first.client.get("/data/v3/ed-fi/students", params={"studentUniqueId": "E1003"}).json()[0]
        first.client.delete(f"/data/v3/ed-fi/students/{student['id']}")
        before = first.client.get(kept).json()
    store = campus.parent / "store" / "edfi.sqlite3"
    assert sqlite3.connect(store).execute("PRAGMA journal_mode").fetchone() == ("wal",)
    with Emulator(_api(campus)) as second:
        assert second.client.get(kept).json() == before
        assert second.client.get(gone).status_code == 404
        deletes = second.client.get(f"/data/v3{ACCOMMODATIONS}/deletes").json()
        assert [d["id"] for d in deletes] == [gone.rsplit("/", 1)[1]]
        assert second.client.get("/data/v3/ed-fi/students", params={"studentUniqueId": "E1003"}).json() == []
        assert second.post(ACCOMMODATIONS, _accommodation("E1001")).status_code == 200
        assert (
            second.client.get("/changeQueries/v1/availableChangeVersions").json()["newestChangeVersion"] == 5
        )


# --- test hooks ---


def test_faults_answer_errors_or_drop_after_writing_and_stats_count_by_method_and_status(edfi: Emulator):
    hooks = f"{edfi.url}/_sandbox/edfi"
    assert httpx.get(f"{hooks}/faults").json()["error_rate"] == 0.0
    assert httpx.post(f"{hooks}/faults", json={"error_rate": 2}).status_code == 400
    httpx.delete(f"{hooks}/stats")
    httpx.post(f"{hooks}/faults", json={"error_rate": 1.0, "statuses": [503], "retry_after": 7})
    failed = edfi.post(ACCOMMODATIONS, _accommodation())
    assert failed.status_code == 503 and failed.headers["Retry-After"] == "7"
    assert failed.json()["type"] == "urn:ed-fi:api:system"  # problem details, as an ODS answers
    httpx.post(f"{hooks}/faults", json={"drop_after_write_rate": 1.0})
    with pytest.raises(httpx.RemoteProtocolError):
        edfi.post(ACCOMMODATIONS, _accommodation())
    httpx.post(f"{hooks}/faults", json={})
    assert edfi.post(ACCOMMODATIONS, _accommodation()).status_code == 200  # the dropped write was applied
    httpx.get(f"{edfi.url}/")
    stats = httpx.get(f"{hooks}/stats").json()
    posts = {"503": 1, "dropped": 1, "200": 1}
    assert stats == {"total": 4, "requests": {"POST": posts, "GET": {"200": 1}}, "writeback": {"POST": posts}}
    assert httpx.delete(f"{hooks}/stats").json() == {"total": 0, "requests": {}, "writeback": {}}


def test_the_sandbox_starts_the_emulator_with_its_credentials_and_store(campus: Path):
    inputs = campus.parent
    district = {
        "id": "in-demo",
        "name": "Indiana Demo",
        "state": "IN",
        "timezone": "America/Indiana/Indianapolis",
        "cutover_dates": {},
        "qmlativ_entity_id": 7,
        "qmlativ_access_expires": "2027-07-31",
        "edfi_district_number": DISTRICT_NUMBER,
    }
    (inputs / "district.json").write_text(json.dumps(district))
    with Sandbox(inputs, state_dir=inputs / "state", edfi_faults={"error_rate": 0.0}) as sb:
        token = httpx.post(
            f"{sb.urls['edfi']}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(sb.credentials[EDFI_KEY], sb.credentials[EDFI_SECRET]),
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        response = httpx.post(
            f"{sb.urls['edfi']}/data/v3{ACCOMMODATIONS}", json=_accommodation(), headers=headers
        )
        assert response.status_code == 201
    assert (inputs / "state" / "edfi.sqlite3").is_file()


# --- a third-party client ---


@pytest.fixture(scope="module")
def lightbeam(tmp_path_factory) -> Path:
    """lightbeam (Education Analytics' Ed-Fi loader) in a virtual environment of its own: never a project
    dependency, so it cannot shape the project's environment."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH: cannot create lightbeam's virtual environment")
    venv = tmp_path_factory.mktemp("lightbeam") / "venv"
    subprocess.run([uv, "venv", "-q", str(venv)], check=True, capture_output=True)
    installed = subprocess.run(
        [uv, "pip", "install", "-q", "-p", str(venv), "lightbeam"], capture_output=True, text=True
    )
    if installed.returncode != 0:
        if any(
            s in installed.stderr.lower() for s in ("network", "connect", "dns", "resolve host", "timed out")
        ):
            pytest.skip(f"lightbeam could not be installed (no network?): {installed.stderr.strip()[-300:]}")
        raise AssertionError(f"installing lightbeam failed: {installed.stderr}")
    return venv / "bin" / "lightbeam"


def _run_lightbeam(lightbeam: Path, command: str, config: Path) -> dict:
    results = config.parent / f"{command}-results.json"
    done = subprocess.run(
        [str(lightbeam), command, "-c", str(config), "--results-file", str(results)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=config.parent,
    )
    assert done.returncode == 0, f"lightbeam {command} failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(results.read_text())


def test_lightbeam_validates_and_sends_ds52_accommodations(edfi: Emulator, lightbeam: Path, tmp_path: Path):
    data = tmp_path / "lightbeam-data"
    data.mkdir()
    records = [
        _accommodation("E1001", SCHOOL, EXTRA_TIME, BREAKS),
        _accommodation("E1002", SCHOOL, EXTRA_TIME),
        _accommodation("E1003", OTHER_SCHOOL, BREAKS),
    ]
    (data / "studentEducationOrganizationAssessmentAccommodations.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in records)
    )
    config = tmp_path / "lightbeam.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "state_dir": str(tmp_path / "lightbeam-state"),
                "data_dir": f"{data}/",
                "namespace": "ed-fi",
                "edfi_api": {
                    "base_url": edfi.url,
                    "version": 3,
                    "mode": "shared_instance",
                    "client_id": CLIENT[0],
                    "client_secret": CLIENT[1],
                },
                "connection": {
                    "pool_size": 2,
                    "timeout": 10,
                    "num_retries": 2,
                    "backoff_factor": 0.1,
                    "retry_statuses": [429, 500, 503],
                    "verify_ssl": False,
                },
            }
        )
    )
    validated = _run_lightbeam(lightbeam, "validate", config)
    resource = validated["resources"]["studentEducationOrganizationAssessmentAccommodations"]
    assert resource["records_processed"] == 3 and resource["records_failed"] == 0, resource.get("failures")
    sent = _run_lightbeam(lightbeam, "send", config)
    resource = sent["resources"]["studentEducationOrganizationAssessmentAccommodations"]
    assert resource["records_failed"] == 0 and resource["successes"] == [{"status_code": 201, "count": 3}]
    stored = edfi.client.get(f"/data/v3{ACCOMMODATIONS}").json()
    assert [{k: r[k] for k in records[0]} for r in stored] == records
