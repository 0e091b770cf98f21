"""The Ed-Fi accommodations before they are sent (seed 002's Error Log, SPEC §4.2): every record the rules
keep back for a reason the district fixes, and pandera on the profile's payload mart.

- The rules' data errors (`intermediate.int_edfi__assessment_accommodations`, `not_sent_kind = 'error'`:
  a state test mapping to no assessment, an unknown subject or accommodation code, "Assessment and
  Accommodation are not a valid combination.", no Ed-Fi ID, a school without a State School Number) become
  `ops.error_log` rows with their field, value and fix, keyed by the test accommodation.
- pandera on the payload mart (required elements, identifier shapes, descriptor membership, and the
  payload against the profile's schema: the real DS 5.2 OpenAPI's for `ds52`). A record that fails is
  never sent: its error row (keyed as the ledger keys it) holds it back in the publish step, and resolves
  once the record passes.
"""

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from sg_orchestration import error_log
from sg_orchestration.config import current_districts
from sg_orchestration.edfi.names import MARTS, RESOURCES, TARGET, natural_key_sql, route_target
from sg_orchestration.edfi.schema import DS52_RESOURCE, violations
from sg_orchestration.warehouse import WAREHOUSE_POOL, connect, literal

if TYPE_CHECKING:
    import pandas as pd
    import pandera.pandas as pa

KEY = dg.AssetKey(["validate", "edfi_accommodations"])
INTERMEDIATE = "intermediate.int_edfi__assessment_accommodations"
MART_KEYS = [dg.AssetKey(m.split(".")) for m in MARTS.values()]
FIX = (
    "Correct the test accommodation (or the student's Ed-Fi ID, or the school's State School Number) in "
    "the SIS; the record is sent on the next run once it passes."
)
CHUNK_ROWS = 50_000
MART_FINDING = "Ed-Fi payload mart"  # the location of a pandera finding on the payload mart
SCHEMA_DIR = Path(__file__).parents[1] / "edfi"


def _descriptors(con) -> frozenset[str]:
    """Every `{namespace}#{codeValue}` the seeds' Indiana descriptor tables hold."""
    rows = con.execute(
        "select namespace || '#' || code_value from reference.edfi_academic_subject_descriptors union all "
        "select namespace || '#' || code_value from reference.edfi_accommodation_descriptors"
    ).fetchall()
    return frozenset(r[0] for r in rows)


def _payload_problems(profile: str, payload: str) -> str | None:
    found = violations(json.loads(payload), None if profile == "indiana" else DS52_RESOURCE)
    return "; ".join(f"{path} {', '.join(m)}" for path, m in found.items()) or None


def mart_schema(profile: str, descriptors: frozenset[str]) -> "pa.DataFrameSchema":
    import pandera.pandas as pa

    known = sorted(descriptors)
    columns = {
        "student_unique_id": pa.Column(str, pa.Check.str_matches(r"^\S{1,32}$"), nullable=False),
        "education_organization_id": pa.Column(
            checks=pa.Check(
                lambda s: s.astype(str).str.fullmatch(r"10\d{2,}"), error="is not 10 + district + school"
            ),
            nullable=False,
        ),
        "payload": pa.Column(
            str,
            pa.Check(
                lambda s: s.map(lambda p: _payload_problems(profile, p) is None),
                error=f"does not validate against the {profile} schema",
            ),
            nullable=False,
        ),
    }
    if profile == "indiana":
        for column in ("academic_subject_descriptor", "accommodation_descriptor"):
            columns[column] = pa.Column(
                str, pa.Check.isin(known, error="is not in the Indiana descriptor table")
            )
    return pa.DataFrameSchema(columns, strict=False, name=MARTS[profile])


def failures(profile: str, frame: "pd.DataFrame", descriptors: frozenset[str]) -> list[tuple]:
    """(connection, natural key, field, cause) for every failing field of the mart's rows."""
    import pandas as pd
    import pandera.pandas as pa

    try:
        mart_schema(profile, descriptors).validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        out = set()
        for case in exc.failure_cases.itertuples():
            if pd.isna(case.index):
                continue
            row = frame.loc[case.index]
            cause = f"`{case.column}` {case.check}"
            if case.column == "payload":
                cause = f"payload: {_payload_problems(profile, row['payload'])}"
            out.add((row["connection"], row["_key"], case.column, cause))
        return sorted(out)
    return []


def _rules_digest(profile: str, descriptors: frozenset[str]) -> str:
    """What a payload row is judged by: this module, the shipped schemas, the descriptor tables."""
    files = [Path(__file__), SCHEMA_DIR / "schema.py", *sorted(SCHEMA_DIR.glob("*.json"))]
    text = b"".join(f.read_bytes() for f in files) + repr((profile, sorted(descriptors))).encode()
    return hashlib.sha256(text).hexdigest()


