"""The kubectl plugin without a cluster: argument parsing, tables, cron in words, next times.

Every time-dependent output is computed at fixed anchors (``now`` is injected),
and the times themselves come from the operator's timing code; these tests pin
the wording and layout, and that the plugin feeds the timing code what the
operator feeds it (interval anchors, zones, windows).
"""

from __future__ import annotations

import datetime as dt
import io
import re
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from schedulezero_operator.cli import explain, plugin, render
from schedulezero_operator.cli.kube import CliError
from schedulezero_operator.timing import TriggerError, parse_trigger

UTC = dt.UTC


def T(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def parse(*argv: str) -> Any:
    return plugin.build_parser().parse_args(list(argv))


# -- argument parsing ---------------------------------------------------------------
def test_run_defaults() -> None:
    args = parse("run", "beat")
    assert (args.verb, args.name, args.timeout, args.no_wait) == ("run", "beat", 60.0, False)
    assert (args.namespace, args.kubeconfig, args.context) == (None, None, None)


@pytest.mark.parametrize("argv", [
    ["-n", "jobs", "history", "beat"],
    ["history", "beat", "-n", "jobs"],
    ["history", "beat", "--namespace", "jobs"],
    ["--namespace", "other", "history", "beat", "-n", "jobs"],  # after the verb wins
])
def test_namespace_before_or_after_the_verb(argv: list[str]) -> None:
    assert parse(*argv).namespace == "jobs"


def test_connection_flags_after_the_verb_do_not_reset_those_before() -> None:
    args = parse("--kubeconfig", "/k", "--context", "c1", "status", "-A")
    assert (args.kubeconfig, args.context, args.all_namespaces) == ("/k", "c1", True)
    args = parse("status", "--kubeconfig", "/k2", "--context", "c2")
    assert (args.kubeconfig, args.context, args.all_namespaces) == ("/k2", "c2", False)


def test_next_and_cron_take_n_as_the_count() -> None:
    args = parse("next", "beat", "-n", "3")
    assert (args.count, args.namespace) == (3, None)
    args = parse("-n", "jobs", "next", "beat", "-n", "7", "--from", "2026-01-01T00:00:00Z")
    assert (args.count, args.namespace, args.after) == (7, "jobs", T("2026-01-01T00:00:00Z"))
    assert parse("next", "beat", "--namespace", "jobs").namespace == "jobs"
    args = parse("cron", "*/5 * * * * *")
    assert (args.expression, args.tz, args.count, args.after) == ("*/5 * * * * *", "UTC", 5,
                                                                  None)
    assert parse("cron", "@hourly", "--tz", "Europe/Berlin", "-n", "2").tz == "Europe/Berlin"


def test_a_namespace_given_as_count_gets_a_helpful_error(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        parse("next", "beat", "-n", "prod")
    assert e.value.code == 2
    assert "give the namespace with --namespace" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    [], ["run"], ["run", "x", "--timeout", "0"], ["run", "x", "--timeout", "soon"],
    ["next", "x", "-n", "0"], ["cron", "* * * * *", "--from", "yesterday"],
    ["cron", "* * * * *", "--from", "2026-01-01T00:00:00"], ["frobnicate"],
    ["suspend"],
])
def test_bad_usage_exits_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as e:
        parse(*argv)
    assert e.value.code == 2


def test_suspend_and_resume_take_several_names() -> None:
    assert parse("suspend", "a", "b").names == ["a", "b"]
    assert parse("resume", "a", "-n", "ns").names == ["a"]


