"""The coalescing status writer: few writes, conflicts re-read and retried, failures retried."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from schedulezero_operator.engine.handlers import LEVELS_WRITE_EVERY
from schedulezero_operator.engine.writer import MIN_WRITE_INTERVAL

from ...fakes import T0, FakeDispatcher, FakeKube, Reply, until, virtual_time
from .harness import Operator, handler, schedule

RUN_NOW = "schedulezero.io/run-now"


@virtual_time
async def test_frequent_runs_cost_at_most_one_write_per_interval() -> None:
    """Each run has three transitions (claim, start, finish); they coalesce."""
    kube = FakeKube()
    handler(kube)
    schedule(kube, "fast", schedule="* * * * * *")
    async with Operator(kube) as op:
        await asyncio.sleep(10.5)
        during = kube.writes[("schedules", "fast")]
    assert len(op.dispatcher.calls) == 10
    assert during <= 10.5 / MIN_WRITE_INTERVAL + 1, f"{during} writes for 10 runs"
    st = kube.status("fast")
    assert st["counters"]["succeeded"] == 10, "the clean stop wrote the last run"
    assert kube.writes[("schedules", "fast")] <= during + 1


@virtual_time
async def test_a_burst_of_run_now_lands_in_one_or_two_writes() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "manual", interval="1h", suspend=True)
    async with Operator(kube) as op:
        await asyncio.sleep(2)
        before = kube.writes[("schedules", "manual")]
        for i in range(10):
            kube.update("schedules", "manual", annotations={RUN_NOW: str(i)})
            await asyncio.sleep(0.01)
        await until("10 runs recorded", lambda: kube.status("manual")["counters"][
            "succeeded"] == 10, timeout=3)
    assert len(op.dispatcher.calls) == 10
    assert kube.writes[("schedules", "manual")] - before <= 2


@virtual_time
async def test_an_unchanged_status_is_not_written_again() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "idle", interval="1h", suspend=True)
    async with Operator(kube) as op:
        await asyncio.sleep(2)
        before = kube.writes[("schedules", "idle")]
        op.engine.upsert_schedule(kube.obj("schedules", "idle"))  # a resync
        op.engine.upsert_handler(kube.obj("handlers", "h"))  # re-checks its Schedules
        await asyncio.sleep(2)
        assert kube.writes[("schedules", "idle")] == before == 1


@virtual_time
async def test_a_conflict_is_re_read_and_retried() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "s", interval="1s")
    kube.interfere("schedules", "s", {"lastRunNow": "someone else's write"})
    async with Operator(kube) as op:
        await asyncio.sleep(2.5)
    assert kube.conflicts == 1 and kube.gets == 1
    assert [round(c.at, 6) for c in op.dispatcher.calls] == [1.0, 2.0], "the claim landed on retry"
    assert kube.status("s")["claim"]["holder"] == "op-a"


@virtual_time
async def test_conflicts_in_a_row_are_retried_at_the_next_flush() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "s", interval="1s")
    kube.interfere("schedules", "s", {"lastRunNow": "x"}, times=6)
    async with Operator(kube) as op:
        await asyncio.sleep(2.5)
    assert kube.conflicts == 6
    assert op.dispatcher.calls, "fired once the claim landed"
    assert kube.status("s")["claim"]["holder"] == "op-a"


@virtual_time
async def test_a_failed_write_is_retried() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "s", interval="1s")
    kube.failures = [RuntimeError("API server unavailable")]
    kube.latency = 0.05
    async with Operator(kube) as op:
        await asyncio.sleep(3.5)
    assert op.dispatcher.calls, "late rather than lost"
    assert op.dispatcher.calls[0].at >= 1.0
    assert kube.status("s")["counters"]["succeeded"] >= 2


@virtual_time
async def test_an_object_gone_behind_the_watch_is_dropped() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "s", interval="1s")
    async with Operator(kube) as op:
        await asyncio.sleep(1.5)
        op.kube.unwatch(op.deliver)  # the watch lags: the deletion is not seen
        del kube.objects[("schedules", "default", "s")]
        await until("dropped", lambda: not op.engine.schedules, timeout=5)
        calls = len(op.dispatcher.calls)
        await asyncio.sleep(3)
        assert len(op.dispatcher.calls) == calls
        kube.watch(op.deliver)


@virtual_time
async def test_handler_status_shows_endpoints_methods_and_load() -> None:
    kube = FakeKube()
    handler(kube, endpoints=["10.0.0.1:4244", "10.0.0.2:4244"])
    async with Operator(kube) as op:
        op.dispatcher.down.add("10.0.0.2:4244")
        await until("status", lambda: kube.status("h", "handlers").get("ready"))
        st = kube.status("h", "handlers")
        assert st["ready"] == "1/2" and st["readyEndpoints"] == ["10.0.0.1:4244"]
        assert st["methods"] == ["fail", "heartbeat", "sleep"]
        conds = {c["type"]: (c["status"], c["reason"]) for c in st["conditions"]}
        assert conds == {"Available": ("True", "EndpointsReady"),
                         "Degraded": ("True", "EndpointsDown")}
        op.dispatcher.down.clear()
        await asyncio.sleep(10.5)  # the next probe
        st = kube.status("h", "handlers")
        assert st["ready"] == "2/2"
        assert {c["type"]: c["reason"] for c in st["conditions"]}["Degraded"] == "AllReady"


@virtual_time
async def test_a_stop_does_not_wait_forever_for_an_unreachable_api_server() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "s", interval="1s")
    op = Operator(kube)
    await op.start()
    await asyncio.sleep(1.5)
    kube.latency = 3600
    kube.update("schedules", "s", annotations={RUN_NOW: "go"})
    await asyncio.sleep(0.5)
    loop = asyncio.get_running_loop()
    stopped_at = loop.time()
    await op.stop()
    assert loop.time() - stopped_at < 10


@pytest.mark.parametrize(("interval", "most_per_run"), [("1s", 0.55), ("2s", 0.55), ("30s", 2)])
@virtual_time
async def test_a_frequent_schedule_is_written_at_most_every_second_run(
        interval: str, most_per_run: float) -> None:
    """At hundreds of fires a second the API server is the bottleneck: a Schedule firing
    every few seconds is written at most every other run (claims included), with its
    status never more than 4 s behind; a slow one is written per run."""
    from schedulezero_operator.engine.schedules import FREQUENT_MAX_LAG

    kube = FakeKube()
    handler(kube)
    schedule(kube, "s", interval=interval)
    async with Operator(kube) as op:
        await asyncio.sleep(200)
        lag = (kube.clock.now() - dt.datetime.fromisoformat(
            kube.status("s")["lastScheduleTime"].replace("Z", "+00:00"))).total_seconds()
    runs = len(op.dispatcher.calls)
    assert runs >= 4
    assert kube.writes[("schedules", "s")] / runs <= most_per_run
    assert lag <= FREQUENT_MAX_LAG + int(interval[:-1]) + 0.5


def slot_of(call: object) -> float:
    """A call's slot in seconds after T0 (the fakes' clock starts there)."""
    scheduled = dt.datetime.fromisoformat(call.scheduled_time.replace("Z", "+00:00"))
    return (scheduled - T0).total_seconds()


@pytest.mark.parametrize(("rate", "startup"), [(5, 8), (1, 45)])
@virtual_time
async def test_a_tight_write_budget_lags_status_never_firing(rate: int, startup: int) -> None:
    """40 Schedules every second on a budget of 5 writes a second: status is written
    about every 8 s per Schedule, but the claims go first and stay ahead, so every slot
    fires on time and none twice. Only at start-up, while the 40 first claims wait
    their turn (8 s at 5/s), do slots wait for them: late, not lost. At 1 write a
    second a minute's claims would not fit: the horizon grows (4 x 41 objects / 1 s)."""
    kube = FakeKube()
    handler(kube)
    names = [f"s{i:02d}" for i in range(40)]
    for name in names:
        schedule(kube, name, interval="1s")
    async with Operator(kube, write_rate=rate) as op:
        await asyncio.sleep(120.5)
        writes = sum(n for (plural, _), n in kube.writes.items() if plural == "schedules")
        lag = op.engine.ctx.writer.lag
    assert writes <= rate * 120 + rate, f"{writes} writes in 120 s on a budget of {rate}/s"
    assert lag > 0, "more was due than the budget allowed"
    late = [c for c in op.dispatcher.calls if abs(c.at - slot_of(c)) > 1e-6]
    assert late and max(slot_of(c) for c in late) <= startup, \
        "late only while the first claims wait"
    per = {name: sorted(slot_of(c) for c in op.dispatcher.calls
                        if c.schedule == f"default/{name}") for name in names}
    assert all(slots == list(range(1, 121)) for slots in per.values()), \
        {n: len(v) for n, v in per.items() if v != list(range(1, 121))}
    for name in names:  # the last runs reached status at the clean stop
        assert kube.status(name)["counters"]["succeeded"] == 120


