"""Compiled cron: anchors, DST days, validation, and properties against two oracles.

Oracles: croniter (in UTC, where DST plays no part) and ``old_next_cron``, a copy
of the croniter-based walker the compiled code replaced (on DST days). The old
walker returns the first instant > after *in wall-clock order*, which is not the
smallest one when ``after`` lies in the first pass of a repeated (fall-back) hour
and the expression follows the wall clock; ``brute_next_cron`` is the same walker
taking the minimum over a window, i.e. the old rules with that bug fixed.
"""

from __future__ import annotations

import ast
import datetime as dt
import re
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from croniter import CroniterBadDateError, croniter
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from schedulezero_operator.timing import (
    TriggerError,
    compile_cron,
    jitter_bound,
    jitter_offset,
    next_fire,
    parse_duration,
    parse_trigger,
    slots_between,
)
from schedulezero_operator.timing.zones import timeline

from tests.oracles import instants as _instants
from tests.oracles import old_next_cron

UTC = dt.UTC
NY, BERLIN = ZoneInfo("America/New_York"), ZoneInfo("Europe/Berlin")
TIMING = Path(__file__).resolve().parents[2] / "operator" / "schedulezero_operator" / "timing"


def T(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(UTC)


# -- the old implementation, verbatim (croniter walker + Vixie DST mapping) -------------
def brute_next_cron(cron: str, seconds_field: bool, zone: ZoneInfo, fixed: bool,
                    after: dt.datetime) -> dt.datetime | None:
    """The old walker, but the minimum over every match up to 3 h past the first hit.

    Uses croniter's ``implement_cron_bug`` (Vixie's day-of-month/day-of-week rule).
    """
    local_start = after.astimezone(zone).replace(tzinfo=None) - dt.timedelta(hours=3)
    it = croniter(cron, local_start, second_at_beginning=seconds_field,
                  implement_cron_bug=True)
    found: list[dt.datetime] = []
    first_wall = None
    while True:
        try:
            naive: dt.datetime = it.get_next(dt.datetime)
        except CroniterBadDateError:
            return min(found) if found else None
        if first_wall is not None and naive > first_wall + dt.timedelta(hours=3):
            return min(found)
        hits = [i for i in _instants(naive, zone, fixed) if i > after]
        if hits and first_wall is None:
            first_wall = naive
        found += hits


def chain(trigger_kwargs: dict[str, Any], after: dt.datetime, n: int) -> list[dt.datetime | None]:
    trigger = parse_trigger(**trigger_kwargs)
    out: list[dt.datetime | None] = []
    current: dt.datetime | None = after
    for _ in range(n):
        current = next_fire(trigger, current) if current else None
        out.append(current)
    return out


# -- anchors ----------------------------------------------------------------------
TOP = T("2026-05-19T10:00:00+00:00")
BEFORE_TOP = T("2026-05-19T09:59:59.999999+00:00")
AFTER_TOP = T("2026-05-19T10:00:00.000001+00:00")


@pytest.mark.parametrize(("schedule", "after", "expected"), [
    # top of the hour, just before, just after (strictly after `after`)
    ("0 * * * *", BEFORE_TOP, ["2026-05-19T10:00:00", "2026-05-19T11:00:00"]),
    ("0 * * * *", TOP, ["2026-05-19T11:00:00"]),
    ("0 * * * *", AFTER_TOP, ["2026-05-19T11:00:00"]),
    ("* * * * *", BEFORE_TOP, ["2026-05-19T10:00:00", "2026-05-19T10:01:00"]),
    ("*/2 * * * * *", BEFORE_TOP, ["2026-05-19T10:00:00", "2026-05-19T10:00:02"]),
    ("*/2 * * * * *", AFTER_TOP, ["2026-05-19T10:00:02"]),
    ("59 59 9 * * *", T("2026-05-19T09:59:58.5+00:00"), ["2026-05-19T09:59:59",
                                                          "2026-05-20T09:59:59"]),
    ("5/15 * * * *", TOP, ["2026-05-19T10:05:00", "2026-05-19T10:20:00",
                           "2026-05-19T10:35:00", "2026-05-19T10:50:00",
                           "2026-05-19T11:05:00"]),
    ("10-50/20 8-9 * * *", TOP, ["2026-05-20T08:10:00", "2026-05-20T08:30:00",
                                 "2026-05-20T08:50:00", "2026-05-20T09:10:00"]),
    ("0 22-1 * * *", TOP, ["2026-05-19T22:00:00", "2026-05-19T23:00:00",
                           "2026-05-20T00:00:00", "2026-05-20T01:00:00",
                           "2026-05-20T22:00:00"]),
    # month ends: months without the day are skipped, not clamped
    ("0 0 31 * *", T("2026-01-31T00:00:00+00:00"), ["2026-03-31T00:00:00",
                                                     "2026-05-31T00:00:00"]),
    ("0 0 30 * *", T("2026-01-30T00:00:00+00:00"), ["2026-03-30T00:00:00"]),
    ("0 0 1 * *", T("2026-01-31T23:59:59+00:00"), ["2026-02-01T00:00:00"]),
    ("@monthly", T("2026-12-15T00:00:00+00:00"), ["2027-01-01T00:00:00"]),
    # leap day: 2100 is not a leap year
    ("0 0 29 2 *", T("2026-01-01T00:00:00+00:00"), ["2028-02-29T00:00:00",
                                                     "2032-02-29T00:00:00"]),
    ("0 0 29 2 *", T("2096-02-29T00:00:00+00:00"), ["2104-02-29T00:00:00"]),
    ("0 12 28-29 FEB *", T("2028-02-28T12:00:00+00:00"), ["2028-02-29T12:00:00",
                                                           "2029-02-28T12:00:00"]),
    # year end
    ("59 59 23 31 12 *", T("2026-12-31T23:59:58+00:00"), ["2026-12-31T23:59:59",
                                                           "2027-12-31T23:59:59"]),
    ("@yearly", T("2026-12-31T23:59:59.999999+00:00"), ["2027-01-01T00:00:00"]),
    # day of month OR day of week when both are restricted (Vixie cron)
    ("0 0 13 * FRI", T("2026-02-01T00:00:00+00:00"), ["2026-02-06T00:00:00",
                                                       "2026-02-13T00:00:00",
                                                       "2026-02-20T00:00:00"]),
    # ... AND when either starts with * (days 1, 14, 27 that are Fridays)
    ("0 0 */13 * FRI", T("2026-02-01T00:00:00+00:00"), ["2026-02-27T00:00:00",
                                                         "2026-03-27T00:00:00",
                                                         "2026-05-01T00:00:00"]),
    ("0 0 13 * *", T("2026-02-01T00:00:00+00:00"), ["2026-02-13T00:00:00"]),
    ("0 0 ? * MON", T("2026-05-19T00:00:00+00:00"), ["2026-05-25T00:00:00"]),
    # weekday 7 is Sunday; names in any case; wrapping weekday range
    ("0 0 * * 7", T("2026-05-19T00:00:00+00:00"), ["2026-05-24T00:00:00"]),
    ("0 0 * * sat-sun", T("2026-05-19T00:00:00+00:00"), ["2026-05-23T00:00:00",
                                                          "2026-05-24T00:00:00",
                                                          "2026-05-30T00:00:00"]),
    ("0 0 * * FRI-MON", T("2026-05-19T00:00:00+00:00"), ["2026-05-22T00:00:00",
                                                          "2026-05-23T00:00:00",
                                                          "2026-05-24T00:00:00",
                                                          "2026-05-25T00:00:00",
                                                          "2026-05-29T00:00:00"]),
    ("0 0 1 nov-feb *", T("2026-05-19T00:00:00+00:00"), ["2026-11-01T00:00:00",
                                                          "2026-12-01T00:00:00",
                                                          "2027-01-01T00:00:00",
                                                          "2027-02-01T00:00:00",
                                                          "2027-11-01T00:00:00"]),
    # "a-a" is one value (croniter reads it as the whole field)
    ("7-7 10 * * *", TOP, ["2026-05-19T10:07:00", "2026-05-20T10:07:00"]),
])
def test_utc_anchors(schedule: str, after: dt.datetime, expected: list[str]) -> None:
    got = chain({"schedule": schedule}, after, len(expected))
    assert got == [T(e + "+00:00") for e in expected]


# New York: 2026-03-08 02:00 EST -> 03:00 EDT (07:00Z); 2026-11-01 02:00 EDT -> 01:00 EST
# (06:00Z). Berlin: 2026-03-29 02:00 CET -> 03:00 CEST (01:00Z); 2026-10-25 03:00 CEST
# -> 02:00 CET (01:00Z). Lord Howe: 30-minute shifts. Santiago: changes at midnight.
DST_CASES = [
    # spring forward, fixed time in the gap -> once at the transition instant
    ("30 2 * * *", "America/New_York", "2026-03-07T02:30:00-05:00",
     ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]),
    ("0 2 * * *", "America/New_York", "2026-03-08T01:59:59-05:00",
     ["2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00"]),
    ("15,45 2 * * *", "America/New_York", "2026-03-08T00:00:00-05:00",
     ["2026-03-08T03:00:00-04:00", "2026-03-09T02:15:00-04:00"]),
    ("0 2,3 * * *", "America/New_York", "2026-03-08T00:00:00-05:00",
     ["2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00"]),
    ("10 30 2 * * *", "America/New_York", "2026-03-08T00:00:00-05:00",
     ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:10-04:00"]),
    ("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00+01:00",
     ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]),
    ("0 9 * * 1-5", "Europe/Berlin", "2026-03-27T09:00:00+01:00",
     ["2026-03-30T09:00:00+02:00", "2026-03-31T09:00:00+02:00"]),
    # spring forward, wildcard minute or hour -> follows the wall clock
    ("*/20 2 * * *", "America/New_York", "2026-03-08T00:00:00-05:00",
     ["2026-03-09T02:00:00-04:00"]),
    ("30 * * * *", "America/New_York", "2026-03-08T01:00:00-05:00",
     ["2026-03-08T01:30:00-05:00", "2026-03-08T03:30:00-04:00"]),
    ("0 */1 * * *", "Europe/Berlin", "2026-03-29T00:30:00+01:00",
     ["2026-03-29T01:00:00+01:00", "2026-03-29T03:00:00+02:00"]),
    # fall back, fixed time in the repeated hour -> once, at the first occurrence
    ("30 1 * * *", "America/New_York", "2026-10-31T12:00:00-04:00",
     ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]),
    ("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00+02:00",
     ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]),
    ("0 1,2 * * *", "America/New_York", "2026-11-01T00:00:00-04:00",
     ["2026-11-01T01:00:00-04:00", "2026-11-01T02:00:00-05:00"]),
    # ... with `after` inside the repeated hour, first and second pass
    ("45 1 * * *", "America/New_York", "2026-11-01T01:40:00-04:00",
     ["2026-11-01T01:45:00-04:00", "2026-11-02T01:45:00-05:00"]),
    ("45 1 * * *", "America/New_York", "2026-11-01T01:50:00-04:00",
     ["2026-11-02T01:45:00-05:00"]),
    ("30 1 * * *", "America/New_York", "2026-11-01T01:10:00-05:00",
     ["2026-11-02T01:30:00-05:00"]),
    ("30 2 * * *", "Europe/Berlin", "2026-10-25T02:10:00+01:00",
     ["2026-10-26T02:30:00+01:00"]),
    # fall back, wildcard -> both occurrences, in instant order
    ("*/30 1 * * *", "America/New_York", "2026-11-01T00:00:00-04:00",
     ["2026-11-01T01:00:00-04:00", "2026-11-01T01:30:00-04:00",
      "2026-11-01T01:00:00-05:00", "2026-11-01T01:30:00-05:00",
      "2026-11-02T01:00:00-05:00"]),
    ("*/30 2 * * *", "Europe/Berlin", "2026-10-25T00:00:00+02:00",
     ["2026-10-25T02:00:00+02:00", "2026-10-25T02:30:00+02:00",
      "2026-10-25T02:00:00+01:00", "2026-10-25T02:30:00+01:00"]),
    # `after` in the first pass of the repeated hour: the rest of the first pass
    # comes first (the old walker jumped to 01:00 EST here, skipping 01:50 EDT).
    ("*/10 * * * *", "America/New_York", "2026-11-01T01:40:00-04:00",
     ["2026-11-01T01:50:00-04:00", "2026-11-01T01:00:00-05:00",
      "2026-11-01T01:10:00-05:00"]),
    ("*/10 * * * *", "America/New_York", "2026-11-01T01:40:00-05:00",
     ["2026-11-01T01:50:00-05:00", "2026-11-01T02:00:00-05:00"]),
    ("0 * * * *", "Europe/Berlin", "2026-10-25T02:30:00+02:00",
     ["2026-10-25T02:00:00+01:00", "2026-10-25T03:00:00+01:00"]),
    # 30-minute DST (Lord Howe): 2026-04-05 02:00 +11 -> 01:30 +10:30;
    # 2026-10-04 02:00 +10:30 -> 02:30 +11
    ("45 1 * * *", "Australia/Lord_Howe", "2026-04-04T12:00:00+11:00",
     ["2026-04-05T01:45:00+11:00", "2026-04-06T01:45:00+10:30"]),
    ("*/30 * * * *", "Australia/Lord_Howe", "2026-04-05T01:15:00+11:00",
     ["2026-04-05T01:30:00+11:00", "2026-04-05T01:30:00+10:30",
      "2026-04-05T02:00:00+10:30"]),
    ("15 2 * * *", "Australia/Lord_Howe", "2026-10-03T12:00:00+10:30",
     ["2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"]),
    # Santiago springs forward at midnight (2026-09-06 00:00 -> 01:00) and falls
    # back at midnight (2026-04-05 00:00 -> 2026-04-04 23:00)
    ("0 0 * * *", "America/Santiago", "2026-09-05T12:00:00-04:00",
     ["2026-09-06T01:00:00-03:00", "2026-09-07T00:00:00-03:00"]),
    ("30 23 * * *", "America/Santiago", "2026-04-04T12:00:00-03:00",
     ["2026-04-04T23:30:00-03:00", "2026-04-05T23:30:00-04:00"]),
]


