"""The OneRoster 1.1 bundle from PowerSchool for GG4L School Passport / Student Support Tracker (seed 001
§2.1, SPEC §4.3, issue 9 points 2-4): the dbt marts and the bundle writer, each rule a test, the files read
back with Python's `csv` module (not the project's writer).

One small generated district, loaded through the real loader as two districts: `gg4l` with the seed's
attribute mapping and `own` with its own copy that drops one create row. Into its PowerSchool export the
fixture plants a contact shared by two students, a relationship no table lists, and in one student's
repurposed fields values no other cell holds. dbt builds the OneRoster step's selection once; a second
warehouse loads the districts in the other order and builds again, for the stability of sourcedIds.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from sg_orchestration.catalog import SOURCES, snake_case
from sg_orchestration.config import District
from sg_orchestration.ingest.load import load
from sg_orchestration.ingest.readers import read_csv
from sg_orchestration.oneroster import HEADERS
from sg_orchestration.oneroster.bundle import mart, metadata_columns, write_bundle
from sg_orchestration.oneroster.mapping import DEFAULT_MAPPING, load_mapping
from sg_orchestration.transform import oneroster
from sg_orchestration.transform.dbt import TARGET_MODELS, invoke, prepare
from sg_orchestration.warehouse import connect

STUDENTS, SEED = 60, 3
MAPPING = load_mapping()
DROPPED = next(r for r in MAPPING if r.action == "create" and r.source == "Doctor Name")  # in `own`'s copy
DELETED = [r for r in MAPPING if r.action == "delete"]
OWN_DELETE = "Email"  # `own`'s copy also deletes a column that users.csv's defaults read
UNLISTED_RELATIONSHIP = "Family Friend"
# fmt: off
ONEROSTER_FILES = ("academicSessions", "categories", "classes", "classResources", "courses", "courseResources",
                   "demographics", "enrollments", "lineItems", "orgs", "resources", "results", "users")
# fmt: on
SENT = {"academicSessions", "classes", "courses", "demographics", "enrollments", "orgs", "users"}
GRADES = {"IT", "PR", "PK", "TK", "KG", *(f"{g:02d}" for g in range(1, 14)), "PS", "UG", "Other"}
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _district(district_id: str, mapping: Path | None, outbox: Path) -> District:
    return District(
        id=district_id,
        name=district_id,
        state="TX",
        timezone="America/Chicago",
        oneroster={"delivery": {"directory": {"path": str(outbox)}}, "attribute_mapping": mapping},
    )


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _rewrite(path: Path, change) -> None:
    """`change(header, records)` on the file's records as lists (a malformed row stays as it is)."""
    with path.open(newline="", encoding="utf-8") as f:
        header, *records = csv.reader(f)
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *change(header, records)])


def _parsed(path: Path) -> list[dict[str, str]]:
    """The file's rows of the right width (one with a field too many stays in raw, rejected)."""
    return [r for r in _read(path)[1] if None not in r]


@dataclass
class Built:
    inputs: Path  # the PowerSchool export as loaded
    bundles: dict[str, Path]  # district id -> its bundle's folder
    again: dict[str, Path]  # the same, from the second warehouse
    counts: dict[str, dict[str, int]]
    mart_columns: dict[str, list[str]]
    metadata: dict[str, list[str]]  # district id -> its metadata.* columns, as the writer orders them
    sentinels: dict[str, str]  # deleted source column -> the value planted in it
    shared_contact: str
    shared_by: tuple[str, str]  # the two students' Local Ids
    unlisted_contact: str
    staged: set[str]  # the Local Ids ingest staged (a row it rejected, e.g. for a bad date, is not)

    def file(self, district: str, name: str) -> list[dict[str, str]]:
        return _read(self.bundles[district] / f"{name}.csv")[1]

    def students(self) -> list[dict[str, str]]:
        return [r for r in _parsed(self.inputs / "students.csv") if r["Local Id"] in self.staged]

    def contacts(self) -> list[dict[str, str]]:
        return [r for r in _parsed(self.inputs / "contacts.csv") if r["Student Local Id"] in self.staged]


