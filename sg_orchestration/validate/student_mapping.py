"""Seed 000's tip: "Demographics integration must already be configured and have run at least once
successfully to allow mapping of student IDs needed for state reporting writeback."

A SameGoal student with no Qmlativ StudentID is not sent; each such document is an error-log row with
that hint, resolved on the run where the student maps. A district whose Qmlativ demographics never
loaded fails this check instead of sending nothing silently.
"""

from sg_orchestration import error_log
from sg_orchestration.catalog import SAMEGOAL_SOURCES, Source
from sg_orchestration.warehouse import literal

MAPPING_HINT = "student not mapped: run the demographics integration"
FIX = (
    "Run the Qmlativ demographics integration (or correct the student's local/state id in SameGoal or "
    "Qmlativ); the document is sent on the next run once the student maps."
)
FORMS = SAMEGOAL_SOURCES


def target(form: Source) -> str:
    """The error-log target of a Qmlativ screen: one name whether a record is unmapped, invalid or refused."""
    return f"qmlativ/{form.table}"


def _unmapped_sql() -> str:
    return " union all ".join(
        f"select '{target(s)}' as target, md5(document_id) as record_key_hash, 'student_local_id' as field, "
        f"coalesce(student_local_id, student_state_id) as value, {literal(MAPPING_HINT)} as cause, "
        f"{literal(FIX)} as fix, 'SameGoal document' as location, null::bigint as load_id "
        f"from intermediate.int_{s.name} where district_id = $district_id "
        f"and not_integrated_reason = {literal(MAPPING_HINT)}"
        for s in FORMS
    )


def record_unmapped(con, district_id: str) -> dict[str, int]:
    """One open error per unmapped document; those that map now resolve. Returns counts per form."""
    con.execute(
        f"create or replace temp table _sg_unmapped as {_unmapped_sql()}", {"district_id": district_id}
    )
    error_log.sync(
        con, district_id, "validate", "_sg_unmapped", scope="e.cause = ?", scope_params=(MAPPING_HINT,)
    )
    return dict(con.execute("select target, count(*) from _sg_unmapped group by all order by 1").fetchall())


def demographics_loaded(con, district_id: str) -> bool:
    return con.execute(
        "select count(*) > 0 from staging.stg_qmlativ__students where district_id = ?", [district_id]
    ).fetchone()[0]
