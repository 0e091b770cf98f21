"""pandera schemas on every Qmlativ mart (types, required fields, TEDS code membership, date order).

A record that fails is never sent: it becomes one `ops.error_log` row per failing field (district,
target, record key hash, field, value, cause, fix) and the publish step holds it back. When the source is
fixed the record passes, goes out on the next run, and its error row is resolved.
"""

import hashlib
from collections import Counter
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from sg_orchestration import error_log
from sg_orchestration.catalog import Source
from sg_orchestration.config import CONFIG_DIR, QMLATIV_CODE_TABLES, QMLATIV_FIELDS, current_districts
from sg_orchestration.publish.qmlativ import FORMS
from sg_orchestration.transform.staging import intermediate_name, mart_name, model_name
from sg_orchestration.validate.student_mapping import (
    MAPPING_HINT,
    demographics_loaded,
    record_unmapped,
    target,
)
from sg_orchestration.warehouse import WAREHOUSE_POOL, connect

if TYPE_CHECKING:
    import pandas as pd
    import pandera.pandas as pa

KEY = dg.AssetKey(["validate", "qmlativ_writeback"])
MART_KEYS = [dg.AssetKey(["marts", mart_name(f)]) for f in FORMS]  # the dbt assets of the Qmlativ screens
_FINDINGS_DDL = (
    "target varchar, record_key_hash varchar, field varchar, value varchar, cause varchar, fix varchar, "
    "location varchar, load_id bigint"
)
DATE_ORDER = (("StartDate", "EndDate"), ("IAPBeginDate", "DismissalDate"))
# New or changed mart rows go to pandera this many at a time: a cold run of a large district judges every
# row of each mart, and one pandas frame of them all would hold the whole mart in memory.
VALIDATION_CHUNK_ROWS = 50_000
RECORD_DATES = {
    "start_date": "StartDate",
    "restraint_date": "RestraintDate",
    "iap_begin_date": "IAPBeginDate",
}


def _codes(con, district_id: str) -> dict[str, frozenset[str]]:
    rows = con.execute(
        "select code_table, list(code) from reference.teds_codes "
        "where district_id is null or district_id = '' or district_id = ? group by all",
        [district_id],
    ).fetchall()
    return {table: frozenset(codes) for table, codes in rows}


@cache
def mart_schema(form: Source, codes: tuple[tuple[str, frozenset[str]], ...]) -> "pa.DataFrameSchema":
    import pandera.pandas as pa  # imported when there are rows to judge: ~1 s a process otherwise

    allowed = dict(codes)
    fields = QMLATIV_FIELDS[form.table]
    record_date = RECORD_DATES[form.record_date]
    columns = {
        "StudentID": pa.Column(nullable=False, description="Qmlativ StudentID"),
        "SourceDocumentID": pa.Column(str, nullable=False),
        record_date: pa.Column(nullable=False, description="the date the record is placed by"),
    }
    for field in fields.values():
        table = QMLATIV_CODE_TABLES.get(field)
        if table:
            columns[field] = pa.Column(
                nullable=True,
                checks=pa.Check.isin(sorted(allowed.get(table, ())), error=f"is not in TEDS table {table}"),
            )
    checks = [
        pa.Check(
            lambda df, a=first, b=last: df[b].isna() | df[a].isna() | (df[b] >= df[a]),
            element_wise=False,
            error=f"{last} is before {first}",
        )
        for first, last in DATE_ORDER
        if first in fields.values() and last in fields.values()
    ]
    return pa.DataFrameSchema(columns, checks=checks, strict=False, name=mart_name(form))


def _fix(table: str | None) -> str:
    if table:
        return (
            f"Correct the code in the SameGoal document, or, if TEDS {table} lists it, add it to "
            "dbt_project/seeds/teds_codes.csv with your district_id. The record is sent on the next run."
        )
    return "Correct the SameGoal document; the record is sent on the next run once it passes."


def failures(form: Source, frame: "pd.DataFrame", codes: dict[str, frozenset[str]]) -> list[tuple]:
    """(document_id, field, value, cause, fix) for every failing field of the form's records."""
    import pandas as pd
    import pandera.pandas as pa

    schema = mart_schema(form, tuple(sorted(codes.items())))
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        out = set()
        for case in exc.failure_cases.itertuples():
            if pd.isna(case.index):
                continue
            row = frame.loc[case.index]
            if case.schema_context == "DataFrameSchema":  # a rule across fields, e.g. date order
                field = str(case.check).split(" ")[0]
                value = None if pd.isna(row[field]) else str(row[field])
            else:
                field = case.column
                value = None if pd.isna(case.failure_case) else str(case.failure_case)
            table = QMLATIV_CODE_TABLES.get(field) if "TEDS" in str(case.check) else None
            cause = f"`{field}` {value} {case.check}" if table else f"`{field}`: {case.check}"
            out.add((row["SourceDocumentID"], field, value, cause, _fix(table)))
        return sorted(out, key=lambda r: (r[0], r[1], r[3]))
    return []