@pytest.mark.parametrize(("schedule", "tz", "after", "expected"), DST_CASES)
def test_dst_anchors(schedule: str, tz: str, after: str, expected: list[str]) -> None:
    got = chain({"schedule": schedule, "time_zone": tz}, T(after), len(expected))
    assert got == [T(e) for e in expected]


def test_anchors_agree_with_brute_force_oracle() -> None:
    """Every DST anchor above, re-checked against the old rules (minimum form)."""
    for schedule, tz, after, _ in DST_CASES:
        trigger = parse_trigger(schedule=schedule, time_zone=tz)
        assert trigger.cron is not None
        assert next_fire(trigger, T(after)) == brute_next_cron(
            trigger.cron, trigger.seconds_field, trigger.zone, trigger.fixed_time, T(after))


def test_zone_transitions_found_to_the_second() -> None:
    ny = timeline(NY)
    spring = int(T("2026-03-08T07:00:00+00:00").timestamp())
    fall = int(T("2026-11-01T06:00:00+00:00").timestamp())
    assert ny.segment(spring - 1)[1] == spring
    assert ny.segment(spring) == (spring, fall, -5 * 3600, -4 * 3600)
    # Segments end at year boundaries too (tables are per year); offsets carry over.
    assert ny.segment(fall)[::2] == (fall, -4 * 3600)
    assert ny.segment(fall + 86400 * 70) == (
        fall, int(T("2027-03-14T07:00:00+00:00").timestamp()), -4 * 3600, -5 * 3600)
    assert timeline(ZoneInfo("UTC")).constant


