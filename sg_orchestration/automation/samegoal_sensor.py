"""Starts a district's nightly job as soon as new complete SameGoal documents appear, without waiting for
the night: it polls the SameGoal export with its own cursor per district (the server's clock)."""

import json

import dagster as dg

from sg_orchestration.automation.selection import nightly_selection
from sg_orchestration.catalog import SAMEGOAL_FORMS, SAMEGOAL_SOURCES
from sg_orchestration.config import District, current_districts, secret
from sg_orchestration.ingest.apis import SameGoalClient, SourceApiError
from sg_orchestration.ingest.pipeline import transport

POLL_PAGE = 200


def polled(district: District) -> bool:
    return transport(SAMEGOAL_SOURCES[0], district) == "api"


def new_complete_documents(district: District, since: str | None) -> tuple[bool, str]:
    """Whether any form has a complete document changed since `since`, and the next `since`."""
    cfg = district.samegoal
    client_id = secret(cfg.client_id_env, purpose="SameGoal client id")
    client_secret = secret(cfg.client_secret_env, purpose="SameGoal client secret")
    now = since
    with SameGoalClient(cfg.base_url, client_id, client_secret) as client:
        for form in SAMEGOAL_FORMS:
            found, now = client.new_complete_documents(form, since, POLL_PAGE)
            if found:
                return True, now
    return False, now


def build_samegoal_sensor(job) -> dg.SensorDefinition:
    @dg.sensor(
        name="samegoal_new_documents",
        job=job,
        minimum_interval_seconds=300,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Polls each district's SameGoal export and starts its run when new complete documents appear.",
    )
    def samegoal_new_documents(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        cursor: dict[str, str] = json.loads(context.cursor or "{}")
        requests = []
        for district in filter(polled, current_districts().districts):
            since = cursor.get(district.id)
            try:
                found, now = new_complete_documents(district, since)
            except (SourceApiError, OSError) as exc:  # one district's outage never stops the others
                context.log.warning(f"{district.id}: SameGoal poll failed: {exc}")
                continue
            cursor[district.id] = now
            # The first poll only sets the cursor: what existed before is the nightly run's to send.
            if since and found:
                requests.append(
                    dg.RunRequest(
                        partition_key=district.id,
                        run_key=f"samegoal:{district.id}:{now}",
                        tags={"sg/trigger": "samegoal_new_documents"},
                        asset_selection=nightly_selection(context.repository_def.asset_graph, district),
                    )
                )
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor, sort_keys=True))

    return samegoal_new_documents