def record_findings(con, district) -> Counter:
    """The district's findings into `ops.error_log` (stage `validate`); invalid records per connection.

    pandera judges only the payload rows that are new or changed since the last validation by the same
    rules and descriptor tables (every row when those changed): a row is judged on its own, so the payload
    findings of an unchanged row stand, and a night that changed 1% of 10,000,000 rows judges 1%. The
    rules' data errors are the intermediate model's, read whole (one statement)."""
    profile = district.edfi.profile
    d = literal(district.id)
    resource_target = f"'{TARGET}/' || connection || '/' || {literal(RESOURCES[profile])}"
    con.execute(
        f"""
        create or replace temp table _sg_edfi_findings as
        select distinct {resource_target} as target, md5(accommodation_id) as record_key_hash,
            not_sent_field as field, not_sent_value as value, not_sent_reason as cause, not_sent_fix as fix,
            'test_accommodations.csv accommodation ' || accommodation_id as location, null::bigint as load_id
        from {INTERMEDIATE} where district_id = {d} and not_sent_kind = 'error'
        """
    )
    descriptors = _descriptors(con)
    rules = _rules_digest(profile, descriptors)
    mart = MARTS[profile]
    here = {"d": district.id, "m": mart}
    con.execute(
        f"create or replace temp table _sg_edfi_rows as select hash(m) as _sg_hash, m.*, "
        f"{natural_key_sql(profile)} as _key from (select * from {mart} where district_id = $d) m",
        {"d": district.id},
    )
    last = con.execute(
        "select digest from ops.validated_marts where district_id = $d and mart = $m", here
    ).fetchone()
    if not last or last[0] != rules:
        con.execute("delete from ops.validated_rows where district_id = $d and mart = $m", here)
    seen = (
        "exists (select 1 from ops.validated_rows v where v.district_id = $d and v.mart = $m "
        "and v.row_hash = r._sg_hash)"
    )
    query = con.execute(f"select * exclude (_sg_hash) from _sg_edfi_rows r where not {seen}", here)
    found: list[tuple] = []
    while True:
        frame = query.fetch_df_chunk(CHUNK_ROWS // 2048)  # vectors of 2,048 rows
        if frame.empty:
            break
        found += failures(profile, frame, descriptors)
    if found:
        con.executemany(
            "insert into _sg_edfi_findings values (?, md5(?), ?, null, ?, ?, ?, null)",
            [
                (route_target(conn, profile), key, f, cause, FIX, MART_FINDING)
                for conn, key, f, cause in found
            ],
        )
    con.execute(  # the payload findings of the rows that did not change stand
        f"""
        insert into _sg_edfi_findings
        select e.target, e.record_key_hash, e.field, e.value, e.cause, e.fix, e.location, e.load_id
        from ops.error_log e
        where e.district_id = $d and e.stage = 'validate' and e.location = $loc and e.resolved_at is null
          and (e.target, e.record_key_hash) in (
              select ({resource_target}, md5(_key)) from _sg_edfi_rows r where {seen})
        """,
        {**here, "loc": MART_FINDING},
    )
    con.execute("delete from ops.validated_rows where district_id = $d and mart = $m", here)
    con.execute("insert into ops.validated_rows select $d, $m, _sg_hash from _sg_edfi_rows", here)
    con.execute("insert or replace into ops.validated_marts values ($d, $m, $r, now())", {**here, "r": rules})
    error_log.sync(con, district.id, "validate", "_sg_edfi_findings", scope=f"e.target like '{TARGET}/%'")
    return Counter(
        dict(
            con.execute(
                "select target, count(distinct record_key_hash) from _sg_edfi_findings group by 1"
            ).fetchall()
        )
    )


def not_sent(con, district) -> list[tuple[str, str, str, int]]:
    """Why test accommodations are not sent, counts only: (connection, school year, reason, test
    accommodations) for each seed 002 rule and data error of the rules (`not_sent_rule`; a row whose
    record another row sends is not counted), and (connection, "", "failed validation", records) for the
    payload-mart records pandera holds back. Reads `record_findings`' findings of the same connection."""
    rules = con.execute(
        f"""
        select connection, school_year::varchar, replace(not_sent_rule, '_', ' '),
            count(distinct accommodation_id)
        from {INTERMEDIATE} where district_id = ? and not_sent_rule is not null
          and not_sent_rule <> 'sent_elsewhere'
        group by all order by all
        """,
        [district.id],
    ).fetchall()
    held = con.execute(
        "select split_part(target, '/', 2), '', 'failed validation', count(distinct record_key_hash) "
        "from _sg_edfi_findings where location = ? group by all order by all",
        [MART_FINDING],
    ).fetchall()
    return rules + held


def _not_sent_table(rows: list[tuple[str, str, str, int]]) -> str:
    if not rows:
        return "Every test accommodation is sent."
    return "| connection | school year | why not sent | count |\n|---|---|---|---:|\n" + "\n".join(
        f"| {connection} | {year} | {reason} | {n} |" for connection, year, reason, n in rows
    )


def build_edfi_validation_asset(partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        key=KEY,
        group_name="validate",
        partitions_def=partitions_def,
        pool=WAREHOUSE_POOL,
        deps=[*MART_KEYS, dg.AssetKey(INTERMEDIATE.split("."))],
        kinds={"duckdb", "pandera"},
        description=__doc__,
        check_specs=[
            dg.AssetCheckSpec(
                "records_valid",
                asset=KEY,
                description="Every Ed-Fi accommodation record is sendable: the rules found no data error "
                "and pandera no payload error; the others are held back and listed in ops.error_log.",
            )
        ],
    )
    def edfi_accommodations(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        district = current_districts().get(context.partition_key)
        if district.edfi is None:
            return dg.MaterializeResult(
                metadata={"configured": False},
                check_results=[dg.AssetCheckResult(check_name="records_valid", passed=True)],
            )
        with connect() as con:
            invalid = record_findings(con, district)
            reasons = not_sent(con, district)
        total = sum(invalid.values())
        return dg.MaterializeResult(
            metadata={
                "invalid_records": total,
                **{f"invalid/{k}": v for k, v in invalid.items()},
                "not_sent": dg.MetadataValue.md(_not_sent_table(reasons)),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name="records_valid",
                    passed=not total,
                    severity=dg.AssetCheckSeverity.WARN,
                    metadata={"invalid_records": total},
                )
            ],
        )

    return edfi_accommodations
