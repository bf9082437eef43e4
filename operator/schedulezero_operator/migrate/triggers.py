"""APScheduler 4 triggers, as ScheduleZero stores and lists them, to Schedule trigger fields.

ScheduleZero (esotericbyte/ScheduleZero, v0.2.0) schedules through APScheduler
4.0.0a6. A trigger reaches us in one of two shapes:

- the JSON users POST to ``/api/schedule`` (``src/schedule_zero/api/
  job_scheduling_api.py``, ``ScheduleJobHandler._parse_trigger``):
  ``{"type": "date", "run_date": ISO|unix}``, ``{"type": "interval",
  "weeks|days|hours|minutes|seconds": n}``, ``{"type": "cron", "hour": "*/2", ...}``
  (APScheduler's keyword arguments); the older ``"trigger_type"`` +
  ``"trigger_args"`` pair (``tests/schedule_aling_tests.py``) says the same;
- the text ``GET /api/schedules`` returns, ``str(schedule.trigger)``
  (``ListSchedulesHandler``), which is APScheduler's ``__repr__``
  (``apscheduler/triggers/{cron/__init__,interval,date}.py`` at 4.0.0a6):
  ``CronTrigger(year='*', month='*', day='*', week='*', day_of_week='*',
  hour='*/2', minute='0', second='0', start_time='...', timezone='UTC')``,
  ``IntervalTrigger(hours=1.0, start_time='2025-11-02 21:24:54+00:00')``,
  ``DateTrigger('2025-11-02 21:24:54+00:00')``. It is read with ``ast`` (literals
  only, nothing is evaluated).

Why the cron fields are re-read here rather than joined into a string: APScheduler's
reading differs from cron's in ways that change when a job runs. Fields left out
are ``*`` above the last one given and their minimum below it (``hour='*/2'``
means minute 0, second 0); day_of_week counts from Monday (``*/2`` is Mon, Wed,
Fri, Sun) and 4.0.0a6 drops the step of a numeric range (``1-5/2`` runs Mon-Fri);
day and day_of_week must *both* match, where cron fires when *either* does. So
day_of_week is converted to the set of days APScheduler actually ran, written as
names, and everything without an exact equivalent is reported.

Decisions for what has no equivalent (also in docs/MIGRATING.md):
- ``year``: a single year or a range becomes a startTime/endTime window (exact);
  lists and steps are dropped (approximate).
- ``week`` (ISO week), day ``last`` / ``1st mon`` ... ``last fri``, and day plus
  day_of_week both restricted: the field or item is dropped, so the Schedule
  fires *at least* as often as before; such Schedules are emitted suspended with
  a note (``approximate``), never silently wider.
- Triggers that can never fire, intervals under 1 s or over 366 days, one-shot
  times already past, and other trigger types: not converted (``Unconvertible``).
"""

from __future__ import annotations

import ast
import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..timing import TriggerError, parse_trigger

# apscheduler/triggers/cron/__init__.py FIELDS_MAP order and fields.py DEFAULT_VALUES.
CRON_FIELDS = ("year", "month", "day", "week", "day_of_week", "hour", "minute", "second")
CRON_DEFAULTS = {"year": "*", "month": "1", "day": "1", "week": "*", "day_of_week": "*",
                 "hour": "0", "minute": "0", "second": "0"}
# fields.py MIN_VALUES / MAX_VALUES for the fields passed through as they are.
_RANGES = {"month": (1, 12), "day": (1, 31), "hour": (0, 23), "minute": (0, 59),
           "second": (0, 59)}
# expressions.py WEEKDAYS (APScheduler: Monday is 0) and MONTHS.
APS_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
APS_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
              "dec")
CRON_WEEKDAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_SEPARATOR = re.compile(r" *, *")  # fields.py SEPARATOR
_ALL = re.compile(r"\*(?:/(\d+))?")
_RANGE = re.compile(r"(\d+)(?:-(\d+))?(?:/(\d+))?")
_NAME_RANGE = re.compile(r"([a-z]+)(?:-([a-z]+))?", re.IGNORECASE)
_POSITION = re.compile(r"(1st|2nd|3rd|4th|5th|last) +(\w+)", re.IGNORECASE)
_INTERVAL_UNITS_US = {"weeks": 7 * 86_400_000_000, "days": 86_400_000_000,
                      "hours": 3_600_000_000, "minutes": 60_000_000, "seconds": 1_000_000,
                      "microseconds": 1}
