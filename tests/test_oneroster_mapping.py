"""Seed 001 §2.1, the GG4L attribute mapping as data (issue 9 point 1): the shipped file reproduces the seed's
table row for row, and a district's own copy is checked when the districts file loads."""

from pathlib import Path

import pytest
import yaml

from sg_orchestration.config import ConfigError, load_districts
from sg_orchestration.oneroster import HEADERS
from sg_orchestration.oneroster.mapping import DEFAULT_MAPPING, MappingError, load_mapping

# The seed's table, as the seed prints it: entity, action, data source attribute, GG4L attribute.
SEED_TABLE = [
    ("students", "create", "Local Id", "PowerSchool Identifier"),
    ("students", "create", "Local Id", "SIS ID"),
    ("students", "create", "Local Id", "Student Number"),
    ("students", "create", "Local Id", "Metadata Extension: Student Number"),
    ("students", "create", "State Province Id", "One Roster Human Readable Identifier"),
    ("students", "create", "State Province Id", "State Id"),
    ("students", "create", "State Province Id", "Metadata Extension: State_identifier"),
    ("students", "create", "Alert Other", "Metadata Extension: Homeless_primary_nighttime_residence"),
    ("students", "create", "Alert Other Expires", "Metadata Extension: Homeless_unaccompanied_youth"),
    ("students", "create", "Doctor Phone", "Metadata Extension: Is_identified_as_homeless"),
    ("students", "create", "Birth Date", "Metadata Extension: Birthdate"),
    ("students", "create", "Street", "Metadata Extension: Address_line1"),
    ("students", "create", "City", "Metadata Extension: City"),
    ("students", "create", "State", "Metadata Extension: State"),
    ("students", "create", "Postal Code", "Metadata Extension: Postal"),
    ("students", "create", "Home Room", "Metadata Extension: Homeroom"),
    ("students", "create", "Alert MedicalExpires", "Metadata Extension: Ell_status"),
    ("students", "create", "Alert Guardian", "Metadata Extension: Lunch_Status"),
    ("students", "create", "Alert Medical", "Metadata Extension: Medical_alert"),
    ("students", "create", "Doctor Name", "Metadata Extension: Sped_status"),
    ("students", "delete", "Alert Other", "Alert Other"),
    ("students", "delete", "Alert Other Expires", "Alert Other Expires"),
    ("students", "delete", "Doctor Phone", "Doctor Phone"),
    ("students", "delete", "Alert MedicalExpires", "Alert MedicalExpires"),
    ("students", "delete", "Alert Guardian", "Alert Guardian"),
    ("students", "delete", "Doctor Name", "Doctor Name"),
    ("contacts", "create", "Contact Email", "Metadata Extension: contact_email"),
    ("contacts", "create", "Contact Phone", "Metadata Extension: contact_home_phone"),
    ("contacts", "create", "Cell Phone", "Metadata Extension: contact_work_phone"),
    ("contacts", "create", "Contact Relationship", "Metadata Extension: contact_relationship"),
]


def test_the_attribute_mapping_reproduces_the_seeds_table_row_for_row():
    """Seed 001: "Configure attribute mappings as follows:" — every row, in the seed's order."""
    rows = load_mapping()
    assert [(r.entity, r.action, r.source, r.gg4l) for r in rows] == SEED_TABLE


def test_each_gg4l_attribute_lands_in_one_documented_oneroster_place():
    """A "Metadata Extension: X" row lands in `metadata.x`; the identifiers in users.csv's own columns."""
    rows = load_mapping()
    creates = [r for r in rows if r.action == "create"]
    for r in creates:
        if r.gg4l.startswith("Metadata Extension: "):
            name = r.gg4l.removeprefix("Metadata Extension: ").lower().replace(" ", "_")
            assert r.target == f"metadata.{name}", r
        else:
            assert r.target in HEADERS["users"] or r.target.startswith("userIds:"), r
    places = {r.gg4l: r.target for r in creates}
    assert places["One Roster Human Readable Identifier"] == "identifier"
    assert places["SIS ID"] == "sourcedId"
    assert places["PowerSchool Identifier"] == "userIds:PowerSchool"
    assert len({(r.entity, r.target) for r in creates}) == len(creates)  # one place each
    assert all(r.target is None for r in rows if r.action == "delete")


