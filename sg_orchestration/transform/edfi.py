"""What the Ed-Fi dbt step tells its models about the run (seed 002's rules read "today's date"): the as-of
date and the district's Ed-Fi connections, written to two small ops tables before the step builds.

dbt runs without --vars (a changed var re-parses the whole project), so these tables are how the models
learn them; what is written is also part of the step's fingerprint (`transform.reuse`), so a new as-of
date or a changed connection builds again.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sg_orchestration.config import ConfigError, District
from sg_orchestration.paths import DBT_PROJECT_DIR
from sg_orchestration.transform import run_inputs

# The run tag (and `sg-orch run --as-of`) that fixes the as-of date, so reruns and backfills are
# deterministic: YYYY-MM-DD.
AS_OF_TAG = "sg/as_of"
# The tables' one definition: their dbt sources' columns and `data_type`.
RUN_INPUTS_YML = DBT_PROJECT_DIR / "models" / "intermediate" / "edfi" / "_edfi_run_inputs.yml"


def as_of_date(district: District, tags: Mapping[str, str]) -> date:
    """The run's as-of date: the `sg/as_of` tag when given, else today in the district's timezone (a
    night that starts after midnight UTC is still the district's evening)."""
    given = tags.get(AS_OF_TAG)
    if not given:
        return datetime.now(ZoneInfo(district.timezone)).date()
    try:
        return date.fromisoformat(given)
    except ValueError:
        raise ConfigError(f"run tag {AS_OF_TAG}={given!r}: expected a date, YYYY-MM-DD") from None


def record_run_inputs(con, district: District, as_of: date) -> dict:
    """The district's as-of date, profile and connections (each configured school year a row), as the
    tables int_edfi__school_years reads; returns what it wrote."""
    edfi = district.edfi
    connections = [
        [district.id, c.name, c.district_number, year] for c in edfi.connections for year in c.school_years
    ]
    con.execute(run_inputs.ddl(RUN_INPUTS_YML))
    con.execute("delete from ops.edfi_run_inputs where district_id = ?", [district.id])
    con.execute("delete from ops.edfi_connections where district_id = ?", [district.id])
    con.execute(
        "insert into ops.edfi_run_inputs (district_id, as_of, profile) values (?, ?, ?)",
        [district.id, as_of, edfi.profile],
    )
    con.executemany(
        "insert into ops.edfi_connections (district_id, connection, district_number, school_year) values (?, ?, ?, ?)",
        connections,
    )
    return {"as_of": as_of.isoformat(), "profile": edfi.profile, "connections": connections}
