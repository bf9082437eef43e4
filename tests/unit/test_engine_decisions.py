from __future__ import annotations

import datetime as dt

import pytest
from schedulezero_operator.api.models import RunRecord
from schedulezero_operator.engine.decisions import (
    after_attempt,
    on_slot_due,
    run_id_for,
    run_now_id,
    should_pause,
)
from schedulezero_operator.engine.status import trim_history, truncate_result

SLOT = dt.datetime(2026, 5, 19, 10, 0, 0, 250000, tzinfo=dt.UTC)


def test_run_ids_are_deterministic_per_slot() -> None:
    assert run_id_for("0123456789ab", SLOT) == "01234567-20260519T100000250Z"
    assert run_id_for("0123456789ab", SLOT) == run_id_for("0123456789ab", SLOT)
    assert run_id_for("0123456789ab", SLOT + dt.timedelta(seconds=1)) != run_id_for(
        "0123456789ab", SLOT)
    assert run_now_id("uid", "a") == run_now_id("uid", "a") != run_now_id("uid", "b")


@pytest.mark.parametrize(("policy", "active", "action"), [
    ("Allow", 0, "fire"), ("Allow", 3, "fire"), ("Forbid", 0, "fire"), ("Forbid", 1, "skip"),
    ("Replace", 1, "replace"), ("BufferOne", 1, "buffer"), ("BufferOne", 0, "fire"),
])
def test_concurrency_policy(policy: str, active: int, action: str) -> None:
    assert on_slot_due(policy, active) == action


@pytest.mark.parametrize(("kw", "retry", "outcome"), [
    ({"ok": True, "retryable": False, "error_type": None, "attempt": 1}, False, "Succeeded"),
    ({"ok": False, "retryable": True, "error_type": "HandlerError", "attempt": 1}, True, None),
    ({"ok": False, "retryable": True, "error_type": "HandlerError", "attempt": 3}, False,
     "Failed"),
    ({"ok": False, "retryable": True, "error_type": "Timeout", "attempt": 3}, False,
     "TimedOut"),
    ({"ok": False, "retryable": False, "error_type": "UnknownMethod", "attempt": 1}, False,
     "Failed"),
    ({"ok": False, "retryable": True, "error_type": "Cancelled", "attempt": 1,
      "cancelled": True}, False, "Cancelled"),
])
def test_after_attempt(kw: dict, retry: bool, outcome: str | None) -> None:
    verdict = after_attempt(max_attempts=3, **kw)
    assert (verdict.retry, verdict.outcome) == (retry, outcome)


def test_history_limits_per_outcome() -> None:
    runs = [RunRecord(run_id=str(i), scheduled_time="t", outcome=o) for i, o in enumerate(
        ["Succeeded", "Failed", "Succeeded", "Missed", "Succeeded", "Failed"])]
    kept = trim_history(runs, successful_limit=2, failed_limit=1)
    assert [r.outcome for r in kept] == ["Succeeded", "Failed", "Succeeded"]


def test_result_truncation_and_pause() -> None:
    assert truncate_result({"a": 1}) == '{"a":1}'
    assert len(truncate_result("x" * 5000) or "") == 1024
    assert truncate_result(None) is None
    assert should_pause(3, 3) and not should_pause(2, 3) and not should_pause(99, None)


def test_api_errors_read_as_what_the_api_server_said() -> None:
    from schedulezero_operator.engine.problems import api_error_text

    class ApiError(Exception):
        status, reason = 422, "Unprocessable Entity"
        body = '{"message": "spec.replicas: Invalid value"}'

    assert api_error_text(ApiError()) == (
        "the API server answered 422 Unprocessable Entity: spec.replicas: Invalid value")
    ApiError.body = "not json"
    assert api_error_text(ApiError()) == "the API server answered 422 Unprocessable Entity"
    assert api_error_text(KeyError("x")) == "operator error (KeyError); see the operator log"
