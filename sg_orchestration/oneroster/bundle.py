"""The OneRoster 1.1 bundle's CSV files (SPEC §4.3), written from the dbt marts `marts.or1_1__<file>`.

Each file has exactly `HEADERS[file]`; users.csv then has one `metadata.<name>` column per metadata
extension of the district's attribute mapping (ops.oneroster_mapping, written by the OneRoster dbt step),
in the mapping's order: the users mart carries them as one map, since which extensions there are is the
district's data. RFC 4180: comma-separated, fields with a comma, quote or line break quoted (quotes
doubled), CRLF between records, UTF-8. Rows in sourcedId order (propertyName for the manifest), so an
unchanged district writes the same bytes. Zipping and delivery are the publish layer's.
"""

from __future__ import annotations

from pathlib import Path

from sg_orchestration.oneroster import HEADERS
from sg_orchestration.warehouse import literal, quote

METADATA_MAP = "metadata"  # the users mart's column of metadata extensions, by column name


def mart(file: str) -> str:
    return f"marts.or1_1__{file}"


def metadata_columns(con, district_id: str) -> list[str]:
    """The district's `metadata.<name>` columns: in its attribute mapping's order; for a district whose
    bundle comes from its own OneRoster export (seed 001 §2.2), those its users.csv has, by name."""
    exported = con.execute(
        "select count(*) from intermediate.int_oneroster__districts where district_id = ? and source = 'oneroster'",
        [district_id],
    ).fetchone()[0]
    if exported:
        return [
            name
            for (name,) in con.execute(
                f"select distinct unnest(map_keys({METADATA_MAP})) as k from {mart('users')} "
                "where district_id = ? order by k",
                [district_id],
            ).fetchall()
        ]
    return [
        target
        for (target,) in con.execute(
            "select target from ops.oneroster_mapping "
            "where district_id = ? and action = 'create' and target like 'metadata.%' "
            "group by target order by min(ordinal)",
            [district_id],
        ).fetchall()
    ]


def write_bundle(con, district_id: str, out_dir: Path) -> dict[str, int]:
    """Writes `<file>.csv` for every file of the bundle into `out_dir`; returns each file's row count."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for file, header in HEADERS.items():
        columns = [quote(c) for c in header]
        if file == "users":
            columns += [
                f"{METADATA_MAP}[{literal(m)}] as {quote(m)}" for m in metadata_columns(con, district_id)
            ]
        select = (
            f"select {', '.join(columns)} from {mart(file)} "
            f"where district_id = {literal(district_id)} order by {quote(header[0])}"
        )
        path = out_dir / f"{file}.csv"
        (counts[file],) = con.execute(
            f"copy ({select}) to {literal(str(path))} (header, delimiter ',', quote '\"', new_line '\r\n')"
        ).fetchone()
    return counts
