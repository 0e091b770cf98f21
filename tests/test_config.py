"""Districts configuration (SPEC §2): a bad file is refused naming the file, the district and the key."""

from pathlib import Path

import pytest
import yaml

from sg_orchestration.config import ConfigError, load_districts
from sg_orchestration.paths import PROJECT_ROOT

EXAMPLE = PROJECT_ROOT / "districts.example.yaml"


def _write(tmp_path: Path, mutate) -> Path:
    doc = yaml.safe_load(EXAMPLE.read_text())
    mutate(doc["districts"][0])
    path = tmp_path / "districts.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_example_districts_file_loads_with_every_program_cutover():
    district = load_districts(EXAMPLE).get("example-isd")
    assert set(district.samegoal.cutover_dates) == {
        "special_education",
        "child_find",
        "restraint",
        "language_acquisition",
        "dyslexia",
        "section_504",
        "intervention_strategy",
        "emergent_bilingual",
    }
    assert district.samegoal.cutover_dates["intervention_strategy"] is None  # blank: not integrated at all
    assert district.qmlativ.objects["students"].object == "Student"  # default object mapping


def test_relative_input_folders_are_relative_to_the_districts_file(tmp_path):
    path = _write(tmp_path, lambda d: d["inputs"].update(campus_dir="drops/campus"))
    assert load_districts(path).districts[0].inputs.campus_dir == (tmp_path / "drops/campus").resolve()


@pytest.mark.parametrize(
    ("mutate", "key", "why"),
    [
        (lambda d: d["samegoal"].update(client_secret="s3cret"), "samegoal.client_secret", "unknown key"),
        (
            lambda d: d["samegoal"].update(client_id_env="not an env name"),
            "samegoal.client_id_env",
            "pattern",
        ),
        (lambda d: d.update(timezone="Mars/Olympus"), "timezone", "unknown IANA timezone"),
        (
            lambda d: d["samegoal"]["cutover_dates"].update(dyslexa="2024-08-01"),
            "samegoal.cutover_dates",
            "dyslexa",
        ),
        (lambda d: d["qmlativ"].update(access_expires="next year"), "qmlativ.access_expires", "date"),
        (lambda d: d["edfi"].update(profile="texas"), "edfi.profile", "indiana"),
        (
            lambda d: d["edfi"].update(
                resources={"studentEducationOrganizationAssessmentAccommodations": "off"}
            ),
            "edfi.resources",
            "studentAssessmentAccommodations",
        ),
        (lambda d: d["oneroster"]["delivery"].update(sftp={"host": "h"}), "oneroster.delivery.sftp", "user"),
    ],
)
def test_malformed_configuration_is_refused_naming_file_district_and_key(tmp_path, mutate, key, why):
    path = _write(tmp_path, mutate)
    with pytest.raises(ConfigError) as info:
        load_districts(path)
    message = str(info.value)
    assert str(path) in message
    assert "district 'example-isd'" in message
    assert f"`{key}" in message
    assert why in message


def test_duplicate_district_ids_are_refused(tmp_path):
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["districts"].append(doc["districts"][0])
    path = tmp_path / "districts.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="appears twice"):
        load_districts(path)


def test_missing_file_and_bad_yaml_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_districts(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("districts: [\n")
    with pytest.raises(ConfigError, match=str(bad)):
        load_districts(bad)


def test_unknown_district_names_the_configured_ones():
    with pytest.raises(ConfigError, match="example-isd"):
        load_districts(EXAMPLE).get("nowhere")


def test_a_districts_oneroster_source_is_said_or_follows_its_inputs():
    """Seed 001: PowerSchool (§2.1) or another SIS's OneRoster export (§2.2); districts.yaml says which."""
    from pydantic import ValidationError

    from sg_orchestration.config import District

    def district(inputs: dict, **oneroster) -> District:
        delivery = {"directory": {"path": "/tmp/outbox"}}
        return District(
            id="d", name="D", state="TX", timezone="America/Chicago", inputs=inputs,
            oneroster={"delivery": delivery, **oneroster},
        )  # fmt: skip

    assert district({"powerschool_dir": "/p"}).oneroster_source == "powerschool"
    assert district({"oneroster_dir": "/o"}).oneroster_source == "oneroster"
    both = {"powerschool_dir": "/p", "oneroster_dir": "/o"}
    assert district(both).oneroster_source == "powerschool"
    assert district(both, source="oneroster").oneroster_source == "oneroster"
    with pytest.raises(ValidationError, match="give `inputs.oneroster_dir`"):
        district({"powerschool_dir": "/p"}, source="oneroster")