# -- validation -------------------------------------------------------------------
@pytest.mark.parametrize(("schedule", "message"), [
    ("61 * * * *", "minute field value 61 is out of range 0-59"),
    ("0 24 * * *", "hour field value 24 is out of range 0-23"),
    ("0 0 0 * *", "day-of-month field value 0 is out of range 1-31"),
    ("0 0 32 * *", "day-of-month field value 32 is out of range 1-31"),
    ("0 0 1 13 *", "month field value 13 is out of range 1-12"),
    ("0 0 * * 8", "day-of-week field value 8 is out of range 0-7"),
    ("60 * * * * *", "second field value 60 is out of range 0-59"),
    ("99999999999999999999 * * * *", "minute field value 9+ is out of range"),
    ("0 0 1 JANUARY *", r"month field value 'JANUARY' is not a number or a month name"),
    ("0 0 * * monday", r"'monday' is not a number or a weekday name \(SUN-SAT\)"),
    ("0 0 * JAN-FOO *", "'FOO' is not a number or a month name"),
    ("x * * * *", "minute field value 'x' is not a number"),
    ("*/0 * * * *", "step 0 in '\\*/0' must be at least 1"),
    ("*/x * * * *", "step 'x' in '\\*/x' is not a whole number"),
    ("1,,2 * * * *", "minute field '1,,2' has an empty list item"),
    ("1- * * * *", "is missing a number"),
    ("-1 * * * *", "negative numbers"),
    ("1-2-3 * * * *", "range '1-2-3' has more than two ends"),
    ("? * * * *", "'\\?' is only allowed in the day-of-month and day-of-week"),
    ("0 22-2/2 * * *", "hour field range '22-2' wraps past the end of the field and has "
                       "a step"),
    ("0 0 L * *", "'L' uses 'L'/'W'.*not supported"),
    ("0 0 LW * *", "not supported"),
    ("0 0 15W * *", "'15W' uses 'L'/'W'"),
    ("0 0 * * 5L", "'5L' uses 'L' \\(last weekday of the month\\)"),
    ("0 0 * * MON#2", "'MON#2' uses '#' \\(nth weekday of the month\\)"),
    ("H * * * *", "'H' uses 'H'/'R'"),
    ("H(0-29)/10 * * * *", "uses 'H'/'R'"),
    ("R * * * *", "uses 'H'/'R'"),
    ("0 0 1 1 * 2026 *", "must have 5 fields"),
    ("* * * *", "must have 5 fields"),
    ("@reboot", "unknown cron macro '@reboot': use one of @yearly"),
    ("0 0 1 1 \uff15", "only ASCII"),  # a fullwidth 5
    # never fires
    ("0 0 30 2 *", "cron '0 0 30 2 \\*' never fires: day 30 does not occur in February"),
    ("0 0 31 4,6,9,11 *", "never fires: day 31 does not occur in April, June, September "
                          "or November"),
    ("0 0 30,31 2 *", "never fires: days 30 and 31 do not occur in February"),
    ("0 0 31 2 */2", "never fires: day 31 does not occur in February"),
    ("0 0 0 31 2 *", "never fires"),
])
def test_invalid_cron_names_field_and_value(schedule: str, message: str) -> None:
    with pytest.raises(TriggerError, match=message):
        parse_trigger(schedule=schedule)


