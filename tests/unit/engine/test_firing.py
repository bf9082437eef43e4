"""The run state machine on fakes: firing, policies, run-now, retries, suspend, pause."""

from __future__ import annotations

import asyncio
import itertools
import random
import sys

import pytest
from schedulezero_operator.timing import backoff_delay

from ...fakes import HANG, OK, FakeKube, fail, slow, until, virtual_time
from .harness import Operator, handler, schedule

RUN_NOW = "schedulezero.io/run-now"


def outcomes(kube: FakeKube, name: str) -> list[str]:
    return [r["outcome"] for r in kube.status(name).get("recentRuns") or []]


@virtual_time
async def test_each_slot_fires_once_on_time_and_is_recorded() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "beat", interval="1s", params={"x": 1})
    async with Operator(kube) as op:
        await asyncio.sleep(5.5)
    calls = op.dispatcher.runs("heartbeat")
    assert [c.scheduled_time for c in calls] == [
        f"2026-05-19T10:00:0{i}Z" for i in range(1, 6)]
    assert [round(c.at, 6) for c in calls] == [1.0, 2.0, 3.0, 4.0, 5.0], "on the slot, not after"
    assert len({c.run_id for c in calls}) == 5 and calls[0].params == {"x": 1}
    assert calls[0].schedule == "default/beat"
    st = kube.status("beat")
    assert st["counters"] == {"runs": 5, "succeeded": 5, "failed": 0, "retried": 0,
                              "skipped": 0, "missed": 0}
    assert st["lastResult"] == "Succeeded" and st["trigger"] == "every 1s"
    assert st["nextRunTime"] == "2026-05-19T10:00:06Z"
    assert st["recentRuns"][0]["endpoint"] == "10.0.0.1:4244"
    assert st["recentRuns"][0]["result"] == '{"done":true}'
    claim = st["claim"]
    assert claim["holder"] == "op-a" and claim["until"] > st["nextRunTime"], \
        "claim.until survives the API server's pruning"
    assert kube.condition("beat", "Ready")["reason"] == "Scheduled"


@virtual_time
async def test_same_instant_burst_dispatches_before_any_next_slot_math(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """200 Schedules due at one instant: every dispatch precedes every next-slot lookup."""
    n = 200
    kube = FakeKube()
    handler(kube, concurrency=1000)
    for i in range(n):
        schedule(kube, f"s{i:03d}", schedule="*/10 * * * * *")
    op = Operator(kube)
    op.dispatcher.default = slow(0.05)  # a handler answers later, as over a network
    log: list[str] = []
    execute = op.dispatcher.execute

    async def recording_execute(*args, **kwargs):  # type: ignore[no-untyped-def]
        log.append("dispatch")
        return await execute(*args, **kwargs)

    monkeypatch.setattr(op.dispatcher, "execute", recording_execute)
    for name, module in list(sys.modules.items()):
        if name.startswith("schedulezero_operator.engine.") and hasattr(module, "next_fire"):
            real = module.next_fire

            def counting(*args, _real=real, **kwargs):  # type: ignore[no-untyped-def]
                log.append("next_fire")
                return _real(*args, **kwargs)

            monkeypatch.setattr(module, "next_fire", counting)
    async with op:
        await asyncio.sleep(9.9)  # every claim of the 10 s slot has landed
        log.clear()
        await asyncio.sleep(0.2)
    dispatches = [i for i, e in enumerate(log) if e == "dispatch"]
    assert len(dispatches) == n
    assert "next_fire" in log, "the next slots were computed (afterwards)"
    assert max(dispatches) < log.index("next_fire")
    calls = op.dispatcher.calls
    assert {round(c.at, 6) for c in calls} == {10.0}, \
        "all dispatched at the slot's (virtual) instant"
    # How fast in real time is a benchmark's question (bench/firing.py --mix burst),
    # not a unit test's: no wall-clock bound here.


@virtual_time
async def test_forbid_skips_slots_while_a_run_is_active() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "slow", interval="1s", concurrencyPolicy="Forbid")
    op = Operator(kube)
    op.dispatcher.default = slow(2.5)
    async with op:
        await asyncio.sleep(6.8)
    starts = [round(c.at, 6) for c in op.dispatcher.calls]
    assert starts == [1.0, 4.0], "slots 2 and 3 skipped, 5 and 6 too"
    for a, b in itertools.pairwise(starts):
        assert b >= a + 2.5
    st = kube.status("slow")
    assert st["counters"]["skipped"] == 4
    skipped = [r for r in st["recentRuns"] if r["outcome"] == "Skipped"]
    assert skipped and all("Forbid" in r["message"] for r in skipped)


