"""Issue 6.3-6.5 on the Qmlativ writeback (the sandbox over real HTTP): the mass-delete guard through the
publish asset, an ops.error_log fix that matches the failure's cause, the publish result saying whether it
is complete, and the token request's Basic auth."""

import asyncio
import functools
import warnings

import dagster as dg
import httpx
import pytest
from test_qmlativ_writeback import FORMS, _desired, _writeback, set_faults, void_documents

from sg_orchestration.config import DistrictsFile, PublishGuards
from sg_orchestration.publish import assets as publish_assets
from sg_orchestration.publish import engine
from sg_orchestration.publish.qmlativ import PUBLISH_FIXES, QmlativTokens, publish_writeback
from sg_orchestration.publish.sender import RetryPolicy
from sg_orchestration.warehouse import connect

FORM = {f.table: f for f in FORMS}


@pytest.fixture
def writeback(tmp_path, monkeypatch, sandbox, districts, district_inputs):
    wb = _writeback(tmp_path, monkeypatch, sandbox, districts, district_inputs)
    yield wb
    wb.sandbox.__exit__(None, None, None)


def _materialize(defs, wb, monkeypatch, **tags):
    monkeypatch.setattr(publish_assets, "current_districts", lambda: DistrictsFile(districts=[wb.district]))
    asset = next(
        a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and publish_assets.QMLATIV_KEY in a.keys
    )
    result = dg.materialize([asset], partition_key="demo", tags=tags, raise_on_error=False)
    failures = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    materializations = result.asset_materializations_for_node(asset.node_def.name)
    return result, failures, materializations


def _values(metadata) -> dict:
    return {k: getattr(v, "value", v) for k, v in metadata.items()}


