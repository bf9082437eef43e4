"""What the engine reports as it works (for metrics): a port with a no-op default.

The engine calls an ``Observer`` at a few points on the firing path — a run's first
dispatch (its lateness), each attempt's round trip, each retry, each recorded run —
and nothing else; ``controllers.metrics`` implements it with prometheus_client, so
the engine imports no metrics library. Levels (jobs in flight and queued per
Handler, armed timers, status writes and conflicts) are not pushed: the metrics
side reads them from the engine when it is scraped, so they cost the engine nothing.
"""

from __future__ import annotations

from typing import Protocol


class Observer(Protocol):
    def fired(self, namespace: str, name: str, lateness: float) -> None:
        """A run's first attempt is dispatched ``lateness`` seconds after its fire time
        (the nominal slot, plus the Schedule's deliberate jitter if any)."""
        ...

    def attempt(self, protocol: str, seconds: float) -> None:
        """One attempt's dispatch round trip (request sent -> reply or timeout)."""
        ...

    def retried(self) -> None:
        """A failed attempt will be retried."""
        ...

    def finished(self, outcome: str, count: int = 1) -> None:
        """``count`` runs were recorded with ``outcome`` (a ``status.Outcome`` value)."""
        ...

    def forget_schedule(self, namespace: str, name: str) -> None:
        """The Schedule is gone: drop anything kept per Schedule."""
        ...


class NullObserver:
    """The default: observes nothing, costs a method call."""

    def fired(self, namespace: str, name: str, lateness: float) -> None:
        pass

    def attempt(self, protocol: str, seconds: float) -> None:
        pass

    def retried(self) -> None:
        pass

    def finished(self, outcome: str, count: int = 1) -> None:
        pass

    def forget_schedule(self, namespace: str, name: str) -> None:
        pass
