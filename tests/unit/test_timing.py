"""Trigger math at fixed anchors (style of Kubernetes' cronjob utils_test.go)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st
from schedulezero_operator.timing import (
    TriggerError,
    backoff_delay,
    catch_up,
    jitter_offset,
    next_fire,
    parse_duration,
    parse_trigger,
    slots_between,
)

UTC = dt.UTC
NY, BERLIN = ZoneInfo("America/New_York"), ZoneInfo("Europe/Berlin")


def T(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(UTC)


TOP_OF_THE_HOUR = T("2026-05-19T10:00:00+00:00")
JUST_AFTER_THE_HOUR = T("2026-05-19T10:00:01+00:00")
JUST_BEFORE_THE_HOUR = T("2026-05-19T09:59:59+00:00")


@pytest.mark.parametrize(("schedule", "tz", "after", "expected"), [
    ("0 * * * *", "UTC", JUST_BEFORE_THE_HOUR, TOP_OF_THE_HOUR),
    ("0 * * * *", "UTC", TOP_OF_THE_HOUR, T("2026-05-19T11:00:00+00:00")),
    ("*/15 * * * *", "UTC", JUST_AFTER_THE_HOUR, T("2026-05-19T10:15:00+00:00")),
    ("@hourly", "UTC", JUST_AFTER_THE_HOUR, T("2026-05-19T11:00:00+00:00")),
    ("@daily", "UTC", JUST_AFTER_THE_HOUR, T("2026-05-20T00:00:00+00:00")),
    # 6 fields: seconds FIRST (Quartz/Spring/robfig WithSeconds)
    ("30 0 10 * * *", "UTC", TOP_OF_THE_HOUR, T("2026-05-19T10:00:30+00:00")),
    ("*/5 * * * * *", "UTC", JUST_AFTER_THE_HOUR, T("2026-05-19T10:00:05+00:00")),
    # time zones
    ("0 9 * * *", "Europe/Berlin", TOP_OF_THE_HOUR, T("2026-05-20T09:00:00+02:00")),
    ("0 9 * * *", "America/New_York", TOP_OF_THE_HOUR, T("2026-05-19T09:00:00-04:00")),
    # leap day and year end
    ("0 12 29 2 *", "UTC", T("2027-01-01T00:00:00+00:00"), T("2028-02-29T12:00:00+00:00")),
    ("59 23 31 12 *", "UTC", T("2026-12-31T23:58:00+00:00"), T("2026-12-31T23:59:00+00:00")),
    ("0 0 1 1 *", "UTC", T("2026-12-31T23:59:00+00:00"), T("2027-01-01T00:00:00+00:00")),
])
def test_cron_next_fire(schedule: str, tz: str, after: dt.datetime,
                        expected: dt.datetime) -> None:
    assert next_fire(parse_trigger(schedule=schedule, time_zone=tz), after) == expected


# America/New_York: 2026-03-08 02:00 EST -> 03:00 EDT; 2026-11-01 02:00 EDT -> 01:00 EST.
# Europe/Berlin: 2026-03-29 02:00 CET -> 03:00 CEST; 2026-10-25 03:00 CEST -> 02:00 CET.
@pytest.mark.parametrize(("schedule", "tz", "after", "expected"), [
    # spring forward, fixed time in the gap: runs at the transition instant
    ("30 2 * * *", "America/New_York", T("2026-03-08T00:00:00-05:00"),
     [T("2026-03-08T03:00:00-04:00"), T("2026-03-09T02:30:00-04:00")]),
    ("30 2 * * *", "Europe/Berlin", T("2026-03-29T00:00:00+01:00"),
     [T("2026-03-29T03:00:00+02:00"), T("2026-03-30T02:30:00+02:00")]),
    # spring forward, wildcard hour: follows the wall clock (02:xx never happens)
    ("30 * * * *", "America/New_York", T("2026-03-08T01:00:00-05:00"),
     [T("2026-03-08T01:30:00-05:00"), T("2026-03-08T03:30:00-04:00")]),
    # fall back, fixed time in the repeated hour: runs once (CronJob runs twice)
    ("30 1 * * *", "America/New_York", T("2026-11-01T00:00:00-04:00"),
     [T("2026-11-01T01:30:00-04:00"), T("2026-11-02T01:30:00-05:00")]),
    ("30 2 * * *", "Europe/Berlin", T("2026-10-25T00:00:00+02:00"),
     [T("2026-10-25T02:30:00+02:00"), T("2026-10-26T02:30:00+01:00")]),
    # fall back, wildcard/step hour: runs in both occurrences
    ("30 * * * *", "America/New_York", T("2026-11-01T00:45:00-04:00"),
     [T("2026-11-01T01:30:00-04:00"), T("2026-11-01T01:30:00-05:00"),
      T("2026-11-01T02:30:00-05:00")]),
    ("0 */1 * * *", "Europe/Berlin", T("2026-10-25T01:30:00+02:00"),
     [T("2026-10-25T02:00:00+02:00"), T("2026-10-25T02:00:00+01:00"),
      T("2026-10-25T03:00:00+01:00")]),
])
def test_cron_dst_follows_vixie_cron(schedule: str, tz: str, after: dt.datetime,
                                     expected: list[dt.datetime]) -> None:
    trigger = parse_trigger(schedule=schedule, time_zone=tz)
    got, current = [], after
    for _ in expected:
        current = next_fire(trigger, current)  # type: ignore[assignment]
        got.append(current)
    assert got == expected


@pytest.mark.parametrize(("interval", "anchor", "after", "expected"), [
    ("30s", T("2026-05-19T10:00:00+00:00"), TOP_OF_THE_HOUR, T("2026-05-19T10:00:30+00:00")),
    ("30s", T("2026-05-19T10:00:00+00:00"), T("2026-05-19T09:00:00+00:00"), TOP_OF_THE_HOUR),
    ("1h30m", T("2026-05-19T10:00:00+00:00"), T("2026-05-19T12:00:00+00:00"),
     T("2026-05-19T13:00:00+00:00")),
    ("2s", T("2026-05-19T10:00:00+00:00"), T("2026-05-19T10:00:01.5+00:00"),
     T("2026-05-19T10:00:02+00:00")),
])
def test_interval_next_fire(interval: str, anchor: dt.datetime, after: dt.datetime,
                            expected: dt.datetime) -> None:
    assert next_fire(parse_trigger(interval=interval, anchor=anchor), after) == expected


def test_at_fires_once() -> None:
    trigger = parse_trigger(at="2026-05-19T10:00:00Z")
    assert next_fire(trigger, JUST_BEFORE_THE_HOUR) == TOP_OF_THE_HOUR
    assert next_fire(trigger, TOP_OF_THE_HOUR) is None


def test_start_and_end_window() -> None:
    trigger = parse_trigger(schedule="0 * * * *", start_time="2026-05-19T12:30:00Z",
                            end_time="2026-05-19T14:00:00Z")
    assert next_fire(trigger, TOP_OF_THE_HOUR) == T("2026-05-19T13:00:00+00:00")
    assert next_fire(trigger, T("2026-05-19T13:00:00+00:00")) == T("2026-05-19T14:00:00+00:00")
    assert next_fire(trigger, T("2026-05-19T14:00:00+00:00")) is None


def test_impossible_cron_is_refused_as_never_firing() -> None:
    with pytest.raises(TriggerError, match="never fires: day 30 does not occur in February"):
        parse_trigger(schedule="0 0 30 2 *")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"schedule": "61 * * * *"}, "invalid cron expression"),
    ({"schedule": "* * *"}, "must have 5 fields"),
    ({"schedule": "* * * * *", "time_zone": "Mars/Olympus"}, "unknown time zone"),
    ({"schedule": "* * * * *", "interval": "5s"}, "exactly one of schedule, interval or at"),
    ({}, "exactly one of"),
    ({"interval": "5 minutes"}, "invalid duration"),
    ({"interval": "100ms"}, "shorter than the 1s minimum"),
    ({"at": "tomorrow"}, "invalid time"),
    ({"at": "2026-05-19T10:00:00"}, "no UTC offset"),
    ({"interval": "5s", "start_time": "2026-05-19T10:00:00Z",
      "end_time": "2026-05-19T09:00:00Z"}, "endTime must be after startTime"),
])
def test_invalid_triggers_explain_themselves(kwargs: dict, message: str) -> None:
    with pytest.raises(TriggerError, match=message):
        parse_trigger(**kwargs)


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30), ("1h30m", 5400), ("500ms", 0.5), ("1.5h", 5400), ("2d", 172800)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_slots_between_caps_and_reports_truncation() -> None:
    trigger = parse_trigger(schedule="* * * * *")
    slots, cut = slots_between(trigger, TOP_OF_THE_HOUR, T("2026-05-19T10:10:00+00:00"), 100)
    assert len(slots) == 10 and not cut
    slots, cut = slots_between(trigger, TOP_OF_THE_HOUR, T("2026-05-19T12:00:00+00:00"), 5)
    assert len(slots) == 5 and cut


@pytest.mark.parametrize(("policy", "max_runs", "deadline", "run", "missed"), [
    ("Latest", 10, None, [4], [1, 2, 3]),
    ("All", 10, None, [1, 2, 3, 4], []),
    ("All", 2, None, [3, 4], [1, 2]),
    ("Skip", 10, None, [], [1, 2, 3, 4]),
    ("All", 10, 150.0, [3, 4], [1, 2]),  # slots older than the deadline are missed
    ("Latest", 10, 30.0, [], [1, 2, 3, 4]),
])
def test_catch_up(policy: str, max_runs: int, deadline: float | None, run: list[int],
                  missed: list[int]) -> None:
    slot = {i: TOP_OF_THE_HOUR + dt.timedelta(minutes=i) for i in range(1, 5)}
    now = slot[4] + dt.timedelta(seconds=60)
    result = catch_up(list(slot.values()), False, now, policy=policy, max_runs=max_runs,
                      starting_deadline=deadline)
    assert result.run == [slot[i] for i in run]
    assert result.missed == [slot[i] for i in missed]


def test_jitter_is_deterministic_and_bounded() -> None:
    a = jitter_offset("uid-1@2026-05-19T10:00:00Z", 10, None)
    assert a == jitter_offset("uid-1@2026-05-19T10:00:00Z", 10, None)
    assert 0 <= a < 10
    assert jitter_offset("x", 10, 4) < 2, "never more than half the gap to the next fire"
    assert jitter_offset("x", 0, None) == 0


def test_backoff() -> None:
    kw = {"initial": 1.0, "maximum": 10.0, "multiplier": 2.0, "jitter": 0.5}
    assert [backoff_delay(a, random_fraction=0, **kw) for a in (1, 2, 3, 4, 5)] == [
        1, 2, 4, 8, 10]
    assert backoff_delay(2, random_fraction=0.999, **kw) == pytest.approx(1.001)


@settings(max_examples=200, deadline=None)
@given(
    minute=st.sampled_from(["*", "0", "*/7", "5,35", "10-20"]),
    hour=st.sampled_from(["*", "3", "*/5", "9-17"]),
    dom=st.sampled_from(["*", "1", "15", "28"]),
    dow=st.sampled_from(["*", "1-5", "0"]),
    offset=st.integers(min_value=0, max_value=365 * 24 * 3600),
)
def test_utc_cron_agrees_with_croniter(minute: str, hour: str, dom: str, dow: str,
                                       offset: int) -> None:
    """In UTC (no DST) our next fire is exactly croniter's."""
    expr = f"{minute} {hour} {dom} * {dow}"
    after = T("2026-01-01T00:00:00+00:00") + dt.timedelta(seconds=offset)
    expected = croniter(expr, after).get_next(dt.datetime)
    assert next_fire(parse_trigger(schedule=expr), after) == expected


@settings(max_examples=200, deadline=None)
@given(offset=st.integers(min_value=0, max_value=366 * 24 * 3600),
       tz=st.sampled_from(["America/New_York", "Europe/Berlin", "Australia/Lord_Howe"]),
       expr=st.sampled_from(["*/10 * * * *", "30 2 * * *", "0 * * * *", "15 1,2,3 * * *"]))
def test_next_fire_is_strictly_increasing_and_on_schedule(offset: int, tz: str,
                                                          expr: str) -> None:
    trigger = parse_trigger(schedule=expr, time_zone=tz)
    after = T("2026-01-01T00:00:00+00:00") + dt.timedelta(seconds=offset)
    nxt = next_fire(trigger, after)
    assert nxt is not None and nxt > after
    assert nxt - after <= dt.timedelta(days=1, hours=2)