def test_the_critical_and_optional_fields_are_those_the_seed_lists():
    """Seed 001: "Critical: Is_identified_as_homeless, homeless_primary_nighttime_residence,
    homeless_unaccompanied_youth"; "Optional: homeroom, ell_status, lunch_status, special_education_status,
    alert_medical"."""
    rows = load_mapping()
    critical = {r.target for r in rows if r.critical}
    assert critical == {
        "metadata.is_identified_as_homeless",
        "metadata.homeless_primary_nighttime_residence",
        "metadata.homeless_unaccompanied_youth",
    }
    optional = {r.target for r in rows if r.optional}
    # The seed's list and its table name two of them two ways; the table's names are the bundle's.
    assert optional == {
        "metadata.homeroom",
        "metadata.ell_status",
        "metadata.lunch_status",
        "metadata.sped_status",  # the list's special_education_status
        "metadata.medical_alert",  # the list's alert_medical
    }


def test_every_repurposed_field_has_its_delete_row_and_its_new_meaning():
    """Seed 001's Delete rows: a PowerSchool field repurposed for homeless, ELL, lunch or special-education
    data never leaves under its original name; each is the source of a create row under its new name."""
    rows = load_mapping()
    deleted = {r.source for r in rows if r.action == "delete"}
    assert deleted == {
        "Alert Other",
        "Alert Other Expires",
        "Doctor Phone",
        "Alert MedicalExpires",
        "Alert Guardian",
        "Doctor Name",
    }
    created = {r.source: r.target for r in rows if r.action == "create"}
    assert all(created[s].startswith("metadata.") for s in deleted)


def _copy(tmp_path: Path, edit) -> Path:
    doc = yaml.safe_load(DEFAULT_MAPPING.read_text())
    edit(doc)
    path = tmp_path / "mapping.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (
            lambda d: d["students"][2].update(source="Lokal Id"),
            "students row 3: source 'Lokal Id' is not a column",
        ),
        (lambda d: d["contacts"][0].update(target="metadata.Contact Email"), "contacts row 1: target"),
        (
            lambda d: d["students"][0].update(target="nickname"),
            "students row 1: target 'nickname' is neither",
        ),
        (
            lambda d: d["students"][20].update(target="metadata.x"),
            "students row 21: a delete row sends nothing",
        ),
        (lambda d: d["students"][5].update(action="update"), "students row 6: action 'update'"),
        (lambda d: d.update(teachers=[]), "expected the sections students and contacts"),
    ],
)
def test_a_mapping_row_naming_an_unknown_attribute_or_target_is_refused_naming_the_file_and_row(
    tmp_path, edit, says
):
    path = _copy(tmp_path, edit)
    with pytest.raises(MappingError) as refused:
        load_mapping(path)
    assert str(path) in str(refused.value) and says in str(refused.value), str(refused.value)


def test_a_districts_own_mapping_copy_is_checked_when_the_districts_file_loads(tmp_path):
    """`oneroster.attribute_mapping` points at the district's copy (relative to the districts file); a bad
    row refuses the districts file, naming the district, the mapping file and its row."""
    good = _copy(
        tmp_path,
        lambda d: d["students"].append(
            {
                "action": "create",
                "source": "Email",
                "gg4l": "Metadata Extension: Email",
                "target": "metadata.email",
            }
        ),
    )
    district = {
        "id": "d1",
        "name": "D",
        "state": "TX",
        "timezone": "America/Chicago",
        "oneroster": {"attribute_mapping": good.name, "delivery": {"directory": {"path": str(tmp_path)}}},
    }
    districts = tmp_path / "districts.yaml"
    districts.write_text(yaml.safe_dump({"districts": [district]}))
    loaded = load_districts(districts).get("d1")
    assert Path(loaded.oneroster.attribute_mapping) == good
    rows = load_mapping(good)
    assert "metadata.email" in {r.target for r in rows} and len(rows) == len(SEED_TABLE) + 1

    bad = _copy(tmp_path, lambda d: d["contacts"][3].update(source="Relationship"))
    districts.write_text(
        yaml.safe_dump(
            {
                "districts": [
                    {**district, "oneroster": {**district["oneroster"], "attribute_mapping": str(bad)}}
                ]
            }
        )
    )
    with pytest.raises(ConfigError) as refused:
        load_districts(districts)
    message = str(refused.value)
    assert "district d1" in message and str(bad) in message and "contacts row 4" in message, message