def _judge_new_rows(con, form: Source, codes: dict[str, frozenset[str]]) -> tuple[int, list[tuple]]:
    """The rows of the temp table `_sg_new` judged `VALIDATION_CHUNK_ROWS` at a time (each check is
    row-local, so the findings are those of one frame of them all): how many, and their `failures`."""
    total, end = con.execute("select count(*), coalesce(max(rowid) + 1, 0) from _sg_new").fetchone()
    found: set[tuple] = set()
    for start in range(0, end, VALIDATION_CHUNK_ROWS):
        # By row id (0..n-1 in a new table): each chunk is one bounded query, converted as the frame was.
        frame = con.execute(
            "select * from _sg_new where rowid >= $lo and rowid < $hi",
            {"lo": start, "hi": start + VALIDATION_CHUNK_ROWS},
        ).df()
        found.update(failures(form, frame, codes))
        del frame
    con.execute("drop table _sg_new")
    return total, sorted(found, key=lambda r: (r[0], r[1], r[3]))


def _rules_digest(codes: dict[str, frozenset[str]]) -> str:
    """This module, the field and code configuration it validates by, and the district's code tables."""
    files = [Path(__file__), *sorted(CONFIG_DIR.glob("qmlativ_*.yaml"))]
    codes_text = repr(sorted((t, sorted(c)) for t, c in codes.items())).encode()
    return hashlib.sha256(b"".join(f.read_bytes() for f in files) + codes_text).hexdigest()


def record_mart_failures(con, district_id: str) -> tuple[Counter, dict[str, int]]:
    """Validate, per mart, the district's rows that are new or changed since its last validation by the
    same rules and code tables (every row when those changed): each row is judged on its own, so the
    findings of an unchanged row stand. Upsert open errors; resolve those of rows that pass now or are gone.
    Returns the invalid records per screen and, per mart with new or changed rows, how many were validated."""
    codes = _codes(con, district_id)
    rules = _rules_digest(codes)
    con.execute(f"create or replace temp table _sg_invalid ({_FINDINGS_DDL})")
    counts: Counter = Counter()
    validated: dict[str, int] = {}
    unchanged: list[str] = []  # screens whose marts hold exactly the rows judged last time
    for form in FORMS:
        mart, screen = mart_name(form), target(form)
        here = {"d": district_id, "m": mart}  # DuckDB wants exactly the parameters a statement names
        con.execute(
            f"create or replace temp table _sg_rows as select hash(m) as _sg_hash, m.* "
            f"from (select * from marts.{mart} where district_id = $d) m",
            {"d": district_id},
        )
        last = con.execute(
            "select digest from ops.validated_marts where district_id = $d and mart = $m", here
        ).fetchone()
        if not last or last[0] != rules:
            con.execute("delete from ops.validated_rows where district_id = $d and mart = $m", here)
        seen = "exists (select 1 from ops.validated_rows v where v.district_id = $d and v.mart = $m and v.row_hash = r._sg_hash)"
        con.execute(
            f"create or replace temp table _sg_new as select * exclude (_sg_hash) from _sg_rows r where not {seen}",
            here,
        )
        new_rows, rows = _judge_new_rows(con, form, codes)
        (current, stored) = con.execute(
            "select (select count(*) from _sg_rows), "
            "(select count(*) from ops.validated_rows where district_id = $d and mart = $m)",
            here,
        ).fetchone()
        if not new_rows and current == stored:  # the same rows as last time: their open findings stand
            unchanged.append(screen)
            (invalid,) = con.execute(
                "select count(distinct record_key_hash) from ops.error_log where district_id = ? "
                "and stage = 'validate' and target = ? and cause <> ? and resolved_at is null",
                [district_id, screen, MAPPING_HINT],
            ).fetchone()
            if invalid:
                counts[form.table] = invalid
            continue
        if new_rows:
            validated[mart] = new_rows
        if rows:
            con.executemany(
                "insert into _sg_invalid values (?, md5(?), ?, ?, ?, ?, 'Qmlativ mart', null)",
                [(screen, doc, field, value, cause, fix) for doc, field, value, cause, fix in rows],
            )
        con.execute(  # the open findings of the rows that did not change stand
            f"""
            insert into _sg_invalid
            select target, record_key_hash, field, value, cause, fix, location, load_id from ops.error_log
            where district_id = $d and stage = 'validate' and target = $t and cause <> $hint
              and resolved_at is null
              and record_key_hash in (select md5("SourceDocumentID") from _sg_rows r where {seen})
            """,
            {**here, "t": screen, "hint": MAPPING_HINT},
        )
        con.execute("delete from ops.validated_rows where district_id = $d and mart = $m", here)
        con.execute("insert into ops.validated_rows select $d, $m, _sg_hash from _sg_rows", here)
        con.execute(
            "insert or replace into ops.validated_marts values ($d, $m, $r, now())", {**here, "r": rules}
        )
        (invalid,) = con.execute(
            "select count(distinct record_key_hash) from _sg_invalid where target = ?", [screen]
        ).fetchone()
        if invalid:
            counts[form.table] = invalid
    error_log.sync(
        con,
        district_id,
        "validate",
        "_sg_invalid",
        scope="e.target like 'qmlativ/%' and e.cause <> ? and not list_contains(?, e.target)",
        scope_params=(MAPPING_HINT, unchanged),
    )
    return counts, validated


