"""Ingest one source for one district: pick its transport, read it, load it into raw, run its pandera schema."""

from __future__ import annotations

from pathlib import Path

from sg_orchestration.catalog import Source
from sg_orchestration.config import District, secret
from sg_orchestration.ingest.apis import QmlativClient, SameGoalClient
from sg_orchestration.ingest.load import LoadResult, load
from sg_orchestration.ingest.readers import Batches, read_csv, records_to_batches
from sg_orchestration.ingest.schemas import validate
from sg_orchestration.warehouse import connect, raw_table

VALIDATION_CHUNK_ROWS = 100_000


def transport(source: Source, district: District) -> str | None:
    """`files`, `api`, or None when the district does not use this source."""
    if district.input_dir(source.input_dir_key):
        return "files"
    if source.system == "samegoal" and district.samegoal and district.samegoal.base_url:
        return "api"
    if source.system == "qmlativ" and district.qmlativ and district.qmlativ.base_url:
        return "api"
    return None


def _read_samegoal_api(source: Source, district: District, cursor: str | None) -> tuple[Batches, str]:
    cfg = district.samegoal
    assert cfg and cfg.base_url
    client_id = secret(cfg.client_id_env, purpose="SameGoal client id")
    client_secret = secret(cfg.client_secret_env, purpose="SameGoal client secret")
    with SameGoalClient(cfg.base_url, client_id, client_secret) as client:
        pages, next_cursor = client.export(source.table, cursor, cfg.page_limit)
    origin = f"{cfg.base_url.rstrip('/')}/api/v1/state-reporting/{source.table}"
    return records_to_batches(source, origin, pages), next_cursor


def _read_qmlativ_api(source: Source, district: District) -> Batches:
    cfg = district.qmlativ
    assert cfg and cfg.base_url
    names = cfg.objects[source.table]
    key = secret(cfg.client_key_env, purpose="Qmlativ client key")
    client_secret = secret(cfg.client_secret_env, purpose="Qmlativ client secret")
    with QmlativClient(cfg.base_url, key, client_secret) as client:
        pages = list(client.read_all(cfg.entity_id, names.module, names.object, cfg.page_size))
    origin = f"{cfg.base_url.rstrip('/')}/Generic/{cfg.entity_id}/{names.module}/{names.object}"
    return records_to_batches(source, origin, pages)


def _cursor(source: Source, district_id: str) -> str | None:
    with connect() as con:
        row = con.execute(
            "select cursor_value from ops.cursors where district_id = ? and source = ?",
            [district_id, source.name],
        ).fetchone()
    return row[0] if row else None


def ingest_source(source: Source, district: District) -> tuple[LoadResult | None, dict[str, int]]:
    """Read one source for one district into raw; return the load and the pandera failure counts."""
    how = transport(source, district)
    if how is None:
        return None, {}
    next_cursor = None
    if how == "files":
        batches = read_csv(source, Path(district.input_dir(source.input_dir_key)) / source.file)
    elif source.system == "samegoal":
        batches, next_cursor = _read_samegoal_api(source, district, _cursor(source, district.id))
    else:
        batches = _read_qmlativ_api(source, district)
    with connect() as con:
        result = load(con, source, district.id, batches)
        if next_cursor:
            con.execute(
                "insert or replace into ops.cursors values (?, ?, ?, now())",
                [district.id, source.name, next_cursor],
            )
        failures: dict[str, int] = {}
        if result.rows_added:
            columns = ", ".join(f'"{c}"' for c in source.column_names)
            reader = con.sql(
                f"select {columns} from {raw_table(source)} where _load_id = $load_id",
                params={"load_id": result.load_id},
            ).to_arrow_reader(VALIDATION_CHUNK_ROWS)
            failures = validate(source, (batch.to_pandas() for batch in reader))
    return result, failures
