"""Per-endpoint in-flight accounting and least-loaded choice.

Pure bookkeeping (no I/O): the engine asks for a slot before dispatching and
gives it back after. An endpoint that leaves the Ready set stops receiving new
jobs at once; its in-flight jobs finish (or fail and are retried elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass

from .clients import Endpoint


@dataclass
class _Slot:
    endpoint: Endpoint
    capacity: int
    in_flight: int = 0
    ready: bool = True


class EndpointPool:
    def __init__(self, capacity_per_endpoint: int = 1) -> None:
        self.capacity_per_endpoint = capacity_per_endpoint
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
                self._slots[e.key] = _Slot(e, self.capacity_per_endpoint)
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

    def acquire(self, avoid: str | None = None) -> Endpoint | None:
        """The least-loaded Ready endpoint with a free slot (``avoid`` loses ties), or None."""
        candidates = [s for s in self._slots.values() if s.ready and s.in_flight < s.capacity]
        if not candidates:
            return None
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