@virtual_time
async def test_a_slot_whose_claim_never_lands_is_recorded_missed_not_dropped() -> None:
    """Status writes fail for a minute: the first slots wait for their claim (late rather
    than lost) up to the claim grace, then are recorded Missed with the reason."""
    kube = FakeKube()
    handler(kube)
    schedule(kube, "s", interval="1s")
    kube.failures = [RuntimeError("API down")] * 120  # ~60 s of failed writes
    async with Operator(kube) as op:
        await asyncio.sleep(100)
    st = kube.status("s")
    assert st["counters"]["missed"] >= 1
    missed = [r for r in st["recentRuns"] if r["outcome"] == "Missed"]
    assert missed and "claim could not be written" in missed[0]["message"]
    ran = {c.scheduled_time for c in op.dispatcher.calls}
    assert not ran & {r["scheduledTime"] for r in missed}, "a Missed slot never ran"


@virtual_time
async def test_a_handler_recheck_that_changes_nothing_marks_no_schedule_dirty() -> None:
    """Probes re-check every Schedule of a Handler every 10 s; with 10,000 Schedules,
    rebuilding each status only to find it unchanged was most of an idle operator's CPU."""
    kube = FakeKube()
    handler(kube)
    for i in range(20):
        schedule(kube, f"s{i:02d}", interval="1h")
    async with Operator(kube) as op:
        await asyncio.sleep(3)
        marks: list[object] = []
        real = op.engine.ctx.writer.mark
        op.engine.ctx.writer.mark = lambda target: (marks.append(target),  # type: ignore[method-assign]
                                                    real(target))[1]
        for _ in range(5):
            op.engine.upsert_handler(kube.obj("handlers", "h"))
            await asyncio.sleep(1)
    assert marks == []


