"""A handler's endpoints with a queue in front: runs wait for a free slot by priority.

``EndpointPool`` (dispatch) counts jobs in flight per endpoint and picks the
least-loaded one; this adds the waiting: when every slot is taken (or no
endpoint is Ready yet), a run waits here, high priority first, then in arrival
order, until a slot frees up, an endpoint turns Ready, or its wait runs out.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable

from ..dispatch import Endpoint, EndpointPool
from .decisions import PRIORITY_RANK

_PRIORITY_NAME = {rank: name for name, rank in PRIORITY_RANK.items()}


class EndpointQueue:
    def __init__(self, on_change: Callable[[], None] = lambda: None) -> None:
        self.pool = EndpointPool()
        self._waiters: list[tuple[int, int, asyncio.Future[Endpoint]]] = []
        self._seq = itertools.count()
        self.on_change = on_change  # demand changed: status and the scaler want to know

    @property
    def queued(self) -> int:
        return sum(1 for _, _, f in self._waiters if not f.done())

    def queued_by_priority(self) -> dict[str, int]:
        """Runs waiting, per priority (every priority present, 0 when none wait)."""
        counts = dict.fromkeys(PRIORITY_RANK, 0)
        for rank, _, f in self._waiters:
            if not f.done():
                counts[_PRIORITY_NAME[rank]] += 1
        return counts

    @property
    def in_flight(self) -> int:
        return self.pool.in_flight

    @property
    def ready(self) -> list[Endpoint]:
        return self.pool.ready_endpoints

    def set_ready(self, endpoints: list[Endpoint], capacity: int | None = None) -> None:
        """Replace the Ready set (jobs in flight elsewhere finish); waiters get new slots."""
        self.pool.set_ready(endpoints, capacity=capacity)
        self.wake()

    async def acquire(self, priority: str, wait: float, avoid: str | None = None
                      ) -> Endpoint | None:
        """A slot on the least-loaded Ready endpoint, or None after ``wait`` seconds.

        ``avoid`` (an endpoint's name) loses ties: a retry goes elsewhere if it can.
        """
        avoid_key = next((e.key for e in self.pool.ready_endpoints if str(e) == avoid), None)
        if not self._waiters:
            ep = self.pool.acquire(avoid=avoid_key)
            if ep is not None:
                return ep
        fut: asyncio.Future[Endpoint] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (PRIORITY_RANK[priority], next(self._seq), fut))
        self.on_change()
        try:
            async with asyncio.timeout(wait):
                return await fut
        except TimeoutError:
            # A slot handed over just as the wait ran out is still ours to use.
            return fut.result() if fut.done() and not fut.cancelled() else None
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(fut.result())
            raise
        finally:
            if not fut.done():
                fut.cancel()
            self.on_change()

    def release(self, endpoint: Endpoint) -> None:
        self.pool.release(endpoint)
        self.wake()

    def wake(self) -> None:
        """Hand free slots to waiters, best priority first."""
        while self._waiters:
            _, _, fut = self._waiters[0]
            if fut.done():
                heapq.heappop(self._waiters)
                continue
            ep = self.pool.acquire()
            if ep is None:
                break
            heapq.heappop(self._waiters)
            fut.set_result(ep)
        self.on_change()
