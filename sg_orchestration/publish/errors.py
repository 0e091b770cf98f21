"""A target's records that did not get there, as `ops.error_log` rows (stage `publish`), from the ledger."""

from sg_orchestration import error_log

# Which fix a ledger row gets, by what its last request met (first match). `conflict` (a 409: the target
# does not know a record this one refers to) applies only where the target gives a fix for it.
_CAUSES = (
    ("lookup", "last_status = 'pending'"),
    ("access", "rejected_hash is not null and (last_error like '401%' or last_error like '403%')"),
    ("gone", "last_action = 'update' and (last_error like '404%' or last_error like '410%')"),
    ("conflict", "rejected_hash is not null and last_error like '409%'"),
    ("refused", "rejected_hash is not null"),
)


def record(con, district_id: str, target: str, system: str, fixes: dict[str, str]) -> None:
    """The ledger's refused, failed and unresolved pending records of every resource of `target` (and of
    `target/...`, one ledger target per connection) as ops.error_log rows, each resolved once sent; the
    fix follows the cause (`fixes` by `_CAUSES` name, `transient` for the rest)."""
    cases = " ".join(f"when {when} then ${name}" for name, when in _CAUSES if name in fixes)
    con.execute(
        f"""
        create or replace temp table _sg_refused as
        select target || '/' || resource as target, key_hash as record_key_hash, null as field,
            null as value, coalesce(last_error, 'the last request failed') as cause,
            case {cases} else $transient end as fix,
            $system || ' ' || coalesce(last_action, '') as location, null::bigint as load_id
        from ops.publish_ledger
        where district_id = $d and (target = $t or target like $t || '/%')
          and (last_status = 'failed' or (last_status = 'pending' and last_error is not null))
        """,
        {"d": district_id, "t": target, "system": system, **fixes},
    )
    error_log.sync(
        con,
        district_id,
        "publish",
        "_sg_refused",
        scope="e.target like ? || '/%'",
        scope_params=(target,),
    )
