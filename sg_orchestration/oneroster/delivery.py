"""Delivering the OneRoster bundle to GG4L School Passport (seed 001 §2.2, SPEC §4.3): one zip with the
CSV files at its root, into a directory or onto School Passport's SFTP server.

The zip's name is `oneroster_<district>.zip`, the same every night (`bundle_name`): the seed names no
file, and a bulk bundle replaces the one before it whole, so the folder always holds exactly one complete
bundle per district, the newest, and never a pile of dated ones for School Passport to choose among.

Atomic: the zip is written under a temporary name in the same folder (`.<name>.part-<run>-<random>`) and
then renamed to its name (SFTP: `posix-rename@openssh.com` where the server offers it, else remove and
rename), so School Passport never reads half a file. Temporary files a killed run left behind are removed
by the next delivery to that folder (one run at a time per warehouse: `warehouse.run_lock`).

The publish ledger (`ops.publish_ledger`, target `oneroster`) records what was delivered: resource
`bundle`, one row per district (`key_hash`: md5 of the zip's name; `content_hash`: the zip's sha256;
`target_id`: where it went; `last_status` `sent`, or `pending` while an upload is under way, or `failed`
with the cause in `last_error`), and resource `files`, one row per CSV file of the last delivered bundle
(`key_hash`: md5 of the file name; `target_id`: the file name; `content_hash`: its sha256). A bundle whose zip is the one last `sent` to the same place is not delivered again
(`unchanged`); a `pending` or `failed` one is delivered by the next run.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import logging
import os
import posixpath
import re
import secrets
import shutil
import zipfile
from pathlib import Path
from typing import Literal

import asyncssh
import duckdb

from sg_orchestration.config import ConfigError, District, SftpDelivery, secret
from sg_orchestration.oneroster import HEADERS
from sg_orchestration.publish import ledger

TARGET = "oneroster"
BUNDLE, FILES = "bundle", "files"  # the ledger's resources of the target
# Fixed member timestamps: the same files give the same zip, byte for byte, so an unchanged bundle is seen
# as unchanged by its hash alone.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
CONNECT_TIMEOUT_S = 30

log = logging.getLogger(__name__)


class DeliveryError(RuntimeError):
    """The bundle was not delivered; the message says why and what to do, never a key or a record."""


class HostKeyRefused(DeliveryError):
    """The SFTP server's host key is not the one the district's known_hosts file has for it."""


@dataclasses.dataclass(frozen=True)
class DeliveryResult:
    status: Literal["delivered", "unchanged"]
    name: str  # the zip's name where it landed
    destination: str  # the folder, or sftp://user@host:port/dir: no secret
    zip_hash: str  # sha256 of the zip
    files: dict[str, str]  # CSV file name -> sha256 of its bytes
    size: int  # bytes of the zip


def bundle_name(district_id: str) -> str:
    return f"oneroster_{district_id}.zip"


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def zip_bundle(bundle_dir: Path, zip_path: Path) -> str:
    """Zip the bundle's CSV files (those of `HEADERS`; `manifest.csv` required) at the zip's root, in the
    order of `HEADERS`, with fixed timestamps and modes; written beside `zip_path` and renamed onto it.
    Returns the zip's sha256. A CSV file the bundle layout does not know is refused, not left out."""
    bundle_dir, zip_path = Path(bundle_dir), Path(zip_path)
    known = [f"{name}.csv" for name in HEADERS]
    unknown = sorted(p.name for p in bundle_dir.glob("*.csv") if p.name not in known)
    if unknown:
        raise ValueError(f"{bundle_dir}: {unknown} are not files of the OneRoster bundle ({known})")
    if not (bundle_dir / "manifest.csv").is_file():
        raise ValueError(f"{bundle_dir}: the bundle has no manifest.csv")
    members = ["manifest.csv", *(n for n in known if n != "manifest.csv" and (bundle_dir / n).is_file())]
    partial = zip_path.with_name(f".{zip_path.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(partial, "w") as zf:
            for name in members:
                info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.create_system = 3  # Unix, so the mode below is read as one
                info.external_attr = 0o644 << 16
                with (bundle_dir / name).open("rb") as src, zf.open(info, "w") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(partial, zip_path)
    finally:
        partial.unlink(missing_ok=True)
    return _sha256(zip_path)


def _file_hashes(zip_path: Path) -> dict[str, str]:
    with zipfile.ZipFile(zip_path) as zf:
        hashes = {}
        for name in zf.namelist():
            with zf.open(name) as member:
                hashes[name] = hashlib.file_digest(member, "sha256").hexdigest()
        return hashes


def _destination(district: District) -> str:
    delivery = district.oneroster.delivery
    if delivery.sftp:
        s = delivery.sftp
        # `/~/`: a folder relative to the login's home, as sftp URLs write it
        return (
            f"sftp://{s.user}@{s.host}:{s.port}"
            + ("" if s.remote_dir.startswith("/") else "/~/")
            + s.remote_dir
        )
    return str(delivery.directory.path)


def _key_hash(name: str) -> str:
    return hashlib.md5(name.encode()).hexdigest()


def _part_prefix(name: str) -> str:
    return f".{name}.part-"


def _part_name(name: str, run_id: str) -> str:
    """The temporary name: the run that wrote it can be told from a leftover, and two never collide."""
    run = re.sub(r"[^A-Za-z0-9_-]", "", run_id)[:36]
    return f"{_part_prefix(name)}{run}-{secrets.token_hex(4)}"


def deliver(
    con: duckdb.DuckDBPyConnection, district: District, zip_path: Path, *, run_id: str
) -> DeliveryResult:
    """Deliver the zip to the district's `oneroster.delivery` under `bundle_name`, unless the ledger says
    that very zip was delivered there last (`unchanged`). DeliveryError (HostKeyRefused for a host key
    known_hosts does not have; ConfigError when the key's variable is not set) when it could not be:
    nothing is then under the name but what was there before, the ledger says `failed`, and the next run
    delivers it."""
    if district.oneroster is None:
        raise DeliveryError(f"district {district.id} has no `oneroster` section in its districts file")
    zip_path = Path(zip_path)
    name = bundle_name(district.id)
    destination = _destination(district)
    zip_hash, files = _sha256(zip_path), _file_hashes(zip_path)
    result = DeliveryResult("unchanged", name, destination, zip_hash, files, zip_path.stat().st_size)
    ledger.ensure_ledger(con)
    held = con.execute(
        "select content_hash, target_id, last_status from ops.publish_ledger "
        "where district_id = ? and target = ? and resource = ? and key_hash = ?",
        [district.id, TARGET, BUNDLE, _key_hash(name)],
    ).fetchone()
    if held == (zip_hash, destination, "sent"):
        log.info("%s: the bundle is unchanged since its last delivery to %s", district.id, destination)
        return result

    def record(status: str, error: str | None = None) -> None:
        row = (_key_hash(name), zip_hash, destination, None, status, "deliver", error, None, None, BUNDLE)
        ledger.write(con, district.id, TARGET, [row])

    record("pending")  # a run killed from here on leaves it pending: delivered again by the next one
    try:
        if district.oneroster.delivery.sftp:
            asyncio.run(_sftp_put(district.oneroster.delivery.sftp, zip_path, name, run_id))
        else:
            _directory_put(district.oneroster.delivery.directory.path, zip_path, name, run_id)
    except (DeliveryError, ConfigError) as exc:  # ConfigError: the key's variable is not set
        record("failed", str(exc)[:500])
        raise
    _record_files(con, district.id, files)
    record("sent")
    log.info("%s: delivered %s (%d bytes) to %s", district.id, name, result.size, destination)
    return dataclasses.replace(result, status="delivered")


def _record_files(con: duckdb.DuckDBPyConnection, district_id: str, files: dict[str, str]) -> None:
    """The ledger's `files` rows: those of this bundle, and no others."""
    rows = [(_key_hash(f), h, f, None, "sent", "deliver", None, None, None, FILES) for f, h in files.items()]
    gone = con.execute(
        "select key_hash from ops.publish_ledger where district_id = ? and target = ? and resource = ? "
        "and not list_contains(?, key_hash)",
        [district_id, TARGET, FILES, [r[0] for r in rows]],
    ).fetchall()
    ledger.forget(con, district_id, TARGET, [(FILES, key) for (key,) in gone])
    ledger.write(con, district_id, TARGET, rows)


def _directory_put(folder: Path, zip_path: Path, name: str, run_id: str) -> None:
    part = folder / _part_name(name, run_id)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for leftover in folder.glob(f"{_part_prefix(name)}*"):
            leftover.unlink(missing_ok=True)
        with zip_path.open("rb") as src, part.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())  # the bytes are on disk before the name points at them
        os.replace(part, folder / name)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise DeliveryError(f"could not write {name} into {folder}: {exc.strerror or exc}") from None