def test_a_screen_whose_plan_deletes_too_many_records_is_refused_while_the_others_publish(
    writeback, defs, monkeypatch
):
    wb = writeback
    publish_writeback(wb.district)
    held = len(_desired(FORM["dyslexia"]))
    many = max(held // 2, 10)
    assert many <= held, "the synthetic district has too few dyslexia documents"
    voided = void_documents(wb, "dyslexia", many)  # e.g. an export that suddenly voids half of a screen
    one = void_documents(wb, "section_504", 1)
    share = round(100 * many / held)

    dry, failures, materializations = _materialize(defs, wb, monkeypatch, **{"sg/dry_run": "true"})
    assert dry.success and not failures  # a dry run still shows the plan
    metadata = _values(materializations[0].metadata)
    assert (metadata["dyslexia/planned_delete"], metadata["dyslexia/refused"]) == (many, many)

    wb.reset_stats()
    result, failures, materializations = _materialize(defs, wb, monkeypatch)
    assert not result.success and not materializations
    [failure] = failures
    data = failure.event_specific_data.user_failure_data
    assert data.description == (
        f"qmlativ/dyslexia: plan deletes {many} of {held} records ({share}%) > 20%; confirm with run tag "
        "sg/confirm_deletes=qmlativ/dyslexia or `sg-orch run --confirm-deletes qmlativ/dyslexia`"
    )
    metadata = _values(data.metadata)
    assert (metadata["dyslexia/refused"], metadata["dyslexia/incomplete"]) == (many, many)
    assert (metadata["dyslexia/deleted"], metadata["section_504/deleted"]) == (0, 1)
    assert (metadata["incomplete"], metadata["complete"]) == (many, False)
    assert all(metadata[f"{f.table}/failed"] == metadata[f"{f.table}/pending"] == 0 for f in FORMS)
    assert wb.writes() == {"DELETE": 1}  # the other screens published, the refused one sent nothing
    stored = {o["SourceDocumentID"] for o in wb.store(FORM["dyslexia"])}
    assert set(voided) <= stored and not set(one) & {
        o["SourceDocumentID"] for o in wb.store(FORM["section_504"])
    }

    result, failures, materializations = _materialize(
        defs, wb, monkeypatch, **{"sg/confirm_deletes": "qmlativ/section_504,qmlativ/dyslexia"}
    )
    assert result.success and not failures
    metadata = _values(materializations[0].metadata)
    assert (metadata["dyslexia/deleted"], metadata["incomplete"], metadata["complete"]) == (many, 0, True)
    assert not set(voided) & {o["SourceDocumentID"] for o in wb.store(FORM["dyslexia"])}


def test_the_delete_guard_follows_the_districts_settings(writeback):
    wb = writeback
    publish_writeback(wb.district)
    void_documents(wb, "dyslexia", 3)
    strict = wb.district.model_copy(
        update={"publish": PublishGuards(max_delete_share=0.01, min_deletes_guarded=2)}
    )
    results = {r.resource: r for r in publish_writeback(strict)}
    assert results["dyslexia"].refusal is not None and results["dyslexia"].counts["deleted"] == 0
    results = {r.resource: r for r in publish_writeback(wb.district)}  # default: fewer than 10 deletes
    assert results["dyslexia"].refusal is None and results["dyslexia"].counts["deleted"] == 3


def _open_fixes(resource: str) -> set[str]:
    with connect() as con:
        rows = con.execute(
            "select distinct fix from ops.error_log where district_id = 'demo' and stage = 'publish' "
            "and resolved_at is null and target = ?",
            [f"qmlativ/{resource}"],
        ).fetchall()
    return {r[0] for r in rows}


def test_the_error_log_fix_matches_the_failure_cause(writeback, monkeypatch):
    wb = writeback
    quick = functools.partial(RetryPolicy, max_attempts=2, backoff_s=0.0, max_backoff_s=0.0)
    monkeypatch.setattr(engine, "RetryPolicy", quick)
    set_faults(wb, error_rate=1.0, statuses=[503])  # Qmlativ down: the run gives up on every record
    results = publish_writeback(wb.district)
    assert sum(r.counts["failed"] for r in results) > 0
    assert _open_fixes("dyslexia") == {PUBLISH_FIXES["transient"]}
    assert "retried automatically on the next run" in PUBLISH_FIXES["transient"]

    # creates applied, answers lost, no attempt left to look them up: pending
    monkeypatch.setattr(engine, "RetryPolicy", functools.partial(quick, max_attempts=1))
    set_faults(wb, drop_after_write_rate=1.0)
    results = publish_writeback(wb.district)
    assert sum(r.counts["pending"] for r in results) == sum(len(_desired(f)) for f in FORMS)
    assert sum(r.incomplete for r in results) == sum(r.counts["pending"] for r in results)
    assert _open_fixes("dyslexia") == {PUBLISH_FIXES["lookup"]}

    set_faults(wb, error_rate=1.0, statuses=[400])  # lookups refused too: still pending
    publish_writeback(wb.district)
    assert _open_fixes("dyslexia") == {PUBLISH_FIXES["lookup"]}

    set_faults(wb)
    results = publish_writeback(wb.district)
    assert sum(r.counts["resolved"] for r in results) > 0 and sum(r.incomplete for r in results) == 0
    assert _open_fixes("dyslexia") == set()


def test_a_refused_record_is_told_to_be_corrected_at_the_source(writeback):
    wb = writeback
    set_faults(wb, error_rate=1.0, statuses=[422])
    publish_writeback(wb.district)
    assert _open_fixes("dyslexia") == {PUBLISH_FIXES["refused"]}
    assert "correct it at the source" in PUBLISH_FIXES["refused"]


def test_the_token_request_uses_basic_auth_without_a_deprecation_warning(sandbox, districts_file):
    from sg_orchestration.sandbox.server import QMLATIV_KEY, QMLATIV_SECRET

    url = sandbox.urls["qmlativ"]
    tokens = QmlativTokens(url, sandbox.credentials[QMLATIV_KEY], sandbox.credentials[QMLATIV_SECRET])
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        token = asyncio.run(tokens.token())
    assert token
    wrong = QmlativTokens(url, sandbox.credentials[QMLATIV_KEY], "not the secret")
    with pytest.raises(PermissionError, match="HTTP 401"):
        asyncio.run(wrong.token())
    assert httpx.get(f"{url}/_sandbox/qmlativ/stats").status_code == 200
