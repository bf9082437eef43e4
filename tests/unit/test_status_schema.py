"""The status the engine builds is exactly what the CRD schema stores: nothing pruned.

A field missing from the schema is silently dropped by the API server (that is how
``claim.until`` got lost once), so a FULL status, every optional field set, is
built from the typed models and walked against the generated openAPIV3Schema.
"""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

from schedulezero_operator.api.models import (
    ActiveRun,
    Claim,
    Condition,
    Counters,
    HandlerStatus,
    RegisteredHandler,
    RunRecord,
    ScheduleStatus,
)
from schedulezero_operator.engine import status
from schedulezero_operator.engine.status import Outcome
from schedulezero_operator.engine.times import iso

from ..schema import prune, status_schema, violations

NOW = dt.datetime(2026, 5, 19, 10, 0, 0, 250000, tzinfo=dt.UTC)
T = iso(NOW)


def full_schedule_status() -> ScheduleStatus:
    every_outcome = [status.run_record(
        run_id=f"r-{o.value}", slot=NOW, fire_at=NOW, start=NOW, finish=NOW, outcome=o,
        attempts=2, endpoint="pod-1", message="HandlerError: boom", result={"ok": [1, 2]})
        for o in Outcome]
    return ScheduleStatus(
        conditions=[Condition(type="Ready", status="True", reason="Scheduled",
                              message="next run at x", last_transition_time=T,
                              observed_generation=3)],
        observed_generation=3, next_run_time=T, last_schedule_time=T,
        last_successful_time=T, last_failure_time=T,
        active=[ActiveRun(run_id="r-1", scheduled_time=T, start_time=T, attempt=2,
                          endpoint="pod-1")],
        recent_runs=every_outcome,
        counters=Counters(runs=1, succeeded=2, failed=3, retried=4, skipped=5, missed=6),
        claim=Claim(holder="op-a", run_id="r-2", scheduled_time=T, until=T, expires=T),
        last_run_now="now-1", consecutive_failures=2, last_result="Failed",
        trigger="every 1s")


def every_field_set(doc: dict, model: type) -> None:
    missing = [f.alias for f in model.model_fields.values() if f.alias not in doc]
    assert not missing, f"the test status leaves out {missing}"


def test_a_full_schedule_status_survives_the_api_server_unchanged() -> None:
    doc = status.document(full_schedule_status())
    every_field_set(doc, ScheduleStatus)
    every_field_set(doc["recentRuns"][0], RunRecord)
    every_field_set(doc["claim"], Claim)
    every_field_set(doc["active"][0], ActiveRun)
    schema = status_schema("schedules")
    assert violations(doc, schema) == []
    assert prune(doc, schema) == doc
    assert doc["claim"]["until"] == T


def test_a_full_handler_status_survives_the_api_server_unchanged() -> None:
    view = SimpleNamespace(
        invalid=None, source="template", known_endpoints=["a", "b"], methods=["m"],
        deployment="d", desired=3, replicas=2, pod_count=2, workload_error=None,
        last_scale_time=NOW, ready=["pod-1"], shown_levels=(4, 5), down={},
        probe_verb="ping", registered=[RegisteredHandler(
            endpoint="10.0.0.1:4244", handler_id="ding-aling", methods=["ping", "chime"],
            registered_time=T, last_heartbeat=T, status="offline")])
    model = status.handler_status(view, now=NOW, previous=None)  # type: ignore[arg-type]
    model.observed_generation = 2
    doc = status.document(model)
    every_field_set(doc, HandlerStatus)
    every_field_set(doc["registered"][0], RegisteredHandler)
    schema = status_schema("handlers")
    assert violations(doc, schema) == []
    assert prune(doc, schema) == doc


def test_the_checker_catches_what_the_api_server_would_drop() -> None:
    schema = status_schema("schedules")
    bad = {"claim": {"holder": "a", "runId": "r", "scheduledTime": T, "expires": T,
                     "bogus": 1}, "counters": {"runs": "many"}, "lastResult": None,
           "recentRuns": [{"runId": "r", "scheduledTime": T, "outcome": "Exploded"}]}
    found = violations(bad, schema)
    assert any("claim.bogus" in f for f in found)
    assert any("counters.runs" in f for f in found)
    assert any("lastResult" in f and "null" in f for f in found)
    assert any("Exploded" in f for f in found)
    assert prune(bad, schema)["claim"] == {k: v for k, v in bad["claim"].items()
                                           if k != "bogus"}


def test_merge_patch_nulls_exactly_the_fields_left_out() -> None:
    doc = status.document(ScheduleStatus(observed_generation=1))
    patch = status.merge_patch(doc, ScheduleStatus)
    assert patch["claim"] is None and patch["nextRunTime"] is None
    assert patch["observedGeneration"] == 1 and patch["counters"]["runs"] == 0
    assert set(patch) == {f.alias for f in ScheduleStatus.model_fields.values()}


def test_outcomes_match_the_model_and_count_where_they_should() -> None:
    from typing import get_args

    assert {o.value for o in Outcome} == set(get_args(RunRecord.model_fields[
        "outcome"].annotation))
    record = ScheduleStatus()
    for o in Outcome:
        status.record_run(record, status.run_record(
            run_id=o.value, slot=NOW, fire_at=NOW, start=None, finish=NOW, outcome=o,
            attempts=1, endpoint=None), successful_limit=5, failed_limit=5)
    assert record.counters == Counters(runs=4, succeeded=1, failed=3, retried=0, skipped=1,
                                       missed=1)
    assert record.consecutive_failures == 2, "Failed and TimedOut; Cancelled does not count"
    assert record.last_result == "Cancelled"


def test_an_unreadable_stored_status_counts_as_empty() -> None:
    assert status.load(ScheduleStatus, {"counters": {"runs": "many"}}) == ScheduleStatus()
    assert status.truncate_result("x" * 5000) is not None
    assert len(status.truncate_result("x" * 5000) or "") == status.RESULT_LIMIT
