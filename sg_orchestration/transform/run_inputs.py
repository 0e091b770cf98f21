"""The ops tables a dbt step writes before it builds (what dbt must know about the run or the district,
since dbt runs without --vars: a changed var re-parses the whole project). Each table is defined once, by
its dbt source's columns and `data_type` in a `_*.yml` beside the step's models; the macro
`run_input_tables` creates the same tables empty where the step never ran."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml


@cache
def ddl(yml: Path) -> str:
    """`create table if not exists` for every `ops` source table of `yml`."""
    source = next(s for s in yaml.safe_load(yml.read_text())["sources"] if s["name"] == "ops")
    tables = {
        t["name"]: ", ".join(f"{c['name']} {c['data_type']}" for c in t["columns"]) for t in source["tables"]
    }
    return ";\n".join(
        ["create schema if not exists ops"]
        + [f"create table if not exists ops.{name} ({columns})" for name, columns in tables.items()]
    )
