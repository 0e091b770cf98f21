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
