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


async def test_all_due_callbacks_and_their_runs_go_before_any_continuation() -> None:
    """Dispatch first: next-slot work (continuations) waits until every due run started."""
    clock = FixedClock(T0)
    timers = TimerQueue(clock)
    log: list[str] = []
    started: list[asyncio.Task[None]] = []

    async def run(name: str) -> None:
        log.append(f"dispatch-{name}")

    def due(name: str):  # type: ignore[no-untyped-def]
        def callback():  # type: ignore[no-untyped-def]
            log.append(f"fire-{name}")
            started.append(asyncio.ensure_future(run(name)))
            return lambda: log.append(f"next-{name}")
        return callback

    def broken_continuation():  # type: ignore[no-untyped-def]
        def fail() -> None:
            raise RuntimeError("bad next slot")
        return fail

    for name in "abc":
        timers.schedule(name, T0, due(name))
    timers.schedule("x", T0, broken_continuation())
    timers.schedule("later", T0 + dt.timedelta(seconds=5), due("later"))
    await timers.fire_due()
    assert log == ["fire-a", "fire-b", "fire-c", "dispatch-a", "dispatch-b", "dispatch-c",
                   "next-a", "next-b", "next-c"]
    assert len(timers) == 1, "the future timer is still armed"
    await asyncio.gather(*started)
