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
from dataclasses import dataclass

from ..dispatch import Endpoint, EndpointPool
from .decisions import PRIORITY_RANK

_PRIORITY_NAME = {rank: name for name, rank in PRIORITY_RANK.items()}


@dataclass(frozen=True)
class _Want:
    """What one attempt asks of the choice of endpoint (see ``EndpointPool.acquire``)."""

    avoid: str | None = None
    home: str | None = None
    prefer: str | None = None
    bounded: bool = True
    home_since: float | None = None


class EndpointQueue:
    def __init__(self, on_change: Callable[[], None] = lambda: None) -> None:
        self.pool = EndpointPool()
        self._waiters: list[tuple[int, int, asyncio.Future[Endpoint], _Want]] = []
        self._seq = itertools.count()
        self.on_change = on_change  # demand changed: status and the scaler want to know

    @property
    def queued(self) -> int:
        return sum(1 for _, _, f, _ in self._waiters if not f.done())

    def queued_by_priority(self) -> dict[str, int]:
        """Runs waiting, per priority (every priority present, 0 when none wait)."""
        counts = dict.fromkeys(PRIORITY_RANK, 0)
        for rank, _, f, _ in self._waiters:
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

    async def acquire(self, priority: str, wait: float, avoid: str | None = None,
                      home: str | None = None, prefer: str | None = None,
                      bounded: bool = True, home_since: float | None = None
                      ) -> Endpoint | None:
        """A slot for one attempt (see ``EndpointPool.acquire``), or None after ``wait``
        seconds. ``avoid``/``prefer`` are endpoint names (as status shows them), ``home``
        a run id; a run that has to wait keeps them for when a slot frees up.
        """
        want = _Want(avoid, home, prefer, bounded, home_since)
        if not self._waiters or prefer is not None:
            ep = self._take(want)
            if ep is not None:
                return ep
        fut: asyncio.Future[Endpoint] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (PRIORITY_RANK[priority], next(self._seq), fut, want))
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

    def _take(self, want: _Want) -> Endpoint | None:
        # Names (as status shows them) to pool keys, only when an attempt names one: the
        # first attempt of every run (the hot path) names none.
        keys = {str(e): e.key for e in self.pool.ready_endpoints} \
            if want.avoid or want.prefer else {}
        return self.pool.acquire(avoid=keys.get(want.avoid or ""), home=want.home,
                                 prefer=keys.get(want.prefer or ""), bounded=want.bounded,
                                 home_since=want.home_since)

    def release(self, endpoint: Endpoint) -> None:
        self.pool.release(endpoint)
        self.wake()

    def wake(self) -> None:
        """Hand free slots to waiters, best priority first."""
        while self._waiters:
            _, _, fut, want = self._waiters[0]
            if fut.done():
                heapq.heappop(self._waiters)
                continue
            ep = self._take(want)
            if ep is None:
                break
            heapq.heappop(self._waiters)
            fut.set_result(ep)
        self.on_change()
