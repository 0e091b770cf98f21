"""Delivering the OneRoster bundle (issue 9 point 7, SPEC §4.3): "A zip with the files at its root,
delivered to a directory or to SFTP (asyncssh; key authentication; the server's host key checked against
the district's known-hosts entry — an unknown or changed key is refused with a clear error; upload to a
temporary name, then rename, so GG4L never reads half a file). [...] The publish ledger records what was
delivered (per file content hash); a run with no change delivers nothing; a failed upload leaves no
partial file and is retried on the next run."

Over real sockets, against the sandbox's SFTP server (asyncssh's), with a small bundle of our own.
"""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import asyncssh
import duckdb
import pytest
import yaml

from sg_orchestration.config import ConfigError, OneRosterDelivery, load_districts
from sg_orchestration.oneroster import HEADERS
from sg_orchestration.oneroster.delivery import (
    DeliveryError,
    HostKeyRefused,
    bundle_name,
    deliver,
    zip_bundle,
)
from sg_orchestration.sandbox import Sandbox
from sg_orchestration.sandbox.server import SFTP_KEY
from sg_orchestration.sandbox.sftp import REMOTE_DIR, new_client_key
from sg_orchestration.warehouse import connect

DISTRICT = "demo-or"  # the sandbox's OneRoster district (conftest's inputs are the `demo` district's)
NAME = bundle_name(DISTRICT)


def _bundle(folder: Path, users: int = 3) -> Path:
    """manifest.csv, orgs.csv and users.csv (one `metadata.*` column), with the bundle's headers."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = {
        "manifest": [("manifest.version", "1.0"), ("oneroster.version", "1.1")],
        "orgs": [("org-1", "", "", "Demo High", "school", "001", "")],
    }
    rows["users"] = [
        (f"u-{n}", "", "", "true", "org-1", "student", f"s{n}", "", "Given", "Family", "", f"id{n}")
        + ("",) * 6
        + ("Y",)
        for n in range(users)
    ]
    header = {**HEADERS, "users": (*HEADERS["users"], "metadata.is_identified_as_homeless")}
    for name, lines in rows.items():
        text = "\r\n".join(",".join(line) for line in [header[name], *lines]) + "\r\n"
        (folder / f"{name}.csv").write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def sb(district_inputs, tmp_path, monkeypatch):
    """A sandbox of this test's own (its SFTP root under tmp_path), its credentials in the environment."""
    with Sandbox(district_inputs, state_dir=tmp_path / "store") as sandbox:
        for name, value in sandbox.credentials.items():
            monkeypatch.setenv(name, value)
        yield sandbox


@pytest.fixture
def districts_path(sb, tmp_path) -> Path:
    path = tmp_path / "districts.yaml"
    sb.write_districts_file(path)
    return path


@pytest.fixture
def district(districts_path):
    return load_districts(districts_path).get(DISTRICT)


@pytest.fixture
def upload_dir(sb) -> Path:
    return sb.sftp.root / REMOTE_DIR.lstrip("/")


@pytest.fixture
def con():
    with duckdb.connect() as c:
        yield c


@pytest.fixture
def zip_path(tmp_path) -> Path:
    path = tmp_path / "out" / "bundle.zip"
    path.parent.mkdir()
    zip_bundle(_bundle(tmp_path / "bundle"), path)
    return path


def _bundle_rows(con, district_id: str = DISTRICT) -> list[tuple]:
    return con.execute(
        "select content_hash, target_id, last_status, last_error from ops.publish_ledger "
        "where district_id = ? and target = 'oneroster' and resource = 'bundle'",
        [district_id],
    ).fetchall()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_zip_has_the_csv_files_at_its_root_and_the_same_files_give_the_same_bytes(tmp_path):
    """ "A zip with the files at its root": read back with Python's own `zipfile`."""
    bundle = _bundle(tmp_path / "bundle")
    first = zip_bundle(bundle, tmp_path / "a.zip")
    time.sleep(0.01)
    os.utime(bundle / "users.csv")  # a newer timestamp, the same content
    assert zip_bundle(bundle, tmp_path / "b.zip") == first == _sha256(tmp_path / "a.zip")
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        assert zf.namelist() == ["manifest.csv", "orgs.csv", "users.csv"]
        for name in zf.namelist():
            assert zf.read(name) == (bundle / name).read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left

    (bundle / "extra.csv").write_text("a\n")
    with pytest.raises(ValueError, match=r"\['extra.csv'\] are not files of the OneRoster bundle"):
        zip_bundle(bundle, tmp_path / "c.zip")
    (bundle / "extra.csv").unlink()
    (bundle / "manifest.csv").unlink()
    with pytest.raises(ValueError, match="no manifest.csv"):
        zip_bundle(bundle, tmp_path / "c.zip")


