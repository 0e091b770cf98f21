"""A whole nightly run of a small district, in process: ingest over the sandbox APIs, dbt, checks, summary."""

import shutil
from pathlib import Path

import yaml

from sg_orchestration.catalog import SAMEGOAL_SOURCES, SOURCES
from sg_orchestration.cli import main
from sg_orchestration.paths import PROJECT_ROOT
from sg_orchestration.transform.staging import model_name
from sg_orchestration.warehouse import connect


def _writeback_models() -> int:
    """The writeback step's models and seed: staging of SameGoal and Qmlativ, the student ids, the rules
    and marts of each form, the TEDS seed."""
    return (
        len([s for s in SOURCES if s.system in ("samegoal", "qmlativ")]) + 1 + 2 * len(SAMEGOAL_SOURCES) + 1
    )


def test_sg_orch_run_materializes_the_nightly_job_and_prints_the_summary(
    defs, districts_file, warehouse, capsys, tmp_path
):
    code = main(["run", "--districts-file", str(districts_file), "--district", "demo"])
    out = capsys.readouterr().out
    assert code == 0, out[-4000:]
    assert "sg_orchestration summary" in out and "result: OK" in out
    # The writeback's models only (staging of SameGoal and Qmlativ, the student ids, the rules, marts, the
    # TEDS seed): `demo` has no Ed-Fi or OneRoster target, so their dbt steps do not build.
    writeback = [s for s in SOURCES if s.system in ("samegoal", "qmlativ")]
    models = _writeback_models()
    assert f"dbt: {models} models and seeds built, 0 kept and tested on new data, 0 reused" in out
    with connect() as con:
        for source in writeback:
            staged = con.execute(f"select count(*) from staging.{model_name(source)}").fetchone()[0]
            clean = con.execute(
                f"select count(*) from raw.\"{source.name}\" where _district_id = 'demo' and _error is null"
            ).fetchone()[0]
            if source.mode == "documents":
                assert staged == clean > 0, source.name
            else:
                assert 0 < staged <= clean, source.name
        open_errors = con.execute("select count(*) from ops.error_log where resolved_at is null").fetchone()[
            0
        ]
    assert open_errors > 0  # the synthetic district has malformed rows, reported in the summary
    assert "open errors in ops.error_log" in out
    # Per screen, why documents were not sent (the generated district has every case).
    why = out[out.index("why not sent") :]
    for reason in (
        "draft",
        "voided",
        "superseded",
        "before the program's cutover date",
        "student not mapped",
    ):
        assert reason in why, reason
    # One name per target in the error log: unmapped and invalid records of a screen under `qmlativ/<screen>`.
    with connect() as con:
        targets = {
            t
            for (t,) in con.execute(
                "select distinct target from ops.error_log where stage = 'validate'"
            ).fetchall()
        }
    assert targets and all(t.startswith("qmlativ/") for t in targets), targets

    # The next night with nothing new reuses the dbt build (no model rebuilt, no test re-run), and the
    # validation and the publish still run.
    code = main(["run", "--districts-file", str(districts_file), "--district", "demo"])
    out = capsys.readouterr().out
    assert code == 0 and "result: OK" in out, out[-4000:]
    assert f"dbt: 0 models and seeds built, 0 kept and tested on new data, {models} reused" in out
    assert "; 0 tests" in out
    assert "validate/qmlativ_writeback:" in out and "publish/qmlativ_writeback" in out
    # New data (here a cutover date moved): the SameGoal rules are tables, so the step builds them again;
    # its views and its seed are kept, and every test runs on the new data.
    moved = yaml.safe_load(districts_file.read_text())
    moved["districts"][0]["samegoal"]["cutover_dates"]["intervention_strategy"] = "2024-01-01"
    moved_file = tmp_path / "districts.yaml"
    moved_file.write_text(yaml.safe_dump(moved))
    code = main(["run", "--districts-file", str(moved_file), "--district", "demo", "--dry-run"])
    out = capsys.readouterr().out
    tables = len(list((PROJECT_ROOT / "dbt_project" / "models" / "intermediate" / "samegoal").glob("*.sql")))
    kept = f"dbt: {tables} models and seeds built, {models - tables} kept and tested on new data, 0 reused"
    assert code == 0 and kept in out, out[-4000:]
    assert "; 0 tests" not in out and ", 0 failed" in out, out[-4000:]
    # The same night again reuses that build; a view dropped by hand then is not reused: it builds again.
    code = main(["run", "--districts-file", str(moved_file), "--district", "demo", "--dry-run"])
    assert code == 0 and f"{models} reused" in capsys.readouterr().out
    with connect() as con:
        con.execute("drop view marts.qmlativ__restraint")
    code = main(["run", "--districts-file", str(moved_file), "--district", "demo", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0 and f"dbt: {models} models and seeds built, 0 kept" in out, out[-4000:]


def test_new_rows_for_views_already_built_run_only_their_tests(
    defs, districts_file, warehouse, capsys, district_inputs, tmp_path
):
    """`filedrop` has every target: its first night builds every dbt step; after one changed OneRoster
    file, only the OneRoster step runs: its tables are built again, its views (they already show the new
    rows) and its seed are kept, and every test of the step runs."""
    inputs = tmp_path / "inputs"
    shutil.copytree(district_inputs, inputs)
    doc = yaml.safe_load(districts_file.read_text())
    filedrop = next(d for d in doc["districts"] if d["id"] == "filedrop")
    filedrop["inputs"] = {key: str(inputs / Path(folder).name) for key, folder in filedrop["inputs"].items()}
    moved = tmp_path / "districts.yaml"
    moved.write_text(yaml.safe_dump(doc))
    run = ["run", "--districts-file", str(moved), "--district", "filedrop", "--dry-run"]
    assert main(run) == 0
    assert ", 0 kept and tested on new data, 0 reused" in capsys.readouterr().out
    with (inputs / "oneroster" / "orgs.csv").open("a") as orgs:
        orgs.write("org-999,,,Test Elementary,school,057999999,org-district\n")
    assert main(run) == 0
    out = capsys.readouterr().out
    roster = len([s for s in SOURCES if s.system in ("powerschool", "oneroster")])
    models = PROJECT_ROOT / "dbt_project" / "models"
    tables = len(list((models / "intermediate" / "oneroster").glob("*.sql")))
    views = roster + len(list((models / "marts" / "oneroster").glob("*.sql"))) + 1  # + the contact roles seed
    kept = f"dbt: {tables} models and seeds built, {views} kept and tested on new data,"
    assert kept in out, out[out.index("dbt: ") :][:300]
    assert "; 0 tests" not in out


def test_summary_and_metadata_carry_no_student_data(defs, districts_file, warehouse, capsys, district_inputs):
    main(["run", "--districts-file", str(districts_file), "--district", "filedrop", "--dry-run"])
    out = capsys.readouterr().out
    assert "[dry run]" in out
    first_student = (district_inputs / "powerschool" / "students.csv").read_text().splitlines()[1].split(",")
    local_id, last_name = first_student[0], first_student[4]
    summary = out[out.index("sg_orchestration summary") :]
    assert local_id not in summary and last_name not in summary


def test_an_unknown_district_is_refused_with_the_configured_ids(districts_file, capsys):
    assert main(["run", "--districts-file", str(districts_file), "--district", "nowhere"]) == 2
    assert "demo" in capsys.readouterr().err


def test_the_sandboxs_indiana_district_publishes_its_accommodations_and_prints_their_counts(
    defs, sandbox, district_inputs, warehouse, capsys, tmp_path
):
    """Issue 8: `make demo` publishes the Indiana accommodations to the emulator and prints their counts.
    The sandbox's second district runs here under a test partition's id, on a sandbox (ODS) of its own."""
    import json
    import re

    from sg_orchestration.sandbox import Sandbox

    as_of = json.loads((district_inputs / "district.json").read_text())["as_of"]
    with Sandbox(district_inputs, credentials=sandbox.credentials, state_dir=tmp_path / "store") as sb:
        path = tmp_path / "districts.yaml"
        sb.write_districts_file(path)
        doc = yaml.safe_load(path.read_text())
        texas, indiana, _oneroster = doc["districts"]
        assert "edfi" not in texas and indiana["state"] == "IN"
        doc["districts"] = [{**indiana, "id": "filedrop"}]
        path.write_text(yaml.safe_dump(doc))
        code = main(["run", "--districts-file", str(path), "--district", "filedrop", "--as-of", as_of])
    out = capsys.readouterr().out
    assert code == 0 and "result: OK" in out, out[-4000:]
    assert "publish/edfi_accommodations        published" in out
    row = re.search(r"^  idoe/studentAssessmentAccommodations +([\d,]+) +0 +0 +0 +0 +0 +0$", out, re.M)
    assert row and int(row[1].replace(",", "")) > 0, out[-4000:]
    why = out[out.index("validate/edfi_accommodations") :]
    for reason in ("no show", "school state exclude", "invalid combination", "not started", "ended"):
        assert re.search(rf"idoe +\d{{4}} +{reason} +\d+", why), reason


def test_a_rules_table_failing_in_a_rebuild_stops_the_writeback_and_builds_again_the_next_night(
    defs, districts_file, warehouse, capsys, tmp_path, monkeypatch
):
    """The `tables` plan (the loads changed, the project did not) with one SameGoal rules table failing
    (here the warehouse refuses its build, as a full disk would): the run fails naming the model, nothing
    that reads the table is reported kept, nothing is published from it, and the next night, once the
    warehouse takes it, builds the tables again instead of reusing a build that never finished."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    run = ["run", "--districts-file", str(districts_file), "--district", "demo", "--dry-run"]
    assert main(run) == 0
    capsys.readouterr()
    moved = yaml.safe_load(districts_file.read_text())
    moved["districts"][0]["samegoal"]["cutover_dates"]["restraint"] = "2024-01-01"
    moved_file = tmp_path / "districts.yaml"
    moved_file.write_text(yaml.safe_dump(moved))
    run = ["run", "--districts-file", str(moved_file), "--district", "demo", "--dry-run"]

    execute = DuckDBConnectionManager.execute

    def refuse_restraint(self, sql, *args, **kwargs):
        if "create" in sql and "int_samegoal__restraint" in sql:
            raise RuntimeError("IO Error: could not write to the database file (no space left on device)")
        return execute(self, sql, *args, **kwargs)

    monkeypatch.setattr(DuckDBConnectionManager, "execute", refuse_restraint)
    code = main(run)
    out = capsys.readouterr().out
    assert code != 0 and "result: OK" not in out, out[-4000:]
    assert "int_samegoal__restraint" in out, out[-4000:]
    # the ten other tables built; nothing that reads them is reported kept while one of them failed
    tables = len(list((PROJECT_ROOT / "dbt_project" / "models" / "intermediate" / "samegoal").glob("*.sql")))
    line = next(line for line in out.splitlines() if line.startswith("dbt:"))
    kept = _writeback_models() - tables - len(SAMEGOAL_SOURCES)  # the staging views and the seed
    assert line.startswith(f"dbt: {tables - 1} models and seeds built, {kept} kept"), line
    assert "  publish/qmlativ_writeback          did not run: " in out, out[-4000:]

    monkeypatch.setattr(DuckDBConnectionManager, "execute", execute)
    code = main(run)
    out = capsys.readouterr().out
    assert code == 0 and "result: OK" in out, out[-4000:]
    # a build that did not finish is not reused: every model of the step is built again
    line = next(line for line in out.splitlines() if line.startswith("dbt:"))
    built = f"dbt: {_writeback_models()} models and seeds built, 0 kept and tested on new data, 0 reused"
    assert line.startswith(built), line
    assert ", 0 failed" in line, line
