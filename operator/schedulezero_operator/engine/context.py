"""What the engine's parts share: the two ports, the clock, the timers, the writer, the
observer."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .clock import Clock
from .observer import NullObserver, Observer
from .ports import DispatcherPort, KubePort
from .tasks import Tasks
from .timers import TimerQueue
from .writer import WRITE_BURST, WRITE_RATE, StatusWriter

# How long a slot or an attempt that meets a lapsed fence waits for it (fence_returns).
FENCE_WAIT = 60.0
# A burst worth sending ahead (Firing.on_lead): 32 dispatches at the slot take ~6 ms.
LEAD_MIN_BATCH = 32


@dataclass
class Context:
    kube: KubePort
    clock: Clock
    dispatcher: DispatcherPort
    identity: str  # who claims slots: unique per operator process
    rng: random.Random = field(default_factory=random.Random)
    # May this process act for the object (namespace, name) now? Leader election /
    # bucket ownership, answered from a monotonic deadline (no API call), checked
    # before every dispatch and every status write: a process frozen past its lease
    # and resumed knows it lost before it does anything.
    fence: Callable[[str, str], bool] = field(default=lambda namespace, name: True)
    # Ownership comes from Leases (set_fence was called): then another operator's claim
    # never blocks a Schedule we may act for. Its holder lost or gave up the bucket, and
    # its own fence stops it; waiting out a claim a minute long would only drop slots
    # (a replica joining took over buckets whose old holder had just extended them).
    # Without Leases (several operators, no election) claims are the only arbiter.
    leased: bool = False
    tasks: Tasks = field(default_factory=Tasks)
    observer: Observer = field(default_factory=NullObserver)  # metrics (observer.py)
    write_rate: float = WRITE_RATE  # status writes a second (the writer's budget)
    write_burst: int = WRITE_BURST
    # Seconds ahead of a slot its run is dispatched, held until the slot (0: off), when
    # at least ``lead_min_batch`` runs come due together (see Firing.on_lead).
    dispatch_lead: float = 0.0
    lead_min_batch: int = LEAD_MIN_BATCH
    timers: TimerQueue = field(init=False)
    writer: StatusWriter = field(init=False)

    def __post_init__(self) -> None:
        self.timers = TimerQueue(self.clock)
        self.writer = StatusWriter(self.kube, self.tasks,
                                   fence=lambda ns, name: self.fence(ns, name),
                                   rate=self.write_rate, burst=self.write_burst,
                                   quiet=self.timers.quiet)

    async def fence_returns(self, namespace: str, name: str,
                            wait: float = FENCE_WAIT) -> bool:
        """Wait (at most ``wait`` s) until this process may act for the object again.

        A fence lapses for a moment when a Lease renewal is slow (an overloaded API
        server) although nobody else took the Lease; what was due meanwhile then goes
        out late rather than being lost. When the Lease really is lost, the caller's
        Schedule is dropped (its task cancelled) long before ``wait`` runs out.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while not self.fence(namespace, name):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def event(self, obj: dict[str, Any], kind: str, type_: str, reason: str, message: str,
              *, every: float = 60.0) -> None:
        """Post an Event in the background (best effort; repeats are folded)."""
        self.tasks.spawn(self.kube.event(obj, kind, type_, reason, message, every=every))