_MIN_INTERVAL_US, _MAX_INTERVAL_US = 1_000_000, 366 * 86_400_000_000


class Unconvertible(ValueError):
    """A trigger with no Schedule equivalent; the message says why (the Schedule is skipped)."""


@dataclass
class Converted:
    """Schedule spec fields for one trigger, and what the reader should know about them."""

    fields: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # warnings: reported on stderr
    approximate: bool = False  # widened: emit suspended for review
    original: str = ""  # the trigger as ScheduleZero had it, for the YAML comment


# -- reading the two shapes ----------------------------------------------------------
def parse_repr(text: str) -> dict[str, Any]:
    """``CronTrigger(hour='*/2', ...)`` -> ``{"type": "cron", "hour": "*/2", ...}``.

    Only a call of a plain name with literal arguments is accepted (``ast.literal_eval``),
    so a listing can never make this code run anything.
    """
    try:
        node = ast.parse(text.strip(), mode="eval").body
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            raise ValueError("not a trigger")
        args = [ast.literal_eval(a) for a in node.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
    except (SyntaxError, ValueError) as e:
        raise Unconvertible(f"cannot read trigger {text!r}: {e}") from None
    kinds = {"CronTrigger": "cron", "IntervalTrigger": "interval", "DateTrigger": "date"}
    kind = kinds.get(node.func.id)
    if kind is None:
        raise Unconvertible(f"APScheduler trigger {node.func.id} has no Schedule equivalent "
                            "(only cron, interval and date triggers are converted)")
    if kind == "date":
        if len(args) != 1:
            raise Unconvertible(f"cannot read trigger {text!r}: expected one run time")
        kwargs["run_date"] = args[0]
    return {"type": kind, **kwargs}


def normalise(raw: Any) -> dict[str, Any]:
    """Any trigger shape ScheduleZero used -> ``{"type": ..., **APScheduler kwargs}``."""
    if isinstance(raw, str):
        return parse_repr(raw)
    if isinstance(raw, dict):
        kind = str(raw.get("type", "")).lower()
        if kind not in ("cron", "interval", "date"):
            raise Unconvertible(f"unsupported trigger type {raw.get('type')!r}: ScheduleZero "
                                "accepts 'date', 'interval' or 'cron'")
        return {**raw, "type": kind}
    raise Unconvertible(f"no trigger (got {type(raw).__name__})")


# -- helpers ---------------------------------------------------------------------------
def zone_name(value: Any) -> str:
    """An IANA name for APScheduler's ``timezone`` (its repr: a key, or ``repr(tzinfo)``)."""
    text = str(value).strip()
    if text in ("datetime.timezone.utc", "utc", "UTC", "Z"):
        return "UTC"
    m = re.fullmatch(r"datetime\.timezone\(datetime\.timedelta\((?:days=(-?\d+), )?"
                     r"seconds=(\d+)\)(?:, '[^']*')?\)", text)
    if m:
        offset = int(m.group(1) or 0) * 86400 + int(m.group(2))
        hours, rest = divmod(offset, 3600)
        if rest or not -12 <= hours <= 14:
            raise Unconvertible(f"time zone {text} is a fixed offset with no IANA name")
        # Etc/GMT signs are POSIX-inverted: UTC+1 is Etc/GMT-1.
        return "UTC" if hours == 0 else f"Etc/GMT{-hours:+d}"
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise Unconvertible(f"unknown time zone {text!r}") from None
    return text


def instant(value: Any, zone: str, notes: list[str], what: str) -> dt.datetime:
    """A run/start/end time (ISO text, unix seconds or datetime) as an aware UTC datetime.

    APScheduler reads a time without an offset in the server's local zone
    (``_converters.as_aware_datetime``); we cannot know it, so ``zone`` is used and noted.
    """
    if isinstance(value, bool):
        raise Unconvertible(f"{what} {value!r} is not a time")
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value, dt.UTC)
    if isinstance(value, dt.datetime):
        parsed = value
    else:
        text = str(value).strip()
        try:
            parsed = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.upper().endswith("Z")
                                               else text)
        except ValueError:
            raise Unconvertible(f"{what} {text!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        notes.append(f"{what} {value} has no UTC offset; ScheduleZero read it in its server's "
                     f"local zone, taken here as {zone}")
        parsed = parsed.replace(tzinfo=ZoneInfo(zone))
    return parsed.astimezone(dt.UTC)


