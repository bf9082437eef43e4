"""Desired replicas of a handler Deployment, from demand and known fire times.

Inputs are plain values (no clock, no client) so the policy is table-tested:
- demand = jobs in flight + jobs queued for the handler; one replica takes
  ``concurrency`` jobs, so ``ceil(demand / concurrency)`` replicas are needed;
- pre-warm: when a Schedule targeting the handler fires within
  ``prewarm_seconds``, at least one replica is needed *now*, so that a handler
  scaled to zero has a Ready pod when the run is due;
- hysteresis: scale up at once, scale down only after the need has stayed
  below the current size for ``scale_down_delay`` seconds (no flapping).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ScaleDecision:
    replicas: int
    reason: str  # why (empty when unchanged)
    needed: int  # what demand + pre-warm ask for right now


def desired_replicas(*, current: int, in_flight: int, queued: int, concurrency: int,
                     min_replicas: int, max_replicas: int, scale_down_delay: float,
                     prewarm_seconds: float, upcoming: list[dt.datetime],
                     last_needed_current: dt.datetime | None,
                     now: dt.datetime) -> ScaleDecision:
    """``last_needed_current``: the last time the need was >= ``current`` replicas."""
    demand = in_flight + queued
    needed = math.ceil(demand / max(1, concurrency))
    reason = f"{demand} job(s) in flight or queued" if needed else ""
    if prewarm_seconds > 0 and any(
            0 <= (t - now).total_seconds() <= prewarm_seconds for t in upcoming):
        if needed < 1:
            needed, reason = 1, f"pre-warm: a run is due within {prewarm_seconds:g}s"
    target = max(min_replicas, min(max_replicas, needed))
    if target > current:
        return ScaleDecision(target, f"scale up: {reason or 'minReplicas'}", needed)
    if target < current:
        idle_for = (now - last_needed_current).total_seconds() if last_needed_current else 1e18
        if idle_for >= scale_down_delay:
            return ScaleDecision(target, f"scale down: need {needed} for {idle_for:.0f}s "
                                 f"(scaleDownDelaySeconds {scale_down_delay:g})", needed)
    return ScaleDecision(current, "", needed)