@pytest.mark.parametrize("verb", list(plugin.VERBS))
def test_every_verb_has_help_with_examples(verb: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        plugin.build_parser("kubectl sz").parse_args([verb, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and f"kubectl sz {verb}" in text


@pytest.mark.parametrize(("argv0", "prog"), [
    ("/usr/local/bin/kubectl-sz", "kubectl sz"),
    ("kubectl-schedulezero", "kubectl schedulezero"),
    ("/work/.venv/lib/python3.11/site-packages/schedulezero_operator/cli/__main__.py",
     "kubectl sz"),
])
def test_prog_name_follows_how_kubectl_ran_us(argv0: str, prog: str) -> None:
    assert plugin._prog(argv0) == prog


# -- tables and durations ---------------------------------------------------------------
def test_table_aligns_columns_with_three_spaces_and_no_trailing_blanks() -> None:
    text = render.table(["NAME", "A", "MESSAGE"], [["x", 1, ""], ["longer", None, "two\nlines"]])
    assert text.splitlines() == [
        "NAME     A        MESSAGE",
        "x        1",
        "longer   <none>   two lines",
    ]


def test_table_with_headers_only() -> None:
    assert render.table(["A", "BB"], []) == "A   BB"


@pytest.mark.parametrize(("ms", "text"), [
    (None, None), (0.25, "0.2ms"), (4, "4.0ms"), (12.4, "12ms"), (999.4, "999ms"),
    (1250, "1.25s"), (12_340, "12.3s"), (123_000, "2m3s"), (5_400_000, "1h30m"),
    (90_061_000, "1d1h"),
])
def test_millis(ms: float | None, text: str | None) -> None:
    assert render.millis(ms) == text


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (2.77, "2.77s"), (12.77, "12.8s"), (60, "1m"), (3600, "1h"), (86400, "1d"),
    (-5, "-5s"),
])
def test_seconds(seconds: float, text: str) -> None:
    assert render.seconds(seconds) == text


def test_truncate_flattens_and_cuts() -> None:
    assert render.truncate("a\n  b", 10) == "a b"
    assert render.truncate("x" * 20, 10) == "x" * 9 + "…"


def test_time_formats() -> None:
    t = T("2026-03-29T01:00:00Z")
    assert render.rfc3339(t) == "2026-03-29T01:00:00Z"
    assert render.rfc3339(t.replace(microsecond=123456)) == "2026-03-29T01:00:00.123Z"
    assert render.local(t, ZoneInfo("Europe/Berlin")) == "Sun 2026-03-29 03:00:00 CEST"
    assert render.status_time("2026-03-29T01:00:00.5Z") == "2026-03-29T01:00:00Z"
    assert render.status_time(None) is None
    assert render.status_time("garbage") == "garbage"


SCHEDULE: dict[str, Any] = {
    "apiVersion": "schedulezero.io/v1alpha1", "kind": "Schedule",
    "metadata": {"name": "beat", "namespace": "jobs", "uid": "10a698e0-aaaa-bbbb",
                 "creationTimestamp": "2026-05-19T10:00:07Z", "resourceVersion": "42"},
    "spec": {"handler": "h", "method": "heartbeat", "interval": "90s"},
    "status": {
        "active": [{"runId": "10a698e0-20260519T100437000Z",
                    "scheduledTime": "2026-05-19T10:04:37Z", "attempt": 2,
                    "endpoint": "10.0.0.7:4244"}],
        "recentRuns": [
            {"runId": "10a698e0-20260519T100307000Z", "scheduledTime": "2026-05-19T10:03:07Z",
             "outcome": "Failed", "attempts": 3, "endpoint": "10.0.0.7:4244",
             "latencyMs": 1.24, "durationMs": 30012.5,
             "message": "Timeout: no reply within 10s\nafter 3 attempts"},
            {"runId": "10a698e0-20260519T100137000Z", "scheduledTime": "2026-05-19T10:01:37Z",
             "outcome": "Succeeded", "attempts": 1, "endpoint": "10.0.0.7:4244",
             "latencyMs": 3.0, "durationMs": 4.9, "message": "", "result": '{"ok":true}'},
            {"runId": "10a698e0-20260519T100007000Z", "scheduledTime": "2026-05-19T10:00:07Z",
             "outcome": "Skipped", "attempts": 0, "message": "Forbid: a run is still active"},
        ],
        "counters": {"runs": 3, "succeeded": 1, "failed": 1, "retried": 2, "skipped": 1,
                     "missed": 0},
        "lastResult": "Failed",
        "conditions": [{"type": "Ready", "status": "True", "reason": "Scheduled"}],
    },
}


def test_history_table() -> None:
    lines = plugin.history_table(SCHEDULE).splitlines()
    assert [re.split(r" {3,}", line) for line in lines] == [
        ["RUN ID", "SCHEDULED", "OUTCOME", "ATTEMPTS", "LATENCY", "DURATION", "ENDPOINT",
         "MESSAGE"],
        ["10a698e0-20260519T100437000Z", "2026-05-19T10:04:37Z", "Running", "2", "<none>",
         "<none>", "10.0.0.7:4244"],
        ["10a698e0-20260519T100307000Z", "2026-05-19T10:03:07Z", "Failed", "3", "1.2ms",
         "30s", "10.0.0.7:4244", "Timeout: no reply within 10s after 3 attempts"],
        ["10a698e0-20260519T100137000Z", "2026-05-19T10:01:37Z", "Succeeded", "1", "3.0ms",
         "4.9ms", "10.0.0.7:4244"],
        ["10a698e0-20260519T100007000Z", "2026-05-19T10:00:07Z", "Skipped", "0", "<none>",
         "<none>", "<none>", "Forbid: a run is still active"],
    ]
    # Columns line up under their headers, kubectl style.
    for header in ("SCHEDULED", "OUTCOME", "ENDPOINT", "MESSAGE"):
        column = lines[0].index(header)
        assert all(line[column - 3:column] == "   " and line[column] != " "
                   for line in lines[1:] if len(line) > column)


def _obj(ns: str, kind: str, status: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"namespace": ns, "name": "x"}, "spec": spec,
            "status": status}


