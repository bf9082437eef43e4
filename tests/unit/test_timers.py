from __future__ import annotations

import asyncio
import datetime as dt

from schedulezero_operator.engine import FixedClock
from schedulezero_operator.engine.timers import TimerQueue

T0 = dt.datetime(2026, 5, 19, 10, 0, tzinfo=dt.UTC)


async def test_due_timers_fire_in_order_and_rearming_replaces() -> None:
    clock = FixedClock(T0)
    timers = TimerQueue(clock)
    fired: list[str] = []
    timers.schedule("a", T0 + dt.timedelta(seconds=2), lambda: fired.append("a"))
    timers.schedule("b", T0 + dt.timedelta(seconds=1), lambda: fired.append("b"))
    timers.schedule("c", T0 + dt.timedelta(seconds=1), lambda: fired.append("c-old"))
    timers.schedule("c", T0 + dt.timedelta(seconds=3), lambda: fired.append("c"))
    timers.schedule("d", T0 + dt.timedelta(seconds=1), lambda: fired.append("d"))
    timers.cancel("d")
    assert len(timers) == 3
    task = asyncio.ensure_future(timers.run())
    try:
        for _ in range(4):
            clock.advance(1)
            timers._wake.set()
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
    assert fired == ["b", "a", "c"], "superseded and cancelled entries never fire"
    assert len(timers) == 0


async def test_a_failing_callback_does_not_stop_the_queue() -> None:
    clock = FixedClock(T0)
    timers = TimerQueue(clock)
    fired: list[str] = []

    def boom() -> None:
        raise RuntimeError("bad schedule")

    timers.schedule("x", T0, boom)
    timers.schedule("y", T0, lambda: fired.append("y"))
    task = asyncio.ensure_future(timers.run())
    await asyncio.sleep(0.01)
    task.cancel()
    assert fired == ["y"]