def rfc3339(value: dt.datetime) -> str:
    value = value.astimezone(dt.UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def duration(us: int) -> str:
    """Whole microseconds -> ``1h30m``, ``7d``, ``1m30s``, ``2s500ms`` (the Schedule syntax)."""
    parts = []
    for unit, size in (("d", 86_400_000_000), ("h", 3_600_000_000), ("m", 60_000_000),
                       ("s", 1_000_000), ("ms", 1_000)):
        n, us = divmod(us, size)
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts) or "0s"


# -- the three trigger kinds ---------------------------------------------------------------
def convert(raw: Any, *, zone: str | None, now: dt.datetime) -> Converted:
    """One ScheduleZero trigger -> Schedule trigger fields; Unconvertible if there are none.

    ``zone``: the zone to assume where ScheduleZero used its server's local zone
    (a cron without ``timezone``, a time without an offset); None means UTC, noted.
    """
    trigger = normalise(raw)
    original = raw if isinstance(raw, str) else ", ".join(
        f"{k}={v!r}" for k, v in trigger.items())
    notes: list[str] = []
    if zone is None:
        assumed = "UTC"
        zone_note = ("no time zone given; ScheduleZero used its server's local zone - "
                     "assumed UTC (pass --timezone to choose)")
    else:
        assumed, zone_note = zone, ""
    kind = trigger["type"]
    if kind == "date":
        out = _date(trigger, assumed, notes, now)
    elif kind == "interval":
        out = _interval(trigger, assumed, notes)
    else:
        if trigger.get("timezone") in (None, "local") and zone_note:
            notes.append(zone_note)
        out = _cron(trigger, assumed, notes)
    out.original = original
    out.notes = notes + out.notes
    return out


def _date(trigger: dict[str, Any], zone: str, notes: list[str], now: dt.datetime) -> Converted:
    value = trigger.get("run_date", trigger.get("run_time"))
    if value in (None, ""):
        raise Unconvertible("date trigger without run_date")
    when = instant(value, zone, notes, "run_date")
    if when <= now:
        raise Unconvertible(f"date trigger at {rfc3339(when)} is in the past (it already ran "
                            "or was missed)")
    return Converted({"at": rfc3339(when)})


def _window(trigger: dict[str, Any], zone: str, notes: list[str]
            ) -> dict[str, dt.datetime]:
    """APScheduler's start_time / end_time as startTime / endTime (aware UTC datetimes)."""
    out = {}
    for key, name in (("start_time", "startTime"), ("end_time", "endTime")):
        if trigger.get(key) not in (None, ""):
            out[name] = instant(trigger[key], zone, notes, key)
    return out


def _interval(trigger: dict[str, Any], zone: str, notes: list[str]) -> Converted:
    total = 0
    for unit, size in _INTERVAL_UNITS_US.items():
        value = trigger.get(unit, 0)
        try:
            total += round(float(value) * size)
        except (TypeError, ValueError):
            raise Unconvertible(f"interval {unit}={value!r} is not a number") from None
    if total % 1000:
        notes.append(f"interval of {total} us rounded to whole milliseconds")
        total = round(total / 1000) * 1000
    if total < _MIN_INTERVAL_US:
        raise Unconvertible(f"interval of {total / 1e6:g}s is shorter than the operator's 1s "
                            "minimum")
    if total > _MAX_INTERVAL_US:
        raise Unconvertible(f"interval of {duration(total)} is longer than the operator's 366d "
                            "maximum; use a cron schedule")
    # startTime is the phase anchor (APScheduler fires at start_time + k * interval);
    # without one the Schedule anchors at its creation, as APScheduler did at its own.
    window = _window(trigger, zone, notes)
    fields: dict[str, Any] = {"interval": duration(total),
                              **{k: rfc3339(v) for k, v in window.items()}}
    return Converted(fields)


