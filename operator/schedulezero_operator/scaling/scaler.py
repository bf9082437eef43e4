"""The one place that changes replica counts: Deployment scale subresource patches.

Runs the pure ``desired_replicas`` for every Deployment-backed Handler with
``spec.scaling``, on demand changes and at least every half second (pre-warm
needs time to pass, not events). Each change is recorded: ``desiredReplicas``,
``lastScaleTime`` in the Handler's status, and an Event with the reason.
"""

from __future__ import annotations

import asyncio
import logging

from ..engine.engine import Engine, HandlerState
from .policy import desired_replicas

log = logging.getLogger("schedulezero.scaling")


class Scaler:
    def __init__(self, engine: Engine, period: float = 0.5) -> None:
        self.engine = engine
        self.period = period

    async def run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.period):
                    await self.engine.scaler_wake.wait()
            except TimeoutError:
                pass
            self.engine.scaler_wake.clear()
            for h in list(self.engine.handlers.values()):
                if h.source != "endpoints" and h.spec is not None and \
                        h.spec.scaling is not None and h.deployment and h.replicas is not None:
                    try:
                        await self.reconcile(h)
                    except Exception:
                        log.exception("scaling %s/%s failed", h.namespace, h.name)

    async def reconcile(self, h: HandlerState) -> None:
        eng = self.engine
        assert h.spec is not None and h.spec.scaling is not None and h.deployment
        sc = h.spec.scaling
        now = eng.clock.now()
        current = h.desired if h.desired is not None else int(h.replicas or 0)
        upcoming = [s.next_slot for s in eng.schedules_of(h.namespace, h.name)
                    if s.next_slot is not None and s.spec is not None and not s.spec.suspend]
        decision = desired_replicas(
            current=current, in_flight=h.pool.in_flight, queued=h.queued,
            concurrency=h.spec.concurrency, min_replicas=sc.min_replicas,
            max_replicas=sc.max_replicas, scale_down_delay=sc.scale_down_delay_seconds,
            prewarm_seconds=sc.prewarm_seconds, upcoming=upcoming,
            last_needed_current=h.last_needed_current, now=now)
        if decision.needed >= current or h.last_needed_current is None:
            h.last_needed_current = now
        if decision.replicas == current and h.desired is not None:
            return
        if decision.replicas != current:
            await eng.apps.scale(h.namespace, h.deployment, decision.replicas)
            log.info("%s/%s: %d -> %d replicas (%s)", h.namespace, h.name, current,
                     decision.replicas, decision.reason)
            h.scale_changes += 1
            h.last_scale_time = now
            h.last_needed_current = now
            if h.body is not None:
                up = decision.replicas > current
                await eng.kube.event(h.body, "Handler", "Normal",
                                     "ScaledUp" if up else "ScaledDown",
                                     f"{current} -> {decision.replicas} replicas: "
                                     f"{decision.reason}", every=0)
        h.desired = decision.replicas
        h.replicas = decision.replicas
        h.dirty = True
        eng._flush_wake.set()
