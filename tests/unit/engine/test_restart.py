"""Restarts: catch-up of the slots missed meanwhile, and runs left active resumed."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from ...fakes import T0, FakeKube, slow, until, virtual_time
from .harness import Operator, handler, schedule

RUN_NOW = "schedulezero.io/run-now"
LONG_AGO = T0 - dt.timedelta(hours=1)


def stamp(seconds: float) -> str:
    return (T0 + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def down_since(kube: FakeKube, last: float, **spec: object) -> None:
    """A 1 s Schedule whose last run (by an operator now gone) was at ``last``."""
    kube.create("schedules", "s", {"handler": "h", "method": "heartbeat", "interval": "1s",
                                   **spec},
                status={"lastScheduleTime": stamp(last)}, created=LONG_AGO)


@pytest.mark.parametrize(("policy", "max_runs", "run", "missed"), [
    ("Latest", 10, [0], 9),
    ("All", 3, [-2, -1, 0], 7),
    ("All", 20, list(range(-9, 1)), 0),
    ("Skip", 10, [], 10),
])
@virtual_time
async def test_catch_up_after_downtime(policy: str, max_runs: int, run: list[int],
                                       missed: int) -> None:
    kube = FakeKube()
    handler(kube)
    down_since(kube, -10, catchUp={"policy": policy, "maxRuns": max_runs})
    async with Operator(kube) as op:
        await asyncio.sleep(1.5)
    times = [c.scheduled_time for c in op.dispatcher.calls]
    assert times == [stamp(s) for s in run] + [stamp(1)], "then the next slot, on time"
    assert all(c.at == 0.0 for c in op.dispatcher.calls[:-1]), "caught up at once"
    st = kube.status("s")
    assert st["counters"]["missed"] == missed
    assert len([r for r in st["recentRuns"] if r["outcome"] == "Missed"]) == min(3, missed)
    if missed:
        assert any(e.reason == "MissedSlots" and e.message.startswith(f"{missed} slot(s)")
                   for e in kube.events)


@virtual_time
async def test_catch_up_is_capped_and_says_so() -> None:
    kube = FakeKube()
    handler(kube)
    down_since(kube, -100, catchUp={"policy": "All", "maxRuns": 2})
    async with Operator(kube) as op:
        await asyncio.sleep(1.5)
    caught_up = [c for c in op.dispatcher.calls if c.at == 0.0]
    assert len(caught_up) == 2, "never more than maxRuns"
    assert op.dispatcher.calls[-1].scheduled_time == stamp(1)
    missed = next(e for e in kube.events if e.reason == "MissedSlots")
    assert "+ slot(s) missed" in missed.message, "more were cut off than counted"


@virtual_time
async def test_slots_past_the_starting_deadline_are_missed() -> None:
    kube = FakeKube()
    handler(kube)
    down_since(kube, -10, catchUp={"policy": "All", "maxRuns": 10}, startingDeadlineSeconds=3)
    async with Operator(kube) as op:
        await asyncio.sleep(0.5)
    assert [c.scheduled_time for c in op.dispatcher.calls] == [stamp(s) for s in (-3, -2, -1, 0)]
    assert kube.status("s")["counters"]["missed"] == 6


@virtual_time
async def test_a_run_left_active_resumes_with_the_same_id_and_the_next_attempt() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "long", interval="1h", suspend=True, annotations={RUN_NOW: "go"})
    first = Operator(kube, identity="op-a")
    first.dispatcher.default = slow(100)
    await first.start()
    await until("the run recorded active", lambda: kube.status("long").get("active"))
    await first.crash()
    await asyncio.sleep(5)
    second = Operator(kube, identity="op-b")
    async with second:
        await until("outcome", lambda: kube.status("long").get("lastResult"))
    (old,), (new,) = first.dispatcher.calls, second.dispatcher.calls
    assert (new.run_id, new.attempt) == (old.run_id, 2), "the handler can join or replay it"
    st = kube.status("long")
    assert st["recentRuns"][0]["attempts"] == 2 and st["lastRunNow"] == "go"
    assert not st["active"] and st["counters"]["succeeded"] == 1


@pytest.mark.parametrize("where", ["10.0.0.1:4244", "10.0.0.2:4244"])
@virtual_time
async def test_a_run_left_active_is_resumed_on_the_endpoint_that_has_it(where: str) -> None:
    """The SDK dedupes per process: the resumed attempt must reach the same endpoint to
    join the execution still running there, whatever the load-balancing would pick."""
    kube = FakeKube()
    handler(kube, endpoints=["10.0.0.1:4244", "10.0.0.2:4244"])
    kube.create("schedules", "long", {"handler": "h", "method": "heartbeat",
                                      "interval": "1h", "suspend": True},
                status={"active": [{"runId": "uid-long-1", "scheduledTime": stamp(-5),
                                    "attempt": 1, "endpoint": where}]}, created=LONG_AGO)
    async with Operator(kube, identity="op-b") as second:
        await until("outcome", lambda: kube.status("long").get("lastResult"))
    (call,) = second.dispatcher.calls
    assert (call.run_id, call.attempt, str(call.endpoint)) == ("uid-long-1", 2, where)


@virtual_time
async def test_a_run_left_active_in_its_last_attempt_is_failed() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "long", interval="1h", suspend=True, annotations={RUN_NOW: "go"},
             retry={"maxAttempts": 1})
    first = Operator(kube, identity="op-a")
    first.dispatcher.default = slow(100)
    await first.start()
    await until("the run recorded active", lambda: kube.status("long").get("active"))
    await first.crash()
    async with Operator(kube, identity="op-b") as second:
        await until("outcome", lambda: kube.status("long").get("lastResult"))
    assert not second.dispatcher.calls
    run = kube.status("long")["recentRuns"][0]
    assert run["outcome"] == "Failed" and "no attempts left" in run["message"]


@virtual_time
async def test_restart_catches_up_every_slot_once() -> None:
    """A clean stop writes what is pending, so the next operator re-runs nothing."""
    kube = FakeKube()
    handler(kube)
    schedule(kube, "steady", interval="1s", catchUp={"policy": "All", "maxRuns": 20})
    first = Operator(kube, identity="op-a")
    async with first:
        await asyncio.sleep(5.5)
    await asyncio.sleep(4)  # down
    second = Operator(kube, identity="op-b")
    async with second:
        await asyncio.sleep(3)
    calls = first.dispatcher.calls + second.dispatcher.calls
    run_ids = [c.run_id for c in calls]
    assert len(run_ids) == len(set(run_ids)), "no run id dispatched twice"
    slots = sorted(c.scheduled_time for c in calls)
    assert slots == [stamp(s) for s in range(1, 13)], "every slot once, the down ones late"


@virtual_time
async def test_a_paused_schedule_stays_paused_over_a_restart() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "broken", interval="1s", pauseAfterFailures=2,
             status={"consecutiveFailures": 2, "lastScheduleTime": stamp(0)})
    async with Operator(kube) as op:
        await asyncio.sleep(3)
    assert not op.dispatcher.calls
    assert "nextRunTime" not in kube.status("broken")
    assert kube.condition("broken", "Ready")["reason"] == "PausedAfterFailures"
    assert "PausedAfterFailures" not in kube.reasons("broken"), "said once, before"


@virtual_time
async def test_a_catch_up_burst_sends_every_run_to_its_home_endpoint() -> None:
    """The runs a take-over catches up may have been sent by the predecessor just before
    it died: each goes to its run id's home endpoint (where the SDK dedupes), however
    unevenly the burst loads them."""
    from schedulezero_operator.dispatch import EndpointPool
    from schedulezero_operator.dispatch.clients import Endpoint

    addresses = ["10.0.0.1:4244", "10.0.0.2:4244", "10.0.0.3:4244"]
    kube = FakeKube()
    handler(kube, endpoints=addresses, concurrency=1000)
    down_since(kube, -30, catchUp={"policy": "All", "maxRuns": 60})
    op = Operator(kube, identity="op-b")
    op.dispatcher.default = slow(10)  # all in flight at once: the loads diverge
    async with op:
        await asyncio.sleep(0.5)
    assert len(op.dispatcher.calls) >= 30
    for call in op.dispatcher.calls:
        probe = EndpointPool(capacity_per_endpoint=1000)
        probe.set_ready([Endpoint.parse(a, "zmq") for a in addresses])
        assert call.endpoint == probe.acquire(home=call.run_id), call.run_id


@virtual_time
async def test_slots_a_predecessor_claimed_are_resent_not_recorded_missed() -> None:
    """Failover with the default policy (Latest): the predecessor's claim covered slots up
    to -2 and its status lags (last recorded -10). Slots -9..-2 may have run: they are
    resent under their own run ids (the SDK dedupes); only -1 and 0, which nobody
    claimed, follow the policy (run the latest, -1 Missed)."""
    kube = FakeKube()
    handler(kube)
    kube.create("schedules", "s", {"handler": "h", "method": "heartbeat", "interval": "1s"},
                status={"lastScheduleTime": stamp(-10), "claim": {
                    "holder": "gone", "runId": "r", "scheduledTime": stamp(-9),
                    "until": stamp(-2), "expires": stamp(28)}}, created=LONG_AGO)
    async with Operator(kube) as op:
        await asyncio.sleep(1.5)
    times = [c.scheduled_time for c in op.dispatcher.calls]
    assert times == [stamp(s) for s in range(-9, -1)] + [stamp(0), stamp(1)]
    st = kube.status("s")
    assert st["counters"]["missed"] == 1
    assert [r["scheduledTime"] for r in st["recentRuns"] if r["outcome"] == "Missed"] == [
        stamp(-1)]
