"""The firing core's previous cron walker, kept as an oracle for tests and bench/timing.py.

It constructed a croniter per call, started three hours back in wall time and
walked every match forward, mapping each to instants with the Vixie DST rules:
slow (5-4,000 next-fires/s) but the reference the compiled tables were checked
against, across DST days, by property tests.
"""

from __future__ import annotations

import datetime as dt
import math
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter
from schedulezero_operator.timing import Trigger

UTC = dt.UTC

_HORIZON = dt.timedelta(days=366 * 5)


def old_next_cron(cron: str, seconds_field: bool, zone: ZoneInfo, fixed: bool,
                  after: dt.datetime) -> dt.datetime | None:
    """Walk wall-clock matches from a little before ``after`` and map each to instants."""
    # Start 3 h early in wall time: covers a repeated hour and offset changes.
    local_start = after.astimezone(zone).replace(tzinfo=None) - dt.timedelta(hours=3)
    it = croniter(cron, local_start, second_at_beginning=seconds_field)
    limit = after + _HORIZON
    while True:
        try:
            naive: dt.datetime = it.get_next(dt.datetime)
        except CroniterBadDateError:  # e.g. "0 0 30 2 *": valid syntax, never fires
            return None
        for instant in instants(naive, zone, fixed):
            if instant > after:
                return instant
        if naive.replace(tzinfo=zone) > limit:
            return None


def instants(naive: dt.datetime, zone: ZoneInfo, fixed: bool) -> list[dt.datetime]:
    """UTC instants at which a wall-clock match fires, per the Vixie cron rules."""
    first = naive.replace(tzinfo=zone, fold=0)
    second = naive.replace(tzinfo=zone, fold=1)
    u0, u1 = first.astimezone(UTC), second.astimezone(UTC)
    exists = u0.astimezone(zone).replace(tzinfo=None) == naive
    if not exists:  # in a spring-forward gap
        return [_transition(min(u0, u1), max(u0, u1), zone)] if fixed else []
    if u0 != u1:  # repeated (fall-back): fold=0 is the earlier instant
        return [u0] if fixed else sorted({u0, u1})
    return [u0]


def _transition(lo: dt.datetime, hi: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    """The instant in (lo, hi] where the zone's UTC offset changes (binary search)."""
    before = lo.astimezone(zone).utcoffset()
    while (hi - lo) > dt.timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(zone).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return hi.replace(microsecond=0)


def old_next_interval(period: float, anchor: dt.datetime, after: dt.datetime) -> dt.datetime:
    elapsed = (after - anchor).total_seconds()
    k = math.floor(elapsed / period) + 1 if elapsed >= 0 else 0
    candidate = anchor + dt.timedelta(seconds=k * period)
    while candidate <= after:
        k += 1
        candidate = anchor + dt.timedelta(seconds=k * period)
    return candidate


def old_next_fire(trigger: Trigger, after: dt.datetime) -> dt.datetime | None:
    if trigger.kind == "at":
        return trigger.at if trigger.at and trigger.at > after else None
    if trigger.kind == "interval":
        assert trigger.period is not None and trigger.anchor is not None
        return old_next_interval(trigger.period, trigger.anchor, after)
    assert trigger.cron is not None
    return old_next_cron(trigger.cron, trigger.seconds_field, trigger.zone,
                         trigger.fixed_time, after)