@pytest.mark.parametrize("schedule", [
    "0 0 29 2 *",          # leap years
    "0 0 30 2 FRI",        # day-of-month OR day-of-week: every Friday in February
    "0 0 31 2,3 *",        # March 31
    "0 0 ? * ?", "0 0 ? * MON", "@everysecond", "@ANNUALLY", " @daily ",
    "*/61 * * * *",        # a step past the field: just 0
    "59/15 * * * *",       # a start/step at the field's end: just 59
    "0 0 * * 0-7", "0 0 * * 7-7", "0 0 * * 5-7/2", "0 0 * * 7/2",
    "0\t0  *  *   *",
])
def test_valid_cron(schedule: str) -> None:
    trigger = parse_trigger(schedule=schedule)
    assert next_fire(trigger, TOP) is not None


def test_parse_is_cached() -> None:
    assert compile_cron("0 9 * * 1-5") is compile_cron("0 9 * * 1-5")
    a = parse_trigger(schedule="0 9 * * 1-5", time_zone="Europe/Berlin")
    b = parse_trigger(schedule="0 9 * * 1-5", time_zone="Europe/Berlin")
    assert a.compiled is b.compiled and a == b


def test_weekday_sets() -> None:
    assert compile_cron("0 0 * * 0-7").dows == tuple(range(7))
    assert compile_cron("0 0 * * 7-7").dows == (0,)
    assert compile_cron("0 0 * * 5-7").dows == (0, 5, 6)
    assert compile_cron("0 0 * * 1-7/2").dows == (0, 1, 3, 5)
    assert compile_cron("0 0 * * 7/2").dows == (0, 2, 4, 6)
    assert compile_cron("0 0 * * 6/1").dows == (6,)
    assert compile_cron("0 0 * * SAT-MON").dows == (0, 1, 6)
    assert compile_cron("0 0 * 11-2 *").months == (1, 2, 11, 12)