def not_sent(con, district_id: str, invalid: Counter) -> dict[str, Counter]:
    """Per screen, why documents are not sent: their latest version is not complete (draft, in review,
    voided), a later document superseded them, their program's cutover rule, an unmapped student, or a
    failed validation. Counts only."""
    out: dict[str, Counter] = {}
    for form in FORMS:
        reasons: Counter = Counter()
        latest = (
            f"select document_status from staging.{model_name(form)} where district_id = $d "
            "qualify row_number() over (partition by document_id order by load_id desc, source_row desc) = 1"
        )
        statuses = dict(
            con.execute(
                f"select document_status, count(*) from ({latest}) group by 1", {"d": district_id}
            ).fetchall()
        )
        for status, n in statuses.items():
            if status != "complete":
                reasons[status.replace("_", " ")] += n
        current = con.execute(
            f"select not_integrated_reason, count(*) from intermediate.{intermediate_name(form)} "
            "where district_id = $d group by 1",
            {"d": district_id},
        ).fetchall()
        if superseded := statuses.get("complete", 0) - sum(n for _, n in current):
            reasons["superseded"] += superseded
        reasons.update({reason: n for reason, n in current if reason})
        if invalid.get(form.table):
            reasons["failed validation"] += invalid[form.table]
        out[form.table] = reasons
    return out


def _not_sent_table(reasons: dict[str, Counter]) -> str:
    rows = [(screen, reason, n) for screen, c in reasons.items() for reason, n in sorted(c.items()) if n]
    if not rows:
        return "Every current document is sent."
    return "| screen | why not sent | documents |\n|---|---|---:|\n" + "\n".join(
        f"| {screen} | {reason} | {n} |" for screen, reason, n in rows
    )


def build_qmlativ_validation_asset(partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        key=KEY,
        group_name="validate",
        partitions_def=partitions_def,
        pool=WAREHOUSE_POOL,
        deps=MART_KEYS + [dg.AssetKey(["intermediate", intermediate_name(f)]) for f in FORMS],
        kinds={"duckdb", "pandera"},
        description=__doc__,
        check_specs=[
            dg.AssetCheckSpec(
                "demographics_loaded",
                asset=KEY,
                description="Qmlativ demographics have loaded for the district, so students can be mapped.",
            ),
            dg.AssetCheckSpec(
                "records_valid",
                asset=KEY,
                description="pandera: every Qmlativ record has its types, required fields, TEDS codes and "
                "date order; failures are held back and listed in ops.error_log.",
            ),
        ],
    )
    def qmlativ_writeback(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        district = current_districts().get(context.partition_key)
        with connect() as con:
            unmapped = record_unmapped(con, district.id)
            invalid, validated = record_mart_failures(con, district.id)
            loaded = demographics_loaded(con, district.id)
            reasons = not_sent(con, district.id, invalid)
        needs_mapping = district.qmlativ is not None
        return dg.MaterializeResult(
            metadata={
                "unmapped_documents": sum(unmapped.values()),
                "invalid_records": sum(invalid.values()),
                **{f"invalid/{k}": v for k, v in invalid.items()},
                "rows_validated": dg.MetadataValue.int(sum(validated.values())),
                "marts_unchanged": dg.MetadataValue.int(len(FORMS) - len(validated)),
                "not_sent": dg.MetadataValue.md(_not_sent_table(reasons)),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name="demographics_loaded",
                    passed=loaded or not needs_mapping,
                    description=None
                    if loaded or not needs_mapping
                    else f"no Qmlativ students: {MAPPING_HINT}",
                ),
                dg.AssetCheckResult(
                    check_name="records_valid",
                    passed=not invalid,
                    severity=dg.AssetCheckSeverity.WARN,
                    metadata={"invalid_records": sum(invalid.values())},
                ),
            ],
        )

    return qmlativ_writeback
