"""Compiled cron expressions: parse once, then find next fires by table lookup.

Why: the operator computes a next fire for every run of every Schedule. Building a
croniter per call and walking its matches forward from three hours back cost up
to 200 ms for a per-second expression; here an expression is parsed once (cached
by expression, and by expression and zone for the zone-bound form) into per-field
sets and "next allowed value" tables, and a next fire jumps straight to the next
matching month, day and time of day, then maps that wall-clock time to an instant
with the zone's cached offset timeline (``zones``).

Syntax (what cron users expect from Vixie cron, plus the usual extensions):

- 5 fields ``minute hour day-of-month month day-of-week``, or 6 with *seconds
  first* (Quartz/Spring/robfig ``WithSeconds``);
- macros ``@yearly @annually @monthly @weekly @daily @midnight @hourly`` and
  ``@everyminute @everysecond``;
- ``*``, values, ranges ``a-b``, steps ``*/n`` ``a-b/n`` and ``a/n`` (from ``a`` to
  the end of the field, as croniter reads it), lists ``a,b-c,*/n``;
- month names ``JAN``-``DEC`` and weekday names ``SUN``-``SAT`` (any case); weekday
  ``7`` is Sunday, as is ``0``;
- ``?`` in day-of-month or day-of-week means ``*`` (Quartz habit);
- a range that runs past the end of its field wraps around (``22-2`` hours, ``FRI-MON``),
  as croniter does; with a step it is rejected, because implementations disagree on
  where the step continues after the wrap (croniter is off by one);
- ``a-a`` is the single value ``a`` (cron(5); croniter reads it as the whole field).

Rejected with a message, not supported: Quartz/Jenkins extensions ``L`` (last day),
``W`` (nearest weekday), ``#`` (nth weekday), ``H`` (hashed) and ``R`` (random), and a
year field. They would need per-month rules beyond plain sets, and every Schedule
can be written without them.

Day-of-month and day-of-week combine as in Vixie cron: if both fields are
restricted (neither starts with ``*`` or is ``?``), a day matches if *either*
matches; otherwise both must. (croniter differs for fields such as ``*/2`` or
``*/1``, which it counts as restricted.)
"""

from __future__ import annotations

import datetime as dt
import re
from bisect import bisect_left
from functools import lru_cache
from zoneinfo import ZoneInfo

from .errors import TriggerError
from .zones import EPOCH_ORDINAL, MAX_INSTANT, MIN_INSTANT, ZoneTimeline, timeline

MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *", "@everyminute": "* * * * *", "@everysecond": "* * * * * *",
}
MONTH_NAMES = ("", "January", "February", "March", "April", "May", "June", "July",
               "August", "September", "October", "November", "December")
_MONTHS = {name[:3].lower(): i for i, name in enumerate(MONTH_NAMES) if name}
_WEEKDAYS = {name: i for i, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri",
                                                "sat"))}
_MONTH_DAYS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_MAX_ORDINAL = dt.date.max.toordinal()
_fromordinal = dt.date.fromordinal
_date = dt.date


class _Field:
    """One cron field: its name in messages, its bounds and its names."""

    def __init__(self, name: str, lo: int, hi: int, names: dict[str, int] | None = None,
                 top: int | None = None, hint: str = "") -> None:
        self.name, self.lo, self.hi = name, lo, hi
        self.top = hi if top is None else top  # where "*" and "a/n" end (day-of-week: 6)
        self.names = names or {}
        self.hint = hint


_SECOND = _Field("second", 0, 59)
_MINUTE = _Field("minute", 0, 59)
_HOUR = _Field("hour", 0, 23)
_DOM = _Field("day-of-month", 1, 31)
_MONTH = _Field("month", 1, 12, _MONTHS, hint=" or a month name (JAN-DEC)")
_DOW = _Field("day-of-week", 0, 7, _WEEKDAYS, top=6, hint=" or a weekday name (SUN-SAT)")

# Quartz/Jenkins/croniter extensions, recognised only to say why they are rejected.
_EXTENSIONS = (
    (re.compile(r".*#.*"), "'#' (nth weekday of the month)"),
    (re.compile(r"l|lw|l-\d+|\d+w|w\d+"), "'L'/'W' (last day / nearest weekday)"),
    (re.compile(r"\d+l|l\d+"), "'L' (last weekday of the month)"),
    (re.compile(r"[hr](\(.*\))?(/.*)?"), "'H'/'R' (hashed / random values)"),
)


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _join(items: list[str], word: str) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {word} {items[-1]}"