def _cron_complete(trigger: dict[str, Any]) -> dict[str, str]:
    """APScheduler's defaults (cron/__init__.py ``_set_fields``): ``*`` above, minimum below."""
    remaining = {k: trigger[k] for k in CRON_FIELDS if trigger.get(k) is not None}
    out: dict[str, str] = {}
    for name in CRON_FIELDS:
        value = remaining.pop(name, None)
        if value is None:
            value = "*" if remaining else CRON_DEFAULTS[name]
        out[name] = str(value).strip()
    return out


def _plain(name: str, text: str) -> str:
    """second/minute/hour/month/day items cron reads the same way; Unconvertible otherwise."""
    lo, hi = _RANGES[name]
    items = []
    for item in _SEPARATOR.split(text):
        m = _ALL.fullmatch(item)
        if m:
            items.append(item)
            continue
        m = _RANGE.fullmatch(item)
        if m:
            first, last = int(m.group(1)), int(m.group(2) or m.group(1))
            if not (lo <= first <= hi and lo <= last <= hi) or first > last:
                raise Unconvertible(f"{name}={text!r}: {item!r} is out of range {lo}-{hi}")
            items.append(item)
            continue
        m = _NAME_RANGE.fullmatch(item)
        if name == "month" and m and all(g is None or g.lower() in APS_MONTHS
                                         for g in m.groups()):
            items.append(item.upper())
            continue
        raise Unconvertible(f"{name}={text!r}: cannot read {item!r}")
    return ",".join(items)


def _weekday_index(name: str) -> int:
    try:
        return APS_WEEKDAYS.index(name.lower())
    except ValueError:
        raise Unconvertible(f"day_of_week: invalid weekday name {name!r}") from None


def aps_weekdays(text: str, notes: list[str]) -> set[int]:
    """The days (0 = Monday) APScheduler 4.0.0a6 fires on for ``day_of_week``.

    As its fields.py ``DayOfWeekField.append_expression`` reads them: numbers count
    cron-style (0 and 7 are Sunday) but are turned into names with any step
    dropped; ``*/n`` steps over Monday-based indices; ``sat-mon`` wraps.
    """
    days: set[int] = set()
    for item in _SEPARATOR.split(text.strip()):
        m = _ALL.fullmatch(item)
        if m:
            days.update(range(0, 7, int(m.group(1) or 1)))
            continue
        m = _RANGE.fullmatch(item)
        if m:
            if m.group(3):
                notes.append(f"day_of_week {item!r}: APScheduler 4.0.0a6 ignores the step of a "
                             "numeric weekday range; converted as it ran, without the step")
            nums = [int(m.group(1)), int(m.group(2) or m.group(1))]
            if any(n > 7 for n in nums):
                raise Unconvertible(f"day_of_week {item!r} is out of range 0-7")
            first, last = ((n - 1) % 7 for n in nums)  # 0 -> Sunday (6), 1 -> Monday (0)
        else:
            m = _NAME_RANGE.match(item)
            if not m:
                raise Unconvertible(f"day_of_week: cannot read {item!r}")
            if m.end() != len(item):
                notes.append(f"day_of_week {item!r}: APScheduler ignores {item[m.end():]!r} "
                             "after a weekday name; converted as it ran")
            first = _weekday_index(m.group(1))
            last = _weekday_index(m.group(2)) if m.group(2) else first
        days.update(range(first, last + 1) if first <= last
                    else [*range(first, 7), *range(0, last + 1)])
    return days


def cron_weekdays(days: set[int]) -> str:
    """Monday-based day indices -> cron names, runs as ranges: ``MON-FRI``, ``SUN,SAT``."""
    if len(days) == 7:
        return "*"
    cron = sorted((d + 1) % 7 for d in days)  # cron: Sunday 0
    runs: list[list[int]] = []
    for d in cron:
        if runs and d == runs[-1][-1] + 1:
            runs[-1].append(d)
        else:
            runs.append([d])
    return ",".join(CRON_WEEKDAYS[r[0]] if len(r) == 1 else
                    f"{CRON_WEEKDAYS[r[0]]},{CRON_WEEKDAYS[r[1]]}" if len(r) == 2 else
                    f"{CRON_WEEKDAYS[r[0]]}-{CRON_WEEKDAYS[r[-1]]}" for r in runs)