def test_status_table_sums_per_namespace_and_totals() -> None:
    ready_false = {"conditions": [{"type": "Ready", "status": "False"}]}
    schedules = [
        _obj("b", "Schedule", {"counters": {"runs": 5, "succeeded": 4, "failed": 1},
                               "lastResult": "Failed"}),
        _obj("b", "Schedule", ready_false, suspend=True),
        _obj("a", "Schedule", {"counters": {"runs": 2, "succeeded": 2, "missed": 3}}),
    ]
    handlers = [
        _obj("a", "Handler", {"conditions": [{"type": "Available", "status": "True"}]}),
        _obj("a", "Handler", {"conditions": [{"type": "Available", "status": "False"}]}),
        _obj("c", "Handler", {}),
    ]
    lines = plugin.status_table(schedules, handlers, total=True).splitlines()
    assert lines[0].split() == ["NAMESPACE", "SCHEDULES", "SUSPENDED", "INVALID", "FAILING",
                                "HANDLERS", "AVAILABLE", "RUNS", "SUCCEEDED", "FAILED",
                                "RETRIED", "SKIPPED", "MISSED"]
    assert [line.split() for line in lines[1:]] == [
        ["a", "1", "0", "0", "0", "2", "1", "2", "2", "0", "0", "0", "3"],
        ["b", "2", "1", "1", "1", "0", "0", "5", "4", "1", "0", "0", "0"],
        ["c", "0", "0", "0", "0", "1", "0", "0", "0", "0", "0", "0", "0"],
        ["TOTAL", "3", "1", "1", "1", "3", "1", "7", "6", "1", "0", "0", "3"],
    ]
    one = plugin.status_table(schedules[2:], handlers[:2], total=False).splitlines()
    assert len(one) == 2 and one[1].split()[0] == "a"


def test_run_text() -> None:
    run = SCHEDULE["status"]["recentRuns"][1]
    assert plugin.run_text(run).splitlines() == [
        "run 10a698e0-20260519T100137000Z Succeeded",
        "  attempts:  1",
        "  latency:   3.0ms",
        "  duration:  4.9ms",
        "  endpoint:  10.0.0.7:4244",
        '  result:    {"ok":true}',
    ]


def test_find_run_waits_for_the_record_of_our_run() -> None:
    obj: dict[str, Any] = {"spec": {}, "status": {
        "lastRunNow": "v1", "active": [{"runId": "r1"}], "recentRuns": []}}
    assert plugin.find_run(obj, "r1", "v1") is None, "still active"
    obj["status"] = {"lastRunNow": "v0", "recentRuns": [{"runId": "r0"}]}
    assert plugin.find_run(obj, "r1", "v1") is None, "not picked up yet"
    obj["status"]["recentRuns"].append({"runId": "r1", "outcome": "Failed"})
    assert plugin.find_run(obj, "r1", "v1") == {"runId": "r1", "outcome": "Failed"}