def _next_table(values: frozenset[int], size: int) -> tuple[int, ...]:
    """Entry v: the smallest allowed value >= v, or -1; entry ``size`` is always -1."""
    out = [-1] * (size + 1)
    nxt = -1
    for v in range(size - 1, -1, -1):
        if v in values:
            nxt = v
        out[v] = nxt
    return tuple(out)


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


class CronSpec:
    """A parsed cron expression: its field sets and the lookup tables for next matches.

    Pure calendar arithmetic on wall-clock times, which are counted as integer seconds
    since 1970-01-01T00:00:00 *local* (no zone; the zone is applied by CronSchedule).
    """

    __slots__ = ("_days", "_first", "_memo", "_month_ok", "_nhour", "_nminute", "_nmonth",
                 "_nsecond", "dom_star", "doms", "dow_star", "dows", "expression",
                 "fields", "fixed_time", "hours", "minutes", "months", "seconds",
                 "seconds_field")

    def __init__(self, expression: str, fields: list[str], sets: list[frozenset[int]],
                 dom_star: bool, dow_star: bool) -> None:
        self.expression = expression
        self.fields = tuple(fields)
        self.seconds_field = len(fields) == 6
        seconds, minutes, hours, doms, months, dows = sets
        # Allowed values as sorted tuples (day-of-week: 0 = Sunday, 7 folded into 0).
        self.seconds, self.minutes = tuple(sorted(seconds)), tuple(sorted(minutes))
        self.hours, self.doms = tuple(sorted(hours)), tuple(sorted(doms))
        self.months, self.dows = tuple(sorted(months)), tuple(sorted(dows))
        self.dom_star, self.dow_star = dom_star, dow_star
        minute_text, hour_text = fields[-5], fields[-4]
        # Vixie cron's "fixed time": neither the minute nor the hour field starts with *.
        self.fixed_time = not minute_text.startswith("*") and not hour_text.startswith("*")
        self._nsecond = _next_table(seconds, 60)
        self._nminute = _next_table(minutes, 60)
        self._nhour = _next_table(hours, 24)
        self._nmonth = _next_table(months, 13)
        self._month_ok = tuple(m in months for m in range(13))
        self._first = self.hours[0] * 3600 + self.minutes[0] * 60 + self.seconds[0]
        # Matching days of a month depend only on its length and the weekday of its
        # 1st: index weekday_of_1st * 32 + length (weekday 0 = Sunday).
        both = dom_star or dow_star  # Vixie: AND if either field starts with *, else OR
        days: list[tuple[int, ...]] = [()] * (7 * 32)
        for wd1 in range(7):
            for length in (28, 29, 30, 31):
                matching = []
                for d in range(1, length + 1):
                    dom_ok, dow_ok = d in doms, (wd1 + d - 1) % 7 in dows
                    if (dom_ok and dow_ok) if both else (dom_ok or dow_ok):
                        matching.append(d)
                days[wd1 * 32 + length] = tuple(matching)
        self._days = tuple(days)
        self._memo: tuple[int, bool, int | None] = (-1 << 62, False, None)

    def never_fires_reason(self) -> str | None:
        """Why no date ever matches (e.g. February 30), or None if some date does.

        Exact: every (month, leap year or not, weekday of the 1st) combination recurs
        in the Gregorian calendar, so the expression fires iff one of them has a day.
        """
        for month in self.months:
            lengths = (28, 29) if month == 2 else (_MONTH_DAYS[month],)
            if any(self._days[wd1 * 32 + n] for wd1 in range(7) for n in lengths):
                return None
        # Only a restricted day-of-month ANDed with the weekdays can be empty: the
        # days listed exceed the length of every month allowed.
        days = [str(d) for d in self.doms]
        months = [MONTH_NAMES[m] for m in self.months]
        noun = "day" if len(days) == 1 else "days"
        verb = "does" if len(days) == 1 else "do"
        return f"{noun} {_join(days, 'and')} {verb} not occur in {_join(months, 'or')}"

    def next_wall(self, w: int) -> int | None:
        """The first matching wall-clock second >= ``w``, or None (past year 9999).

        Jumps: the time of day via the hour/minute/second tables, the day by bisecting
        the month's matching days, the month via the month table (a year at a time
        when no allowed month has a matching day, e.g. a leap day). What is known
        about the day of ``w`` is memoised: a chain of fires mostly stays in one day.
        """
        days, sod = divmod(w, 86400)
        memo = self._memo
        if memo[0] != days:
            if not 1 <= days + EPOCH_ORDINAL <= _MAX_ORDINAL:
                if days + EPOCH_ORDINAL > _MAX_ORDINAL:
                    return None
                days, sod = 1 - EPOCH_ORDINAL, 0
                w = days * 86400
            memo = self._memo = self._day(days)
        if memo[1]:  # the day matches: the next allowed time of day >= sod, if any
            hour, rest = divmod(sod, 3600)
            minute, second = divmod(rest, 60)
            nh = self._nhour[hour]
            if nh == hour:
                nm = self._nminute[minute]
                if nm == minute:
                    ns = self._nsecond[second]
                    if ns >= 0:
                        return w - second + ns
                    nm = self._nminute[minute + 1]
                if nm >= 0:
                    return w - sod + hour * 3600 + nm * 60 + self.seconds[0]
                nh = self._nhour[hour + 1]
            if nh >= 0:
                return w - sod + nh * 3600 + self.minutes[0] * 60 + self.seconds[0]
        return memo[2]

    def _day(self, days: int) -> tuple[int, bool, int | None]:
        """(days, whether that day matches, first match on a later day or None)."""
        ordinal = days + EPOCH_ORDINAL
        date = _fromordinal(ordinal)
        year, month, day = date.year, date.month, date.day
        if self._month_ok[month]:
            length = 29 if month == 2 and _is_leap(year) else _MONTH_DAYS[month]
            candidates = self._days[((ordinal - day + 1) % 7) * 32 + length]
            i = bisect_left(candidates, day)
            today = i < len(candidates) and candidates[i] == day
            i += today
            if i < len(candidates):
                return days, today, (days + candidates[i] - day) * 86400 + self._first
        else:
            today = False
        nmonth, table = self._nmonth, self._days
        month = nmonth[month + 1]
        while True:
            if month < 0:
                year += 1
                if year > 9999:
                    return days, today, None
                month = nmonth[1]
            first = _date(year, month, 1).toordinal()
            length = 29 if month == 2 and _is_leap(year) else _MONTH_DAYS[month]
            candidates = table[(first % 7) * 32 + length]
            if candidates:
                return days, today, (first - EPOCH_ORDINAL + candidates[0] - 1) * 86400 \
                    + self._first
            month = nmonth[month + 1]