def _plant(ps: Path) -> dict:
    """A contact of two students, a relationship the roles table does not list, and values planted in one
    active student's repurposed fields."""
    students = _parsed(ps / "students.csv")
    active = [s["Local Id"] for s in students if s["Enroll Status"] == "0" and s["Local Id"].isdigit()]
    sentinels = {r.source: f"planted value {k}" for k, r in enumerate(DELETED)}
    planted = {}

    def shared(header, records):
        at = {name: k for k, name in enumerate(header)}
        first, unlisted = (next(r for r in records if r[at["Student Local Id"]] == active[k]) for k in (0, 3))
        unlisted[at["Contact Relationship"]] = UNLISTED_RELATIONSHIP
        planted.update(shared=first[at["Contact Id"]], unlisted=unlisted[at["Contact Id"]])
        other = list(first)
        other[at["Student Local Id"]] = active[1]
        return [*records, other]

    def repurposed(header, records):
        at = {name: k for k, name in enumerate(header)}
        for r in records:
            if r[at["Local Id"]] == active[2]:
                for source, value in sentinels.items():
                    r[at[source]] = value
        return records

    _rewrite(ps / "contacts.csv", shared)
    _rewrite(ps / "students.csv", repurposed)
    return {**planted, "by": (active[0], active[1]), "sentinels": sentinels}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    from sg_orchestration.generate import generate_district

    root = tmp_path_factory.mktemp("oneroster")
    generate_district(root / "inputs", students=STUDENTS, seed=SEED)
    ps = root / "inputs" / "powerschool"
    planted = _plant(ps)
    own = root / "own_mapping.yaml"
    dropped = f'source: {DROPPED.source}, gg4l: "{DROPPED.gg4l}"'
    lines = [line for line in DEFAULT_MAPPING.read_text().splitlines(True) if dropped not in line]
    lines.insert(
        lines.index("contacts:\n"), f"  - {{action: delete, source: {OWN_DELETE}, gg4l: {OWN_DELETE}}}\n"
    )
    own.write_text("".join(lines))
    districts = [_district("gg4l", None, root / "outbox"), _district("own", own, root / "outbox")]
    prepare()
    folders, counts, columns, metadata = {}, {}, {}, {}
    for run, order in (("first", districts), ("second", districts[::-1])):
        with pytest.MonkeyPatch.context() as env:
            env.setenv("SG_WAREHOUSE_PATH", str(root / run / "warehouse.duckdb"))
            with connect() as con:
                for district in order:
                    for source in (s for s in SOURCES if s.system == "powerschool"):
                        load(con, source, district.id, read_csv(source, ps / source.file))
                    oneroster.record_mapping(con, district)
            invoke("build", "--select", *TARGET_MODELS["oneroster"].split())
            with connect() as con:
                for district in districts:
                    folders[run, district.id] = root / run / district.id
                    counts[run, district.id] = write_bundle(con, district.id, root / run / district.id)
                    metadata[district.id] = metadata_columns(con, district.id)
                staged = {
                    k
                    for (k,) in con.execute(
                        "select local_id from staging.stg_powerschool__students"
                    ).fetchall()
                }
                columns = {f: [c for c, *_ in con.execute(f"describe {mart(f)}").fetchall()] for f in HEADERS}
    return Built(
        inputs=ps,
        bundles={d.id: folders["first", d.id] for d in districts},
        again={d.id: folders["second", d.id] for d in districts},
        counts={d.id: counts["first", d.id] for d in districts},
        mart_columns=columns,
        metadata=metadata,
        sentinels=planted["sentinels"],
        shared_contact=planted["shared"],
        shared_by=planted["by"],
        unlisted_contact=planted["unlisted"],
        staged=staged,
    )