def _day(text: str, notes: list[str]) -> tuple[str, bool]:
    """Day of month; ``last`` and ``1st mon``-style items are dropped (approximate)."""
    kept, dropped = [], []
    for item in _SEPARATOR.split(text.strip()):
        if item.lower() == "last" or _POSITION.fullmatch(item):
            dropped.append(item)
        else:
            kept.append(_plain("day", item))
    if dropped:
        notes.append(f"day={text!r}: {', '.join(repr(d) for d in dropped)} (last day / n-th "
                     "weekday of the month) has no cron equivalent and was dropped, so the "
                     "Schedule fires on more days; it is suspended for review")
    return (",".join(kept) or "*"), bool(dropped)


def _year_window(text: str, zone: str, notes: list[str]
                 ) -> tuple[dict[str, dt.datetime], bool]:
    """``year``: one year or a range -> a startTime/endTime window in the cron's zone."""
    if text == "*":
        return {}, False
    m = re.fullmatch(r"(\d{4})(?:-(\d{4}))?", text)
    if not m or int(m.group(1)) > int(m.group(2) or m.group(1)):
        notes.append(f"year={text!r} has no cron equivalent (only one year or a range can be "
                     "kept, as a startTime/endTime window); dropped - the Schedule fires in "
                     "every year; it is suspended for review")
        return {}, True
    first, last = int(m.group(1)), int(m.group(2) or m.group(1))
    tz = ZoneInfo(zone)
    start = dt.datetime(first, 1, 1, tzinfo=tz).astimezone(dt.UTC)
    end = (dt.datetime(last + 1, 1, 1, tzinfo=tz).astimezone(dt.UTC) - dt.timedelta(seconds=1)
           if last < 9999 else dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC))
    notes.append(f"year={text!r} kept as the window startTime {rfc3339(start)} .. endTime "
                 f"{rfc3339(end)}")
    return {"startTime": start, "endTime": end}, False


def _cron(trigger: dict[str, Any], zone: str, notes: list[str]) -> Converted:
    tz = zone_name(trigger["timezone"]) if trigger.get("timezone") not in (None, "local") \
        else zone
    f = _cron_complete(trigger)
    approximate = False
    if f["week"] != "*":
        notes.append(f"week={f['week']!r} (ISO week number) has no cron equivalent; dropped - "
                     "the Schedule fires in every week; it is suspended for review")
        approximate = True
    day, dropped = _day(f["day"], notes)
    approximate |= dropped
    weekdays = cron_weekdays(aps_weekdays(f["day_of_week"], notes))
    if not day.startswith("*") and weekdays != "*":
        notes.append(f"day={f['day']!r} and day_of_week={f['day_of_week']!r}: APScheduler runs "
                     "on days matching both, cron on days matching either; the Schedule fires "
                     "on more days and is suspended for review")
        approximate = True
    expression = " ".join([_plain("second", f["second"]), _plain("minute", f["minute"]),
                           _plain("hour", f["hour"]), day, _plain("month", f["month"]),
                           weekdays])
    window = _window(trigger, tz, notes)
    year, widened = _year_window(f["year"], tz, notes)
    approximate |= widened
    if year:
        if "startTime" in window:
            year["startTime"] = max(year["startTime"], window["startTime"])
        if "endTime" in window:
            year["endTime"] = min(year["endTime"], window["endTime"])
        window = year
        if window["endTime"] <= window["startTime"]:
            raise Unconvertible(f"year={f['year']!r} lies outside start_time/end_time: never "
                                "fires")
    times = {k: rfc3339(v) for k, v in window.items()}
    try:
        parse_trigger(schedule=expression, time_zone=tz, start_time=times.get("startTime"),
                      end_time=times.get("endTime"))
    except TriggerError as e:
        raise Unconvertible(str(e)) from None
    fields: dict[str, Any] = {"schedule": expression, "timeZone": tz, **times}
    return Converted(fields, approximate=approximate)
