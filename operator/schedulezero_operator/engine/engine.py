"""The engine's facade: wires the parts and is all the controllers and the scaler see.

Parts (each its own module): ``timers`` (one heap for every Schedule, dispatch
first), ``schedules`` + ``firing`` + ``runs`` (per-Schedule state machine),
``claims`` (pure slot-claim math), ``status`` (typed status, the only writer of
its shape), ``writer`` (coalescing status writes), ``handlers`` + ``endpoints``
+ ``deployments`` (Handler registry, endpoint queues, pods of Deployments). The
API server and the handlers are behind the two ports in ``ports``, so unit
tests run all of it against fakes; metrics go out through ``observer``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..api.models import Scaling
from .clock import Clock
from .context import Context
from .handlers import PROBE_EVERY, HandlerRegistry
from .observer import NullObserver, Observer
from .ports import DispatcherPort, KubePort
from .runs import RunExecutor
from .schedules import ScheduleRunner, kept_body
from .writer import WRITE_BURST, WRITE_RATE

log = logging.getLogger("schedulezero.engine")
SHUTDOWN_FLUSH_SECONDS = 3.0
# Runs are dispatched this far ahead of their slot and held until it (see
# Firing.on_lead): a burst of 1,000 runs due at one second takes the operator and a
# handler a few hundred ms to deliver, which then lands before the second, not after.
DISPATCH_LEAD = 1.0


def default_identity() -> str:
    """Unique per operator process: the pod (or host) name and the pid."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class ScalingTarget:
    """What the scaler needs to know about one scalable, Deployment-backed Handler."""

    namespace: str
    name: str
    current: int  # replicas as last set by the scaler, else as the Deployment says
    decided: bool  # the scaler has set replicas since the operator started
    in_flight: int
    queued: int
    concurrency: int
    scaling: Scaling
    upcoming: list[dt.datetime]  # next fire times of the Schedules that target it


