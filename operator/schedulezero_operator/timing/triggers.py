"""Cron, interval and one-shot triggers; missed-slot and retry arithmetic."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

UTC = dt.UTC
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *", "@everyminute": "* * * * *", "@everysecond": "* * * * * *",
}
# How far to look for the next cron match before declaring "never" (e.g. Feb 30).
_HORIZON = dt.timedelta(days=366 * 5)


class TriggerError(ValueError):
    """A trigger the operator can't use; the message is shown to the user as is."""


def parse_duration(text: str) -> float:
    """``"90s"``, ``"1h30m"``, ``"500ms"``, ``"1.5h"`` -> seconds."""
    text = text.strip()
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise TriggerError(f"invalid duration {text!r}: use e.g. 30s, 5m, 1h30m, 500ms")
    return total


def parse_time(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise TriggerError(f"invalid time {text!r}: use RFC 3339, e.g. "
                           "2026-05-01T09:00:00Z") from None
    if value.tzinfo is None:
        raise TriggerError(f"time {text!r} has no UTC offset: add Z or +hh:mm")
    return value.astimezone(UTC)


@dataclass(frozen=True)
class Trigger:
    """One parsed trigger. ``kind`` is cron, interval or at."""

    kind: str
    expression: str  # as the user wrote it
    zone: ZoneInfo
    cron: str | None = None  # normalised cron fields
    seconds_field: bool = False
    fixed_time: bool = False
    period: float | None = None
    anchor: dt.datetime | None = None
    at: dt.datetime | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None

    @property
    def description(self) -> str:
        return self.expression if self.kind != "at" else f"at {self.expression}"


def parse_trigger(*, schedule: str | None = None, interval: str | None = None,
                  at: str | None = None, time_zone: str | None = "UTC",
                  start_time: str | None = None, end_time: str | None = None,
                  anchor: dt.datetime | None = None) -> Trigger:
    """Validate and parse; raises TriggerError with a message a person can act on."""
    given = [n for n, v in (("schedule", schedule), ("interval", interval), ("at", at)) if v]
    if len(given) != 1:
        raise TriggerError("exactly one of schedule, interval or at must be set "
                           f"(got {', '.join(given) or 'none'})")
    try:
        zone = ZoneInfo(time_zone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise TriggerError(f"unknown time zone {time_zone!r}: use an IANA name such as "
                           "Europe/Berlin or America/New_York") from None
    start = parse_time(start_time) if start_time else None
    end = parse_time(end_time) if end_time else None
    if start and end and end <= start:
        raise TriggerError("endTime must be after startTime")
    if schedule:
        expr = _MACROS.get(schedule.strip().lower(), schedule.strip())
        fields = expr.split()
        if len(fields) not in (5, 6):
            raise TriggerError(f"cron {schedule!r} must have 5 fields (minute hour day month "
                               "weekday) or 6 with seconds first, or be a macro like @hourly")
        seconds_field = len(fields) == 6
        if not croniter.is_valid(expr, second_at_beginning=seconds_field):
            raise TriggerError(f"invalid cron expression {schedule!r}")
        minute, hour = (fields[1], fields[2]) if seconds_field else (fields[0], fields[1])
        fixed = not minute.startswith("*") and not hour.startswith("*")
        return Trigger("cron", schedule, zone, cron=expr, seconds_field=seconds_field,
                       fixed_time=fixed, start=start, end=end)
    if interval:
        period = parse_duration(interval)
        if period < 1:
            raise TriggerError(f"interval {interval!r} is shorter than the 1s minimum")
        return Trigger("interval", interval, zone, period=period,
                       anchor=start or anchor or dt.datetime(1970, 1, 1, tzinfo=UTC),
                       start=start, end=end)
    assert at is not None
    return Trigger("at", at, zone, at=parse_time(at), start=start, end=end)


def next_fire(trigger: Trigger, after: dt.datetime) -> dt.datetime | None:
    """The first fire instant strictly after ``after`` (UTC), or None if there is none."""
    if trigger.start and after < trigger.start:
        after = trigger.start - dt.timedelta(microseconds=1)
    if trigger.kind == "at":
        result = trigger.at if trigger.at and trigger.at > after else None
    elif trigger.kind == "interval":
        result = _next_interval(trigger, after)
    else:
        result = _next_cron(trigger, after)
    if result is not None and trigger.end and result > trigger.end:
        return None
    return result


def _next_interval(trigger: Trigger, after: dt.datetime) -> dt.datetime:
    assert trigger.period is not None and trigger.anchor is not None
    elapsed = (after - trigger.anchor).total_seconds()
    k = math.floor(elapsed / trigger.period) + 1 if elapsed >= 0 else 0
    candidate = trigger.anchor + dt.timedelta(seconds=k * trigger.period)
    while candidate <= after:  # float rounding guard
        k += 1
        candidate = trigger.anchor + dt.timedelta(seconds=k * trigger.period)
    return candidate


def _next_cron(trigger: Trigger, after: dt.datetime) -> dt.datetime | None:
    """Walk wall-clock matches from a little before ``after`` and map each to instants."""
    zone = trigger.zone
    # Start 3 h early in wall time: covers a repeated hour and offset changes.
    local_start = after.astimezone(zone).replace(tzinfo=None) - dt.timedelta(hours=3)
    it = croniter(trigger.cron, local_start, second_at_beginning=trigger.seconds_field)
    limit = after + _HORIZON
    while True:
        try:
            naive: dt.datetime = it.get_next(dt.datetime)
        except CroniterBadDateError:  # e.g. "0 0 30 2 *": valid syntax, never fires
            return None
        for instant in _instants(naive, zone, trigger.fixed_time):
            if instant > after:
                return instant
        if naive.replace(tzinfo=zone) > limit:
            return None


def _instants(naive: dt.datetime, zone: ZoneInfo, fixed: bool) -> list[dt.datetime]:
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


def slots_between(trigger: Trigger, after: dt.datetime, until: dt.datetime,
                  cap: int) -> tuple[list[dt.datetime], bool]:
    """Fire instants in (after, until], at most ``cap``; and whether more were cut off."""
    slots: list[dt.datetime] = []
    current = after
    while True:
        nxt = next_fire(trigger, current)
        if nxt is None or nxt > until:
            return slots, False
        if len(slots) == cap:
            return slots, True
        slots.append(nxt)
        current = nxt


@dataclass(frozen=True)
class CatchUp:
    run: list[dt.datetime]
    missed: list[dt.datetime]
    missed_uncounted: bool  # more missed slots existed than were enumerated


def catch_up(slots: list[dt.datetime], truncated: bool, now: dt.datetime, *, policy: str,
             max_runs: int, starting_deadline: float | None) -> CatchUp:
    """Which overdue slots to run after downtime, and which to record as Missed.

    Slots older than ``starting_deadline`` seconds are always missed. Of the rest,
    ``Latest`` runs the newest, ``All`` runs up to ``max_runs`` newest (an explicit
    cap instead of CronJob's silent 100), ``Skip`` runs none.
    """
    eligible: list[dt.datetime] = []
    missed: list[dt.datetime] = []
    for s in slots:
        late = (now - s).total_seconds()
        (missed if starting_deadline is not None and late > starting_deadline
         else eligible).append(s)
    if policy == "Skip":
        run: list[dt.datetime] = []
    elif policy == "All":
        run = eligible[-max_runs:] if max_runs > 0 else []
    else:
        run = eligible[-1:]
    missed.extend(s for s in eligible if s not in run)
    return CatchUp(sorted(run), sorted(missed), truncated)


def jitter_offset(seed: str, jitter: float, gap_to_next: float | None) -> float:
    """Deterministic per-run offset in [0, jitter), kept below half the gap to the next fire.

    Deterministic (a hash of the run id) so a restarted operator fires the same
    run at the same instant.
    """
    if jitter <= 0:
        return 0.0
    bound = jitter if gap_to_next is None else min(jitter, gap_to_next / 2)
    fraction = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big") / 2**64
    return fraction * bound


def backoff_delay(attempt: int, *, initial: float, maximum: float, multiplier: float,
                  jitter: float, random_fraction: float) -> float:
    """Delay before attempt ``attempt + 1`` (attempt is 1-based), exponential with jitter.

    ``jitter`` (0..1) takes up to that share off the delay, using ``random_fraction``
    in [0, 1) supplied by the caller (so this stays a pure function).
    """
    base = min(initial * multiplier ** max(0, attempt - 1), maximum)
    return base * (1.0 - jitter * random_fraction)
