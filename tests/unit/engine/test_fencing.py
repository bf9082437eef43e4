"""The fence (leader election / bucket ownership) as the engine sees it: a lapse (a slow
Lease renewal nobody else exploited) delays slots, it does not lose them."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools

from ...fakes import FakeKube, Reply, fail, virtual_time
from .harness import Operator, handler, schedule


def seconds_apart(stamps: list[str]) -> list[int]:
    ts = [dt.datetime.fromisoformat(s.replace("Z", "+00:00")) for s in sorted(stamps)]
    return [round((b - a).total_seconds()) for a, b in itertools.pairwise(ts)]


@virtual_time
async def test_slots_due_while_the_fence_lapsed_fire_late_not_lost() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "s", interval="1s")
    up = {"now": True}
    op = Operator(kube)
    op.engine.set_fence(lambda ns, name: up["now"])
    async with op:
        await asyncio.sleep(3.5)
        up["now"] = False  # a slow Lease renewal: nobody else took over
        await asyncio.sleep(2.2)
        lapsed = len(op.dispatcher.calls)
        up["now"] = True
        await asyncio.sleep(2.5)
    calls = op.dispatcher.calls
    assert lapsed == 3, "nothing dispatched while fenced out"
    stamps = [c.scheduled_time or "" for c in calls]
    assert len(stamps) == len(set(stamps)) >= 7
    assert set(seconds_apart(stamps)) == {1}, "every slot once, the lapsed ones late"


@virtual_time
async def test_the_echo_of_our_own_status_write_is_absorbed_and_nothing_else() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "s", interval="1s")
    op = Operator(kube)
    async with op:
        await asyncio.sleep(2.5)
        echo = await kube.get("schedules", "default", "s")
        assert op.engine.absorb_echo(echo), "the object at the resourceVersion we wrote"
        someone_else = {**echo, "metadata": {**echo["metadata"], "resourceVersion": "999999"}}
        assert not op.engine.absorb_echo(someone_else)
        stranger = {**echo, "metadata": {**echo["metadata"], "name": "other"}}
        assert not op.engine.absorb_echo(stranger)


@virtual_time
async def test_a_schedule_created_while_the_fence_lapsed_fires_once_it_returns() -> None:
    """The bucket is still ours (``holds``), only its fence lapsed: the Schedule gets a
    runner at once and fires when the fence is back. (Decided by the fence alone, it
    was dropped and never started: nothing restarts it when the fence returns.)"""
    kube = FakeKube()
    handler(kube)
    up = {"now": False}
    op = Operator(kube)
    op.engine.set_fence(lambda ns, name: up["now"], holds=lambda ns, name: True)
    async with op:
        await asyncio.sleep(0.5)
        schedule(kube, "s", interval="1s")
        await asyncio.sleep(1.0)
        assert not op.dispatcher.calls, "nothing dispatched while fenced out"
        up["now"] = True
        await asyncio.sleep(3.0)
    assert len(op.dispatcher.calls) >= 3


@virtual_time
async def test_next_work_is_the_first_armed_slot_or_now_while_a_run_is_in_progress() -> None:
    """What the Lease elector bounds a quiet Lease by (controllers.buckets): a run in
    progress, backoff waits included, counts as work due now."""
    kube = FakeKube()
    handler(kube)
    op = Operator(kube)
    async with op:
        assert op.engine.next_work_in() is None, "nothing armed"
        schedule(kube, "m", schedule="* * * * *", retry={"maxAttempts": 2, "backoff": {
            "initial": "10s", "max": "10s"}})
        await asyncio.sleep(10)  # T0 is 10:00:00: the first slot is 10:01:00
        assert op.engine.next_work_in() == 50
        op.dispatcher.on("*", Reply(delay=5))
        await asyncio.sleep(52)  # the 10:01 run is in progress
        assert op.engine.next_work_in() == 0
        await asyncio.sleep(5)  # 10:01:07, it ended: the next slot is 10:02
        assert op.engine.next_work_in() == 53
        op.dispatcher.on("*", fail())
        await asyncio.sleep(54)  # 10:02's first attempt failed: waiting 10 s to retry
        assert op.engine.next_work_in() == 0
        await asyncio.sleep(11)  # 10:02:12, retried
        assert len(op.dispatcher.calls) == 3
        assert op.engine.next_work_in() == 48
