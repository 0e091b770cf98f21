"""The OneRoster target as a night runs it (seed 001, issue 9 points 6-8): `sg-orch run` of the sandbox's
OneRoster district writes the bundle, gates it and delivers it over SFTP to the sandbox's server; a night
with nothing new delivers nothing; a bundle the gate blocks is not delivered, says why, and goes once fixed.
"""

import csv
import io
import re
import shutil
import zipfile
from pathlib import Path

import yaml

from sg_orchestration.cli import main
from sg_orchestration.oneroster import HEADERS
from sg_orchestration.oneroster.gate import IDENTIFIED
from sg_orchestration.warehouse import connect

DISTRICT = "filedrop"  # a test partition's id


def _districts_file(sandbox, tmp_path: Path, powerschool: Path) -> Path:
    path = tmp_path / "districts.yaml"
    sandbox.write_districts_file(path)
    doc = yaml.safe_load(path.read_text())
    district = next(d for d in doc["districts"] if "oneroster" in d)
    district.update(id=DISTRICT, inputs={"powerschool_dir": str(powerschool)})
    doc["districts"] = [district]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _other_sis(tmp_path: Path, bundle: Path, outbox: Path, **oneroster) -> Path:
    """A districts file of one district whose bundle is its own OneRoster export (seed 001 §2.2)."""
    district = {
        "id": DISTRICT,
        "name": "Other SIS ISD",
        "state": "TX",
        "timezone": "America/Chicago",
        "inputs": {"oneroster_dir": str(bundle)},
        "oneroster": {**oneroster, "delivery": {"directory": {"path": str(outbox)}}},
    }
    path = tmp_path / "districts.yaml"
    path.write_text(yaml.safe_dump({"districts": [district]}, sort_keys=False))
    return path


def _delivered(sandbox) -> Path:
    return sandbox.state_dir / "sftp" / "upload" / f"oneroster_{DISTRICT}.zip"


def _run(path: Path, capsys) -> tuple[int, str]:
    code = main(["run", "--districts-file", str(path), "--district", DISTRICT])
    return code, capsys.readouterr().out


def test_the_nightly_delivers_the_gated_bundle_over_sftp_and_a_night_with_no_change_delivers_nothing(
    defs, sandbox, district_inputs, warehouse, capsys, tmp_path
):
    """SPEC §4.3: "Delivery to SFTP (host key checked) or a directory, atomically"; `make demo` prints
    per-file counts and the gate's verdict."""
    _delivered(sandbox).unlink(missing_ok=True)
    path = _districts_file(sandbox, tmp_path, district_inputs / "powerschool")
    code, out = _run(path, capsys)
    assert code == 0 and "result: OK" in out, out[-4000:]
    assert "gate: passed" in out and "publish/oneroster_bundle           published" in out
    counts = {m[0]: int(m[1].replace(",", "")) for m in re.findall(r"(\w+) records ([\d,]+)", out)}
    assert set(counts) == set(HEADERS) and counts["users"] > 0
    zipped = _delivered(sandbox)
    with zipfile.ZipFile(zipped) as z:  # an independent reader: the files at the root, OneRoster headers
        assert sorted(z.namelist()) == sorted(f"{name}.csv" for name in HEADERS)
        for name, header in HEADERS.items():
            rows = list(csv.reader(io.TextIOWrapper(z.open(f"{name}.csv"), encoding="utf-8", newline="")))
            assert tuple(rows[0][: len(header)]) == header
            assert len(rows) - 1 == counts[name], name
    assert re.search(r"^  bundle +0 +1 +0 +0 ", out, re.M), out[-2000:]
    first = zipped.stat().st_mtime_ns
    report = Path(re.search(r"gate: passed; report: (\S+)", out)[1])
    written = report.stat().st_mtime_ns

    code, out = _run(path, capsys)
    assert code == 0, out[-4000:]
    assert re.search(r"^  bundle +0 +0 +0 +1 ", out, re.M), out[-2000:]  # unchanged: nothing delivered
    assert zipped.stat().st_mtime_ns == first
    assert report.stat().st_mtime_ns == written  # nothing the bundle is made from changed: not rewritten


