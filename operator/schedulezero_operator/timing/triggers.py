"""Cron, interval and one-shot triggers; missed-slot and retry arithmetic.

Instants are handled as integer seconds or microseconds since the epoch inside
(exact: no float drift over many interval periods, and no OverflowError near
year 9999, where a next fire simply does not exist).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass, field
from fractions import Fraction
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .cron import CronSchedule, cron_schedule, normalised
from .errors import TriggerError
from .zones import EPOCH, MAX_INSTANT

UTC = dt.UTC
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_UNIT_US = {"ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000,
            "d": 86_400_000_000}
_SECOND_US = 1_000_000
_MAX_DURATION_US = 36_500 * 86_400 * _SECOND_US  # parse_duration: 100 years
_MIN_INTERVAL_US = _SECOND_US
_MAX_INTERVAL_US = 366 * 86_400 * _SECOND_US
_MAX_US = (MAX_INSTANT + 1) * _SECOND_US - 1  # 9999-12-31T23:59:59.999999Z

__all__ = ["Trigger", "TriggerError", "backoff_delay", "catch_up", "jitter_bound",
           "jitter_offset", "next_fire", "parse_duration", "parse_time", "parse_trigger",
           "slots_between"]


def _duration_us(text: str) -> int:
    """``"90s"``, ``"1h30m"``, ``"500ms"``, ``"1.5h"`` -> whole microseconds (exact)."""
    text = text.strip()
    pos, total = 0, Fraction(0)
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        number = m.group(1)
        # Past 30 digits it is only "too long" (and int() refuses 4300+ digits).
        amount = Fraction(number) if len(number) <= 30 else Fraction(10**30)
        total += amount * _UNIT_US[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise TriggerError(f"invalid duration {text!r}: use e.g. 30s, 5m, 1h30m, 500ms")
    return round(total)


def parse_duration(text: str) -> float:
    """``"90s"``, ``"1h30m"``, ``"500ms"``, ``"1.5h"`` -> seconds (at most 100 years)."""
    us = _duration_us(text)
    if us > _MAX_DURATION_US:
        raise TriggerError(f"duration {text.strip()!r} is longer than the 100-year maximum "
                           "(36500d)")
    return us / _SECOND_US


def parse_time(text: str) -> dt.datetime:
    """An RFC 3339 time with an offset -> aware UTC datetime; TriggerError if invalid."""
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise TriggerError(f"invalid time {text!r}: use RFC 3339, e.g. "
                           "2026-05-01T09:00:00Z") from None
    if value.tzinfo is None:
        raise TriggerError(f"time {text!r} has no UTC offset: add Z or +hh:mm")
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise TriggerError(f"time {text!r} is out of range: use a time between years "
                           "0001 and 9999 in UTC") from None


def _us(t: dt.datetime) -> int:
    """Microseconds since the epoch (naive datetimes count as UTC)."""
    d = (t if t.tzinfo is not None else t.replace(tzinfo=UTC)) - EPOCH
    return (d.days * 86_400 + d.seconds) * _SECOND_US + d.microseconds


@dataclass(frozen=True)
class Trigger:
    """One parsed trigger. ``kind`` is cron, interval or at."""

    kind: str
    expression: str  # as the user wrote it
    zone: ZoneInfo
    cron: str | None = None  # normalised cron fields
    seconds_field: bool = False
    fixed_time: bool = False
    period: float | None = None  # seconds
    anchor: dt.datetime | None = None
    at: dt.datetime | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    # Derived, exact forms used by next_fire (filled in by parse_trigger).
    compiled: CronSchedule | None = field(default=None, compare=False, repr=False)
    period_us: int | None = field(default=None, compare=False, repr=False)
    anchor_us: int | None = field(default=None, compare=False, repr=False)

    @property
    def description(self) -> str:
        return self.expression if self.kind != "at" else f"at {self.expression}"


def parse_trigger(*, schedule: str | None = None, interval: str | None = None,
                  at: str | None = None, time_zone: str | None = "UTC",
                  start_time: str | None = None, end_time: str | None = None,
                  anchor: dt.datetime | None = None) -> Trigger:
    """Validate and parse; raises TriggerError with a message a person can act on.

    Rejected here, not discovered later: cron expressions that can never fire
    (February 30), intervals under 1 s or over 366 days, times out of range.
    """
    given = [n for n, v in (("schedule", schedule), ("interval", interval), ("at", at)) if v]
    if len(given) != 1:
        raise TriggerError("exactly one of schedule, interval or at must be set "
                           f"(got {', '.join(given) or 'none'})")
    try:
        zone = ZoneInfo(time_zone or "UTC")
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise TriggerError(f"unknown time zone {time_zone!r}: use an IANA name such as "
                           "Europe/Berlin or America/New_York") from None
    start = parse_time(start_time) if start_time else None
    end = parse_time(end_time) if end_time else None
    if start and end and end <= start:
        raise TriggerError("endTime must be after startTime")
    if schedule:
        compiled = cron_schedule(schedule, zone)
        spec = compiled.spec
        return Trigger("cron", schedule, zone, cron=normalised(schedule),
                       seconds_field=spec.seconds_field, fixed_time=spec.fixed_time,
                       start=start, end=end, compiled=compiled)
    if interval:
        period_us = _duration_us(interval)
        if period_us < _MIN_INTERVAL_US:
            raise TriggerError(f"interval {interval!r} is shorter than the 1s minimum")
        if period_us > _MAX_INTERVAL_US:
            raise TriggerError(f"interval {interval!r} is longer than the 1-year maximum "
                               "(366d); use a cron schedule such as @yearly")
        base = start or anchor or EPOCH
        return Trigger("interval", interval, zone, period=period_us / _SECOND_US,
                       anchor=base, start=start, end=end, period_us=period_us,
                       anchor_us=_us(base))
    assert at is not None
    return Trigger("at", at, zone, at=parse_time(at), start=start, end=end)


def next_fire(trigger: Trigger, after: dt.datetime) -> dt.datetime | None:
    """The first fire instant strictly after ``after`` (UTC), or None if there is none.

    ``after`` should be aware (a naive one is taken as UTC). Within startTime/endTime
    only; None past year 9999 rather than an OverflowError.
    """
    kind = trigger.kind
    if kind == "at":
        at = trigger.at
        if after.tzinfo is None:
            after = after.replace(tzinfo=UTC)
        if at is None or at <= after or (trigger.start is not None and at < trigger.start):
            return None
        return at if trigger.end is None or at <= trigger.end else None
    after_us = _us(after)
    if trigger.start is not None:
        start_us = _us(trigger.start)
        if after_us < start_us:
            after_us = start_us - 1
    if kind == "cron":
        compiled = trigger.compiled
        if compiled is None:  # a Trigger built by hand
            compiled = cron_schedule(trigger.cron or trigger.expression, trigger.zone)
        instant = compiled.next_after(after_us // _SECOND_US)  # floor: cron is whole seconds
        if instant is None:
            return None
        result = EPOCH + dt.timedelta(seconds=instant)
    else:
        result_us = _next_interval_us(trigger, after_us)
        if result_us is None:
            return None
        result = EPOCH + dt.timedelta(microseconds=result_us)
    if trigger.end is not None and result > trigger.end:
        return None
    return result


def _next_interval_us(trigger: Trigger, after_us: int) -> int | None:
    """Anchor + k periods, the first after ``after_us``: integer arithmetic, no drift."""
    period = trigger.period_us
    if period is None:
        assert trigger.period is not None
        period = round(trigger.period * _SECOND_US)
    anchor = trigger.anchor_us
    if anchor is None:
        assert trigger.anchor is not None
        anchor = _us(trigger.anchor)
    elapsed = after_us - anchor
    k = elapsed // period + 1 if elapsed >= 0 else 0
    candidate = anchor + k * period
    return candidate if candidate <= _MAX_US else None


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


def _jitter_bound(jitter: float, gap_to_next: float | None) -> tuple[float, bool]:
    """min(jitter, half the gap to the next fire), and whether the gap was the limit."""
    if gap_to_next is None or jitter <= gap_to_next / 2:
        return jitter, False
    return gap_to_next / 2, True


def jitter_bound(trigger: Trigger, slot: dt.datetime,
                 jitter_seconds: float) -> tuple[float, bool]:
    """The effective jitter bound for ``slot`` and whether it was clamped.

    Jitter never delays a run by half the gap to the following slot or more (so
    runs stay in order and spread around their own slot); the engine reports the
    clamping, e.g. a 30 s jitter on a 10 s interval is effectively 5 s.
    """
    if jitter_seconds <= 0:
        return 0.0, False
    following = next_fire(trigger, slot)
    gap = (following - slot).total_seconds() if following is not None else None
    return _jitter_bound(jitter_seconds, gap)


def jitter_offset(seed: str, jitter: float, gap_to_next: float | None) -> float:
    """Deterministic per-run offset in [0, jitter), kept below half the gap to the next fire.

    Deterministic (a hash of the run id) so a restarted operator fires the same
    run at the same instant.
    """
    if jitter <= 0:
        return 0.0
    bound, _ = _jitter_bound(jitter, gap_to_next)
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
