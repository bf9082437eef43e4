"""The fence (leader election / bucket ownership) as the engine sees it: a lapse (a slow
Lease renewal nobody else exploited) delays slots, it does not lose them."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools

from ...fakes import FakeKube, virtual_time
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
