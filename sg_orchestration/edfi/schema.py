"""The two Ed-Fi payload profiles' schemas (SPEC §4.2) and their violations, each naming the JSON path.

`ds52`: the Ed-Fi Data Standard 5.2 core resource, `ds52_schema.json` (written from the real OpenAPI file
by `scripts/extract_edfi_schema.py`); `indiana`: the seed's element list, `indiana_schema.json`. Messages
name the path and the rule broken, never the value: payloads carry student identifiers.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from jsonschema import Draft4Validator, FormatChecker

HERE = Path(__file__).resolve().parent
DS52_RESOURCE = "EdFi_StudentEducationOrganizationAssessmentAccommodation"


@cache
def load_ds52_schema() -> dict:
    """`{"source", "resource", "definitions"}`: the DS 5.2 schemas the product uses, `$ref`s within."""
    return json.loads((HERE / "ds52_schema.json").read_text(encoding="utf-8"))


@cache
def load_indiana_schema() -> dict:
    return json.loads((HERE / "indiana_schema.json").read_text(encoding="utf-8"))


@cache
def _validator(definition: str | None) -> Draft4Validator:
    # OpenAPI 3.0 schema objects are JSON Schema draft 4 with extensions (x-*), as lightbeam reads them too
    if definition is None:
        schema = load_indiana_schema()
    else:
        schema = {"$ref": f"#/definitions/{definition}", "definitions": load_ds52_schema()["definitions"]}
    # every known format: draft 4's own list lacks `date`, which OpenAPI uses (e.g. birthDate)
    return Draft4Validator(schema, format_checker=FormatChecker())


def _json_path(parts) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def _rule(keyword: str, limit) -> str:
    messages = {
        "type": f"must be of type {limit}",
        "maxLength": f"must be at most {limit} characters",
        "minLength": f"must be at least {limit} characters",
        "minItems": f"must have at least {limit} items",
        "maxItems": f"must have at most {limit} items",
        "format": f"must be a valid {limit}",
        "pattern": f"must match the pattern {limit}",
        "enum": "is not one of the allowed values",
    }
    return messages.get(keyword, f"breaks the schema rule {keyword!r}")


def violations(payload: dict, definition: str | None = DS52_RESOURCE) -> dict[str, list[str]]:
    """JSON path -> what is wrong there, for `payload` against the DS 5.2 `definition` (default: the
    profile's resource; e.g. "EdFi_Student") or, with None, the Indiana profile. Empty when valid."""
    found: dict[str, list[str]] = {}

    def add(parts: list, message: str) -> None:
        messages = found.setdefault(_json_path(parts), [])
        if message not in messages:  # one error per missing property, each listing them all
            messages.append(message)

    for error in _validator(definition).iter_errors(payload):
        path = list(error.absolute_path)
        if error.validator == "required":
            present = error.instance if isinstance(error.instance, dict) else {}
            for name in error.validator_value:
                if name not in present:
                    add([*path, name], "is required")
        else:
            add(path, _rule(error.validator, error.validator_value))
    return dict(sorted(found.items()))


def _messages(found: dict[str, list[str]]) -> list[str]:
    return [f"{path}: {message}" for path, messages in found.items() for message in messages]


def ds52_errors(payload: dict) -> list[str]:
    """What makes `payload` an invalid DS 5.2 studentEducationOrganizationAssessmentAccommodation."""
    return _messages(violations(payload))


def indiana_errors(payload: dict) -> list[str]:
    """What makes `payload` an invalid Indiana studentAssessmentAccommodation."""
    return _messages(violations(payload, None))
