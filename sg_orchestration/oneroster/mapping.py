"""The GG4L attribute mapping (seed 001 §2.1) as data: `config/oneroster_mapping.yaml`, or a district's own
copy (`oneroster.attribute_mapping`). Loading checks every row against the PowerSchool exports and the
bundle's layout: a row naming an unknown source attribute, or a target that is neither a users.csv column,
a `userIds:<type>` entry nor `metadata.<name>`, is refused naming the file and the row."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from sg_orchestration.catalog import SOURCES_BY_NAME
from sg_orchestration.config import District
from sg_orchestration.oneroster import HEADERS

DEFAULT_MAPPING = Path(__file__).parent.parent / "config" / "oneroster_mapping.yaml"
ENTITIES = {"students": "powerschool__students", "contacts": "powerschool__contacts"}
_METADATA = re.compile(r"metadata\.[a-z][a-z0-9_]*")
_USER_ID = re.compile(r"userIds:[A-Za-z][A-Za-z0-9_]*")
_KEYS = {"action", "source", "gg4l", "target", "critical", "optional"}


@dataclass(frozen=True)
class MappingRow:
    entity: Literal["students", "contacts"]
    action: Literal["create", "delete"]
    source: str  # the PowerSchool column
    gg4l: str  # the GG4L attribute, as the mapping names it
    target: str | None  # users.csv column, `userIds:<type>` or `metadata.<name>`; None for a delete
    critical: bool = False
    optional: bool = False


class MappingError(ValueError):
    pass


def mapping_path(district: District | None) -> Path:
    configured = district.oneroster.attribute_mapping if district and district.oneroster else None
    return Path(configured) if configured else DEFAULT_MAPPING


def load_mapping(path: Path = DEFAULT_MAPPING) -> tuple[MappingRow, ...]:
    """The rows of the mapping file, in its order; `MappingError` names the file and row of the first
    problem (and every problem, when there are several)."""
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise MappingError(f"{path}: cannot be read as YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(doc, dict) or not set(doc) <= set(ENTITIES) or not doc:
        raise MappingError(f"{path}: expected the sections {' and '.join(ENTITIES)}, each a list of rows")
    rows: list[MappingRow] = []
    problems: list[str] = []
    for entity, entries in doc.items():
        columns = SOURCES_BY_NAME[ENTITIES[entity]].column_names
        for number, entry in enumerate(entries or [], start=1):
            where = f"{path}: {entity} row {number}"
            try:
                rows.append(_row(entity, entry, columns))
            except MappingError as exc:
                problems.append(f"{where}: {exc}")
    if problems:
        raise MappingError("; ".join(problems))
    return tuple(rows)


def _row(entity: str, entry: object, columns: tuple[str, ...]) -> MappingRow:
    if not isinstance(entry, dict):
        raise MappingError("expected a mapping with action, source, gg4l and (to create) target")
    if unknown := sorted(set(entry) - _KEYS):
        raise MappingError(f"unknown key(s) {unknown}; a row has {sorted(_KEYS)}")
    action, source, gg4l, target = (entry.get(k) for k in ("action", "source", "gg4l", "target"))
    if action not in ("create", "delete"):
        raise MappingError(f"action {action!r}: expected create or delete")
    if not isinstance(gg4l, str) or not gg4l.strip():
        raise MappingError("gg4l: the GG4L attribute is missing")
    if source not in columns:
        raise MappingError(
            f"source {source!r} is not a column of the PowerSchool {entity} export "
            f"(powerschool/{entity}.csv has {', '.join(columns)})"
        )
    if action == "delete":
        if target is not None:
            raise MappingError(f"a delete row sends nothing: remove its target {target!r}")
    elif not isinstance(target, str) or not (
        target in HEADERS["users"] or _METADATA.fullmatch(target) or _USER_ID.fullmatch(target)
    ):
        raise MappingError(
            f"target {target!r} is neither a users.csv column ({', '.join(HEADERS['users'])}), "
            "a userIds entry (`userIds:<type>`) nor a metadata extension (`metadata.<lower_case_name>`)"
        )
    flags = {k: entry.get(k, False) for k in ("critical", "optional")}
    if any(not isinstance(v, bool) for v in flags.values()):
        raise MappingError("critical and optional are true or false")
    return MappingRow(entity, action, source, gg4l.strip(), target, **flags)


def district_mapping(district: District) -> tuple[MappingRow, ...]:
    return load_mapping(mapping_path(district))