class CronSchedule:
    """A CronSpec bound to a time zone: next fire instants with Vixie cron DST rules.

    - a *fixed-time* expression (neither minute nor hour starts with ``*``) whose
      wall time is skipped by a spring-forward transition fires once, at the
      transition instant; one whose wall time occurs twice fires at the first;
    - any other expression follows the wall clock: skipped wall times don't fire,
      repeated wall times fire at both instants.
    """

    __slots__ = ("spec", "timeline", "zone")

    def __init__(self, spec: CronSpec, zone: ZoneInfo) -> None:
        self.spec, self.zone = spec, zone
        self.timeline: ZoneTimeline = timeline(zone)

    def next_after(self, after: int) -> int | None:
        """The first fire instant (integer seconds since the epoch, UTC) > ``after``.

        Walks the zone's constant-offset segments from the one holding ``after + 1``:
        in each, the first match at or after the segment's first wall time (or
        ``after``'s wall time) maps back with that one offset if it falls inside the
        segment; else the search continues in the next segment. A chain of fires
        stays in one segment for months, so this is usually one table lookup.
        """
        spec = self.spec
        next_wall = spec.next_wall
        lo = max(after + 1, MIN_INSTANT)
        timeline = self.timeline
        if timeline.constant:  # UTC and fixed offsets: one offset, no transitions
            off = timeline.fixed_offset
            w = next_wall(lo + off)
            if w is None or w - off > MAX_INSTANT:
                return None
            return w - off
        segment = timeline.segment
        fixed = spec.fixed_time
        while lo <= MAX_INSTANT:
            start, end, off_prev, off = segment(lo)
            if fixed and off > off_prev and start == lo:
                # Spring-forward at ``lo``: wall times in [start+off_prev, start+off)
                # never happen; a fixed-time match among them fires at the transition.
                w = next_wall(start + off_prev)
                if w is None:
                    return None
                if w < start + off:
                    return start
            wall = lo + off
            if fixed and off < off_prev and wall < start + off_prev:
                # Fall-back at ``start``: wall times before start+off_prev already
                # happened in the previous segment, where a fixed-time job ran them.
                wall = start + off_prev
            w = next_wall(wall)
            if w is None:
                return None
            if w < end + off:
                instant = w - off
                return instant if instant <= MAX_INSTANT else None
            lo = end
        return None


