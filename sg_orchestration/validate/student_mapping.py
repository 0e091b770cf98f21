"""Seed 000's tip: "Demographics integration must already be configured and have run at least once
successfully to allow mapping of student IDs needed for state reporting writeback."

A SameGoal student with no Qmlativ StudentID is not sent; each such document is an error-log row with
that hint, resolved on the run where the student maps. A district whose Qmlativ demographics never
loaded fails this check instead of sending nothing silently.
"""

import dagster as dg

from sg_orchestration.catalog import SOURCES, Source
from sg_orchestration.config import current_districts
from sg_orchestration.warehouse import WAREHOUSE_POOL, connect

MAPPING_HINT = "student not mapped: run the demographics integration"
FIX = (
    "Run the Qmlativ demographics integration (or correct the student's local/state id in SameGoal or "
    "Qmlativ); the document is sent on the next run once the student maps."
)
FORMS: tuple[Source, ...] = tuple(s for s in SOURCES if s.program)
KEY = dg.AssetKey(["validate", "samegoal_student_mapping"])
CHECK = "demographics_loaded"


def _unmapped_sql(district_id_param: str = "?") -> str:
    parts = [
        f"select '{s.name}' as target, md5(district_id || '|{s.table}|' || document_id) as key_hash, "
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


def build_student_mapping_asset(partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        key=KEY,
        group_name="validate",
        partitions_def=partitions_def,
        pool=WAREHOUSE_POOL,
        deps=[dg.AssetKey(["intermediate", f"int_{s.name}"]) for s in FORMS],
        kinds={"duckdb"},
        description=__doc__,
        check_specs=[
            dg.AssetCheckSpec(
                CHECK,
                asset=KEY,
                description="Qmlativ demographics have loaded for the district, so students can be mapped.",
            )
        ],
    )
    def samegoal_student_mapping(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        district = current_districts().get(context.partition_key)
        with connect() as con:
            unmapped = record_unmapped(con, district.id)
            loaded = demographics_loaded(con, district.id)
        uses_qmlativ = district.qmlativ is not None
        check = dg.AssetCheckResult(
            passed=loaded or not uses_qmlativ,
            severity=dg.AssetCheckSeverity.ERROR,
            description=None if loaded or not uses_qmlativ else f"no Qmlativ students loaded: {MAPPING_HINT}",
            metadata={"qmlativ_configured": uses_qmlativ},
        )
        return dg.MaterializeResult(
            metadata={
                "unmapped_documents": sum(unmapped.values()),
                **{f"unmapped/{k}": v for k, v in unmapped.items()},
            },
            check_results=[check],
        )

    return samegoal_student_mapping