@virtual_time
async def test_replace_cancels_the_active_run() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "rep", interval="2s", concurrencyPolicy="Replace")
    op = Operator(kube)
    op.dispatcher.on("*", slow(10), OK)
    async with op:
        await asyncio.sleep(4.5)
    first, second = op.dispatcher.calls[:2]
    assert (first.at, second.at) == (2.0, 4.0)
    assert op.dispatcher.cancelled == [(str(first.endpoint), first.run_id)], \
        "the handler is told to stop the replaced run"
    runs = {r["runId"]: r for r in kube.status("rep")["recentRuns"]}
    assert runs[first.run_id]["outcome"] == "Cancelled"
    assert "Replace" in runs[first.run_id]["message"]
    assert runs[second.run_id]["outcome"] == "Succeeded"


@virtual_time
async def test_buffer_one_keeps_the_newest_waiting_slot() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "buf", interval="1s", concurrencyPolicy="BufferOne")
    op = Operator(kube)
    op.dispatcher.on("*", slow(2.5))
    async with op:
        await asyncio.sleep(4.0)
    calls = op.dispatcher.calls
    assert [round(c.at, 6) for c in calls] == [1.0, 3.5], \
        "the buffered run starts when the first ends"
    assert calls[1].scheduled_time == "2026-05-19T10:00:03Z", "slot 3 replaced slot 2"
    st = kube.status("buf")
    assert [r["scheduledTime"][-3:] for r in st["recentRuns"] if r["outcome"] == "Skipped"] \
        == ["02Z"]
    assert "BufferOne" in st["recentRuns"][-1]["message"] or any(
        "BufferOne" in r["message"] for r in st["recentRuns"])


@virtual_time
async def test_allow_runs_overlap() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "par", interval="1s", concurrencyPolicy="Allow")
    op = Operator(kube)
    op.dispatcher.default = slow(2.5)
    async with op:
        await asyncio.sleep(3.2)
        assert len(op.engine.schedules[("default", "par")].s.active) == 3
    assert [round(c.at, 6) for c in op.dispatcher.calls] == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("policy", ["Allow", "Forbid", "Replace", "BufferOne"])
@virtual_time
async def test_run_now_during_a_running_run_always_runs(policy: str) -> None:
    """Run-now is an explicit request: it runs at once whatever the policy (as
    ``kubectl create job --from=cronjob`` does); the policy governs scheduled slots."""
    kube = FakeKube()
    handler(kube)
    schedule(kube, "manual", interval="1h", concurrencyPolicy=policy,
             annotations={RUN_NOW: "one"})
    op = Operator(kube)
    op.dispatcher.default = slow(10)
    async with op:
        await until("first run", lambda: op.dispatcher.calls)
        kube.update("schedules", "manual", annotations={RUN_NOW: "two"})
        await until("second run", lambda: len(op.dispatcher.calls) == 2)
        assert op.dispatcher.calls[1].at - op.dispatcher.calls[0].at < 0.1
        assert not op.dispatcher.cancelled
        kube.update("schedules", "manual", annotations={RUN_NOW: "two"})  # a GitOps re-sync
        await asyncio.sleep(12)
    assert len(op.dispatcher.calls) == 2
    st = kube.status("manual")
    assert st["lastRunNow"] == "two" and st["counters"]["succeeded"] == 2


