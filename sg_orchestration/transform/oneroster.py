"""What the OneRoster dbt step tells its models about the district: its GG4L attribute mapping (seed 001
§2.1, `oneroster.mapping`), written to ops.oneroster_mapping before the step builds.

The mapping is data a district may change, so the users mart reads it from this table rather than from
code; what is written is also part of the step's fingerprint (`transform.reuse`), so a changed mapping
builds again.
"""

from __future__ import annotations

from sg_orchestration.catalog import SOURCES_BY_NAME
from sg_orchestration.config import District
from sg_orchestration.oneroster.mapping import ENTITIES, district_mapping
from sg_orchestration.paths import DBT_PROJECT_DIR
from sg_orchestration.transform import run_inputs

# The table's one definition: its dbt source's columns and `data_type`.
MAPPING_YML = DBT_PROJECT_DIR / "models" / "intermediate" / "oneroster" / "_oneroster_mapping.yml"
COLUMNS = "district_id, ordinal, entity, action, source, source_column, target, critical, optional"


def record_mapping(con, district: District) -> list[list]:
    """The district's mapping rows, in its file's order, as the table int_oneroster__mapped_attributes
    reads; returns what it wrote."""
    rows = [
        [
            district.id,
            ordinal,
            r.entity,
            r.action,
            r.source,
            SOURCES_BY_NAME[ENTITIES[r.entity]].column(r.source).staged_name,
            r.target,
            r.critical,
            r.optional,
        ]
        for ordinal, r in enumerate(district_mapping(district), start=1)
    ]
    con.execute(run_inputs.ddl(MAPPING_YML))
    con.execute("delete from ops.oneroster_mapping where district_id = ?", [district.id])
    if rows:
        marks = ", ".join("?" * len(COLUMNS.split(",")))
        con.executemany(f"insert into ops.oneroster_mapping ({COLUMNS}) values ({marks})", rows)
    return rows


def record_source(con, district: District) -> str | None:
    """Where the district's bundle comes from (`District.oneroster_source`), as int_oneroster__districts
    reads it; returns what it wrote."""
    con.execute(run_inputs.ddl(MAPPING_YML))
    con.execute("delete from ops.oneroster_sources where district_id = ?", [district.id])
    source = district.oneroster_source
    if source:
        con.execute("insert into ops.oneroster_sources values (?, ?)", [district.id, source])
    return source
