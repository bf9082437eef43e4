"""Schedules fire: the operator on the local control plane, SDK handlers on loopback."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import subprocess
import time
from pathlib import Path

import pytest
from schedulezero_operator.engine.decisions import run_id_for

from .kube import wait_for
from .objects import LATENESS_MS, Objects
from .operator_harness import HandlerProcess, OperatorProcess, ts

pytestmark = pytest.mark.cluster


def note_lateness(rows: list[dict]) -> list[float]:
    lateness = [(r["receivedAt"] - ts(r["scheduledTime"])) * 1000 for r in rows
                if r.get("scheduledTime")]
    LATENESS_MS.extend(lateness)
    return lateness


def test_interval_fires_repeatedly_and_status_advances(objects: Objects,
                                                       handler_proc: HandlerProcess) -> None:
    objects.handler("h", handler_proc.address)
    objects.schedule("beat", handler="h", method="heartbeat", interval="1s")

    status = wait_for("3 successful runs", lambda: (
        s if (s := objects.status("beat")).get("counters", {}).get("succeeded", 0) >= 3
        else None), timeout=30)
    assert status["lastResult"] == "Succeeded"
    assert ts(status["nextRunTime"]) > ts(status["lastScheduleTime"])
    assert status["recentRuns"][0]["endpoint"] == handler_proc.address
    first_next = status["nextRunTime"]
    wait_for("nextRunTime advancing", lambda: objects.status("beat")["nextRunTime"] != first_next)

    rows = handler_proc.executions("heartbeat")
    assert len({r["runId"] for r in rows}) == len(rows), "each run id reaches the handler once"
    slots = sorted(ts(r["scheduledTime"]) for r in rows)
    assert all(b - a == pytest.approx(1.0) for a, b in itertools.pairwise(slots))
    lateness = note_lateness(rows)  # reported, not asserted: speed lives in bench/
    assert min(lateness) >= 0, "never before the scheduled time"
    handler_status = objects.get("h", "handlers")["status"]
    assert handler_status["ready"] == "1/1" and "heartbeat" in handler_status["methods"]


def test_cron_with_seconds_fires_on_the_second(objects: Objects,
                                               handler_proc: HandlerProcess) -> None:
    objects.handler("h", handler_proc.address)
    objects.schedule("cron", handler="h", method="heartbeat", schedule="*/3 * * * * *")
    rows = wait_for("2 cron runs", lambda: (
        r if len(r := handler_proc.executions("heartbeat")) >= 2 else None), timeout=20)
    for r in rows:
        scheduled = ts(r["scheduledTime"])
        assert scheduled % 3 == 0, "6 fields: the first field is seconds"
        assert r["receivedAt"] >= scheduled, "never early"
    note_lateness(rows)


def test_at_fires_exactly_once(objects: Objects, handler_proc: HandlerProcess) -> None:
    objects.handler("h", handler_proc.address)
    when = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=3)
    objects.schedule("once", handler="h", method="heartbeat",
                     at=when.strftime("%Y-%m-%dT%H:%M:%SZ"))
    status = wait_for("the one run", lambda: (
        s if (s := objects.status("once")).get("lastResult") == "Succeeded" else None),
        timeout=20)
    time.sleep(2)
    assert len(handler_proc.executions("heartbeat")) == 1
    status = objects.status("once")
    assert status.get("nextRunTime") is None
    assert objects.condition("once", "Ready")["reason"] == "NoMoreRuns"


def test_run_now_fires_once_per_new_value_even_when_suspended(
        objects: Objects, handler_proc: HandlerProcess) -> None:
    objects.handler("h", handler_proc.address)
    objects.schedule("manual", handler="h", method="heartbeat", interval="1h", suspend=True)
    annotate = ["kubectl", "annotate", "--overwrite", "-n", objects.ns, "schedule/manual"]
    subprocess.run([*annotate, "schedulezero.io/run-now=first"], check=True, capture_output=True)
    wait_for("run-now 1", lambda: len(handler_proc.executions("heartbeat")) == 1)
    # Re-applying the same value (what a GitOps sync does) runs nothing.
    subprocess.run([*annotate, "schedulezero.io/run-now=first"], check=True, capture_output=True)
    objects.patch("manual", {"metadata": {"labels": {"touched": "yes"}}})
    time.sleep(2)
    assert len(handler_proc.executions("heartbeat")) == 1
    subprocess.run([*annotate, "schedulezero.io/run-now=second"], check=True,
                   capture_output=True)
    wait_for("run-now 2", lambda: len(handler_proc.executions("heartbeat")) == 2)
    status = wait_for("status", lambda: (
        s if (s := objects.status("manual")).get("lastRunNow") == "second" and
        s["counters"]["succeeded"] == 2 else None))
    assert status.get("nextRunTime") is None, "suspended: no scheduled run"
    assert len({r["runId"] for r in handler_proc.executions("heartbeat")}) == 2


def test_suspend_stops_and_resume_restarts(objects: Objects,
                                           handler_proc: HandlerProcess) -> None:
    objects.handler("h", handler_proc.address)
    objects.schedule("pausable", handler="h", method="heartbeat", interval="1s")
    wait_for("2 runs", lambda: len(handler_proc.executions()) >= 2)
    objects.patch("pausable", {"spec": {"suspend": True}})
    wait_for("Suspended condition", lambda: (objects.condition("pausable", "Suspended") or {})
             .get("status") == "True")
    time.sleep(0.5)
    count = len(handler_proc.executions())
    time.sleep(3)
    assert len(handler_proc.executions()) == count, "no runs while suspended"
    objects.patch("pausable", {"spec": {"suspend": False}})
    wait_for("runs again", lambda: len(handler_proc.executions()) >= count + 2)


def test_forbid_skips_overlapping_slots(objects: Objects, handler_proc: HandlerProcess) -> None:
    objects.handler("h", handler_proc.address)
    objects.schedule("slow", handler="h", method="sleep", params={"seconds": 2.5},
                     interval="1s", concurrencyPolicy="Forbid")
    status = wait_for("a Skipped run", lambda: (
        s if (s := objects.status("slow")).get("counters", {}).get("skipped", 0) >= 2 and
        s["counters"]["succeeded"] >= 1 else None), timeout=30)
    assert any(r["outcome"] == "Skipped" and "Forbid" in r["message"]
               for r in status["recentRuns"])
    starts = sorted((r["receivedAt"], r["receivedAt"] + 2.5)
                    for r in handler_proc.executions("sleep.start"))
    for (_, end), (start, _) in itertools.pairwise(starts):
        assert start >= end - 0.05, "Forbid: runs never overlap"


def test_flaky_method_succeeds_after_retries(objects: Objects,
                                             handler_proc: HandlerProcess) -> None:
    objects.handler("h", handler_proc.address)
    objects.create("Schedule", "flaky", {
        "handler": "h", "method": "flaky", "params": {"failures": 2}, "interval": "1h",
        "suspend": True, "retry": {"maxAttempts": 4, "backoff": {"initial": "200ms"}}},
        annotations={"schedulezero.io/run-now": "go"})
    status = wait_for("Succeeded", lambda: (
        s if (s := objects.status("flaky")).get("lastResult") == "Succeeded" else None),
        timeout=30)
    run = status["recentRuns"][0]
    assert run["outcome"] == "Succeeded" and run["attempts"] == 3
    assert status["counters"]["retried"] == 2
    attempts = [r["attempt"] for r in handler_proc.executions("flaky")]
    assert attempts == [1, 2, 3]


def test_always_failing_method_fails_and_pauses(objects: Objects,
                                                handler_proc: HandlerProcess) -> None:
    objects.handler("h", handler_proc.address)
    objects.schedule("broken", handler="h", method="fail", interval="1s",
                     retry={"maxAttempts": 2, "backoff": {"initial": "100ms"}},
                     pauseAfterFailures=2)
    wait_for("paused", lambda: (objects.condition("broken", "Ready") or {}).get("reason")
             == "PausedAfterFailures", timeout=30)
    status = objects.status("broken")
    assert status["counters"]["failed"] == 2
    assert status["recentRuns"][0]["outcome"] == "Failed"
    assert "RuntimeError: always fails" in status["recentRuns"][0]["message"]
    assert status.get("nextRunTime") is None
    calls = len(handler_proc.executions("fail"))
    assert calls == 4, "2 runs x 2 attempts"
    time.sleep(2.5)
    assert len(handler_proc.executions("fail")) == calls, "no runs while paused"
    reasons = {e.reason for e in objects.events("broken")}
    assert {"RunFailed", "PausedAfterFailures"} <= reasons


def test_signed_requests_use_the_secret_the_handler_names(objects: Objects,
                                                          tmp_path: Path) -> None:
    """The operator reads the Handler's Secret (its own API client) and signs with it:
    the handler, which refuses unsigned requests, runs the signed ones."""
    objects.core.create_namespaced_secret(objects.ns, {
        "metadata": {"name": "signing"}, "stringData": {"secret": "s3cret-for-e2e"}})
    signed = HandlerProcess(tmp_path, secret="s3cret-for-e2e")
    other = HandlerProcess(tmp_path, secret="s3cret-for-e2e")  # its Handler names no Secret
    signed.start()
    other.start()
    try:
        objects.handler("signed", signed.address, auth={"secretRef": {"name": "signing"}})
        objects.handler("unsigned", other.address)
        objects.schedule("good", handler="signed", method="heartbeat", interval="1s")
        objects.schedule("bad", handler="unsigned", method="heartbeat", interval="1s",
                         retry={"maxAttempts": 1})
        wait_for("2 signed runs", lambda: (
            s if (s := objects.status("good")).get("counters", {}).get("succeeded", 0) >= 2
            else None), timeout=30)
        # The other handler refuses the unsigned describe probe: out of the Ready set.
        wait_for("the unsigned Handler out of the Ready set", lambda: "not signed" in
                 json.dumps(objects.get("unsigned", "handlers").get("status")), timeout=30)
        assert not (objects.status("bad").get("counters") or {}).get("succeeded")
        assert signed.executions("heartbeat") and not other.executions("heartbeat")
    finally:
        signed.stop()
        other.stop()


def test_operator_restart_catches_up_without_duplicates(
        objects: Objects, handler_proc: HandlerProcess, operator: OperatorProcess) -> None:
    objects.handler("h", handler_proc.address)
    objects.schedule("steady", handler="h", method="heartbeat", interval="1s",
                     catchUp={"policy": "All", "maxRuns": 20})
    wait_for("2 runs", lambda: len(handler_proc.executions()) >= 2)
    operator.stop()
    time.sleep(4)
    down_count = len(handler_proc.executions())
    operator.start()
    wait_for("catch-up + new runs", lambda: len(handler_proc.executions()) >= down_count + 6,
             timeout=45)
    rows = handler_proc.executions()
    run_ids = [r["runId"] for r in rows]
    assert len(run_ids) == len(set(run_ids)), "no run id reached the handler twice"
    slots = sorted(ts(r["scheduledTime"]) for r in rows)
    assert slots == [slots[0] + i for i in range(len(slots))], \
        "every 1s slot ran exactly once, the ones during the downtime late (policy All)"


def test_invalid_schedules_are_reported_and_valid_ones_keep_firing(
        objects: Objects, handler_proc: HandlerProcess, kubeconfig: str) -> None:
    objects.handler("h", handler_proc.address)
    objects.schedule("good", handler="h", method="heartbeat", interval="1s")
    objects.schedule("bad-cron", handler="h", method="heartbeat", schedule="61 * * * *")
    objects.schedule("bad-tz", handler="h", method="heartbeat", schedule="* * * * *",
                     timeZone="Mars/Olympus_Mons")
    objects.schedule("no-handler", handler="ghost", method="heartbeat", interval="1h")
    two = subprocess.run(
        ["kubectl", "--kubeconfig", kubeconfig, "apply", "-n", objects.ns, "-f", "-"],
        input="apiVersion: schedulezero.io/v1alpha1\nkind: Schedule\nmetadata: {name: two}\n"
              "spec: {handler: h, method: m, schedule: '* * * * *', interval: 5s}\n",
        capture_output=True, text=True)
    assert two.returncode != 0
    assert "exactly one of schedule, interval or at must be set" in two.stderr

    for name, reason, needle in [
        ("bad-cron", "InvalidSchedule", "invalid cron expression '61 * * * *'"),
        ("bad-tz", "InvalidSchedule", "unknown time zone 'Mars/Olympus_Mons'"),
    ]:
        cond = wait_for(f"{name} condition", lambda n=name: objects.condition(n, "Ready"))
        assert cond["status"] == "False" and cond["reason"] == reason
        assert needle in cond["message"]
        wait_for(f"{name} event", lambda n=name, r=reason: r in {
            e.reason for e in objects.events(n)})
    cond = wait_for("handler condition", lambda: objects.condition("no-handler", "HandlerReady"))
    assert cond["reason"] == "HandlerNotFound" and "'ghost' not found" in cond["message"]
    wait_for("HandlerNotFound event", lambda: "HandlerNotFound" in {
        e.reason for e in objects.events("no-handler")})
    before = objects.status("good")["counters"]["succeeded"]
    wait_for("the valid schedule keeps firing", lambda: (
        objects.status("good")["counters"]["succeeded"] >= before + 2))
    ran = {r["schedule"] for r in handler_proc.executions("heartbeat")}
    assert ran == {f"{objects.ns}/good"}, "only the valid Schedule ran anything"


def test_the_slot_claim_survives_a_round_trip_through_the_api_server(
        objects: Objects, handler_proc: HandlerProcess) -> None:
    """Every claim field the engine writes comes back (none pruned by the CRD schema)."""
    objects.handler("h", handler_proc.address)
    objects.schedule("claimed", handler="h", method="heartbeat", interval="2s")
    claim = wait_for("a claim in status", lambda: objects.status("claimed").get("claim"))
    assert set(claim) == {"holder", "runId", "scheduledTime", "until", "expires"}, claim
    assert ts(claim["scheduledTime"]) <= ts(claim["until"]) < ts(claim["expires"])
    assert ts(claim["until"]) - ts(claim["scheduledTime"]) >= 2, "the horizon covers slots"
    uid = objects.get("claimed")["metadata"]["uid"]
    slot = dt.datetime.fromisoformat(claim["scheduledTime"].replace("Z", "+00:00"))
    assert claim["runId"] == run_id_for(uid, slot), "the claim names the slot's run id"
