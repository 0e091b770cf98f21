"""Ingest one source for one district: pick its transport, read it, load it into raw, run its pandera schema."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import httpx

from sg_orchestration.catalog import Source
from sg_orchestration.config import ConfigError, District, secret
from sg_orchestration.ingest.apis import QmlativClient, SameGoalClient, SourceApiError
from sg_orchestration.ingest.load import LoadResult, load, record_failure
from sg_orchestration.ingest.readers import ApiRead, Batches, SourceFileError, read_csv, records_to_batches
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
    read = ApiRead(source)
    with QmlativClient(cfg.base_url, key, client_secret) as client:
        for records, content in client.read_all(cfg.entity_id, names.module, names.object, cfg.page_size):
            read.add(records, content)
    origin = f"{cfg.base_url.rstrip('/')}/Generic/{cfg.entity_id}/{names.module}/{names.object}"
    return read.batches(origin)


def _cursor(con, source: Source, district_id: str) -> str | None:
    row = con.execute(
        "select cursor_value from ops.cursors where district_id = ? and source = ?",
        [district_id, source.name],
    ).fetchone()
    return row[0] if row else None


def shrink_accepted(accept_shrink: str | None, source: Source) -> bool:
    """Whether the run tag `sg/accept_shrink` (`all`, or source names, comma-separated) names this source."""
    names = {n.strip().removeprefix("raw/") for n in (accept_shrink or "").split(",")}
    return "all" in names or source.name in names


def _input_folder(source: Source, district: District) -> Path:
    folder = Path(district.input_dir(source.input_dir_key))
    if not folder.is_dir():
        key = source.input_dir_key
        raise SourceFileError(
            folder / source.file,
            f"input folder {folder} does not exist (inputs.{key} of district {district.id})",
            f"create {folder} and have the {source.system} export write {source.file} there, or correct "
            f"`inputs.{key}` of district {district.id} in districts.yaml",
            location=source.file,
        )
    return folder


def ingest_source(
    source: Source, district: District, accept_shrink: str | None = None, con=None
) -> tuple[LoadResult | None, dict[str, int]]:
    """Read one source for one district into raw; return the load and the pandera failure counts.

    A file that cannot be used raises `SourceFileError` after it is recorded (a `failed` load and one
    `ops.error_log` row); a held snapshot returns a result with status `held`. `accept_shrink` is the run
    tag `sg/accept_shrink`: the sources whose held snapshot is applied anyway. `con`: a warehouse
    connection to use (a step ingesting several sources opens one), else one of its own."""
    how = transport(source, district)
    if how is None:
        return None, {}
    with nullcontext(con) if con is not None else connect() as con:
        return _ingest(con, source, district, how, accept_shrink)


def _ingest(con, source: Source, district: District, how: str, accept_shrink: str | None):
    next_cursor = None
    try:
        if how == "files":
            batches = read_csv(source, _input_folder(source, district) / source.file)
        elif source.system == "samegoal":
            batches, next_cursor = _read_samegoal_api(source, district, _cursor(con, source, district.id))
        else:
            batches = _read_qmlativ_api(source, district)
        result = load(
            con,
            source,
            district.id,
            batches,
            guards=district.ingest,
            accept_shrink=shrink_accepted(accept_shrink, source),
        )
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
    except SourceFileError as exc:
        record_failure(con, source, district.id, exc)
        raise
    except (SourceApiError, httpx.HTTPError, ConfigError) as exc:  # the API is down or refuses us
        problem = _api_problem(source, district, exc)
        record_failure(con, source, district.id, problem)
        raise problem from exc
    return result, failures


def _api_problem(source: Source, district: District, exc: Exception) -> SourceFileError:
    """An API read that failed, recorded like a file that cannot be used: the last good load stays."""
    cfg = district.samegoal if source.system == "samegoal" else district.qmlativ
    where = f"{cfg.base_url.rstrip('/')} ({source.system} API, {source.table})"
    cause = " ".join(str(exc).split()) or type(exc).__name__
    return SourceFileError(
        where,
        f"could not be read: {cause}",
        f"check that {cfg.base_url} is reachable and that the credentials named in districts.yaml are set "
        "and valid; the next run reads it again",
        location=f"{source.system} API",
    )