@virtual_time
async def test_run_now_works_while_suspended_and_is_not_scheduled() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "manual", interval="1s", suspend=True, annotations={RUN_NOW: "a"})
    async with Operator(kube) as op:
        await asyncio.sleep(3)
    assert len(op.dispatcher.calls) == 1 and "-now-" in op.dispatcher.calls[0].run_id
    st = kube.status("manual")
    assert "nextRunTime" not in st and "claim" not in st
    assert kube.condition("manual", "Ready")["reason"] == "Suspended"


@virtual_time
async def test_retry_backoff_follows_backoff_delay_with_the_seeded_rng() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "flaky", interval="1h", suspend=True, annotations={RUN_NOW: "go"},
             retry={"maxAttempts": 4, "backoff": {"initial": "1s", "max": "5s",
                                                  "multiplier": 3}, "jitter": 0.5})
    op = Operator(kube, seed=42)
    op.dispatcher.on("*", fail(), fail(), fail())
    async with op:
        await until("success", lambda: kube.status("flaky").get("lastResult"))
    rng = random.Random(42)
    expected = [backoff_delay(a, initial=1.0, maximum=5.0, multiplier=3.0, jitter=0.5,
                              random_fraction=rng.random()) for a in (1, 2, 3)]
    calls = op.dispatcher.calls
    assert [c.attempt for c in calls] == [1, 2, 3, 4]
    assert len({c.run_id for c in calls}) == 1, "one run id across attempts"
    gaps = [b.at - a.at for a, b in itertools.pairwise(calls)]
    assert gaps == pytest.approx(expected)
    st = kube.status("flaky")
    assert st["recentRuns"][0]["attempts"] == 4 and st["counters"]["retried"] == 3
    assert st["recentRuns"][0]["outcome"] == "Succeeded"


@virtual_time
async def test_attempt_timeout_is_retried_on_another_endpoint() -> None:
    kube = FakeKube()
    handler(kube, endpoints=["10.0.0.1:4244", "10.0.0.2:4244"])
    schedule(kube, "t", interval="1h", suspend=True, annotations={RUN_NOW: "go"},
             timeoutSeconds=2, retry={"maxAttempts": 3, "backoff": {"initial": "100ms"}})
    op = Operator(kube)
    op.dispatcher.on("*", HANG)
    async with op:
        await until("handler probed", lambda: kube.status("h", "handlers").get("ready"))
        await until("outcome", lambda: kube.status("t").get("lastResult"))
    first, second = op.dispatcher.calls
    assert second.at - first.at >= 2.0, "after the attempt's timeout"
    assert first.endpoint != second.endpoint
    run = kube.status("t")["recentRuns"][0]
    assert (run["outcome"], run["attempts"], run["endpoint"]) == (
        "Succeeded", 2, str(second.endpoint))


@virtual_time
async def test_every_attempt_timing_out_ends_timed_out() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "t", interval="1h", suspend=True, annotations={RUN_NOW: "go"},
             timeoutSeconds=1, retry={"maxAttempts": 2, "backoff": {"initial": "100ms"}})
    op = Operator(kube)
    op.dispatcher.default = HANG
    async with op:
        await until("outcome", lambda: kube.status("t").get("lastResult"))
    run = kube.status("t")["recentRuns"][0]
    assert (run["outcome"], run["attempts"]) == ("TimedOut", 2)
    assert "Timeout" in run["message"] and "RunTimedOut" in kube.reasons("t")


@virtual_time
async def test_suspend_stops_firing_and_resume_restarts() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "p", interval="1s")
    async with Operator(kube) as op:
        await asyncio.sleep(2.5)
        assert len(op.dispatcher.calls) == 2
        kube.update("schedules", "p", spec={"suspend": True})
        await asyncio.sleep(3)
        assert len(op.dispatcher.calls) == 2
        st = kube.status("p")
        assert "nextRunTime" not in st and "claim" not in st
        assert kube.condition("p", "Suspended")["status"] == "True"
        assert kube.condition("p", "Ready")["reason"] == "Suspended"
        kube.update("schedules", "p", spec={"suspend": False})
        await asyncio.sleep(2.4)
    assert len(op.dispatcher.calls) == 4, "no catch-up of the suspended time"
    assert kube.condition("p", "Suspended")["status"] == "False"


