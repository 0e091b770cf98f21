"""Seed 000's tip: "Demographics integration must already be configured and have run at least once
successfully to allow mapping of student IDs needed for state reporting writeback."

A SameGoal student with no Qmlativ StudentID is not sent; each such document is an error-log row with
that hint, resolved on the run where the student maps. A district whose Qmlativ demographics never
loaded fails this check instead of sending nothing silently.
"""

from sg_orchestration.catalog import SAMEGOAL_SOURCES

MAPPING_HINT = "student not mapped: run the demographics integration"
FIX = (
    "Run the Qmlativ demographics integration (or correct the student's local/state id in SameGoal or "
    "Qmlativ); the document is sent on the next run once the student maps."
)
FORMS = SAMEGOAL_SOURCES


def _unmapped_sql(district_id_param: str = "?") -> str:
    parts = [
        f"select '{s.name}' as target, md5(document_id) as key_hash, "
        f"coalesce(student_local_id, student_state_id) as value "
        f"from intermediate.int_{s.name} where district_id = {district_id_param} "
        f"and not_integrated_reason = '{MAPPING_HINT}'"
        for s in FORMS
    ]
    return " union all ".join(parts)


def record_unmapped(con, district_id: str) -> dict[str, int]:
    """Upsert one open error per unmapped document and resolve those that map now; counts per form."""
    con.execute(f"create or replace temp table _sg_unmapped as {_unmapped_sql()}", [district_id] * len(FORMS))
    match = (
        "e.district_id = ? and e.stage = 'validate' and e.cause = ? and e.resolved_at is null "
        "and e.target = u.target and e.record_key_hash = u.key_hash"
    )
    con.execute(
        f"update ops.error_log e set last_seen_at = now() from _sg_unmapped u where {match}",
        [district_id, MAPPING_HINT],
    )
    con.execute(
        f"""
        insert into ops.error_log (district_id, stage, target, record_key_hash, field, value, cause, fix,
            location, first_seen_at, last_seen_at)
        select ?, 'validate', u.target, u.key_hash, 'student_local_id', u.value, ?, ?,
            'SameGoal document', now(), now()
        from _sg_unmapped u
        where not exists (select 1 from ops.error_log e where {match})
        """,
        [district_id, MAPPING_HINT, FIX, district_id, MAPPING_HINT],
    )
    con.execute(
        """
        update ops.error_log e set resolved_at = now()
        where e.district_id = ? and e.stage = 'validate' and e.cause = ? and e.resolved_at is null
          and not exists (select 1 from _sg_unmapped u where e.target = u.target and e.record_key_hash = u.key_hash)
        """,
        [district_id, MAPPING_HINT],
    )
    return dict(con.execute("select target, count(*) from _sg_unmapped group by all order by 1").fetchall())


def demographics_loaded(con, district_id: str) -> bool:
    return con.execute(
        "select count(*) > 0 from staging.stg_qmlativ__students where district_id = ?", [district_id]
    ).fetchone()[0]