def test_find_run_without_history_falls_back_to_last_result() -> None:
    obj = {"spec": {"successfulRunsHistoryLimit": 0},
           "status": {"lastRunNow": "v1", "active": [], "recentRuns": [],
                      "lastResult": "Succeeded"}}
    run = plugin.find_run(obj, "r1", "v1")
    assert run is not None and run["outcome"] == "Succeeded"
    assert "history limit 0" in run["message"]
    obj["spec"] = {}  # with history kept, a missing record means: not there yet
    assert plugin.find_run(obj, "r1", "v1") is None


# -- cron in words -------------------------------------------------------------------------
@pytest.mark.parametrize(("expression", "summary"), [
    ("*/2 * * * *", "at second 0, every 2 minutes, every hour, every day, every month"),
    ("*/5 * * * * *", "every 5 seconds, every minute, every hour, every day, every month"),
    ("0 30 9 * * MON-FRI", "at 09:30:00, on Monday through Friday, every month"),
    ("@hourly", "at second 0, at minute 0, every hour, every day, every month"),
    ("@daily", "at 00:00:00, every day, every month"),
    ("0,30 9-17 * * *", "at second 0, at minutes 0 and 30, hours 9 through 17, every day, "
                        "every month"),
    ("5/10 22-2 * * *", "at second 0, every 10 minutes from minute 5 through 59, hours 22 "
                        "through 2 (wrapping past 23), every day, every month"),
    ("0 0 1,15 * 1", "at 00:00:00, on days 1 and 15 of the month or on Monday (either "
                     "matches, as in Vixie cron), every month"),
    ("0 0 */2 * 1", "at 00:00:00, on Monday, only if also every 2 days of the month, "
                    "every month"),
    ("0 0 * * */2", "at 00:00:00, on Sunday, Tuesday, Thursday and Saturday, every month"),
    ("0 0 12 ? 1/3 5-7", "at 12:00:00, on Friday through Sunday, in January, April, July and "
                         "October"),
    ("0 0 1 NOV,JAN-MAR *", "at 00:00:00, on day 1 of the month, in November and January "
                            "through March"),
    ("0 8 * * 7", "at 08:00:00, on Sunday, every month"),
])
def test_explain_cron(expression: str, summary: str) -> None:
    assert explain.explain_cron(expression).summary == summary


_ITEM = st.one_of(
    st.just("*"), st.just("?"), st.integers(0, 60).map(str),
    st.tuples(st.integers(0, 31), st.integers(0, 31)).map(lambda t: f"{t[0]}-{t[1]}"),
    st.tuples(st.integers(0, 31), st.integers(1, 9)).map(lambda t: f"{t[0]}/{t[1]}"),
    st.integers(1, 9).map(lambda n: f"*/{n}"),
    st.sampled_from(["MON-FRI", "jan-mar", "SUN", "FRI-MON", "NOV", "7", "5-7", "L", "1#2"]))
_FIELD = st.lists(_ITEM, min_size=1, max_size=3).map(",".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(_FIELD, min_size=5, max_size=6))
def test_explain_never_fails_on_what_the_operator_accepts(fields: list[str]) -> None:
    expression = " ".join(fields)
    try:
        parse_trigger(schedule=expression)
    except TriggerError:
        return
    words = explain.explain_cron(expression)
    assert len(words.fields) == 6 and all(meaning for _, _, meaning in words.fields)
    assert words.summary


def test_explain_cron_fields() -> None:
    words = explain.explain_cron("0 */2 * * *")
    assert not words.seconds_field
    assert words.fields == (
        ("second", "(0)", "at second 0"),
        ("minute", "0", "at minute 0"),
        ("hour", "*/2", "every 2 hours"),
        ("day-of-month", "*", "every day of the month"),
        ("month", "*", "every month"),
        ("day-of-week", "*", "every day of the week"),
    )
    assert explain.explain_cron("*/5 * * * * *").fields[0] == ("second", "*/5", "every 5 seconds")