class Engine:
    def __init__(self, kube: KubePort, clock: Clock, dispatcher: DispatcherPort | None = None,
                 identity: str | None = None, rng: random.Random | None = None,
                 observer: Observer | None = None, probe_every: float = PROBE_EVERY,
                 write_rate: float = WRITE_RATE, write_burst: int = WRITE_BURST,
                 dispatch_lead: float = DISPATCH_LEAD) -> None:
        if dispatcher is None:
            from ..dispatch import Dispatcher

            dispatcher = Dispatcher()
        self.ctx = Context(kube, clock, dispatcher, identity or default_identity(),
                           rng or random.Random(), observer=observer or NullObserver(),
                           write_rate=write_rate, write_burst=write_burst,
                           dispatch_lead=max(0.0, dispatch_lead))
        self._demand = asyncio.Event()
        self.handlers = HandlerRegistry(self.ctx, on_change=self._handler_changed,
                                        on_demand=self._demand.set)
        # ScheduleZero registrations (served by controllers when --legacy-registry-port)
        self.registrations = self.handlers.registrations
        self.probe_every = probe_every
        self._executor = RunExecutor(self.ctx, self.handlers)
        self.schedules: dict[tuple[str, str], ScheduleRunner] = {}
        # The newest body of every Schedule seen that has no runner here (another
        # replica's bucket): a replica that gains a bucket starts those Schedules from
        # their current status (like first sight). A Schedule with a runner keeps its
        # body there (without status: the record and the writer have that), so no
        # Schedule is held twice: at 10,000 Schedules a second parsed copy of every
        # object (the echo of our own status write) was ~70 MB of RSS.
        self._bodies: dict[tuple[str, str], dict[str, Any]] = {}
        self._loops: list[asyncio.Task[Any]] = []
        # Which Schedules get a runner here (see set_fence): all of them, unless sharded.
        self._holds: Callable[[str, str], bool] = lambda namespace, name: True

    @property
    def identity(self) -> str:
        return self.ctx.identity

    @property
    def clock(self) -> Clock:
        return self.ctx.clock

    # -- lifecycle ----------------------------------------------------------------------
    async def run(self) -> None:
        """The engine's own tasks: timers, the status writer, endpoint probes."""
        tasks = self.ctx.tasks
        self._loops = [tasks.spawn(self.ctx.timers.run()), tasks.spawn(self.ctx.writer.run()),
                       tasks.spawn(self.handlers.probe_forever(self.probe_every))]
        await asyncio.Event().wait()

    async def close(self) -> None:
        """Stop firing, write what is pending (runs in flight stay ``active`` in status,
        so the next operator resumes them), then stop everything."""
        for task in self._loops:
            task.cancel()
        try:
            await asyncio.wait_for(self.ctx.writer.flush(), SHUTDOWN_FLUSH_SECONDS)
        except TimeoutError:
            log.warning("status writes still pending at shutdown; the next operator "
                        "resolves them from the status it finds")
        await self.ctx.tasks.cancel_all()
        await self.ctx.dispatcher.close()
        await self.ctx.kube.close()

    # -- ownership (leader election, buckets) ---------------------------------------------
    def set_fence(self, fence: Callable[[str, str], bool],
                  holds: Callable[[str, str], bool] | None = None) -> None:
        """Act only for the Schedules ``fence(namespace, name)`` says are ours (now).

        ``holds``: is the Schedule in a bucket we hold, whether or not its fence lapsed
        for a moment (a slow renewal)? That decides which Schedules have a runner here;
        the fence decides when they may act. Deciding both by the fence dropped every
        Schedule whose watch event came during a lapse (at 1,000 Schedules with two
        replicas, 11 never fired), since nothing restarts them when the fence returns.
        """
        self.ctx.fence = fence
        self.ctx.leased = True
        self._holds = holds or fence
        self.rebalance()

    def next_work_in(self) -> float | None:
        """Seconds until the earliest work this engine knows of: 0 while a run is in
        progress, else until its first armed timer; None if nothing is armed. What the
        Lease elector bounds its quiet Leases by (controllers.buckets)."""
        if self._executor.active:
            return 0.0
        when = self.ctx.timers.next_due()
        if when is None:
            return None
        return max(0.0, (when - self.clock.now()).total_seconds())

    def rebalance(self) -> None:
        """Ownership changed: start the Schedules we gained, drop the ones we lost.

        A dropped Schedule's runs in flight are cancelled without a record and stay
        ``active`` in its status; the new holder resumes them under the same run ids
        (the SDK joins or replays them), and takes our unexpired claim over at once,
        as a predecessor's.
        """
        for key in [k for k in self.schedules if not self._holds(*k)]:
            log.info("%s/%s: handed over to another operator", *key)
            self._hand_over(key)
        for key in [k for k in self._bodies if self._holds(*k)]:
            self._create(key, self._bodies.pop(key))

    def _hand_over(self, key: tuple[str, str]) -> None:
        """Drop our runner of ``key``; keep its body, with the status as we know it,
        in case the bucket comes back before the object's next watch event."""
        runner = self.schedules.pop(key)
        self._bodies[key] = runner.handover_body()
        runner.delete()

    # -- watch events ---------------------------------------------------------------------
    def upsert_schedule(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        if not self._holds(*key):
            if key in self.schedules:
                self.schedules.pop(key).delete()
            self._bodies[key] = kept_body(body, with_status=True)
            return
        self._bodies.pop(key, None)
        runner = self.schedules.get(key)
        if runner is not None and runner.s.uid != meta["uid"]:
            self.delete_schedule(key)  # same name, new object
            runner = None
        if runner is None:
            self._create(key, body)
        else:
            runner.upsert(body)

    def absorb_echo(self, body: dict[str, Any]) -> bool:
        """Is this watched Schedule the echo of our own last status write? Then say so:
        nothing needs to see it (the runner keeps its body without status, and a
        hand-over takes the status from the runner).

        An object at the resourceVersion our PATCH returned is exactly what we wrote on
        top of what we had seen (any other change has its own resourceVersion, and the
        watch delivers in order), so the runner has nothing to learn from it — at high
        fire rates these echoes are most of the watch traffic.
        """
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        runner = self.schedules.get(key)
        if runner is None or runner.s.uid != meta.get("uid") \
                or runner.s.resource_version != meta.get("resourceVersion"):
            return False
        return True

    def _create(self, key: tuple[str, str], body: dict[str, Any]) -> None:
        self.schedules[key] = ScheduleRunner(self.ctx, self.handlers, self._executor, body,
                                             on_gone=self.delete_schedule)

    def delete_schedule(self, key: tuple[str, str]) -> None:
        self._bodies.pop(key, None)
        runner = self.schedules.pop(key, None)
        if runner is not None:
            runner.delete(recall_held=True)
        self.ctx.observer.forget_schedule(*key)

    def upsert_handler(self, body: dict[str, Any]) -> None:
        self.handlers.upsert(body)

    def delete_handler(self, namespace: str, name: str) -> None:
        self.handlers.delete(namespace, name)

    def on_pod(self, event_type: str, pod: dict[str, Any]) -> None:
        """Ready pods of Deployment-backed handlers become dispatch endpoints."""
        self.handlers.deployments.on_pod(event_type, pod)

    def _schedules_of(self, namespace: str, handler: str) -> list[ScheduleRunner]:
        """The valid Schedules that target a Handler."""
        return [r for r in self.schedules.values() if r.s.namespace == namespace
                and r.s.spec is not None and r.s.spec.handler == handler]

    def _handler_changed(self, namespace: str, name: str) -> None:
        for runner in self._schedules_of(namespace, name):
            runner.check_handler()

    # -- for the scaler -----------------------------------------------------------------
    async def wait_for_demand(self, timeout: float) -> None:
        """Until jobs in flight or queued change somewhere, or ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                await self._demand.wait()
        except TimeoutError:
            pass
        self._demand.clear()

    def scaling_targets(self) -> list[ScalingTarget]:
        targets = []
        for h in self.handlers:
            if h.source == "endpoints" or h.spec is None or h.spec.scaling is None or \
                    not h.deployment or h.replicas is None:
                continue
            upcoming = [r.s.next_slot for r in self._schedules_of(h.namespace, h.name)
                        if r.s.next_slot is not None and r.s.spec is not None
                        and not r.s.spec.suspend]
            targets.append(ScalingTarget(
                h.namespace, h.name, h.desired if h.desired is not None else h.replicas,
                h.desired is not None, h.in_flight, h.queued, h.spec.concurrency,
                h.spec.scaling, upcoming))
        return targets

    async def scale_handler(self, namespace: str, name: str, replicas: int,
                            reason: str) -> None:
        """Set the Handler's Deployment to ``replicas``, with an Event saying why."""
        h = self.handlers.get(namespace, name)
        if h is None or not h.deployment:
            return
        current = h.desired if h.desired is not None else int(h.replicas or 0)
        await self.ctx.kube.scale(namespace, h.deployment, replicas)
        log.info("%s/%s: %d -> %d replicas (%s)", namespace, name, current, replicas, reason)
        h.last_scale_time = self.ctx.clock.now()
        if h.body is not None:
            await self.ctx.kube.event(h.body, "Handler", "Normal",
                                      "ScaledUp" if replicas > current else "ScaledDown",
                                      f"{current} -> {replicas} replicas: {reason}", every=0)
        self.set_desired_replicas(namespace, name, replicas)

    def set_desired_replicas(self, namespace: str, name: str, replicas: int) -> None:
        """Record the scaler's decision (``status.desiredReplicas``)."""
        h = self.handlers.get(namespace, name)
        if h is not None:
            h.desired = h.replicas = replicas
            self.ctx.writer.mark(h)
