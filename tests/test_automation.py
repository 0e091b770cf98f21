"""Automation: the SameGoal sensor starts a district's run when new complete documents appear."""

import json
import time

import dagster as dg
import httpx
import pytest

from sg_orchestration.catalog import SOURCES_BY_NAME
from sg_orchestration.sandbox import Sandbox


def _tick(defs, cursor):
    sensor = defs.get_sensor_def("samegoal_new_documents")
    with dg.instance_for_test() as instance:
        return sensor.evaluate_tick(
            dg.build_sensor_context(cursor=cursor, instance=instance, definitions=defs)
        )


@pytest.fixture
def own_sandbox(sandbox, districts, district_inputs, tmp_path, monkeypatch):
    """A sandbox of its own, so the documents this test adds stay out of the shared one."""
    from sg_orchestration.automation import samegoal_sensor

    with Sandbox(district_inputs, credentials=sandbox.credentials, state_dir=tmp_path / "store") as own:
        demo = districts.get("demo")
        moved = demo.model_copy(
            update={"samegoal": demo.samegoal.model_copy(update={"base_url": own.urls["samegoal"]})}
        )
        others = [d for d in districts.districts if d.id != "demo"]
        patched = districts.model_copy(update={"districts": [moved, *others]})
        monkeypatch.setattr(samegoal_sensor, "current_districts", lambda: patched)
        yield own


def test_samegoal_sensor_starts_the_districts_run_when_new_complete_documents_appear(defs, own_sandbox):
    sandbox = own_sandbox
    first = _tick(defs, None)
    assert first.run_requests == []  # the first poll only sets the cursor
    cursor = json.loads(first.cursor)
    assert set(cursor) == {"demo"}  # `filedrop` reads files, not the API

    draft = {c: None for c in SOURCES_BY_NAME["samegoal__section_504"].column_names}
    draft.update(document_id="S504-NEW", document_status="draft", samegoal_student_id="SG-X")
    httpx.post(f"{sandbox.urls['samegoal']}/_sandbox/samegoal/section_504", json={"records": [draft]})
    time.sleep(1.1)  # the server's clock has one-second steps; the cursor is inclusive
    assert _tick(defs, first.cursor).run_requests == []  # a draft is not a reason to run

    complete = {**draft, "document_status": "complete", "completed_at": "2099-01-01T00:00:00Z"}
    httpx.post(f"{sandbox.urls['samegoal']}/_sandbox/samegoal/section_504", json={"records": [complete]})
    second = _tick(defs, first.cursor)
    assert [r.partition_key for r in second.run_requests] == ["demo"]
    assert second.run_requests[0].job_name in (None, "nightly")
    # What the nightly of `demo` materializes, as from the CLI and the schedule: not the dbt steps of the
    # Ed-Fi and OneRoster targets it does not have.
    selected = {k.to_user_string() for k in second.run_requests[0].asset_selection}
    assert "marts/qmlativ__dyslexia" in selected and "staging/stg_campus__schools" not in selected


def test_the_nightly_schedule_plans_the_district_as_the_districts_file_says_at_the_tick(
    defs, districts, monkeypatch
):
    """A schedule is made for each district when the code location loads; a district whose targets change
    in districts.yaml afterwards gets the steps of its new targets at the next tick, and a district taken out
    of the file gets no run."""
    from datetime import UTC, datetime

    import sg_orchestration.automation as automation
    from sg_orchestration.automation import nightly_schedule, nightly_selection

    demo = districts.get("demo")
    schedule = nightly_schedule(demo.model_copy(update={"samegoal": None, "qmlativ": None}))
    context = dg.build_schedule_context(
        repository_def=defs.get_repository_def(),
        scheduled_execution_time=datetime(2026, 12, 1, 8, tzinfo=UTC),
    )
    (request,) = schedule.evaluate_tick(context).run_requests
    assert list(request.asset_selection) == nightly_selection(defs.resolve_asset_graph(), demo)
    assert dg.AssetKey(["publish", "qmlativ_writeback"]) in request.asset_selection

    others = districts.model_copy(update={"districts": [d for d in districts.districts if d.id != "demo"]})
    monkeypatch.setattr(automation, "current_districts", lambda: others)
    result = schedule.evaluate_tick(context)
    assert not result.run_requests and "no longer in the districts file" in result.skip_message