@virtual_time
async def test_a_handler_samples_its_load_so_a_short_run_costs_it_no_write() -> None:
    """A run moves the Handler's inFlight up and down; written on every change that was
    two Handler writes per run on top of the Schedule's one. Sampled every
    LEVELS_WRITE_EVERY seconds, a run shorter than that (here 1 s, as long as a burst
    sent a second ahead of its slot is held) is never seen in the status, and a long
    one is, within that time of its start and of its end."""
    kube = FakeKube()
    handler(kube)
    schedule(kube, "s", interval="30s")
    async with Operator(kube, FakeDispatcher(default=Reply(delay=1.0))) as op:
        await until("handler status", lambda: kube.status("h", "handlers").get("ready"))
        await asyncio.sleep(1)
        before = kube.writes[("handlers", "h")]
        await until("3 runs", lambda: len(op.dispatcher.calls) >= 3, timeout=100)
        await asyncio.sleep(LEVELS_WRITE_EVERY + 1)
        assert kube.writes[("handlers", "h")] == before, "short runs wrote the Handler"
        assert kube.status("h", "handlers").get("inFlight", 0) == 0

        op.dispatcher.on("*", Reply(delay=20))
        await until("a 4th run", lambda: len(op.dispatcher.calls) >= 4, timeout=40)
        started = op.dispatcher.calls[-1].at
        loop = asyncio.get_running_loop()
        await until("inFlight 1", lambda: kube.status("h", "handlers").get("inFlight") == 1)
        assert loop.time() - started <= LEVELS_WRITE_EVERY + 0.5
        await until("inFlight 0", lambda: kube.status("h", "handlers").get("inFlight", 0) == 0)
        assert loop.time() - (started + 20) <= LEVELS_WRITE_EVERY + 0.5
    assert kube.writes[("handlers", "h")] - before == 2, "one write up, one down"
