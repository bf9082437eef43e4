"""Per-endpoint in-flight accounting and the choice of an endpoint for each attempt.

Pure bookkeeping (no I/O): the engine asks for a slot before dispatching and
gives it back after. An endpoint that leaves the Ready set stops receiving new
jobs at once; its in-flight jobs finish (or fail and are retried elsewhere).

Why a run has a *home* endpoint: the SDK dedupes by run id per process, so a run
sent twice — by an operator that took over from one that died after dispatching it,
before its status write — runs once only if both sends reach the same endpoint.
First attempts therefore go to the run id's rendezvous-hash choice among the Ready
endpoints (the same on every operator, no coordination), unless that endpoint is
loaded beyond ``(1 + BOUND_SLACK)`` x the average plus ``BOUND_EXTRA`` (consistent
hashing with bounded loads: the balance of least-loaded within a constant factor; the
few extra keep small loads from defeating the affinity). Retries go to the
least-loaded endpoint, avoiding the one that just failed.

Why a quarantine: an endpoint that answers its health probe but garbles its job
replies (``ProtocolError``) is not caught by the probe; after ``QUARANTINE_AFTER``
bad replies in a row it gets no work for ``QUARANTINE_FIRST`` seconds, doubling (up
to ``QUARANTINE_MAX``) each time it is let back and garbles again; one good reply
clears it.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from .clients import Endpoint


@dataclass
class _Slot:
    endpoint: Endpoint
    capacity: int
    in_flight: int = 0
    ready: bool = True
    bad_replies: int = 0  # in a row
    out_for: float = 0.0  # the last quarantine's length (0: none since the last good reply)
    out_until: float = 0.0  # monotonic
    ready_at: float = 0.0  # wall clock: when this pool first saw it Ready


BOUND_SLACK = 0.25
BOUND_EXTRA = 2
QUARANTINE_AFTER = 3
QUARANTINE_FIRST, QUARANTINE_MAX = 10.0, 300.0


def _rank(run_id: str, key: str) -> int:
    """Rendezvous (highest random weight) score of ``key`` for ``run_id``."""
    return zlib.crc32(f"{key}|{run_id}".encode())


class EndpointPool:
    def __init__(self, capacity_per_endpoint: int = 1,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.capacity_per_endpoint = capacity_per_endpoint
        self._clock = clock
        self._wall = wall
        self._slots: dict[str, _Slot] = {}
        self._rr = 0  # rotates ties so equal endpoints share the load

    def set_ready(self, endpoints: list[Endpoint], capacity: int | None = None) -> None:
        """Replace the Ready set. Endpoints that left keep their in-flight count."""
        if capacity is not None:
            self.capacity_per_endpoint = capacity
        keys = {e.key for e in endpoints}
        for key, slot in list(self._slots.items()):
            if key not in keys:
                slot.ready = False
                if slot.in_flight == 0:
                    del self._slots[key]
        for e in endpoints:
            existing = self._slots.get(e.key)
            if existing is None:
                self._slots[e.key] = _Slot(e, self.capacity_per_endpoint,
                                           ready_at=self._wall())
            else:
                existing.ready = True
                existing.endpoint = e
                existing.capacity = self.capacity_per_endpoint

    @property
    def ready_endpoints(self) -> list[Endpoint]:
        return [s.endpoint for s in self._slots.values() if s.ready]

    @property
    def in_flight(self) -> int:
        return sum(s.in_flight for s in self._slots.values())

    @property
    def capacity(self) -> int:
        return sum(s.capacity for s in self._slots.values() if s.ready)

    def free(self) -> int:
        return sum(max(0, s.capacity - s.in_flight) for s in self._slots.values() if s.ready)

    def acquire(self, avoid: str | None = None, home: str | None = None,
                prefer: str | None = None, bounded: bool = True,
                home_since: float | None = None) -> Endpoint | None:
        """An endpoint for one attempt, or None when every Ready endpoint is full.

        ``prefer`` (a key): that endpoint if it is Ready, even when full — a resumed run
        joins the execution it already has there, it adds no work. ``home`` (a run id):
        the run's rendezvous choice if its load is within the bound (``bounded``; else
        whenever it has a free slot: a run a predecessor may have sent there). With
        ``home_since`` (a wall-clock time: the run's slot) the home is chosen among the
        endpoints Ready since then, if any: one that appeared later (a replacement pod)
        cannot hold the predecessor's send, and with rendezvous hashing a newcomer would
        take a third of the homes. Otherwise the least-loaded endpoint (``avoid`` loses
        ties).
        """
        now = self._clock()
        usable = [s for s in self._slots.values() if s.ready and s.out_until <= now]
        if prefer is not None:
            slot = self._slots.get(prefer)
            if slot is not None and slot in usable:
                slot.in_flight += 1
                return slot.endpoint
        candidates = [s for s in usable if s.in_flight < s.capacity]
        if not candidates:
            return None
        if home is not None and len(usable) == 1:
            only = usable[0]  # one endpoint: every run's home, nothing to hash or bound
            if only.in_flight < only.capacity:
                only.in_flight += 1
                return only.endpoint
        elif home is not None:
            ready = usable
            if home_since is not None:
                ready = [s for s in usable if s.ready_at <= home_since] or usable
            chosen = max(ready, key=lambda s: _rank(home, s.endpoint.key))
            bound = math.ceil((1 + BOUND_SLACK) * (sum(s.in_flight for s in ready) + 1)
                              / len(ready)) + BOUND_EXTRA
            if chosen.in_flight < chosen.capacity and (not bounded or chosen.in_flight < bound):
                chosen.in_flight += 1
                return chosen.endpoint
        self._rr += 1
        n = len(candidates)
        best = min(
            range(n),
            key=lambda i: (candidates[i].in_flight / candidates[i].capacity,
                           candidates[i].endpoint.key == avoid, (i - self._rr) % n),
        )
        slot = candidates[best]
        slot.in_flight += 1
        return slot.endpoint

    def report(self, endpoint: Endpoint, *, bad_reply: bool) -> float | None:
        """The outcome of an attempt's reply; the quarantine (seconds) it starts, if any."""
        slot = self._slots.get(endpoint.key)
        if slot is None:
            return None
        if not bad_reply:
            slot.bad_replies, slot.out_for = 0, 0.0
            return None
        slot.bad_replies += 1
        if slot.bad_replies < QUARANTINE_AFTER and not slot.out_for:
            return None
        slot.out_for = min(QUARANTINE_MAX, slot.out_for * 2 or QUARANTINE_FIRST)
        slot.out_until = self._clock() + slot.out_for
        slot.bad_replies = 0
        return slot.out_for

    def release(self, endpoint: Endpoint) -> None:
        slot = self._slots.get(endpoint.key)
        if slot is None:
            return
        slot.in_flight = max(0, slot.in_flight - 1)
        if not slot.ready and slot.in_flight == 0:
            del self._slots[endpoint.key]

    def in_flight_of(self, endpoint: Endpoint) -> int:
        slot = self._slots.get(endpoint.key)
        return slot.in_flight if slot else 0
