"""`ops.error_log`: what went wrong with a record, in plain words, until it is fixed.

Every check that finds bad records (ingest parsing, the student mapping, pandera on the marts, a target
refusing a record) hands its current findings to `sync`: a finding already open is seen again (no
duplicate row), a new one is inserted, and an open error of that check that is no longer found is
resolved — the record is fixed at the source and goes out on the next run.
"""

FINDING_COLUMNS = "target, record_key_hash, field, value, cause, fix, location, load_id"
_SAME = (
    "e.target = c.target and e.record_key_hash = c.record_key_hash "
    "and e.field is not distinct from c.field and e.cause = c.cause"
)
_OPEN = "e.district_id = ? and e.stage = ? and e.resolved_at is null"


def sync(
    con,
    district_id: str,
    stage: str,
    findings: str,
    scope: str,
    scope_params: tuple = (),
    resolve_only_if: str = "true",
) -> None:
    """`findings`: a table with FINDING_COLUMNS (never logged). `scope`: SQL on `e` selecting the open
    errors this check owns; `resolve_only_if`: a further condition before one of them counts as fixed."""
    con.execute(
        f"update ops.error_log e set last_seen_at = now(), location = c.location, load_id = c.load_id "
        f"from {findings} c where {_OPEN} and {_SAME}",
        [district_id, stage],
    )
    con.execute(
        f"""
        insert into ops.error_log (district_id, stage, {FINDING_COLUMNS}, first_seen_at, last_seen_at)
        select ?, ?, {", ".join("c." + c.strip() for c in FINDING_COLUMNS.split(","))}, now(), now()
        from {findings} c
        where not exists (select 1 from ops.error_log e where {_OPEN} and {_SAME})
        """,
        [district_id, stage, district_id, stage],
    )
    con.execute(
        f"""
        update ops.error_log e set resolved_at = now()
        where {_OPEN} and ({scope}) and ({resolve_only_if})
          and not exists (select 1 from {findings} c where {_SAME})
        """,
        [district_id, stage, *scope_params],
    )