def test_a_districts_attribute_mapping_reaches_dbt_and_a_changed_mapping_builds_again(warehouse, tmp_path):
    """SPEC §3.3: "The attribute mapping is data, not code" — the OneRoster step writes the district's
    rows, in its file's order, to ops.oneroster_mapping, and what it wrote is part of the step's
    fingerprint, so a district that changes its copy gets a new build."""
    from sg_orchestration.transform import reuse

    own = tmp_path / "own_mapping.yaml"
    own.write_text(DEFAULT_MAPPING.read_text().replace("metadata.homeroom", "metadata.home_room"))
    with connect() as con:
        written = oneroster.record_mapping(con, _district("gg4l", None, tmp_path))
        rows = con.execute(
            "select entity, action, source, target from ops.oneroster_mapping where district_id = 'gg4l' "
            "order by ordinal"
        ).fetchall()
        assert rows == [(r.entity, r.action, r.source, r.target) for r in MAPPING]
        changed = oneroster.record_mapping(con, _district("gg4l", own, tmp_path))
        assert reuse.fingerprint(con, "gg4l", [], written) != reuse.fingerprint(con, "gg4l", [], changed)
        assert con.execute("select count(*) from ops.oneroster_mapping").fetchone()[0] == len(MAPPING)


def test_every_file_has_exactly_the_oneroster_headers_in_order_with_metadata_to_the_right(built):
    """SPEC §4.3: "spec column order, `metadata.*` extension columns to the right" — each file's header is
    HEADERS[file]; users.csv's then has the district's metadata extensions, in its mapping's order."""
    seed_order = [r.target for r in MAPPING if r.action == "create" and r.target.startswith("metadata.")]
    assert built.metadata["gg4l"] == seed_order
    assert built.metadata["own"] == [t for t in seed_order if t != DROPPED.target]
    for district, folder in built.bundles.items():
        assert sorted(p.stem for p in folder.glob("*.csv")) == sorted(HEADERS)
        for file, header in HEADERS.items():
            extensions = built.metadata[district] if file == "users" else []
            assert _read(folder / f"{file}.csv")[0] == [*header, *extensions], (district, file)
            assert (folder / f"{file}.csv").read_bytes().count(b"\r\n") == built.counts[district][file] + 1
    for file, header in HEADERS.items():  # the marts: the writer's key column, then the file's
        assert built.mart_columns[file] == [
            "district_id",
            *header,
            *(["metadata"] if file == "users" else []),
        ]


def test_bulk_mode_leaves_status_and_date_last_modified_blank(built):
    """SPEC §4.3: "bulk mode (`status` and `dateLastModified` blank)"."""
    for district in built.bundles:
        for file in HEADERS.keys() - {"manifest"}:
            rows = built.file(district, file)
            assert rows, file
            assert {(r["status"], r["dateLastModified"]) for r in rows} == {("", "")}, file


def test_only_active_records_are_sent(built):
    """SPEC §4.3: "only active records (GG4L accepts only active)" — active students (Enroll Status 0)
    only, their enrollments only, and the current school year's terms only."""
    students = built.students()
    active = {s["Local Id"] for s in students if s["Enroll Status"] == "0"}
    assert active and len(active) < len(students)
    users = built.file("gg4l", "users")
    assert {u["sourcedId"] for u in users if u["role"] == "student"} == active
    assert {d["sourcedId"] for d in built.file("gg4l", "demographics")} == active
    sent_users = {u["sourcedId"] for u in users}
    assert {e["userSourcedId"] for e in built.file("gg4l", "enrollments")} <= sent_users
    contacts_of_active = {
        "ctc-" + c["Contact Id"] for c in built.contacts() if c["Student Local Id"] in active
    }
    assert {
        u["sourcedId"] for u in users if u["role"] in ("parent", "guardian", "relative")
    } == contacts_of_active
    terms = _read(built.inputs / "terms.csv")[1]
    current = max(int(t["School Year"]) for t in terms)
    sessions = built.file("gg4l", "academicSessions")
    assert {s["sourcedId"] for s in sessions} == {
        "ses-" + t["Term Id"] for t in terms if int(t["School Year"]) == current
    }
    assert {s["schoolYear"] for s in sessions} == {str(current)}


