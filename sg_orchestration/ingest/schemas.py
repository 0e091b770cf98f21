"""pandera schemas of each raw input, derived from the catalog (the same types ingest checks in SQL)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from functools import cache

import pandas as pd
import pandera.pandas as pa

from sg_orchestration.catalog import (
    FALSE_VALUES,
    TRUE_VALUES,
    TYPE_DESCRIPTIONS,
    TYPE_PATTERNS,
    Column,
    Source,
)

_PARSERS = {
    "date": lambda s: pd.to_datetime(s, format="%Y-%m-%d", errors="coerce"),
    "datetime": lambda s: pd.to_datetime(s, format="ISO8601", errors="coerce", utc=True),
    "int": lambda s: pd.to_numeric(s, errors="coerce"),
    "decimal": lambda s: pd.to_numeric(s, errors="coerce"),
}


def _checks(column: Column) -> list[pa.Check]:
    what = TYPE_DESCRIPTIONS[column.type]
    if column.type == "bool":
        return [pa.Check.isin(TRUE_VALUES + FALSE_VALUES, error=f"is {what}")]
    if column.type in TYPE_PATTERNS:
        parse = _PARSERS[column.type]
        return [
            pa.Check.str_matches(TYPE_PATTERNS[column.type], error=f"is {what}"),
            pa.Check(lambda s, parse=parse: parse(s).notna(), error=f"is a real {column.type}"),
        ]
    return []


@cache
def raw_schema(source: Source) -> pa.DataFrameSchema:
    return pa.DataFrameSchema(
        # Raw columns are VARCHAR by construction; checking each value's Python type would cost 10x the rules.
        {c.name: pa.Column(None, checks=_checks(c), nullable=not c.required) for c in source.columns},
        name=source.name,
        strict=False,  # extra columns are kept in raw and ignored downstream (SPEC §3)
    )


def validate(source: Source, frames: Iterable[pd.DataFrame]) -> dict[str, int]:
    """Failure counts by `column: check` over all frames; values are never returned, so the counts can go
    into Dagster metadata. Frames come in chunks so a large load is checked in bounded memory."""
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