def test_delivery_to_a_directory_lands_the_zip_under_its_name_with_the_exact_bytes(
    district, zip_path, con, tmp_path
):
    outbox = tmp_path / "outbox"
    by_directory = _delivering(district, directory={"path": outbox})
    result = deliver(con, by_directory, zip_path, run_id="r1")
    assert (result.status, result.name, result.destination) == ("delivered", NAME, str(outbox))
    assert [p.name for p in outbox.iterdir()] == [NAME]
    assert (outbox / NAME).read_bytes() == zip_path.read_bytes()
    assert deliver(con, by_directory, zip_path, run_id="r2").status == "unchanged"


def _delivering(district, **delivery):
    """The district with another `oneroster.delivery`."""
    oneroster = district.oneroster.model_copy(update={"delivery": OneRosterDelivery(**delivery)})
    return district.model_copy(update={"oneroster": oneroster})


def test_an_unreachable_server_fails_naming_it_and_the_next_run_delivers(district, zip_path, con, upload_dir):
    sftp = district.oneroster.delivery.sftp
    with pytest.raises(DeliveryError, match="could not reach the SFTP server school-passport@127.0.0.1:9: "):
        deliver(con, _delivering(district, sftp=sftp.model_copy(update={"port": 9})), zip_path, run_id="r1")
    assert [row[2] for row in _bundle_rows(con)] == ["failed"]
    assert deliver(con, district, zip_path, run_id="r2").status == "delivered"
    assert (upload_dir / NAME).read_bytes() == zip_path.read_bytes()


def test_delivery_over_sftp_lands_the_zip_under_its_name_with_the_exact_bytes_and_the_ledger_records_each_file(
    district, zip_path, con, upload_dir, tmp_path
):
    result = deliver(con, district, zip_path, run_id="r1")
    assert result.status == "delivered"
    assert sorted(p.name for p in upload_dir.iterdir()) == [NAME]
    assert (upload_dir / NAME).read_bytes() == zip_path.read_bytes()
    assert (
        result.destination
        == f"sftp://school-passport@127.0.0.1:{district.oneroster.delivery.sftp.port}/upload"
    )
    assert _bundle_rows(con) == [(_sha256(zip_path), result.destination, "sent", None)]
    files = dict(
        con.execute(
            "select target_id, content_hash from ops.publish_ledger where district_id = ? "
            "and target = 'oneroster' and resource = 'files'",
            [DISTRICT],
        ).fetchall()
    )
    bundle = tmp_path / "bundle"
    assert files == {p.name: _sha256(p) for p in bundle.glob("*.csv")} == result.files


def test_a_rerun_with_no_change_delivers_nothing_and_a_changed_bundle_is_delivered(
    district, zip_path, con, upload_dir, tmp_path
):
    deliver(con, district, zip_path, run_id="r1")
    landed = (upload_dir / NAME).stat()
    assert deliver(con, district, zip_path, run_id="r2").status == "unchanged"
    again = (upload_dir / NAME).stat()
    assert (again.st_ino, again.st_mtime_ns) == (landed.st_ino, landed.st_mtime_ns)  # not written again

    zip_bundle(_bundle(tmp_path / "bundle", users=4), zip_path)
    assert deliver(con, district, zip_path, run_id="r3").status == "delivered"
    assert (upload_dir / NAME).read_bytes() == zip_path.read_bytes()


def _known_hosts_with_another_key(district) -> str:
    sftp = district.oneroster.delivery.sftp
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    return f"[{sftp.host}]:{sftp.port} {other}\n"