def test_contacts_are_users_linked_both_ways_and_one_contact_of_several_students_is_one_user(built):
    """SPEC §4.3: "guardians/parents from contacts as users with role `guardian`/`parent` linked by
    `agentSourcedIds`"; issue 9: "one contact of several students is one user"."""
    users = {u["sourcedId"]: u for u in built.file("gg4l", "users")}
    roles = {"Mother": "parent", "Father": "parent", "Grandmother": "relative", "Legal Guardian": "guardian"}
    contacts = built.contacts()
    for c in contacts:
        user = users.get("ctc-" + c["Contact Id"])
        if user is None:  # a contact of a student who is not active
            continue
        student = users[c["Student Local Id"]]
        assert user["sourcedId"] in student["agentSourcedIds"].split(",")
        assert student["sourcedId"] in user["agentSourcedIds"].split(",")
        assert student["orgSourcedIds"] in user["orgSourcedIds"].split(",")
        if c["Contact Relationship"] in roles and c["Contact Id"] != built.shared_contact:
            assert user["role"] == roles[c["Contact Relationship"]]
        assert user["metadata.contact_relationship"] == next(
            k["Contact Relationship"] for k in contacts if k["Contact Id"] == c["Contact Id"]
        )
    for u in users.values():  # every link has its way back
        for agent in filter(None, u["agentSourcedIds"].split(",")):
            assert u["sourcedId"] in users[agent]["agentSourcedIds"].split(",")
    shared = [u for u in built.file("gg4l", "users") if u["sourcedId"] == "ctc-" + built.shared_contact]
    assert len(shared) == 1
    assert sorted(shared[0]["agentSourcedIds"].split(",")) == sorted(built.shared_by)
    assert users["ctc-" + built.unlisted_contact]["role"] == "guardian"  # a relationship no row lists


@pytest.mark.parametrize(
    "row", [r for r in MAPPING if r.action == "create"], ids=lambda r: f"{r.entity}:{r.source}->{r.target}"
)
def test_each_create_row_of_the_attribute_mapping_lands_in_its_documented_place(built, row):
    """Seed 001 §2.1: "Configure attribute mappings as follows:" — each create row puts the PowerSchool
    column's value in its target: a users.csv column, an entry `{type:value}` of userIds, or the
    `metadata.<name>` column (blank where PowerSchool's is blank)."""
    users = {u["sourcedId"]: u for u in built.file("gg4l", "users")}
    active = {s["Local Id"] for s in built.students() if s["Enroll Status"] == "0"}
    if row.entity == "students":  # the seed's SIS ID row: a student's sourcedId is its Local Id
        sent = [(s["Local Id"], s) for s in built.students() if s["Local Id"] in active]
    else:
        sent = [("ctc-" + c["Contact Id"], c) for c in built.contacts() if c["Student Local Id"] in active]
    assert sent
    for key, record in sent:
        user, value = users[key], record[row.source]
        if row.target.startswith("userIds:"):
            entry = "{" + row.target.removeprefix("userIds:") + ":" + value + "}"
            assert (entry in user["userIds"].split(",")) == bool(value), key
        elif row.target.startswith("metadata.") or value:
            assert user[row.target] == value, key


def test_a_deleted_attribute_never_leaves_under_its_original_name_or_value(built):
    """Seed 001 §2.1's Delete rows; SPEC §3.3: "the repurposed PowerSchool field never leaves under its
    original meaning" — no header or cell of any file of any bundle names a deleted column (as PowerSchool
    spells it, snake_case, or as a metadata column), and the value planted in it is in no cell but those of
    its create rows' targets (in the `own` district, whose copy drops Doctor Name's create row, in none)."""
    names = {n for r in DELETED for n in (r.source, snake_case(r.source), f"metadata.{snake_case(r.source)}")}
    for district, folder in built.bundles.items():
        creates = [m for m in MAPPING if m.action == "create" and not (district == "own" and m == DROPPED)]
        allowed = {r.source: {m.target for m in creates if m.source == r.source} for r in DELETED}
        seen: dict[str, set[str]] = {}
        for path in folder.glob("*.csv"):
            with path.open(newline="", encoding="utf-8") as f:
                header, *rows = csv.reader(f)
            for cell in (c.lower() for row in [header, *rows] for c in row):
                assert not [n for n in names if n.lower() in cell], (district, path.name)
            for row in rows:
                for column, cell in zip(header, row, strict=True):
                    for source, planted in built.sentinels.items():
                        if planted in cell:
                            seen.setdefault(source, set()).add(column)
        assert seen == {source: targets for source, targets in allowed.items() if targets}, district
    assert not [m for m in MAPPING if m.action == "create" and m.source == DROPPED.source and m != DROPPED]


