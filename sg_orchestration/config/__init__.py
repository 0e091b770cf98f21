"""Districts configuration (SPEC §2): `districts.yaml`, path from `SG_DISTRICTS_FILE`.

A malformed file is refused at load with the file, the district and the key named. Secrets appear only as
the names of environment variables; their values are read when a connection is made.
"""

from __future__ import annotations

import os
from datetime import date
from functools import cache
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sg_orchestration.catalog import SAMEGOAL_PROGRAMS
from sg_orchestration.edfi.names import RESOURCES as EDFI_RESOURCES

ENV_NAME = r"^[A-Z_][A-Z0-9_]*$"
EnvVarName = Annotated[str, Field(pattern=ENV_NAME, description="name of an environment variable")]
CONFIG_DIR = Path(__file__).parent  # the configuration shipped with the package
DEFAULT_QMLATIV_OBJECTS: dict[str, dict[str, str]] = yaml.safe_load(
    (Path(__file__).parent / "qmlativ_objects.yaml").read_text()
)
# The Qmlativ fields each SameGoal form writes, and the TEDS table each coded field is checked against.
QMLATIV_FIELDS: dict[str, dict[str, str]] = yaml.safe_load(
    (Path(__file__).parent / "qmlativ_fields.yaml").read_text()
)
QMLATIV_CODE_TABLES: dict[str, str] = yaml.safe_load(
    (Path(__file__).parent / "qmlativ_codes.yaml").read_text()
)


