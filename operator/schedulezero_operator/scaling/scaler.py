"""The one place that changes replica counts: Deployment scale subresource patches.

Runs the pure ``desired_replicas`` for every Deployment-backed Handler with
``spec.scaling``, on demand changes and at least every half second (pre-warm
needs time to pass, not events). Each change is recorded by the engine:
``desiredReplicas``, ``lastScaleTime`` in the Handler's status, and an Event
with the reason. Only the engine's public scaling API is used.
"""

from __future__ import annotations

import datetime as dt
import logging

from ..engine import Engine, ScalingTarget
from .policy import desired_replicas

log = logging.getLogger("schedulezero.scaling")


class Scaler:
    def __init__(self, engine: Engine, period: float = 0.5) -> None:
        self.engine = engine
        self.period = period
        # Hysteresis memory: per Handler, the last time the need was >= its replicas.
        self._needed_current: dict[tuple[str, str], dt.datetime] = {}

    async def run(self) -> None:
        while True:
            await self.engine.wait_for_demand(self.period)
            for target in self.engine.scaling_targets():
                try:
                    await self.reconcile(target)
                except Exception:
                    log.exception("scaling %s/%s failed", target.namespace, target.name)

    async def reconcile(self, t: ScalingTarget) -> None:
        key = (t.namespace, t.name)
        now = self.engine.clock.now()
        sc = t.scaling
        decision = desired_replicas(
            current=t.current, in_flight=t.in_flight, queued=t.queued,
            concurrency=t.concurrency, min_replicas=sc.min_replicas,
            max_replicas=sc.max_replicas, scale_down_delay=sc.scale_down_delay_seconds,
            prewarm_seconds=sc.prewarm_seconds, upcoming=t.upcoming,
            last_needed_current=self._needed_current.get(key), now=now)
        if decision.needed >= t.current or key not in self._needed_current:
            self._needed_current[key] = now
        if decision.replicas == t.current and t.decided:
            return
        if decision.replicas != t.current:
            await self.engine.scale_handler(t.namespace, t.name, decision.replicas,
                                            decision.reason)
            self._needed_current[key] = now
        else:
            self.engine.set_desired_replicas(t.namespace, t.name, decision.replicas)