# -- durations, intervals, ranges, year 9999 ---------------------------------------
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"interval": "9999999999h"}, "interval '9999999999h' is longer than the 1-year maximum"),
    ({"interval": "367d"}, "longer than the 1-year maximum"),
    ({"interval": "9" * 5000 + "d"}, "longer than the 1-year maximum"),
    ({"interval": "999ms"}, "shorter than the 1s minimum"),
    ({"interval": "0s"}, "shorter than the 1s minimum"),
    ({"at": "0001-01-01T00:00:00+01:00"}, "out of range"),
    ({"at": "9999-12-31T23:00:00-05:00"}, "out of range"),
    ({"at": "10000-01-01T00:00:00Z"}, "invalid time"),
    ({"interval": "5s", "start_time": "9999-12-31T23:59:59-00:01"}, "out of range"),
    ({"interval": "5s", "end_time": "0001-01-01T00:00:00+00:01"}, "out of range"),
])
def test_trigger_limits(kwargs: dict, message: str) -> None:
    with pytest.raises(TriggerError, match=message):
        parse_trigger(**kwargs)


def test_interval_limits_are_inclusive() -> None:
    assert parse_trigger(interval="1s").period == 1
    assert parse_trigger(interval="366d").period == 366 * 86400


@pytest.mark.parametrize("text", ["9" * 400 + "h", "9" * 5000 + "s", "99999999999999d",
                                  "36501d", "1" + "0" * 40 + ".5ms"])