class ConfigError(ValueError):
    """A districts file that cannot be used; the message names the file, district and key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Inputs(_Strict):
    """Folders of file drops. A SameGoal or Qmlativ folder given here is read instead of that API."""

    samegoal_dir: Path | None = None
    qmlativ_dir: Path | None = None
    powerschool_dir: Path | None = None
    oneroster_dir: Path | None = None
    campus_dir: Path | None = None


class SameGoal(_Strict):
    base_url: str | None = None
    client_id_env: EnvVarName
    client_secret_env: EnvVarName
    cutover_dates: dict[str, date | None]
    page_limit: int = Field(500, ge=1, le=5000)

    @field_validator("cutover_dates", mode="before")
    @classmethod
    def _blank_is_none(cls, value):
        if isinstance(value, dict):
            return {k: (None if v in ("", None) else v) for k, v in value.items()}
        return value

    @field_validator("cutover_dates")
    @classmethod
    def _known_programs(cls, value: dict[str, date | None]) -> dict[str, date | None]:
        unknown = sorted(set(value) - set(SAMEGOAL_PROGRAMS))
        if unknown:
            raise ValueError(f"unknown program(s) {unknown}; programs are {list(SAMEGOAL_PROGRAMS)}")
        return {p: value.get(p) for p in SAMEGOAL_PROGRAMS}


class QmlativObject(_Strict):
    module: str
    object: str


class Qmlativ(_Strict):
    base_url: str | None = None
    client_key_env: EnvVarName
    client_secret_env: EnvVarName
    entity_id: int
    access_expires: date
    # Students per page of the student object read: 1,000, the most the Qmlativ API serves (the sandbox
    # refuses more), so a 200,000-student district is 199 requests (0.2-0.3 s a night less than pages of 500).
    page_size: int = Field(1000, ge=1, le=5000)
    objects: dict[str, QmlativObject] = Field(default_factory=dict, validate_default=True)

    @field_validator("objects")
    @classmethod
    def _defaults(cls, value: dict[str, QmlativObject]) -> dict[str, QmlativObject]:
        unknown = sorted(set(value) - set(DEFAULT_QMLATIV_OBJECTS))
        if unknown:
            raise ValueError(f"unknown object(s) {unknown}; objects are {list(DEFAULT_QMLATIV_OBJECTS)}")
        return {k: value.get(k) or QmlativObject(**v) for k, v in DEFAULT_QMLATIV_OBJECTS.items()}


class EdfiConnection(_Strict):
    name: str
    base_url: str
    key_env: EnvVarName
    secret_env: EnvVarName
    district_number: str = Field(pattern=r"^\d+$")
    school_years: list[int] = Field(min_length=1)
    # A year-specific ODS serves each school year at `/data/v3/{year}/...`; a shared one at `/data/v3/...`.
    year_specific: bool = False
    # The resource's path under the data API (IDOE publishes Indiana's per year in its own Swagger);
    # default: the profile's (`publish.edfi.DEFAULT_PATHS`).
    resource_path: str | None = Field(default=None, pattern=r"^/[A-Za-z0-9_./-]+$")


class Edfi(_Strict):
    connections: list[EdfiConnection] = Field(min_length=1)
    profile: Literal["indiana", "ds52"] = "indiana"
    # The resource toggle, by the profile's resource name (`edfi.names.RESOURCES`); absent: on.
    resources: dict[str, Literal["on", "off"]] = Field(default_factory=dict)

    @field_validator("resources")
    @classmethod
    def _the_profiles_resource(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        profile = info.data.get("profile")
        if profile is None:  # the profile itself is wrong: refused on its own
            return value
        unknown = sorted(set(value) - {EDFI_RESOURCES[profile]})
        if unknown:
            raise ValueError(
                f"unknown resource(s) {unknown}; the {profile!r} profile's resource is "
                f"{EDFI_RESOURCES[profile]!r}"
            )
        return value


class SftpDelivery(_Strict):
    host: str
    port: int = 22
    user: str
    key_env: EnvVarName
    remote_dir: str
    known_hosts: Path


class DirectoryDelivery(_Strict):
    path: Path


class OneRosterDelivery(_Strict):
    sftp: SftpDelivery | None = None
    directory: DirectoryDelivery | None = None

    @model_validator(mode="after")
    def _exactly_one(self):
        if (self.sftp is None) == (self.directory is None):
            raise ValueError("give exactly one of `sftp` or `directory`")
        return self


class OneRosterGate(_Strict):
    """The data-quality gate before delivery (`oneroster.gate`): structural findings always block; the
    students missing a critical homeless field block past this share (0.02: more than 2%)."""

    max_missing_critical_share: float = Field(0.02, ge=0, le=1)


class OneRoster(_Strict):
    delivery: OneRosterDelivery
    gate: OneRosterGate = OneRosterGate()
    # Where the bundle comes from (seed 001): `powerschool` (§2.1: the PowerSchool export and the attribute
    # mapping) or `oneroster` (§2.2: another SIS's OneRoster 1.1 bundle, re-exported). Blank: PowerSchool
    # when the district has `inputs.powerschool_dir`, else the OneRoster bundle when it has
    # `inputs.oneroster_dir`.
    source: Literal["powerschool", "oneroster"] | None = None
    attribute_mapping: Path | None = None  # default: the seed's table, shipped with the package
    version: Literal["1.1"] = "1.1"


class IngestGuards(_Strict):
    """A snapshot source with only a header, or more than `shrink_threshold_pct` % fewer rows than its last
    good load (counted only when that had at least `shrink_min_rows`), is held, not applied, until accepted
    (run tag `sg/accept_shrink`)."""

    shrink_threshold_pct: float = Field(30, ge=0, le=100)
    shrink_min_rows: int = Field(20, ge=0)


class PublishGuards(_Strict):
    """The mass-delete guard of every target: a resource's plan that deletes more than
    `max_delete_share` of the records the target holds for it, and at least `min_deletes_guarded` records,
    is not sent until confirmed (run tag `sg/confirm_deletes`: `all` or `target/resource`, comma-separated;
    `sg-orch run --confirm-deletes`). The minimum keeps a few deletes in a small resource ordinary."""

    max_delete_share: float = Field(0.2, ge=0, le=1)
    min_deletes_guarded: int = Field(10, ge=1)


class Resync(_Strict):
    """When the `resync_scheduled` sensor reconciles the district's targets with what they hold: `cron` in
    the district's timezone (default Sundays 04:00); `enabled: false` turns the schedule off (the `resync`
    job can still be launched by hand)."""

    enabled: bool = True
    cron: str = "0 4 * * 0"

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from dagster._utils.schedules import is_valid_cron_string

        if not is_valid_cron_string(value):
            raise ValueError(f"not a cron expression: {value!r} (e.g. '0 4 * * 0', Sundays 04:00)")
        return value


class District(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    name: str
    state: str = Field(pattern=r"^[A-Z]{2}$")
    timezone: str
    inputs: Inputs = Field(default_factory=Inputs)
    samegoal: SameGoal | None = None
    qmlativ: Qmlativ | None = None
    edfi: Edfi | None = None
    oneroster: OneRoster | None = None
    publish: PublishGuards = PublishGuards()
    resync: Resync = Resync()
    ingest: IngestGuards = IngestGuards()

    @field_validator("timezone")
    @classmethod
    def _real_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA timezone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _each_source_has_a_transport(self):
        if self.samegoal and not (self.samegoal.base_url or self.inputs.samegoal_dir):
            raise ValueError("samegoal needs `samegoal.base_url` or `inputs.samegoal_dir`")
        if self.qmlativ and not (self.qmlativ.base_url or self.inputs.qmlativ_dir):
            raise ValueError("qmlativ needs `qmlativ.base_url` or `inputs.qmlativ_dir`")
        return self

    @model_validator(mode="after")
    def _oneroster_source_has_its_input(self):
        if self.oneroster and self.oneroster.source and not self.input_dir(f"{self.oneroster.source}_dir"):
            raise ValueError(
                f"oneroster.source is {self.oneroster.source}: give `inputs.{self.oneroster.source}_dir`"
            )
        return self

    @property
    def oneroster_source(self) -> str | None:
        """The OneRoster bundle's source (`OneRoster.source`, else inferred from the inputs); None without
        a `oneroster` section."""
        if self.oneroster is None:
            return None
        if self.oneroster.source:
            return self.oneroster.source
        return "oneroster" if self.inputs.oneroster_dir and not self.inputs.powerschool_dir else "powerschool"

    def input_dir(self, key: str) -> Path | None:
        return getattr(self.inputs, key)


class DistrictsFile(_Strict):
    districts: list[District] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self):
        seen: set[str] = set()
        for d in self.districts:
            if d.id in seen:
                raise ValueError(f"district id {d.id!r} appears twice")
            seen.add(d.id)
        return self

    def get(self, district_id: str) -> District:
        for d in self.districts:
            if d.id == district_id:
                return d
        raise ConfigError(f"no district {district_id!r}; configured: {[d.id for d in self.districts]}")

    @property
    def ids(self) -> list[str]:
        return [d.id for d in self.districts]


def _describe(error: dict, raw: dict) -> str:
    loc = list(error["loc"])
    where = ""
    if len(loc) >= 2 and loc[0] == "districts" and isinstance(loc[1], int):
        entries = raw.get("districts") or []
        entry = entries[loc[1]] if loc[1] < len(entries) else {}
        did = entry.get("id") if isinstance(entry, dict) else None
        where = f"district {did!r}" if did else f"district #{loc[1] + 1}"
        loc = loc[2:]
    key = ".".join(str(p) for p in loc if not str(p).startswith("function-after")) or "(entry)"
    msg = error["msg"]
    if error["type"] == "extra_forbidden":
        msg = "unknown key (check its spelling against SPEC §2)"
    return f"{where + ': ' if where else ''}key `{key}`: {msg}"


def _resolve_paths(raw: dict, base: Path) -> dict:
    """Relative folders in the file are relative to the file itself, not to the working directory."""
    for entry in raw.get("districts") or []:
        if not isinstance(entry, dict):
            continue
        for section, keys in (("inputs", None), ("oneroster", ("attribute_mapping",))):
            block = entry.get(section)
            if not isinstance(block, dict):
                continue
            for k, v in block.items():
                if (keys is None or k in keys) and isinstance(v, str) and v and not os.path.isabs(v):
                    block[k] = str((base / v).resolve())
        delivery = (
            (entry.get("oneroster") or {}).get("delivery")
            if isinstance(entry.get("oneroster"), dict)
            else None
        )
        for kind, key in (("directory", "path"), ("sftp", "known_hosts")):
            block = delivery.get(kind) if isinstance(delivery, dict) else None
            if isinstance(block, dict) and isinstance(block.get(key), str):
                block[key] = str((base / block[key]).resolve())
    return raw


def load_districts(path: str | os.PathLike) -> DistrictsFile:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{path}: districts file not found (set SG_DISTRICTS_FILE or pass --districts-file)"
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with a `districts` list")
    try:
        districts = DistrictsFile.model_validate(_resolve_paths(raw, path.parent.resolve()))
    except ValidationError as exc:
        problems = "\n  ".join(_describe(e, raw) for e in exc.errors())
        raise ConfigError(f"{path}: invalid districts configuration:\n  {problems}") from None
    from sg_orchestration.oneroster.mapping import MappingError, load_mapping  # reads the catalog

    for district in districts.districts:
        if district.oneroster and district.oneroster.attribute_mapping:
            try:
                load_mapping(district.oneroster.attribute_mapping)
            except MappingError as exc:
                raise ConfigError(
                    f"{path}: district {district.id}: oneroster.attribute_mapping: {exc}"
                ) from None
    return districts


def secret(env_name: str, *, purpose: str) -> str:
    """The value of a secret, read from the environment only when a connection is made."""
    value = os.environ.get(env_name)
    if not value:
        raise ConfigError(f"environment variable {env_name} ({purpose}) is not set")
    return value


def districts_file_path() -> Path:
    from sg_orchestration.paths import default_districts_file

    return Path(os.environ.get("SG_DISTRICTS_FILE") or default_districts_file())


@cache
def _cached(path: str, mtime: float) -> DistrictsFile:
    return load_districts(path)


def current_districts() -> DistrictsFile:
    path = districts_file_path()
    return _cached(str(path), path.stat().st_mtime if path.exists() else 0.0)