def _private_key(env_name: str) -> asyncssh.SSHKey:
    """The key from the environment: its text, or the base64 of its text (one word, as a `NAME=value`
    env file or a CI secret holds a key: `base64 -w0 KEYFILE`)."""
    value = secret(env_name, purpose="the private key of the OneRoster SFTP delivery")
    try:
        text = value if "PRIVATE KEY" in value else base64.b64decode(value, validate=True)
        return asyncssh.import_private_key(text)
    except (asyncssh.KeyImportError, ValueError):  # binascii.Error is a ValueError
        raise DeliveryError(
            f"environment variable {env_name} does not hold a private key that can be read: give the key's "
            "text (OpenSSH or PEM, without a passphrase) or its base64 (`base64 -w0 KEYFILE`), not a path"
        ) from None


def _host_key_refused(sftp: SftpDelivery) -> HostKeyRefused:
    """Unknown (no entry for the host, or no known_hosts file) or changed (an entry with another key):
    each says how to fix it."""
    where = f"{sftp.host}:{sftp.port}"
    scan = f"ssh-keyscan -p {sftp.port} {sftp.host}"
    try:
        known = asyncssh.read_known_hosts(str(sftp.known_hosts)).match(sftp.host, sftp.host, sftp.port)[0]
    except (OSError, ValueError):
        known = []
    if known:
        problem = (
            f"the SFTP server {where} offered a host key other than the one {sftp.known_hosts} has for it: "
            "refused, as it may not be School Passport's server. If School Passport confirms it changed "
            "its key, replace the entry with"
        )
    else:
        problem = f"{sftp.known_hosts} has no host key for the SFTP server {where}: refused. Add it with"
    return HostKeyRefused(
        f"{problem} `{scan} >> {sftp.known_hosts}` after checking the key's fingerprint "
        f"(`{scan} | ssh-keygen -lf -`) against the one School Passport gives you."
    )