@virtual_time
async def test_pause_after_failures_stops_firing_until_the_spec_changes() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "broken", interval="1s", pauseAfterFailures=2,
             retry={"maxAttempts": 2, "backoff": {"initial": "100ms"}})
    op = Operator(kube)
    op.dispatcher.default = fail(message="always fails")
    async with op:
        await until("paused", lambda: kube.condition("broken", "Ready").get("reason")
                    == "PausedAfterFailures")
        calls = len(op.dispatcher.calls)
        assert calls == 4, "2 runs x 2 attempts"
        await asyncio.sleep(3)
        assert len(op.dispatcher.calls) == calls, "no runs while paused"
        st = kube.status("broken")
        assert st["counters"]["failed"] == 2 and st["consecutiveFailures"] == 2
        assert "nextRunTime" not in st
        assert "HandlerError: always fails" in st["recentRuns"][0]["message"]
        assert {"RunFailed", "PausedAfterFailures"} <= kube.reasons("broken")
        op.dispatcher.default = OK
        kube.update("schedules", "broken", spec={"pauseAfterFailures": 3})
        await asyncio.sleep(2)
    assert len(op.dispatcher.calls) > calls
    assert kube.status("broken")["consecutiveFailures"] == 0
    assert kube.condition("broken", "Ready")["reason"] == "Scheduled"


@virtual_time
async def test_one_shot_at_fires_once_then_no_more_runs() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "once", at="2026-05-19T10:00:03Z")
    async with Operator(kube) as op:
        await asyncio.sleep(6)
    assert [round(c.at, 6) for c in op.dispatcher.calls] == [3.0]
    st = kube.status("once")
    assert "nextRunTime" not in st and "claim" not in st
    assert kube.condition("once", "Ready")["reason"] == "NoMoreRuns"


@virtual_time
async def test_jitter_over_half_the_gap_is_clamped_and_reported() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "j", interval="10s", jitter="1m")
    async with Operator(kube) as op:
        await asyncio.sleep(35)
    cond = kube.condition("j", "JitterApplied")
    assert (cond["status"], cond["reason"]) == ("False", "JitterClamped")
    assert "at most 5s" in cond["message"] and "JitterClamped" in kube.reasons("j")
    calls = op.dispatcher.calls
    assert [c.scheduled_time for c in calls] == [
        "2026-05-19T10:00:10Z", "2026-05-19T10:00:20Z", "2026-05-19T10:00:30Z"]
    for c, slot in zip(calls, (10, 20, 30), strict=True):
        assert 0 <= c.at - slot < 5, "delayed by less than half the 10 s gap"
    runs = kube.status("j")["recentRuns"]
    assert runs and all(0 <= r["latencyMs"] < 1 for r in runs), \
        "lateness is measured from the jittered fire time"


@virtual_time
async def test_a_deleted_schedule_stops_and_its_run_is_not_recorded() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "gone", interval="1s")
    op = Operator(kube)
    op.dispatcher.default = slow(5)
    async with op:
        await until("running", lambda: op.dispatcher.calls)
        kube.delete("schedules", "gone")
        await asyncio.sleep(6)
        assert not op.engine.schedules
    assert len(op.dispatcher.calls) == 1


@virtual_time
async def test_same_name_new_object_starts_over() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "s", interval="1s")
    async with Operator(kube) as op:
        await asyncio.sleep(1.5)
        kube.delete("schedules", "s")
        kube.create("schedules", "s", {"handler": "h", "method": "heartbeat",
                                       "interval": "1s"}, uid="second-uid")
        await asyncio.sleep(2)
        run_ids = [c.run_id for c in op.dispatcher.calls]
        assert run_ids[0].startswith("00000002") and run_ids[-1].startswith("second-u")
        await until("status of the new object", lambda: kube.status("s")["counters"][
            "succeeded"] == len(run_ids) - 1, timeout=1.5)


