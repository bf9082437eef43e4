"""One loop timer per instant (``schedulezero_handler.shared_timers``), and the
executor's use of it: a burst's holds and deadlines share a timer each, a deadline
still expires exactly the jobs still running, and a cancel stays a cancel.

``SharedTimers`` is tested against a fake loop (only ``call_at`` is used) so what is
counted is timers set and cancelled; the executor tests run on the real loop.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from typing import Any

import pytest
from schedulezero_handler import Executor, method
from schedulezero_handler import protocol as p
from schedulezero_handler.shared_timers import SharedTimers

from tests.unit.test_sdk_hold import ahead, handler_clock, request, rfc3339


class FakeHandle:
    def __init__(self, when: float, callback: Callable[..., None], args: tuple[Any, ...]):
        self.when, self.callback, self.args, self.cancelled = when, callback, args, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    def __init__(self) -> None:
        self.handles: list[FakeHandle] = []

    def call_at(self, when: float, callback: Callable[..., None], *args: Any) -> FakeHandle:
        handle = FakeHandle(when, callback, args)
        self.handles.append(handle)
        return handle

    def fire(self, handle: FakeHandle) -> None:
        assert not handle.cancelled
        handle.callback(*handle.args)

    @property
    def live(self) -> list[FakeHandle]:
        return [h for h in self.handles if not h.cancelled]


def timers(max_idle: int = 256) -> tuple[SharedTimers, FakeLoop]:
    loop = FakeLoop()
    return SharedTimers(loop, max_idle=max_idle), loop  # type: ignore[arg-type]


def test_members_of_one_key_share_the_first_ones_timer() -> None:
    shared, loop = timers()
    fired: list[int] = []
    for i in range(500):
        # Each member computed its own loop time (clock jitter): the first one's stands.
        shared.add("2026-11-30T20:00:00Z", 100.0 + i * 1e-6, i, functools.partial(fired.append, i))
    assert [h.when for h in loop.handles] == [100.0]
    loop.fire(loop.handles[0])
    assert fired == list(range(500))
    assert len(shared) == 0


def test_a_member_taken_back_is_not_called() -> None:
    shared, loop = timers()
    fired: list[str] = []
    shared.add("k", 1.0, "a", lambda: fired.append("a"))
    shared.add("k", 1.0, "b", lambda: fired.append("b"))
    shared.discard("k", "a")
    shared.discard("k", "nobody")  # unknown members and keys are ignored
    shared.discard("other", "a")
    loop.fire(loop.handles[0])
    assert fired == ["b"]


def test_an_emptied_group_keeps_its_timer_for_the_next_member() -> None:
    """Methods that return without suspending empty their deadline group one after
    another: refilling it must not set a timer per job."""
    shared, loop = timers()
    for i in range(1000):
        shared.add(60.0, 160.0, i, lambda: None)
        shared.discard(60.0, i)
    assert len(loop.handles) == 1 and not loop.handles[0].cancelled
    loop.fire(loop.handles[0])  # empty: nothing to call, and it is gone
    assert len(shared) == 0


def test_empty_groups_past_the_bound_are_swept_and_their_timers_cancelled() -> None:
    """Steady traffic, every job a deadline of its own: timers do not pile up for the
    length of a timeout."""
    shared, loop = timers(max_idle=8)
    for i in range(100):
        shared.add(float(i), 1000.0 + i, "job", lambda: None)
        shared.discard(float(i), "job")
    assert len(shared) <= 9
    assert len(loop.live) == len(shared)
    shared.add("busy", 5.0, "job", lambda: None)  # a group with a member is never swept
    for i in range(100, 120):
        shared.add(float(i), 1000.0 + i, "job", lambda: None)
        shared.discard(float(i), "job")
    assert "busy" in shared._groups


def test_an_emptied_group_that_fires_leaves_the_idle_count_true() -> None:
    shared, loop = timers(max_idle=2)
    shared.add("a", 1.0, 1, lambda: None)
    shared.discard("a", 1)
    loop.fire(loop.handles[0])
    # Were "a" still counted idle, these two would sweep a group with a member.
    shared.add("b", 2.0, 1, lambda: None)
    shared.add("c", 3.0, 1, lambda: None)
    shared.discard("c", 1)
    shared.add("d", 4.0, 1, lambda: None)
    shared.discard("d", 1)
    assert {"b"} <= set(shared._groups)
    assert shared._idle == 2


# -- the executor -------------------------------------------------------------------
class Burst:
    def __init__(self) -> None:
        self.started = 0

    @method
    async def quick(self) -> int:
        self.started += 1
        return self.started

    @method
    async def slow(self, seconds: float) -> float:
        self.started += 1
        await asyncio.sleep(seconds)
        return seconds

    @method
    async def tidy(self, seconds: float) -> None:
        """Takes 0.1 s to clean up after a cancel, then lets it through."""
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            await asyncio.sleep(0.1)
            raise

    @method
    async def stubborn(self, seconds: float) -> str:
        """Swallows one cancel (as a method that cleans up and returns may)."""
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            return "finished anyway"
        return "in time"


def submit_all(ex: Executor, bodies: list[bytes]) -> list[asyncio.Future[dict[str, Any]]]:
    """Every body in one loop iteration, as one ZMQ drain delivers a burst."""
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[dict[str, Any]]] = []
    for body in bodies:
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        futures.append(future)
        ex.submit(body, None, None,
                  lambda raw, f=future: f.set_result(json.loads(raw)))  # type: ignore[misc]
    return futures


def scheduled_timers() -> int:
    return len(asyncio.get_running_loop()._scheduled)  # type: ignore[attr-defined]


async def test_a_burst_sets_one_timer_for_its_start_and_one_for_its_deadline() -> None:
    handler = Burst()
    ex = Executor(handler, clock=handler_clock, concurrency=1000)
    start_at, instant = ahead(0.2)
    before = scheduled_timers()
    futures = submit_all(ex, [request(f"r{i}", "slow", start_at, rid=f"x{i}",
                                      deadline=rfc3339(instant + 30), seconds=0.1)
                              for i in range(300)])
    await asyncio.sleep(0)
    assert scheduled_timers() - before == 1  # the start, shared
    await asyncio.sleep(0.25 + 0.05)  # all started, all asleep in their method
    assert handler.started == 300
    assert ex._shared_timers is not None
    starts, deadlines = ex._shared_timers
    assert len(deadlines) == 1
    replies = await asyncio.gather(*futures)
    assert all(r["ok"] for r in replies)
    assert len(starts) == 0


async def test_a_shared_deadline_expires_the_slow_jobs_and_spares_the_quick_ones() -> None:
    handler = Burst()
    ex = Executor(handler, clock=handler_clock, concurrency=100)
    start_at, instant = ahead(0.1)
    deadline = rfc3339(instant + 0.2)
    bodies = [request(f"q{i}", "quick", start_at, rid=f"q{i}", deadline=deadline)
              for i in range(20)]
    bodies += [request(f"s{i}", "slow", start_at, rid=f"s{i}", deadline=deadline,
                       seconds=5) for i in range(20)]
    replies = await asyncio.gather(*submit_all(ex, bodies))
    assert all(r["ok"] for r in replies[:20])
    for reply in replies[20:]:
        assert reply["error"]["type"] == "DeadlineExceeded"
        assert 150 <= reply["durationMs"] < 1000  # the method's 0.2 s, not its 5 s
    assert ex.in_flight == 0


async def test_a_method_that_swallows_the_deadline_cancel_returns_its_result() -> None:
    """As with asyncio.timeout: no exception out of the method, no timeout reply."""
    handler = Burst()
    ex = Executor(handler, clock=handler_clock)
    reply = json.loads(await ex.handle(request(
        "r1", "stubborn", None, kind="execute", deadline=rfc3339(handler_clock() + 0.1),
        seconds=5)))
    assert reply["ok"] is True and reply["result"] == "finished anyway"


@pytest.mark.parametrize("expire_too", [False, True])
async def test_a_cancel_request_stays_a_cancel_when_the_deadline_also_comes(
        expire_too: bool) -> None:
    handler = Burst()
    ex = Executor(handler, clock=handler_clock)
    deadline = handler_clock() + (0.05 if expire_too else 30)
    job = asyncio.create_task(ex.handle(request(
        "r1", "tidy", None, kind="execute", deadline=rfc3339(deadline), seconds=5)))
    await asyncio.sleep(0.02)
    cancelled = json.loads(await ex.handle(p.encode(
        {"v": 1, "id": "c", "type": "cancel", "runId": "r1"})))
    assert cancelled["result"] == {"cancelled": True}
    # expire_too: the deadline's timer fires while the method cleans up after the cancel
    reply = json.loads(await job)
    assert reply["error"]["type"] == "Cancelled"