@pytest.mark.parametrize(
    ("known_hosts", "says"),
    [
        (_known_hosts_with_another_key, "offered a host key other than the one"),
        (lambda district: "", "has no host key for the SFTP server"),
        (None, "has no host key for the SFTP server"),
    ],
    ids=["changed", "unknown", "no known_hosts file"],
)
def test_a_changed_or_unknown_host_key_is_refused_and_nothing_is_uploaded(
    district, zip_path, con, upload_dir, known_hosts, says
):
    sftp = district.oneroster.delivery.sftp
    if known_hosts:
        sftp.known_hosts.write_text(known_hosts(district))
    else:
        sftp.known_hosts.unlink()
    with pytest.raises(HostKeyRefused) as refused:
        deliver(con, district, zip_path, run_id="r1")
    message = str(refused.value)
    assert says in message and f"127.0.0.1:{sftp.port}" in message and str(sftp.known_hosts) in message
    assert f"ssh-keyscan -p {sftp.port} 127.0.0.1" in message and "fingerprint" in message
    assert list(upload_dir.iterdir()) == []
    ((_, _, status, error),) = _bundle_rows(con)
    assert status == "failed" and says in error


def test_a_key_the_server_does_not_authorize_is_refused_naming_the_variable_never_the_key(
    district, zip_path, con, upload_dir, monkeypatch
):
    other = new_client_key()
    monkeypatch.setenv(SFTP_KEY, other)
    with pytest.raises(DeliveryError, match=f"refused the key in {SFTP_KEY}") as refused:
        deliver(con, district, zip_path, run_id="r1")
    assert other[40:80] not in str(refused.value) and refused.value.__cause__ is None
    assert list(upload_dir.iterdir()) == []
    monkeypatch.setenv(SFTP_KEY, "/home/me/.ssh/id_ed25519")
    with pytest.raises(DeliveryError, match=f"{SFTP_KEY} does not hold a private key .* not a path"):
        deliver(con, district, zip_path, run_id="r2")
    monkeypatch.delenv(SFTP_KEY)
    with pytest.raises(ConfigError, match=f"environment variable {SFTP_KEY} .* is not set"):
        deliver(con, district, zip_path, run_id="r3")
    assert [row[2] for row in _bundle_rows(con)] == ["failed"]


def _big_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:  # stored: ~40 MB take a while to upload
        zf.writestr("manifest.csv", "propertyName,value\r\n")
        zf.writestr("users.csv", os.urandom(20_000_000).hex())
    return path


def _part_file_growing(upload_dir: Path, run_id: str, uploading) -> Path:
    """The temporary file of the run's upload, once bytes have landed in it (while `uploading()`)."""
    deadline = time.monotonic() + 60
    while True:
        assert uploading(), "the upload ended before it could be cut"
        assert time.monotonic() < deadline, "no upload began"
        part = next((p for p in upload_dir.glob(f".{NAME}.part-{run_id}-*") if p.stat().st_size > 0), None)
        if part:
            return part
        time.sleep(0.01)


def test_the_key_may_be_given_as_its_text_or_as_the_base64_of_its_text(
    sb, district, zip_path, con, upload_dir, monkeypatch
):
    """The sandbox hands its key out as base64 (one word, for its env file); a district's is often the
    key file's text itself."""
    monkeypatch.setenv(SFTP_KEY, base64.b64decode(sb.credentials[SFTP_KEY]).decode())
    assert "-----BEGIN OPENSSH PRIVATE KEY-----\n" in os.environ[SFTP_KEY]
    assert deliver(con, district, zip_path, run_id="r1").status == "delivered"
    assert (upload_dir / NAME).read_bytes() == zip_path.read_bytes()


KILLED_DELIVERY = """
import sys
from pathlib import Path
from sg_orchestration.config import load_districts
from sg_orchestration.oneroster.delivery import deliver
from sg_orchestration.warehouse import connect
with connect() as con:
    deliver(con, load_districts(sys.argv[1]).get(sys.argv[2]), Path(sys.argv[3]), run_id="killed")
"""