def test_huge_durations_are_trigger_errors(text: str) -> None:
    with pytest.raises(TriggerError, match="longer than the 100-year maximum"):
        parse_duration(text)


def test_parse_duration_exact() -> None:
    assert parse_duration("36500d") == 36500 * 86400
    assert parse_duration("0.000001s") == 1e-6
    assert parse_duration("1h0.5m500ms") == 3630.5


def test_interval_has_no_float_drift() -> None:
    anchor = T("2026-01-01T00:00:00+00:00")
    trigger = parse_trigger(interval="1.1s", anchor=anchor)
    k = 10**9 // 11  # ~ 3 years of 1.1 s periods
    after = anchor + dt.timedelta(microseconds=k * 1_100_000 - 1)
    assert next_fire(trigger, after) == anchor + dt.timedelta(microseconds=k * 1_100_000)
    slots, _ = slots_between(trigger, after, after + dt.timedelta(seconds=11), 100)
    assert [s - anchor for s in slots] == [
        dt.timedelta(microseconds=(k + i) * 1_100_000) for i in range(10)]


def test_next_fire_near_year_9999_is_none() -> None:
    end = dt.datetime.max.replace(tzinfo=UTC)
    cases: list[dict[str, Any]] = [
        {"schedule": "* * * * * *"}, {"schedule": "0 0 29 2 *"},
        {"schedule": "0 0 1 1 *", "time_zone": "Pacific/Kiritimati"},
        {"schedule": "59 23 31 12 *", "time_zone": "Etc/GMT+12"},
        {"interval": "366d"}, {"at": "9999-12-31T23:59:59Z"}]
    for kwargs in cases:
        trigger = parse_trigger(**kwargs)
        for after in (end, end - dt.timedelta(seconds=1), end - dt.timedelta(days=400)):
            result = next_fire(trigger, after)
            assert result is None or after < result <= end
    every_second = parse_trigger(schedule="* * * * * *")
    assert next_fire(every_second, end - dt.timedelta(seconds=1)) == end.replace(
        microsecond=0)
    assert next_fire(every_second, end) is None


def test_start_time_at_the_beginning_of_time() -> None:
    trigger = parse_trigger(schedule="* * * * * *", start_time="0001-01-01T00:00:00Z")
    assert next_fire(trigger, TOP) == TOP + dt.timedelta(seconds=1)
    assert next_fire(trigger, dt.datetime.min.replace(tzinfo=UTC)) == dt.datetime(
        1, 1, 1, 0, 0, 1, tzinfo=UTC)
    late = parse_trigger(interval="1h", start_time="9999-12-31T23:00:00Z")
    assert next_fire(late, TOP) == T("9999-12-31T23:00:00+00:00")
    assert next_fire(late, T("9999-12-31T23:00:00+00:00")) is None


def test_jitter_bound_reports_clamping() -> None:
    every_10s = parse_trigger(interval="10s", anchor=TOP)
    assert jitter_bound(every_10s, TOP, 30) == (5.0, True)
    assert jitter_bound(every_10s, TOP, 3) == (3, False)
    assert jitter_bound(every_10s, TOP, 0) == (0.0, False)
    once = parse_trigger(at="2026-05-19T10:00:00Z")
    assert jitter_bound(once, TOP, 30) == (30, False)
    bound, _ = jitter_bound(every_10s, TOP, 30)
    assert jitter_offset("seed", 30, 10) < bound


def test_timing_imports_only_the_standard_library() -> None:
    """timing/ stays pure: no kopf, kubernetes, aiohttp, pydantic, croniter, no operator."""
    allowed = {"__future__", "bisect", "dataclasses", "datetime", "fractions", "functools",
               "hashlib", "re", "zoneinfo"}
    for path in TIMING.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                assert {a.name.split(".")[0] for a in node.names} <= allowed, path
            elif isinstance(node, ast.ImportFrom):
                if node.level == 0:
                    assert (node.module or "").split(".")[0] in allowed, path
                else:
                    assert node.level == 1, path  # only siblings inside timing/


# -- properties -------------------------------------------------------------------
FIELD_BOUNDS = {"second": (0, 59), "minute": (0, 59), "hour": (0, 23), "dom": (1, 31),
                "month": (1, 12), "dow": (0, 6)}
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
          "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