def test_a_column_a_districts_mapping_deletes_feeds_no_default_either(built):
    """SPEC §3.3: a `delete` row means the field "never leaves": `own`'s copy deletes the students' `Email`,
    so no file of its bundle holds a student's address (users.csv's email blank, username the Local Id),
    where the seed's mapping sends them."""
    emails = {s["Email"] for s in built.students() if s["Email"] and s["Enroll Status"] == "0"}
    assert emails and emails <= {u["email"] for u in built.file("gg4l", "users")}
    for path in built.bundles["own"].glob("*.csv"):
        text = path.read_text(encoding="utf-8")
        assert not [e for e in emails if e in text], path.name
    students = [u for u in built.file("own", "users") if u["role"] == "student"]
    assert students and all(u["email"] == "" and u["username"] == u["sourcedId"] for u in students)


def test_sourced_ids_are_stable_across_builds(built):
    """Issue 9: "`sourcedId`s deterministic and stable across runs and machines" — a second warehouse that
    loaded the districts in the other order writes the same bytes."""
    for district, folder in built.bundles.items():
        for file in HEADERS:
            first = (folder / f"{file}.csv").read_bytes()
            assert first == (built.again[district] / f"{file}.csv").read_bytes(), (district, file)


def test_every_sourced_id_is_unique_in_its_file(built):
    """A bundle names each record once: one contact of several students too."""
    for district in built.bundles:
        for file in HEADERS.keys() - {"manifest"}:
            ids = [r["sourcedId"] for r in built.file(district, file)]
            assert len(ids) == len(set(ids)), (district, file)


def test_the_manifest_lists_every_oneroster_file_as_bulk_or_absent(built):
    """Issue 9: "`manifest.version` 1.0, `oneroster.version` 1.1, one `file.<name>` row for each of the 13
    OneRoster files (`bulk` for those sent, `absent` otherwise), `source.systemName`, `source.systemCode`"."""
    for district in built.bundles:
        manifest = {r["propertyName"]: r["value"] for r in built.file(district, "manifest")}
        assert len(manifest) == 2 + 13 + 2
        assert manifest["manifest.version"] == "1.0" and manifest["oneroster.version"] == "1.1"
        assert {f: manifest[f"file.{f}"] for f in ONEROSTER_FILES} == {
            f: "bulk" if f in SENT else "absent" for f in ONEROSTER_FILES
        }
        assert HEADERS.keys() - {"manifest"} == SENT
        assert manifest["source.systemName"] and manifest["source.systemCode"]


def test_every_reference_between_files_resolves(built):
    """Issue 9 point 8: "checks ... every reference between files" — orgSourcedIds -> orgs,
    classSourcedId -> classes, userSourcedId -> users, courseSourcedId -> courses, termSourcedIds ->
    academicSessions, agentSourcedIds -> users."""
    for district in built.bundles:
        f = {name: built.file(district, name) for name in HEADERS}
        ids = {name: {r["sourcedId"] for r in rows} for name, rows in f.items() if name != "manifest"}
        schools = {r["sourcedId"] for r in f["orgs"] if r["type"] == "school"}

        def refs(file: str, column: str, f=f) -> set[str]:
            return {v for r in f[file] for v in r[column].split(",") if v}

        assert refs("orgs", "parentSourcedId") <= ids["orgs"]
        assert refs("academicSessions", "parentSourcedId") <= ids["academicSessions"]
        assert refs("courses", "schoolYearSourcedId") <= ids["academicSessions"]
        assert refs("courses", "orgSourcedId") <= ids["orgs"]
        assert refs("classes", "courseSourcedId") <= ids["courses"]
        assert refs("classes", "schoolSourcedId") <= schools
        assert refs("classes", "termSourcedIds") <= ids["academicSessions"]
        assert refs("users", "orgSourcedIds") <= ids["orgs"]
        assert refs("users", "agentSourcedIds") <= ids["users"]
        assert refs("enrollments", "classSourcedId") <= ids["classes"]
        assert refs("enrollments", "schoolSourcedId") <= schools
        assert refs("enrollments", "userSourcedId") <= ids["users"]
        assert ids["demographics"] <= ids["users"]
        assert all(
            refs(file, column)
            for file, column in (("enrollments", "userSourcedId"), ("users", "agentSourcedIds"))
        )