@virtual_time
async def test_a_slot_due_before_its_claim_lands_fires_late_not_never() -> None:
    kube = FakeKube()
    kube.latency = 1.5  # the first claim write lands at 1.7 s, after the 1 s slot
    handler(kube)
    schedule(kube, "s", interval="1s")
    async with Operator(kube) as op:
        await asyncio.sleep(2.5)
    first = op.dispatcher.calls[0]
    assert first.scheduled_time == "2026-05-19T10:00:01Z"
    assert first.at == pytest.approx(1.7)
    assert [round(c.at, 6) for c in op.dispatcher.calls[1:]] == [2.0]


@virtual_time
async def test_a_slot_whose_first_claim_is_refused_is_not_fired() -> None:
    kube = FakeKube()
    kube.latency = 1.5
    handler(kube)
    schedule(kube, "s", interval="1s")
    other = {"holder": "op-b", "runId": "r", "scheduledTime": "2026-05-19T10:00:01Z",
             "until": "2026-05-19T10:00:02Z", "expires": "2026-05-19T10:00:32Z"}
    kube.interfere("schedules", "s", {"claim": other})
    async with Operator(kube) as op:
        await asyncio.sleep(3.5)
    assert [c.scheduled_time[-3:] for c in op.dispatcher.calls] == ["03Z"]


@virtual_time
async def test_a_crash_inside_a_run_is_recorded_as_failed() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "s", interval="1h", suspend=True, annotations={RUN_NOW: "go"})
    op = Operator(kube)

    async def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("unexpected")

    op.dispatcher.execute = explode  # type: ignore[method-assign]
    async with op:
        await until("outcome", lambda: kube.status("s").get("lastResult"))
    run = kube.status("s")["recentRuns"][0]
    assert run["outcome"] == "Failed"
    assert run["message"] == "operator error (RuntimeError); see the operator log"


@virtual_time
async def test_jitter_within_the_gap_is_applied_as_asked() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "j", interval="1m", jitter="10s")
    async with Operator(kube) as op:
        await asyncio.sleep(125)
    cond = kube.condition("j", "JitterApplied")
    assert (cond["status"], cond["reason"]) == ("True", "WithinGap")
    offsets = [c.at - slot for c, slot in zip(op.dispatcher.calls, (60, 120), strict=True)]
    assert all(0 <= x < 10 for x in offsets) and offsets[0] != offsets[1]


@virtual_time
async def test_a_new_object_under_the_same_name_replaces_the_old_one_unseen() -> None:
    """The watch may miss the deletion; a new uid is a new Schedule all the same."""
    kube = FakeKube()
    handler(kube)
    schedule(kube, "s", interval="1s")
    async with Operator(kube) as op:
        await asyncio.sleep(1.5)
        kube.obj("schedules", "s")["metadata"]["uid"] = "second-uid"
        op.engine.upsert_schedule(kube.obj("schedules", "s"))
        await asyncio.sleep(1)
    assert op.dispatcher.calls[-1].run_id.startswith("second-u")


@virtual_time
async def test_a_burst_is_dispatched_whole_before_any_run_is_recorded() -> None:
    """200 Schedules due at one instant (more than one chunk of timers): replies come
    back at once, but their bookkeeping waits until the burst's last job is out."""
    import time

    from schedulezero_operator.engine.observer import NullObserver

    class Stamps(NullObserver):
        finished_at: list[float] = []

        def finished(self, outcome: str, count: int = 1) -> None:
            self.finished_at.append(time.perf_counter())

    kube = FakeKube()
    handler(kube)
    for i in range(200):
        schedule(kube, f"s{i:03d}", schedule="* * * * *")
    stamps = Stamps()
    async with Operator(kube, observer=stamps) as op:
        await asyncio.sleep(61)
    first_burst = [c for c in op.dispatcher.calls if c.scheduled_time == op.dispatcher.calls[
        0].scheduled_time]
    assert len(first_burst) == 200
    assert max(c.real for c in first_burst) < min(stamps.finished_at)