async def _sftp_put(sftp: SftpDelivery, zip_path: Path, name: str, run_id: str) -> None:
    where = f"{sftp.user}@{sftp.host}:{sftp.port}"
    if not sftp.known_hosts.is_file():
        raise _host_key_refused(sftp)
    key = _private_key(sftp.key_env)
    try:
        conn = await asyncssh.connect(
            sftp.host,
            sftp.port,
            username=sftp.user,
            client_keys=[key],
            known_hosts=str(sftp.known_hosts),
            # only what the districts file says: no agent, no ~/.ssh/config, no password prompt
            agent_path=None,
            config=None,
            password=None,
            preferred_auth="publickey",
            connect_timeout=CONNECT_TIMEOUT_S,
        )
    except asyncssh.HostKeyNotVerifiable:
        raise _host_key_refused(sftp) from None
    except asyncssh.PermissionDenied:
        raise DeliveryError(
            f"the SFTP server {where} refused the key in {sftp.key_env}: give School Passport its public "
            "key for this user (`ssh-keygen -y -f KEYFILE`), or check the user name"
        ) from None
    except asyncssh.Error as exc:
        raise DeliveryError(f"the SFTP connection to {where} failed: {exc.reason}") from None
    except (OSError, TimeoutError) as exc:
        raise DeliveryError(f"could not reach the SFTP server {where}: {exc.strerror or exc}") from None
    async with conn:
        try:
            async with conn.start_sftp_client() as client:
                await _upload(client, sftp.remote_dir, zip_path, name, run_id)
        except asyncssh.SFTPError as exc:
            raise DeliveryError(
                f"SFTP upload of {name} into {sftp.remote_dir} on {where} failed: {exc.reason}"
            ) from None
        except (asyncssh.Error, OSError) as exc:
            reason = exc.reason if isinstance(exc, asyncssh.Error) else exc.strerror or exc
            raise DeliveryError(
                f"the SFTP connection to {where} broke off during the upload of {name}: {reason}"
            ) from None


async def _upload(client: asyncssh.SFTPClient, remote_dir: str, zip_path: Path, name: str, run_id: str):
    final, part = posixpath.join(remote_dir, name), posixpath.join(remote_dir, _part_name(name, run_id))
    for entry in await client.listdir(remote_dir):
        if entry.startswith(_part_prefix(name)):
            await client.remove(posixpath.join(remote_dir, entry))
    try:
        await client.put(str(zip_path), part)
        try:
            await client.posix_rename(part, final)
        except asyncssh.SFTPOpUnsupported:
            if await client.exists(final):
                await client.remove(final)
            await client.rename(part, final)
    except (asyncssh.Error, OSError):
        # best effort: a dropped connection cannot remove it, and the next delivery's sweep does
        with contextlib.suppress(asyncssh.Error, OSError):
            await client.remove(part)
        raise