def test_enumerations_grades_and_dates_are_oneroster_1_1s(built):
    """Issue 9: "OneRoster 1.1 enumerations (org types, session types, user and enrollment roles,
    grades), date formats, list-valued cells comma-separated in one quoted field"."""
    f = {name: built.file("gg4l", name) for name in HEADERS}
    assert {r["type"] for r in f["orgs"]} == {"district", "school"}
    assert {r["type"] for r in f["academicSessions"]} <= {"schoolYear", "term", "semester", "gradingPeriod"}
    assert {r["role"] for r in f["users"]} == {"student", "teacher", "parent", "guardian", "relative"}
    assert {r["role"] for r in f["enrollments"]} == {"student", "teacher"}
    assert {r["enabledUser"] for r in f["users"]} == {"true"}
    assert {r["primary"] for r in f["enrollments"]} == {"true", "false"}
    assert {r["sex"] for r in f["demographics"]} <= {"male", "female", ""}
    for file, column in (("users", "grades"), ("courses", "grades"), ("classes", "grades")):
        assert {g for r in f[file] for g in r[column].split(",") if g} <= GRADES, file
    assert any("," in r["grades"] for r in f["courses"])
    for file, column in (
        ("academicSessions", "startDate"),
        ("academicSessions", "endDate"),
        ("enrollments", "beginDate"),
        ("enrollments", "endDate"),
        ("demographics", "birthDate"),
    ):
        assert all(DATE.fullmatch(r[column]) for r in f[file] if r[column]), (file, column)
    users = (built.bundles["gg4l"] / "users.csv").read_text(encoding="utf-8")
    assert re.search(r',"\{PowerSchool:\d+\},\{StudentNumber:\d+\}', users)  # one quoted field


def test_the_bundle_as_written_passes_the_data_quality_gate(built):
    """SPEC §4.3: "A data-quality report (completeness of critical fields, referential integrity, enum
    validity, duplicates) runs before delivery" — the bundle passes every blocking rule; its one critical
    finding is the student whose homeless fields the fixture overwrote with planted values."""
    from sg_orchestration.oneroster.gate import check_bundle

    for district, folder in built.bundles.items():
        report = check_bundle(folder, max_missing_critical_share=1.0)
        assert not report.blocked, report.markdown()
        assert {f.rule for f in report.findings} == {"critical"}, report.markdown()
        assert report.students_missing_critical == 1, district


def test_the_zipped_bundle_read_back_with_zipfile_and_csv_has_every_file_and_header(built, tmp_path):
    """Issue 9 point 8: "a bundle read back by an independent reader (Python's `csv` and `zipfile`, not the
    project's writer) that checks every header" — the delivery's zip of the written files."""
    import io
    import zipfile

    from sg_orchestration.oneroster.delivery import zip_bundle

    zip_bundle(built.bundles["gg4l"], tmp_path / "bundle.zip")
    with zipfile.ZipFile(tmp_path / "bundle.zip") as zf:
        assert sorted(zf.namelist()) == sorted(f"{name}.csv" for name in HEADERS)
        for name, header in HEADERS.items():
            with zf.open(f"{name}.csv") as member:
                rows = list(csv.reader(io.TextIOWrapper(member, encoding="utf-8", newline="")))
            extensions = built.metadata["gg4l"] if name == "users" else []
            assert rows[0] == [*header, *extensions], name
            assert len(rows) - 1 == built.counts["gg4l"][name], name
