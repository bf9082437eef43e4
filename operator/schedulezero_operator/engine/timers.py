"""One timer queue for every Schedule (a min-heap driven by a single task).

Not one asyncio task per Schedule: 1,000 Schedules are 1,000 heap entries and
one sleeping task. Entries are invalidated lazily by a token, so rescheduling is
O(log n) and never searches the heap.
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


class TimerQueue:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._heap: list[tuple[dt.datetime, int, Any, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._live: dict[Any, int] = {}  # key -> seq of its live entry

    def schedule(self, key: Any, when: dt.datetime, callback: Callable[[], None]) -> None:
        """(Re)arm ``key`` for ``when``; replaces any earlier timer of the same key."""
        seq = next(self._seq)
        self._live[key] = seq
        heapq.heappush(self._heap, (when, seq, key, callback))
        if self._heap[0][1] == seq:
            self._wake.set()

    def cancel(self, key: Any) -> None:
        self._live.pop(key, None)

    def __len__(self) -> int:
        return len(self._live)

    async def run(self) -> None:
        while True:
            self._wake.clear()
            now = self.clock.now()
            while self._heap and self._heap[0][0] <= now:
                _, seq, key, callback = heapq.heappop(self._heap)
                if self._live.get(key) != seq:
                    continue  # superseded or cancelled
                del self._live[key]
                try:
                    callback()
                except Exception:
                    log.exception("timer callback for %s failed", key)
            delay = (self._heap[0][0] - self.clock.now()).total_seconds() if self._heap else 3600
            if delay > 0:
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except TimeoutError:
                    pass
