"""One timer queue for every Schedule (a min-heap driven by a single task).

Not one asyncio task per Schedule: 1,000 Schedules are 1,000 heap entries and
one sleeping task. Entries are invalidated lazily by a token, so rescheduling is
O(log n) and never searches the heap.

Dispatch first: a callback does only what must happen at the firing instant
(start the run) and may return a *continuation* for the rest (compute the next
slot, re-arm). All timers due at one instant are popped and their callbacks run
before any continuation, and the queue yields once in between so the run tasks
just started reach their dispatch call: a burst of N Schedules due in the same
second reaches the handlers N dispatches apart, not N next-slot computations.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import itertools
import logging
from collections.abc import Callable
from typing import Any

from .clock import Clock

log = logging.getLogger("schedulezero.timers")

Continuation = Callable[[], None]
CHUNK = 64  # due callbacks run between two yields (see fire_due)
Callback = Callable[[], Continuation | None]


class TimerQueue:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._heap: list[tuple[dt.datetime, int, Any, Callback]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._live: dict[Any, int] = {}  # key -> seq of its live entry
        self._quiet = asyncio.Event()  # clear while a burst is being started
        # How many timers came due together in the batch being fired now: a callback
        # can tell a lone timer from one of a burst (see Firing.on_lead).
        self.batch = 0
        self._quiet.set()

    def schedule(self, key: Any, when: dt.datetime, callback: Callback) -> None:
        """(Re)arm ``key`` for ``when``; replaces any earlier timer of the same key."""
        seq = next(self._seq)
        self._live[key] = seq
        heapq.heappush(self._heap, (when, seq, key, callback))
        if self._heap[0][1] == seq:
            self._wake.set()

    async def quiet(self) -> None:
        """Return once no burst of due timers is being started (at once if none is).

        What can wait a few hundred milliseconds (recording a finished run, status
        writes) waits for this, so a burst's dispatches are not interleaved with the
        bookkeeping of its first replies: that made a 1,000-fire burst's last job leave
        ~470 µs x 1,000 after its slot instead of the ~180 µs x 1,000 dispatching takes.
        """
        if not self._quiet.is_set():
            await self._quiet.wait()

    def cancel(self, key: Any) -> None:
        self._live.pop(key, None)

    def next_due(self) -> dt.datetime | None:
        """When the earliest timer is due, or None if none is armed. Superseded entries
        are dropped lazily, so this can be earlier than the earliest live timer, never
        later: callers that bound something by it err on the safe side."""
        return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        return len(self._live)

    def _pop_due(self, now: dt.datetime) -> list[tuple[Any, Callback]]:
        due = []
        while self._heap and self._heap[0][0] <= now:
            _, seq, key, callback = heapq.heappop(self._heap)
            if self._live.get(key) != seq:
                continue  # superseded or cancelled
            del self._live[key]
            due.append((key, callback))
        return due

    async def fire_due(self) -> None:
        """Run every due callback, then their continuations.

        In chunks of ``CHUNK`` with a yield after each, so the runs a chunk started
        reach their dispatch (and the handler starts on them, on another core) while
        the next chunk is being started: the first jobs of a 600-fire burst left after
        all 600 callbacks (~50 ms) before, now after the first 64.
        """
        later: list[tuple[Any, Continuation]] = []
        due = self._pop_due(self.clock.now())
        self.batch = len(due)
        burst = len(due) > CHUNK
        if burst:
            self._quiet.clear()
        try:
            for i, (key, callback) in enumerate(due):
                if i and i % CHUNK == 0:
                    await asyncio.sleep(0)
                try:
                    then = callback()
                except Exception:
                    log.exception("timer callback for %s failed", key)
                    continue
                if then is not None:
                    later.append((key, then))
            if later:
                await asyncio.sleep(0)  # the runs just started get to their dispatch first
        finally:
            if burst:
                self._quiet.set()
        if not later:
            return
        for key, then in later:
            try:
                then()
            except Exception:
                log.exception("timer continuation for %s failed", key)

    async def run(self) -> None:
        while True:
            self._wake.clear()
            await self.fire_due()
            delay = (self._heap[0][0] - self.clock.now()).total_seconds() if self._heap else 3600
            if delay > 0:
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except TimeoutError:
                    pass
