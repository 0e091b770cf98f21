"""The Ed-Fi target's names that its validate and publish layers share: the resource of each profile, its
payload mart, its natural key, and the error-log target of a connection's route."""

from __future__ import annotations

import json
from typing import Any

TARGET = "edfi"
RESOURCES = {
    "ds52": "studentEducationOrganizationAssessmentAccommodations",
    "indiana": "studentAssessmentAccommodations",
}
MARTS = {
    "ds52": "marts.edfi__ds52_assessment_accommodations",
    "indiana": "marts.edfi__indiana_assessment_accommodations",
}
# Each profile's natural key: (query parameter, path in the payload, column of the payload mart).
NATURAL_KEYS: dict[str, tuple[tuple[str, tuple[str, ...], str], ...]] = {
    "ds52": (
        ("studentUniqueId", ("studentReference", "studentUniqueId"), "student_unique_id"),
        (
            "educationOrganizationId",
            ("educationOrganizationReference", "educationOrganizationId"),
            "education_organization_id",
        ),
    ),
}
NATURAL_KEYS["indiana"] = (
    *NATURAL_KEYS["ds52"],
    ("assessmentIdentifier", ("assessmentReference", "assessmentIdentifier"), "assessment_identifier"),
    ("namespace", ("assessmentReference", "namespace"), "assessment_namespace"),
    ("academicSubjectDescriptor", ("academicSubjectDescriptor",), "academic_subject_descriptor"),
    ("accommodationDescriptor", ("accommodationDescriptor",), "accommodation_descriptor"),
)


def ledger_target(connection: str) -> str:
    """Each connection publishes on its own: its ledger scope (and its error-log targets' prefix)."""
    return f"{TARGET}/{connection}"


def route_target(connection: str, profile: str) -> str:
    """The error-log target of a connection's resource (every route of it: one per school year)."""
    return f"{ledger_target(connection)}/{RESOURCES[profile]}"


def natural_key(profile: str, record: dict) -> str | None:
    """The record's natural key as compact JSON text, names sorted, every value text (what
    `natural_key_sql` computes from the mart); None when a part is missing (an object somebody else made
    without it)."""
    values = {}
    for name, path, _ in NATURAL_KEYS[profile]:
        value: Any = record
        for step in path:
            value = value.get(step) if isinstance(value, dict) else None
        if value is None or str(value) == "":
            return None
        values[name] = str(value)
    return json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def natural_key_sql(profile: str) -> str:
    """`natural_key` in SQL over the profile's payload mart: the ledger's key is its md5."""
    parts = sorted((name, column) for name, _, column in NATURAL_KEYS[profile])
    return "to_json({" + ", ".join(f"'{n}': {c}::varchar" for n, c in parts) + "})::varchar"