def test_a_bundle_the_gate_blocks_is_not_delivered_says_why_and_goes_once_fixed(
    defs, sandbox, district_inputs, warehouse, capsys, tmp_path
):
    """Seed 001: "we will validate and check the data quality before sharing it". A tenth of the students
    not saying whether they are homeless is past the district's threshold: the bundle stays here."""
    _delivered(sandbox).unlink(missing_ok=True)
    powerschool = tmp_path / "powerschool"
    shutil.copytree(district_inputs / "powerschool", powerschool)
    students = powerschool / "students.csv"
    original = students.read_text(encoding="utf-8")
    with students.open(newline="", encoding="utf-8") as f:
        header, *rows = csv.reader(f)
    column = header.index("Doctor Phone")  # the mapping's source of is_identified_as_homeless
    for row in rows[::10]:
        row[column] = ""
    with students.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    path = _districts_file(sandbox, tmp_path, powerschool)

    code, out = _run(path, capsys)
    assert code != 0, out[-4000:]
    assert "gate: blocked" in out and "the OneRoster bundle is not delivered" in out, out[-4000:]
    assert "miss a critical homeless field" in out and "max_missing_critical_share" in out
    assert not _delivered(sandbox).exists()
    with connect() as con:
        open_rows = con.execute(
            "select count(*) from ops.error_log where district_id = ? and target = 'oneroster/users' "
            "and field = ? and resolved_at is null",
            [DISTRICT, IDENTIFIED],
        ).fetchone()[0]
    assert open_rows >= len(rows[::10]) // 2  # the active students among them

    students.write_text(original, encoding="utf-8")  # fixed at the source
    code, out = _run(path, capsys)
    assert code == 0 and "gate: passed" in out, out[-4000:]
    assert _delivered(sandbox).is_file()
    with connect() as con:
        assert not con.execute(
            "select count(*) from ops.error_log where district_id = ? and target like 'oneroster/%' "
            "and resolved_at is null",
            [DISTRICT],
        ).fetchone()[0]


def test_another_sis_oneroster_export_is_validated_and_re_exported_the_same_way(
    defs, district_inputs, warehouse, capsys, tmp_path
):
    """Seed 001 §2.2: "Import data using CSV files in OneRoster format including the corresponding
    metadata fields." A district whose `inputs.oneroster_dir` holds its own bundle has it re-exported: the
    same headers, its metadata.* columns to the right, bulk blanks, only active records (a `tobedeleted`
    row is not sent), through the same gate and delivery."""
    bundle = tmp_path / "oneroster"
    shutil.copytree(district_inputs / "oneroster", bundle)
    users = bundle / "users.csv"
    with users.open(newline="", encoding="utf-8") as f:
        header, *rows = csv.reader(f)
    status = header.index("status")
    named = {  # every sourcedId another record names: a user none names can go alone
        value
        for path in bundle.glob("*.csv")
        for record in list(csv.reader(path.open(encoding="utf-8")))[1:]
        for cell in record[3:]
        for value in cell.split(",")
    }
    gone_row = next(r for r in rows if r[0] not in named)
    gone = gone_row[0]
    gone_row[status] = "tobedeleted"
    with users.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    outbox = tmp_path / "outbox"
    code, out = _run(_other_sis(tmp_path, bundle, outbox), capsys)
    assert code == 0 and "gate: passed" in out, out[-4000:]
    with zipfile.ZipFile(outbox / f"oneroster_{DISTRICT}.zip") as z:
        files = {
            name: list(csv.reader(io.TextIOWrapper(z.open(f"{name}.csv"), encoding="utf-8", newline="")))
            for name in HEADERS
        }
    sent_header, *sent = files["users"]
    metadata = [c for c in header if c.startswith("metadata.")]
    assert sent_header == [*HEADERS["users"], *sorted(metadata)]
    ids = {r[0] for r in sent}
    kept = next(r for r in rows if r[0] != gone and r[header.index("role")] == "student")
    assert gone not in ids and kept[0] in ids
    assert all(r[1] == "" and r[2] == "" for rows_ in files.values() for r in rows_[1:] if len(r) > 2)
    first = next(r for r in sent if r[0] == kept[0])
    for column in metadata:  # the export's own values, under their own names
        assert first[sent_header.index(column)] == kept[header.index(column)], column
    manifest = dict(files["manifest"][1:])
    assert manifest["file.users"] == "bulk" and manifest["file.lineItems"] == "absent"
    assert (
        manifest["source.systemName"]
        == dict(list(csv.reader((bundle / "manifest.csv").open(encoding="utf-8")))[1:])["source.systemName"]
    )


def test_a_delta_oneroster_export_is_refused_naming_its_files_and_nothing_is_delivered(
    defs, district_inputs, warehouse, capsys, tmp_path
):
    """A delta bundle holds one day's changes: re-exported as the whole roster it would drop every student
    it does not list, so it is refused until the SIS sends a bulk one."""
    bundle = tmp_path / "oneroster"
    shutil.copytree(district_inputs / "oneroster", bundle)
    manifest = bundle / "manifest.csv"
    manifest.write_text(manifest.read_text(encoding="utf-8").replace("file.users,bulk", "file.users,delta"))
    outbox = tmp_path / "outbox"
    code, out = _run(_other_sis(tmp_path, bundle, outbox, source="oneroster"), capsys)
    assert code != 0 and "is a delta bundle (manifest.csv: file.users=delta)" in out, out[-3000:]
    assert not outbox.exists() or not any(outbox.iterdir())
