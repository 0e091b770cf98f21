"""Writes the dbt sources and staging models from the catalog, so column types have one home.

Run `uv run python -m sg_orchestration.transform.staging` after changing sg_orchestration/catalog.py;
a test fails while the committed files differ from what this writes.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from sg_orchestration.catalog import SOURCES, TRUE_VALUES, TYPE_DESCRIPTIONS, Source
from sg_orchestration.config import DEFAULT_QMLATIV_OBJECTS, QMLATIV_FIELDS
from sg_orchestration.paths import DBT_PROJECT_DIR

STAGING_DIR = DBT_PROJECT_DIR / "models" / "staging"
INTERMEDIATE_DIR = DBT_PROJECT_DIR / "models" / "intermediate"
MARTS_DIR = DBT_PROJECT_DIR / "models" / "marts" / "qmlativ"
HEADER = "-- Generated from sg_orchestration/catalog.py by `python -m sg_orchestration.transform.staging`.\n"
MACROS_FILE = DBT_PROJECT_DIR / "macros" / "_catalog.sql"


def model_name(source: Source) -> str:
    return f"stg_{source.name}"


def _macros() -> str:
    values = ", ".join("'" + v + "'" for v in TRUE_VALUES)
    return f"{HEADER}{{% macro sg_true_values() %}}({values}){{% endmacro %}}\n"


def _samegoal_meta(source: Source) -> dict:
    if not source.program:
        return {}
    return {
        "program": source.program,
        "record_date": source.record_date,
        "supersession_key": list(source.supersession_key),
        "qmlativ_fields": [list(pair) for pair in QMLATIV_FIELDS[source.table].items()],
    }


def mart_name(source: Source) -> str:
    return f"qmlativ__{source.table}"


def _macro_model(macro: str, macro_file: str, purpose: str, source: Source) -> str:
    """A model file that is one macro call: the rule lives once, in the macro."""
    return f"{HEADER}-- The macro `{macro}` (macros/{macro_file}) {purpose}.\n{{{{ {macro}('{source.name}') }}}}\n"


def _not_null(columns: list[str]) -> dict:
    """The model's required columns as one test (tests/generic/not_null_columns.sql): one read of the
    model, not one per column (each dbt test node costs ~20 ms of dbt's own work, and a staging view is
    computed again for each)."""
    return {"not_null_columns": {"arguments": {"column_names": columns}}}


def _marts_yml() -> str:
    models = []
    for s in SOURCES:
        if not s.program:
            continue
        names = DEFAULT_QMLATIV_OBJECTS[s.table]
        columns = [
            {"name": "district_id", "description": "The district (tenant)."},
            {"name": "document_id", "description": "The SameGoal document."},
            {"name": "StudentID", "description": "Qmlativ StudentID (mapped by local id, then state id)."},
            {"name": "SourceDocumentID", "description": "The SameGoal document id, kept in Qmlativ."},
        ] + [
            {"name": field, "description": f"SameGoal `{column}`."}
            for column, field in QMLATIV_FIELDS[s.table].items()
        ]
        models.append(
            {
                "name": mart_name(s),
                "description": f"Qmlativ {names['module']}/{names['object']} writeback records from SameGoal "
                f"`{s.table}` documents that are integrated (complete, current, after cutover, mapped).",
                "data_tests": [
                    _not_null(["district_id", "document_id", "StudentID"]),
                    {"unique_per_district": {"arguments": {"column_names": ["document_id"]}}},
                ],
                "columns": columns,
            }
        )
    return "# " + HEADER[3:] + yaml.safe_dump({"version": 2, "models": models}, sort_keys=False, width=120)


def intermediate_name(source: Source) -> str:
    return f"int_{source.name}"


def _sources_yml() -> str:
    tables = []
    for s in SOURCES:
        tables.append(
            {
                "name": s.name,
                "description": s.description
                or f"{s.system} `{s.file}` as received (all text), every load stamped.",
                "meta": {"mode": s.mode, **_samegoal_meta(s)},
                "columns": [
                    {
                        "name": c.name,
                        "description": TYPE_DESCRIPTIONS[c.type],
                        "meta": {"type": c.type, "staged_name": c.staged_name},
                    }
                    for c in s.columns
                ],
            }
        )
    doc = {
        "version": 2,
        "sources": [
            {
                "name": "raw",
                "schema": "raw",
                "description": "Inputs as received (SPEC §3).",
                "tables": tables,
            },
            {
                "name": "ops",
                "schema": "ops",
                "description": "Operations tables written by the pipeline.",
                "tables": [
                    {"name": "loads", "description": "One row per load of a source for a district."},
                    {
                        "name": "samegoal_cutover",
                        "description": "Each district's SameGoal cutover date per special program, from "
                        "districts.yaml (null: the program is not integrated).",
                    },
                ],
            },
        ],
    }
    return "# " + HEADER[3:] + yaml.safe_dump(doc, sort_keys=False, width=120)


def _models_yml() -> str:
    models = []
    for s in SOURCES:
        key = {c.staged_name for c in s.columns if c.name in s.key}
        columns = [{"name": "district_id", "description": "The district (tenant) the row belongs to."}]
        columns += [
            {"name": c.staged_name, "description": f"`{c.name}`: {TYPE_DESCRIPTIONS[c.type]}."}
            for c in s.columns
        ]
        model: dict = {
            "name": model_name(s),
            "description": f"Staged `{s.name}`: renamed and cast.",
            "data_tests": [_not_null(["district_id", *(c.staged_name for c in s.columns if c.required)])],
            "columns": columns,
        }
        if s.mode == "snapshot" and key:
            model["data_tests"] += [
                {
                    "unique_per_district": {
                        "arguments": {"column_names": sorted(key)},
                        "config": {"severity": "warn"},
                    }
                }
            ]
        models.append(model)
    return "# " + HEADER[3:] + yaml.safe_dump({"version": 2, "models": models}, sort_keys=False, width=120)


def render() -> dict[Path, str]:
    files = {
        STAGING_DIR / "_sources.yml": _sources_yml(),
        STAGING_DIR / "_staging.yml": _models_yml(),
        MACROS_FILE: _macros(),
    }
    for s in SOURCES:
        files[STAGING_DIR / s.system / f"{model_name(s)}.sql"] = _macro_model(
            "stage", "stage.sql", "renames and casts the columns listed in _sources.yml", s
        )
        if s.program:
            files[INTERMEDIATE_DIR / s.system / f"{intermediate_name(s)}.sql"] = _macro_model(
                "samegoal_current", "samegoal.sql", "applies the SameGoal integration rules", s
            )
            files[MARTS_DIR / f"{mart_name(s)}.sql"] = _macro_model(
                "qmlativ_mart", "qmlativ.sql", "selects the screen's fields", s
            )
    files[MARTS_DIR / "_qmlativ.yml"] = _marts_yml()
    return files


def main() -> None:
    generated = [
        *STAGING_DIR.rglob("stg_*.sql"),
        *(p for p in INTERMEDIATE_DIR.rglob("int_*.sql") if p.read_text().startswith(HEADER)),
        *MARTS_DIR.glob("*.sql"),
    ]
    for path in generated:
        path.unlink()
    for path, text in render().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


if __name__ == "__main__":
    main()