@st.composite
def field_item(draw: st.DrawFn, name: str, allow_wrap: bool = True) -> str:
    """One list item croniter and we read alike (no a-a ranges, no stepped wraps)."""
    lo, hi = FIELD_BOUNDS[name]

    def num(v: int) -> str:
        if name == "month" and draw(st.booleans()):
            return draw(st.sampled_from([MONTHS[v - 1], MONTHS[v - 1].upper()]))
        if name == "dow" and draw(st.booleans()):
            return DAYS[v].title() if draw(st.booleans()) else DAYS[v]
        if name == "dow" and v == 0 and draw(st.booleans()):
            return "7"
        return str(v)

    kind = draw(st.sampled_from(["value", "range", "step", "range_step", "start_step"]
                                + (["wrap"] if allow_wrap else [])))
    step = draw(st.integers(1, hi - lo + 2))
    a = draw(st.integers(lo, hi))
    if kind == "value":
        return num(a)
    if kind == "step":
        return f"*/{step}"
    if kind == "start_step":
        return f"{num(a)}/{step}"
    b = draw(st.integers(lo, hi).filter(lambda v: v != a))
    if kind == "wrap":
        return f"{num(max(a, b))}-{num(min(a, b))}"
    a, b = min(a, b), max(a, b)
    return f"{num(a)}-{num(b)}" + (f"/{step}" if kind == "range_step" else "")


@st.composite
def cron_field(draw: st.DrawFn, name: str, star_weight: int = 2) -> str:
    if draw(st.integers(0, 9)) < star_weight:
        return "*"
    items = draw(st.lists(field_item(name), min_size=1, max_size=3))
    if name in ("dom", "dow"):
        # croniter decides "restricted" by whether a field *contains* "*"; Vixie cron
        # (and we) by whether it starts with "*". Agree by keeping stars in front.
        items.sort(key=lambda item: not item.startswith("*"))
    return ",".join(items)


@st.composite
def cron_expression(draw: st.DrawFn, seconds: bool | None = None,
                    coarse_seconds: bool = False) -> tuple[str, bool]:
    with_seconds = draw(st.booleans()) if seconds is None else seconds
    fields = [draw(cron_field(n)) for n in ("minute", "hour", "dom", "month", "dow")]
    if with_seconds:
        sec = draw(st.sampled_from(["0", "0,30", "*/15", "5-10", "59"])) if coarse_seconds \
            else draw(cron_field("second"))
        fields.insert(0, sec)
    return " ".join(fields), with_seconds


def _fires(expression: str) -> bool:
    try:
        compile_cron(expression)
    except TriggerError as e:
        assert "never fires" in str(e), e
        return False
    return True


instants = st.integers(int(T("1971-01-01T00:00:00+00:00").timestamp()),
                       int(T("2099-01-01T00:00:00+00:00").timestamp()))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expr=cron_expression(), start=instants, micro=st.sampled_from([0, 1, 500_000, 999_999]))
def test_utc_matches_croniter(expr: tuple[str, bool], start: int, micro: int) -> None:
    """(a) In UTC, next fire == croniter's get_next, 5 and 6 fields (Vixie day rule)."""
    expression, seconds = expr
    assume(_fires(expression))
    after = dt.datetime.fromtimestamp(start, UTC).replace(microsecond=micro)
    try:
        expected = croniter(expression, after, second_at_beginning=seconds,
                            implement_cron_bug=True).get_next(dt.datetime)
    except CroniterBadDateError:  # croniter gives up after 50 years
        expected = None
    got = next_fire(parse_trigger(schedule=expression), after)
    if expected is None:
        assert got is None or got - after > dt.timedelta(days=365 * 49)
    else:
        assert got == expected


def _in_first_pass_of_repeat(after: dt.datetime, zone: ZoneInfo) -> bool:
    """Whether ``after`` is in a wall-clock stretch that repeats within the next hours."""
    wall = after.astimezone(zone).replace(tzinfo=None)
    later = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    return later > after


DST_DAYS = [(NY, T("2026-03-08T07:00:00+00:00")), (NY, T("2026-11-01T06:00:00+00:00")),
            (BERLIN, T("2026-03-29T01:00:00+00:00")), (BERLIN, T("2026-10-25T01:00:00+00:00")),
            (NY, T("2031-11-02T06:00:00+00:00")), (BERLIN, T("2027-03-28T01:00:00+00:00"))]


