"""pandera schemas on every Qmlativ mart (types, required fields, TEDS code membership, date order).

A record that fails is never sent: it becomes one `ops.error_log` row per failing field (district,
target, record key hash, field, value, cause, fix) and the publish step holds it back. When the source is
fixed the record passes, goes out on the next run, and its error row is resolved.
"""

import hashlib
from collections import Counter
from functools import cache
from pathlib import Path

import dagster as dg
import pandas as pd
import pandera.pandas as pa

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

KEY = dg.AssetKey(["validate", "qmlativ_writeback"])
MART_KEYS = [dg.AssetKey(["marts", mart_name(f)]) for f in FORMS]  # the dbt assets of the Qmlativ screens
_FINDINGS_DDL = (
    "target varchar, record_key_hash varchar, field varchar, value varchar, cause varchar, fix varchar, "
    "location varchar, load_id bigint"
)
DATE_ORDER = (("StartDate", "EndDate"), ("IAPBeginDate", "DismissalDate"))
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
def mart_schema(form: Source, codes: tuple[tuple[str, frozenset[str]], ...]) -> pa.DataFrameSchema:
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


def failures(form: Source, frame: pd.DataFrame, codes: dict[str, frozenset[str]]) -> list[tuple]:
    """(document_id, field, value, cause, fix) for every failing field of the form's records."""
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


def _rules_digest() -> bytes:
    """This module and the field and code configuration it validates by."""
    files = [Path(__file__), *sorted(CONFIG_DIR.glob("qmlativ_*.yaml"))]
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).digest()


def _mart_digest(con, form: Source, district_id: str, codes: dict[str, frozenset[str]]) -> str:
    """The district's rows of the mart (computed in DuckDB, never read into Python), its code tables and
    the rules: when it is the digest of the last validation, that validation's findings still hold."""
    rows = con.execute(
        f"select count(*), coalesce(sum(hash(m)), 0)::varchar "
        f"from (select * from marts.{mart_name(form)} where district_id = ?) m",
        [district_id],
    ).fetchone()
    codes_text = repr(sorted((t, sorted(c)) for t, c in codes.items()))
    return hashlib.sha256(_rules_digest() + repr(rows).encode() + codes_text.encode()).hexdigest()


def record_mart_failures(con, district_id: str) -> tuple[Counter, list[str]]:
    """Validate each mart for the district whose rows, codes or rules changed since its last validation;
    upsert open errors and resolve the ones that pass now. Returns the invalid records per screen (of an
    unchanged mart: its open errors) and the marts validated."""
    codes = _codes(con, district_id)
    con.execute(f"create or replace temp table _sg_invalid ({_FINDINGS_DDL})")
    counts: Counter = Counter()
    validated: dict[str, str] = {}  # mart: digest
    for form in FORMS:
        digest = _mart_digest(con, form, district_id, codes)
        last = con.execute(
            "select digest from ops.validated_marts where district_id = ? and mart = ?",
            [district_id, mart_name(form)],
        ).fetchone()
        if last and last[0] == digest:
            (still_open,) = con.execute(
                "select count(distinct record_key_hash) from ops.error_log where district_id = ? "
                "and stage = 'validate' and target = ? and cause <> ? and resolved_at is null",
                [district_id, target(form), MAPPING_HINT],
            ).fetchone()
            if still_open:
                counts[form.table] = still_open
            continue
        frame = con.execute(
            f"select * from marts.{mart_name(form)} where district_id = ?", [district_id]
        ).df()
        rows = failures(form, frame, codes)
        if rows:
            con.executemany(
                "insert into _sg_invalid values (?, md5(?), ?, ?, ?, ?, 'Qmlativ mart', null)",
                [(target(form), doc, field, value, cause, fix) for doc, field, value, cause, fix in rows],
            )
            counts[form.table] = len({r[0] for r in rows})
        validated[mart_name(form)] = digest
    error_log.sync(
        con,
        district_id,
        "validate",
        "_sg_invalid",
        scope="list_contains(?, e.target) and e.cause <> ?",
        scope_params=([target(f) for f in FORMS if mart_name(f) in validated], MAPPING_HINT),
    )
    if validated:
        con.executemany(
            "insert or replace into ops.validated_marts values (?, ?, ?, now())",
            [[district_id, mart, digest] for mart, digest in validated.items()],
        )
    return counts, list(validated)


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
                "marts_validated": dg.MetadataValue.int(len(validated)),
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
