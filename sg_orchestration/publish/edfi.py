"""Ed-Fi Student Education Organization Assessment Accommodations (seed 002, SPEC §4.2) through the publish
engine: each connection of the district publishes on its own (its token, district number and ledger
scope `edfi/{connection}`), one resource per route (a year-specific ODS: one per configured school year).

- Post, Put, Delete: the engine's diff of the payload mart against the ledger (a record that is no longer
  sent, because the student has no eligible accommodation left or the enrollment became No Show, is
  deleted); a natural key change (district number or Ed-Fi ID) is a new key: the old record is deleted
  and the new one posted.
- Toggle off (`edfi.resources: {name: off}`): nothing is sent and nothing is deleted; what was sent stays.
- `ops.edfi_identity_mapping` (campus object type `Person`, key `personID`) follows the ledger after every
  publish and resync.
- Resync (`resync_accommodations`): the seed's three rules, see there.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import nullcontext

from sg_orchestration.config import District, EdfiConnection, secret
from sg_orchestration.edfi.names import MARTS, RESOURCES, TARGET, ledger_target, natural_key_sql, route_target
from sg_orchestration.paths import DBT_PROJECT_DIR
from sg_orchestration.publish import errors, ledger
from sg_orchestration.publish.edfi_adapter import EdfiAdapter
from sg_orchestration.publish.engine import (
    DeleteGuard,
    PublishResult,
    Resource,
    ResyncResult,
    deletes_confirmed,
    publish_resources,
    resync,
)
from sg_orchestration.publish.sender import RetryPolicy
from sg_orchestration.publish.tokens import ClientCredentials
from sg_orchestration.warehouse import connect, literal

DEFAULT_PATHS = {
    "ds52": "/ed-fi/studentEducationOrganizationAssessmentAccommodations",
    "indiana": "/indiana/studentAssessmentAccommodations",
}
PUBLISH_FIXES = {
    "conflict": "The ODS does not know the student, school or assessment this record refers to (409): send "
    "the Student (and check the school's State School Number and the assessment) to the ODS first; the "
    "record is sent again on the next run.",
    "refused": "The ODS refused the record (a 4xx answer): correct it in the SIS (test accommodation, Ed-Fi "
    "ID, State School Number); it is sent again on the next run once it changes.",
    "access": "The ODS refused the connection's key (401/403): check the key, the secret and the claim set "
    "of the connection; the record is sent on the next run once access works.",
    "transient": "The ODS did not answer or kept failing (timeouts, 5xx, 429) until the run gave up: nothing "
    "to correct, it is retried automatically on the next run.",
    "lookup": "A record was posted but its answer was lost and the ODS could not be asked whether it was "
    "applied: it is looked up on the next run automatically (never posted twice).",
    "gone": "The record is no longer in the ODS (deleted there): the resync sends it again.",
}


def routes(district: District, connection: EdfiConnection) -> list[tuple[str, int | None, str]]:
    """(ledger resource, school year or None, path under the base URL) of each route of the connection."""
    profile = district.edfi.profile
    path = connection.resource_path or DEFAULT_PATHS[profile]
    name = RESOURCES[profile]
    if connection.year_specific:
        return [(f"{name}/{year}", year, f"/data/v3/{year}{path}") for year in connection.school_years]
    return [(name, None, f"/data/v3{path}")]


def desired_sql(district: District, connection: EdfiConnection, resource: str, year: int | None) -> str:
    """One route's desired state: key = the natural key, content = the payload sent. A shared (not
    year-specific) ODS holds one record per natural key whatever the school years it reports to: the
    latest year's payload. Records validation holds back (open `validate` errors of the route) are not
    sent and keep what the ODS holds."""
    profile = district.edfi.profile
    key = natural_key_sql(profile)
    target = route_target(connection.name, profile)
    years = f"and school_year = {int(year)}" if year is not None else ""
    return f"""
        with mart as (
            select md5({key}) as key_hash, payload, {key} as lookup_key
            from {MARTS[profile]}
            where district_id = {literal(district.id)} and connection = {literal(connection.name)} {years}
            qualify row_number() over (partition by {key} order by school_year desc) = 1
        ), held as (
            select distinct record_key_hash as key_hash from ops.error_log
            where district_id = {literal(district.id)} and stage = 'validate'
              and target like {literal(target)} || '%' and resolved_at is null
        )
        select m.key_hash, if(h.key_hash is null, md5(m.payload), l.content_hash) as content_hash,
            if(h.key_hash is null, m.payload, null) as payload, m.lookup_key
        from mart m left join held h using (key_hash)
        left join (
            select key_hash, content_hash from ops.publish_ledger
            where district_id = {literal(district.id)} and target = {literal(ledger_target(connection.name))}
              and resource = {literal(resource)} and target_id is not null
        ) l using (key_hash)
    """


def _adapter(district: District, year: int | None, path: str) -> EdfiAdapter:
    versions = f"/changeQueries/v1{f'/{year}' if year is not None else ''}/availableChangeVersions"
    return EdfiAdapter(path, district.edfi.profile, versions)


def _tokens(connection: EdfiConnection) -> ClientCredentials:
    return ClientCredentials(
        f"{connection.base_url.rstrip('/')}/oauth/token",
        secret(connection.key_env, purpose=f"Ed-Fi key of connection {connection.name}"),
        secret(connection.secret_env, purpose=f"Ed-Fi secret of connection {connection.name}"),
        system=f"Ed-Fi ({connection.name})",
    )


def _guard(district: District, target: str, resource: str, confirm_deletes: str | None) -> DeleteGuard:
    guards = district.publish
    confirmed = deletes_confirmed(confirm_deletes, target, resource)
    return DeleteGuard(guards.max_delete_share, guards.min_deletes_guarded, confirmed=confirmed)


def toggled_off(district: District) -> bool:
    """`edfi.resources: {name: off}`: sent data stays in the ODS, nothing new is sent."""
    return district.edfi.resources.get(RESOURCES[district.edfi.profile], "on") == "off"


def publish_accommodations(
    district: District,
    dry_run: bool = False,
    concurrency: int = 32,
    *,
    confirm_deletes: str | None = None,
    retry: RetryPolicy | None = None,
) -> list[PublishResult]:
    """Every connection's routes of the district, each connection in one engine run; nothing when the
    resource is toggled off."""
    if toggled_off(district):
        return []
    results: list[PublishResult] = []
    with connect() as con:
        ledger.ensure_ledger(con)
        for connection in district.edfi.connections:
            target = ledger_target(connection.name)
            resources = [
                Resource(
                    name,
                    desired_sql(district, connection, name, year),
                    _adapter(district, year, path),
                    _guard(district, target, name, confirm_deletes),
                )
                for name, year, path in routes(district, connection)
            ]
            results += publish_resources(
                lambda: nullcontext(con),
                district.id,
                target,
                resources,
                connection.base_url.rstrip("/"),
                _tokens(connection),
                concurrency=concurrency,
                dry_run=dry_run,
                retry=retry,
            )
        if not dry_run:
            sync_identity_mapping(con, district)
            errors.record(con, district.id, TARGET, "Ed-Fi", PUBLISH_FIXES)
    return results


IDENTITY_DDL = """
create table if not exists ops.edfi_identity_mapping (
    district_id varchar not null,
    connection varchar not null,
    resource varchar not null,
    key_hash varchar not null,          -- the ledger's record
    campus_object_type varchar not null,
    object_key varchar not null,        -- the campus personID
    edfi_id varchar not null,           -- the ODS's id of the record
    updated_at timestamptz not null,
    primary key (district_id, connection, resource, key_hash)
)
"""


def sync_identity_mapping(con, district: District) -> None:
    """`ops.edfi_identity_mapping` as the ledger has it: a row per record the ODS holds (its id) with the
    campus person it is of; a record the ODS no longer holds loses its row."""
    con.execute(IDENTITY_DDL)
    profile = district.edfi.profile
    key = natural_key_sql(profile)
    d = literal(district.id)
    con.execute(
        f"""
        delete from ops.edfi_identity_mapping m where m.district_id = {d} and not exists (
            select 1 from ops.publish_ledger l where l.district_id = m.district_id
              and l.target = '{TARGET}/' || m.connection and l.resource = m.resource
              and l.key_hash = m.key_hash and l.target_id is not null)
        """
    )
    con.execute(
        f"""
        insert or replace into ops.edfi_identity_mapping
        select l.district_id, p.connection, l.resource, l.key_hash, 'Person', p.person_id, l.target_id, now()
        from ops.publish_ledger l
        join (select distinct connection, md5({key}) as key_hash, person_id from {MARTS[profile]}
              where district_id = {d}) p
          on l.target = '{TARGET}/' || p.connection and l.key_hash = p.key_hash
        where l.district_id = {d} and l.target_id is not null
        """
    )


def resync_accommodations(
    district: District,
    dry_run: bool = False,
    concurrency: int = 32,
    *,
    confirm_deletes: str | None = None,
    full: bool = False,
    retry: RetryPolicy | None = None,
) -> list[ResyncResult]:
    """Reconcile every route of every connection with what its ODS holds (`engine.resync`), by the seed's
    "Resource Toggle and Resync Logic":

    - "If a record is in the Ed-Fi Identity Mapping table and not in the ODS, it will be deleted from the
      Ed-Fi Identity Mapping table." (`mapping_deleted`; the record is sent again while it is still
      eligible, `recreated_missing`, and gets a new row);
    - "If a record is in the ODS and it does not have a matching record in Campus or the Ed-Fi Identity
      Mapping table, it will be deleted from the ODS." (`deleted_orphan`): deleted only when neither a
      record of the desired state (an eligible test accommodation, or one validation holds back) has its
      natural key nor a mapping row names it. SPEC §4.2 words it "no matching source record or mapping";
      the seed wins: an ODS record that matches a source record is adopted (ledger and mapping), and one a
      mapping row names is recorded in the ledger again (`adopted`), and left to the publish's rules;
    - "If a mapping is changed in Resource Preferences, a resync will need to be done": see
      `mapping_digest` (the `resync_scheduled` sensor starts it).

    Each route is read by the ODS's change queries when an earlier resync recorded how far it read (see
    `engine.resync`), unless `full`. Toggled off: nothing is resynced (sent data stays, nothing is sent)."""
    if toggled_off(district):
        return []
    results: list[ResyncResult] = []
    with connect() as con:
        ledger.ensure_ledger(con)
        con.execute(IDENTITY_DDL)
        for connection in district.edfi.connections:
            target = ledger_target(connection.name)
            tokens = _tokens(connection)
            for name, year, path in routes(district, connection):
                mapping = _mapping_rows(district, connection, name)
                result = resync(
                    lambda: nullcontext(con),
                    district.id,
                    target,
                    name,
                    desired_sql(district, connection, name, year),
                    _adapter(district, year, path),
                    connection.base_url.rstrip("/"),
                    tokens,
                    concurrency=concurrency,
                    dry_run=dry_run,
                    retry=retry,
                    guard=_guard(district, target, name, confirm_deletes),
                    mapped=f"select key_hash, edfi_id as target_id from ({mapping})",
                    full=full,
                )
                if not result.refusal:
                    result.counts["mapping_deleted"] = _drop_unheld_mappings(con, mapping, dry_run)
                results.append(result)
        if not dry_run:
            sync_identity_mapping(con, district)
            errors.record(con, district.id, TARGET, "Ed-Fi", PUBLISH_FIXES)
    return results


def _mapping_rows(district: District, connection: EdfiConnection, resource: str) -> str:
    return (
        f"select * from ops.edfi_identity_mapping where district_id = {literal(district.id)} "
        f"and connection = {literal(connection.name)} and resource = {literal(resource)}"
    )


def _drop_unheld_mappings(con, mapping: str, dry_run: bool) -> int:
    """The seed's first resync rule for the route just resynced: its mapping rows whose record the ODS no
    longer holds (the engine's `publish_gone`) are deleted; how many (in a dry run: would be)."""
    unheld = f"select key_hash from ({mapping}) where edfi_id in (select target_id from publish_gone)"
    (count,) = con.execute(f"select count(*) from ({unheld})").fetchone()
    if count and not dry_run:
        con.execute(
            "delete from ops.edfi_identity_mapping m using (" + mapping + ") r "
            "where m.district_id = r.district_id and m.connection = r.connection and m.resource = r.resource "
            "and m.key_hash = r.key_hash and r.edfi_id in (select target_id from publish_gone)"
        )
    return count


# The dbt seeds a district maintains that decide what is sent and under which natural key: the assessment
# mapping, the valid combinations and the descriptor tables.
MAPPING_SEEDS = "edfi_*.csv"


def mapping_digest(district: District) -> str | None:
    """A digest of what decides the Ed-Fi mapping and identity of the district's records (the seed's
    "mapping ... in Resource Preferences"): the profile and resource toggles, each connection's ODS,
    district number, school years and resource path, and the Ed-Fi seeds. A resync records it; one that
    differs marks the district for resync. None without Ed-Fi."""
    if district.edfi is None:
        return None
    settings = district.edfi.model_dump(mode="json", exclude={"connections"})
    settings["connections"] = [
        c.model_dump(mode="json", exclude={"key_env", "secret_env"}) for c in district.edfi.connections
    ]
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for seed in sorted((DBT_PROJECT_DIR / "seeds").glob(MAPPING_SEEDS)):
        digest.update(seed.name.encode() + b"\0" + seed.read_bytes())
    return digest.hexdigest()[:16]