@st.composite
def dst_expression(draw: st.DrawFn) -> str:
    """Expressions the old walker (plain croniter) reads as we do, hours near 0-4."""
    minute = draw(st.sampled_from(["0", "30", "*", "*/10", "*/7", "15,45", "5-20/5", "59",
                                   "0-10", "*/30"]))
    hour = draw(st.sampled_from(["*", "1", "2", "3", "1-3", "*/2", "2,3", "0-4/2", "1,2",
                                 "*/1", "22-3"]))
    dom = draw(st.sampled_from(["*", "*", "1-31", "8", "1,25", "25-31"]))
    month = draw(st.sampled_from(["*", "*", "3", "10,11", "mar-nov"]))
    dow = draw(st.sampled_from(["*", "*", "0", "sun", "1-5", "0,6"]))
    fields = [minute, hour, dom, month, dow]
    if draw(st.booleans()):
        fields.insert(0, draw(st.sampled_from(["0", "0,30", "*/20", "59"])))
    return " ".join(fields)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expression=dst_expression(), day=st.sampled_from(DST_DAYS),
       offset=st.integers(-6 * 3600, 6 * 3600), micro=st.sampled_from([0, 1, 999_999]))
def test_dst_days_match_old_walker(expression: str, day: tuple[ZoneInfo, dt.datetime],
                                   offset: int, micro: int) -> None:
    """(b) Around DST changes in New York and Berlin: the old walker's answer, except
    where it was not the smallest instant (wall-clock job, `after` in the first pass
    of a repeated hour); there, and always, the minimum over the old rules."""
    zone, transition = day
    after = transition + dt.timedelta(seconds=offset, microseconds=micro)
    trigger = parse_trigger(schedule=expression, time_zone=zone.key)
    assert trigger.cron is not None
    got = next_fire(trigger, after)
    args = (trigger.cron, trigger.seconds_field, zone, trigger.fixed_time, after)
    assert got == brute_next_cron(*args)
    old = old_next_cron(*args)
    if got != old:
        assert not trigger.fixed_time and _in_first_pass_of_repeat(after, zone)
        assert got is not None and old is not None and got < old


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expr=cron_expression(coarse_seconds=True),
       tz=st.sampled_from(["America/New_York", "Europe/Berlin", "Australia/Lord_Howe",
                           "America/Santiago", "Asia/Kolkata", "Pacific/Chatham"]),
       start=st.integers(int(T("2025-01-01T00:00:00+00:00").timestamp()),
                         int(T("2028-01-01T00:00:00+00:00").timestamp())))
def test_random_zones_match_brute_force(expr: tuple[str, bool], tz: str, start: int) -> None:
    """Any expression, any of several zones, any time: the minimum over the old rules."""
    expression, _ = expr
    assume(_fires(expression))
    trigger = parse_trigger(schedule=expression, time_zone=tz)
    assert trigger.cron is not None
    after = dt.datetime.fromtimestamp(start, UTC)
    got = next_fire(trigger, after)
    assert got == brute_next_cron(trigger.cron, trigger.seconds_field, trigger.zone,
                                  trigger.fixed_time, after)


cron_alphabet = st.sampled_from([*"0123456789*/-,?LW#H ", "JAN", "mon", "@", "\t",
                                 "@hourly", "\uff17", "-"])


@settings(max_examples=500, deadline=None)
@given(text=st.one_of(st.text(max_size=40), st.lists(cron_alphabet, max_size=25).map(
    "".join), st.lists(st.text(alphabet="0123456789*/-,?", max_size=6), min_size=4,
                       max_size=7).map(" ".join)),
       tz=st.sampled_from(["UTC", "Europe/Berlin"]))
def test_garbage_is_only_ever_a_trigger_error(text: str, tz: str) -> None:
    """(c) Anything a user types is either a working trigger or a TriggerError."""
    try:
        trigger = parse_trigger(schedule=text, time_zone=tz)
    except TriggerError as e:
        assert str(e)
        return
    result = next_fire(trigger, TOP)
    assert result is None or result > TOP


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=30),
                      st.from_regex(re.compile(r"[0-9]{1,40}(\.[0-9]{1,40})?(ms|s|m|h|d)"
                                               r"{1,3}", re.ASCII), fullmatch=True)))
def test_durations_never_overflow(text: str) -> None:
    for call in (lambda: parse_duration(text), lambda: parse_trigger(interval=text),
                 lambda: parse_trigger(at=text), lambda: parse_trigger(
                     interval="1m", start_time=text)):
        try:
            value = call()
        except TriggerError:
            continue
        if isinstance(value, float):
            assert 0 <= value <= 36500 * 86400
