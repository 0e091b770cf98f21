"""pandera schemas of each raw input, derived from the catalog (the same types ingest checks in SQL)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from functools import cache
from typing import TYPE_CHECKING

from sg_orchestration.catalog import (
    FALSE_VALUES,
    TRUE_VALUES,
    TYPE_DESCRIPTIONS,
    TYPE_PATTERNS,
    Column,
    Source,
)

if TYPE_CHECKING:
    import pandas as pd
    import pandera.pandas as pa


# pandas and pandera are imported when a load is checked (~1 s a process): a night without new rows never is.
def _parse(kind: str, s):
    import pandas as pd

    if kind == "date":
        return pd.to_datetime(s, format="%Y-%m-%d", errors="coerce")
    if kind == "datetime":
        return pd.to_datetime(s, format="ISO8601", errors="coerce", utc=True)
    return pd.to_numeric(s, errors="coerce")  # int, decimal


def _checks(column: Column) -> list[pa.Check]:
    import pandera.pandas as pa

    what = TYPE_DESCRIPTIONS[column.type]
    if column.type == "bool":
        return [pa.Check.isin(TRUE_VALUES + FALSE_VALUES, error=f"is {what}")]
    if column.type in TYPE_PATTERNS:
        return [
            pa.Check.str_matches(TYPE_PATTERNS[column.type], error=f"is {what}"),
            pa.Check(lambda s, kind=column.type: _parse(kind, s).notna(), error=f"is a real {column.type}"),
        ]
    return []


@cache
def raw_schema(source: Source) -> pa.DataFrameSchema:
    import pandera.pandas as pa

    return pa.DataFrameSchema(
        # Raw columns are VARCHAR by construction; checking each value's Python type would cost 10x the rules.
        {c.name: pa.Column(None, checks=_checks(c), nullable=not c.required) for c in source.columns},
        name=source.name,
        strict=False,  # extra columns are kept in raw and ignored downstream (SPEC §3)
    )


def validate(source: Source, frames: Iterable[pd.DataFrame]) -> dict[str, int]:
    """Failure counts by `column: check` over all frames; values are never returned, so the counts can go
    into Dagster metadata. Frames come in chunks so a large load is checked in bounded memory."""
    import pandera.pandas as pa

    counts: Counter = Counter()
    for frame in frames:
        try:
            raw_schema(source).validate(frame, lazy=True)
        except pa.errors.SchemaErrors as exc:
            for (col, check), n in (
                exc.failure_cases.groupby(["column", "check"], dropna=False).size().items()
            ):
                counts[f"{col}: {check}"] += int(n)
    return dict(counts)