def _unsupported(item: str) -> str | None:
    for pattern, what in _EXTENSIONS:
        if pattern.fullmatch(item):
            return what
    return None


def _parse_field(expression: str, field: _Field, text: str) -> tuple[frozenset[int], bool]:
    """A field's allowed values, and whether it counts as unrestricted (``*``/``?``)."""

    def bad(problem: str) -> TriggerError:
        return TriggerError(f"invalid cron expression {expression!r}: {field.name} field "
                            f"{problem}")

    def value(token: str, item: str) -> int:
        if _is_number(token):
            if len(token) > 6 or not field.lo <= int(token) <= field.hi:
                raise bad(f"value {token} is out of range {field.lo}-{field.hi}")
            return int(token)
        if token.lower() in field.names:
            return field.names[token.lower()]
        if not token:
            raise bad(f"value {item!r} is missing a number (negative numbers and open "
                      "ranges are not allowed)")
        raise bad(f"value {token!r} is not a number{field.hint}")

    if text == "?":
        if field not in (_DOM, _DOW):
            raise bad("value '?' is only allowed in the day-of-month and day-of-week fields")
        text = "*"
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise bad(f"{text!r} has an empty list item")
        what = _unsupported(item.lower())
        if what:
            raise bad(f"value {item!r} uses {what}, which is not supported: use values, "
                      "ranges (a-b), steps (*/n, a-b/n) and lists (a,b)")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not _is_number(step_text) or len(step_text) > 6:
                raise bad(f"step {step_text!r} in {item!r} is not a whole number")
            step = int(step_text)
            if step == 0:
                raise bad(f"step 0 in {item!r} must be at least 1")
        if base == "*":
            lo, hi = field.lo, field.top
        else:
            first, dash, last = base.partition("-")
            lo = value(first, item)
            if dash:
                if "-" in last:
                    raise bad(f"range {base!r} has more than two ends")
                hi = value(last, item)
            else:
                hi = field.top if slash else lo
        if field is _DOW:
            if hi == 7:  # 7 is Sunday: "5-7" is FRI-SUN
                values.update(v % 7 for v in range(lo, 8, step))
                continue
            if lo == 7:
                lo = 0
        if lo <= hi:
            values.update(range(lo, hi + 1, step))
        elif slash:
            raise bad(f"range {base!r} wraps past the end of the field and has a step; "
                      f"cron implementations disagree on where such a step continues, so "
                      f"write it as a list (e.g. {lo}-{field.top}/{step},{field.lo}-{hi}/"
                      f"{step})")
        else:  # wraps around: 22-2 hours, FRI-MON
            values.update(range(lo, field.top + 1))
            values.update(range(field.lo, hi + 1))
    return frozenset(values), text.startswith("*")


def _split(expression: str) -> list[str]:
    text = expression.strip()
    if text.startswith("@"):
        macro = MACROS.get(text.lower())
        if macro is None:
            raise TriggerError(f"unknown cron macro {expression!r}: use one of "
                               f"{_join(list(MACROS), 'or')}")
        text = macro
    if not text.isascii():
        raise TriggerError(f"invalid cron expression {expression!r}: only ASCII letters, "
                           "digits and * , - / ? are allowed")
    fields = text.split()
    if len(fields) not in (5, 6):
        raise TriggerError(f"cron {expression!r} must have 5 fields (minute hour day month "
                           "weekday) or 6 with seconds first, or be a macro like @hourly")
    return fields


@lru_cache(maxsize=4096)
def compile_cron(expression: str) -> CronSpec:
    """Parse and validate ``expression`` once; raises TriggerError naming the bad field."""
    fields = _split(expression)
    layout = (_SECOND, _MINUTE, _HOUR, _DOM, _MONTH, _DOW)
    texts = fields if len(fields) == 6 else ["0", *fields]
    parsed = [_parse_field(expression, field, text) for field, text in zip(layout, texts,
                                                                            strict=True)]
    spec = CronSpec(expression, fields, [values for values, _ in parsed],
                    dom_star=parsed[3][1], dow_star=parsed[5][1])
    reason = spec.never_fires_reason()
    if reason:
        raise TriggerError(f"cron {expression!r} never fires: {reason}")
    return spec


@lru_cache(maxsize=4096)
def cron_schedule(expression: str, zone: ZoneInfo) -> CronSchedule:
    """The compiled expression bound to ``zone`` (cached by both)."""
    return CronSchedule(compile_cron(expression), zone)


def normalised(expression: str) -> str:
    """The expression's fields after macro expansion, single-spaced."""
    return " ".join(_split(expression))