def test_a_killed_upload_leaves_no_file_under_the_name_and_the_next_run_delivers_it(
    districts_path, district, upload_dir, warehouse, tmp_path
):
    """The upload is killed (-9) half-way: School Passport sees no `oneroster_<district>.zip` at all, the
    ledger says it was not delivered, and the next run delivers it whole and sweeps the leftover."""
    big = _big_zip(tmp_path / "big.zip")
    uploading = subprocess.Popen(
        [sys.executable, "-c", KILLED_DELIVERY, str(districts_path), DISTRICT, str(big)]
    )
    part = _part_file_growing(upload_dir, "killed", lambda: uploading.poll() is None)
    uploading.send_signal(signal.SIGKILL)
    uploading.wait()
    assert not (upload_dir / NAME).exists() and part.stat().st_size < big.stat().st_size
    with connect() as con:
        assert [row[2] for row in _bundle_rows(con)] == ["pending"]  # not delivered
        assert deliver(con, district, big, run_id="next").status == "delivered"
        assert [row[2] for row in _bundle_rows(con)] == ["sent"]
    assert sorted(p.name for p in upload_dir.iterdir()) == [NAME]  # the leftover swept
    assert _sha256(upload_dir / NAME) == _sha256(big)


def test_the_sandboxs_districts_file_delivers_its_oneroster_district_to_its_sftp_server(
    sb, districts_path, district
):
    """The key in the env file (one line) is the one the server authorizes; the known_hosts file beside
    the districts file has the server's host key."""
    sftp = district.oneroster.delivery.sftp
    assert (sftp.host, sftp.port, sftp.remote_dir) == ("127.0.0.1", sb.sftp.port, REMOTE_DIR)
    assert sftp.key_env == SFTP_KEY and sb.urls["sftp"] == f"sftp://127.0.0.1:{sb.sftp.port}"
    assert sftp.known_hosts == districts_path.with_suffix(".known_hosts")
    assert sftp.known_hosts.read_text() == sb.sftp.known_hosts_line
    env = dict(line.split("=", 1) for line in districts_path.with_suffix(".env").read_text().splitlines())
    assert env[SFTP_KEY] == sb.credentials[SFTP_KEY] and len(env[SFTP_KEY].split()) == 1
    assert env[SFTP_KEY] not in districts_path.read_text()


def test_a_connection_dropped_mid_upload_leaves_no_file_under_the_name_and_the_next_run_delivers_it(
    sb, district, upload_dir, con, tmp_path
):
    big = _big_zip(tmp_path / "big.zip")
    outcome: dict = {}

    def upload():
        try:
            deliver(con.cursor(), district, big, run_id="dropped")
        except DeliveryError as exc:
            outcome["error"] = exc

    uploading = threading.Thread(target=upload)
    uploading.start()
    part = _part_file_growing(upload_dir, "dropped", uploading.is_alive)
    sb.sftp.drop_connections()
    uploading.join(60)
    assert "the SFTP connection to school-passport@127.0.0.1" in str(outcome["error"])
    assert f"broke off during the upload of {NAME}" in str(outcome["error"])
    assert not (upload_dir / NAME).exists() and part.stat().st_size < big.stat().st_size
    assert [row[2] for row in _bundle_rows(con)] == ["failed"]
    assert deliver(con, district, big, run_id="next").status == "delivered"
    assert sorted(p.name for p in upload_dir.iterdir()) == [NAME]  # the leftover swept
    assert _sha256(upload_dir / NAME) == _sha256(big)


def test_a_relative_known_hosts_is_relative_to_the_districts_file(districts_path, tmp_path, monkeypatch):
    doc = yaml.safe_load(districts_path.read_text())
    doc["districts"][-1]["oneroster"]["delivery"]["sftp"]["known_hosts"] = "keys/known_hosts"
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "districts.yaml").write_text(yaml.safe_dump(doc))
    monkeypatch.chdir(tmp_path)
    district = load_districts(tmp_path / "conf" / "districts.yaml").get(DISTRICT)
    assert district.oneroster.delivery.sftp.known_hosts == tmp_path / "conf" / "keys" / "known_hosts"