def test_cron_text_lists_times_in_the_zone_and_utc_across_spring_forward() -> None:
    text = plugin.cron_text("30 2 * * *", "Europe/Berlin", T("2026-03-28T00:00:00Z"), 3)
    lines = text.splitlines()
    assert lines[0] == ("expression: 30 2 * * *   (5 fields: minute hour day-of-month month "
                        "day-of-week; second 0)")
    assert lines[1] == "meaning:    at 02:30:00, every day, every month"
    assert lines[2] == "time zone:  Europe/Berlin"
    assert lines[3].startswith("DST:        fixed time of day: a local time skipped")
    assert lines[-4:] == [
        "#   TIME (Europe/Berlin)           UTC                    IN",
        "1   Sat 2026-03-28 02:30:00 CET    2026-03-28T01:30:00Z   in 1h30m",
        # 02:30 does not exist on 29 March: a fixed-time job runs at the transition.
        "2   Sun 2026-03-29 03:00:00 CEST   2026-03-29T01:00:00Z   in 1d1h",
        "3   Mon 2026-03-30 02:30:00 CEST   2026-03-30T00:30:00Z   in 2d30m",
    ]


def test_cron_text_wildcard_hours_follow_the_wall_clock() -> None:
    text = plugin.cron_text("0 30 * * * *", "America/New_York", T("2026-11-01T04:00:00Z"), 3)
    assert "follows the wall clock" in text
    # 01:30 happens twice on the fall-back night; a wildcard-hour job runs at both.
    assert text.splitlines()[-2:] == [
        "2   Sun 2026-11-01 01:30:00 EDT   2026-11-01T05:30:00Z   in 1h30m",
        "3   Sun 2026-11-01 01:30:00 EST   2026-11-01T06:30:00Z   in 2h30m"]
    assert "EDT" in text and "EST" in text


def test_cron_text_in_utc_notes_no_dst() -> None:
    text = plugin.cron_text("*/5 * * * * *", "UTC", T("2026-01-01T00:00:00Z"), 2)
    assert "DST:        none in UTC in 2026" in text
    assert "(6 fields, seconds first)" in text
    assert text.splitlines()[-2:] == [
        "1   Thu 2026-01-01 00:00:05 UTC   2026-01-01T00:00:05Z   in 5s",
        "2   Thu 2026-01-01 00:00:10 UTC   2026-01-01T00:00:10Z   in 10s"]


@pytest.mark.parametrize(("expression", "zone", "message"), [
    ("61 * * * *", "UTC", "minute field value 61 is out of range 0-59"),
    ("0 0 30 2 *", "UTC", "never fires: day 30 does not occur in February"),
    ("0 0 L * *", "UTC", "not supported"),
    ("* * * *", "UTC", "must have 5 fields"),
    ("* * * * *", "Mars/Olympus_Mons", "unknown time zone 'Mars/Olympus_Mons'"),
])
def test_cron_errors_are_the_operators_messages_and_exit_2(expression: str, zone: str,
                                                           message: str) -> None:
    with pytest.raises(TriggerError, match=message):
        plugin.cron_text(expression, zone, T("2026-01-01T00:00:00Z"), 1)
    out, err = io.StringIO(), io.StringIO()
    code = plugin.main(["cron", expression, "--tz", zone], out=out, err=err)
    assert code == 2 and out.getvalue() == ""
    assert err.getvalue().startswith("error: ") and message.split(":")[0] in err.getvalue()


def test_main_cron_uses_the_injected_clock() -> None:
    out = io.StringIO()
    code = plugin.main(["cron", "@hourly", "-n", "1"], out=out,
                       now=lambda: T("2026-01-01T00:10:00Z"))
    assert code == 0
    assert out.getvalue().splitlines()[-1] == (
        "1   Thu 2026-01-01 01:00:00 UTC   2026-01-01T01:00:00Z   in 50m")


# -- next ----------------------------------------------------------------------------------
def schedule(spec: dict[str, Any], created: str = "2026-05-19T10:00:07Z",
             status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "s", "creationTimestamp": created},
            "spec": {"handler": "h", "method": "m", **spec}, "status": status or {}}


def _utc_column(text: str) -> list[str]:
    rows = text.splitlines()
    start = next(i for i, line in enumerate(rows) if line.startswith("#   TIME"))
    return [line.split()[5] for line in rows[start + 1:] if line[:1].isdigit()]


def test_next_interval_is_anchored_at_the_creation_time() -> None:
    text = plugin.next_text(schedule({"interval": "90s"}), T("2026-05-19T10:05:00Z"), 3)
    assert text.splitlines()[0] == ("schedule.schedulezero.io/s: every 90s, anchored at the "
                                    "creation time 2026-05-19T10:00:07Z")
    assert _utc_column(text) == ["2026-05-19T10:06:07Z", "2026-05-19T10:07:37Z",
                                 "2026-05-19T10:09:07Z"]


def test_next_interval_anchored_at_start_time_within_the_window() -> None:
    obj = schedule({"interval": "1h", "startTime": "2026-05-19T10:30:00Z",
                    "endTime": "2026-05-19T12:30:00Z"})
    text = plugin.next_text(obj, T("2026-05-19T10:05:00Z"), 5)
    assert "anchored at the startTime 2026-05-19T10:30:00Z" in text
    assert "window: 2026-05-19T10:30:00Z .. 2026-05-19T12:30:00Z" in text
    assert _utc_column(text) == ["2026-05-19T10:30:00Z", "2026-05-19T11:30:00Z",
                                 "2026-05-19T12:30:00Z"]
    assert text.splitlines()[-1] == "no further fire times (endTime reached)"


def test_next_cron_in_the_schedules_zone() -> None:
    obj = schedule({"schedule": "0 9 * * MON-FRI", "timeZone": "America/New_York"})
    text = plugin.next_text(obj, T("2026-03-06T00:00:00Z"), 3)  # a Friday; DST on Sunday 8th
    assert "cron '0 9 * * MON-FRI': at 09:00:00, on Monday through Friday" in text
    assert _utc_column(text) == ["2026-03-06T14:00:00Z", "2026-03-09T13:00:00Z",
                                 "2026-03-10T13:00:00Z"]
    assert "Fri 2026-03-06 09:00:00 EST" in text and "Mon 2026-03-09 09:00:00 EDT" in text


def test_next_one_shot_and_notes() -> None:
    obj = schedule({"at": "2026-05-20T00:00:00Z", "suspend": True, "jitter": "5s"},
                   status={"conditions": [{"type": "Ready", "status": "False",
                                           "reason": "PausedAfterFailures",
                                           "message": "paused after 5 failed runs"}]})
    text = plugin.next_text(obj, T("2026-05-19T00:00:00Z"), 3)
    assert "once, at 2026-05-20T00:00:00Z" in text
    assert "note: suspended - these times will not fire until resumed" in text
    assert "note: not Ready (PausedAfterFailures): paused after 5 failed runs" in text
    assert "jitter: up to 5s is added to each run" in text
    assert _utc_column(text) == ["2026-05-20T00:00:00Z"]
    assert text.splitlines()[-1] == "no further fire times"
    past = plugin.next_text(obj, T("2026-06-01T00:00:00Z"), 3)
    assert past.splitlines()[-1] == "no further fire times"


@pytest.mark.parametrize(("spec", "message"), [
    ({"schedule": "61 * * * *"}, "minute field value 61 is out of range"),
    ({"interval": "1h", "schedule": "* * * * *"}, "exactly one of schedule, interval or at"),
    ({"schedule": "* * * * *", "timeZone": "Mars/Base"}, "unknown time zone"),
])
def test_next_on_an_invalid_schedule_says_why(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(CliError, match=message):
        plugin.next_text(schedule(spec), T("2026-01-01T00:00:00Z"), 1)


def test_upcoming_stops_at_the_end() -> None:
    trigger = parse_trigger(at="2026-01-01T00:00:00Z")
    assert explain.upcoming(trigger, T("2025-01-01T00:00:00Z"), 5) == [T("2026-01-01T00:00:00Z")]
