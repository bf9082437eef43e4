"""``kubectl schedulezero`` / ``kubectl sz``: run, suspend, resume, history, next, cron, status.

Each verb is a small function over a ``Kube`` connection; what it prints is built
by pure functions below (``history_table``, ``next_text``, ``cron_text``,
``status_table``, ``run_text``) that take the objects and ``now`` as arguments,
so the output is unit-tested without a cluster.

Why the verbs use the operator's code rather than their own: ``run`` computes the
run id the operator will give the run-now (``engine.decisions.run_now_id``) and
waits for exactly that run; ``next`` and ``cron`` parse and step triggers with
``timing`` (interval anchored at the creation time, as the operator anchors it),
so a time printed is a time that fires.

Exit codes: 0 success; 1 an error, or a run that did not succeed (or did not
finish in time); 2 bad usage or an expression the operator would reject.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from ..api.models import GROUP, RUN_NOW_ANNOTATION, ScheduleSpec
from ..timing import Trigger, TriggerError, parse_trigger
from . import explain, render
from .kube import CliError, Kube

MESSAGE_WIDTH = 60
RESULT_WIDTH = 400
Now = Callable[[], dt.datetime]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- argument parsing ------------------------------------------------------------
def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number (after this verb -n is the count; give the "
            "namespace with --namespace, or -n before the verb)") from None
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError("must be between 1 and 1000")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def _instant(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an RFC 3339 time such as 2026-03-29T00:00:00Z") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset: add Z or +hh:mm")
    return value.astimezone(dt.UTC)


def _connection_flags(parser: argparse.ArgumentParser, *, short_namespace: bool,
                      top: bool) -> None:
    """-n/--namespace, --kubeconfig, --context; accepted before and after the verb.

    After the verb the defaults are SUPPRESS, so an absent flag there does not
    overwrite one given before the verb.
    """
    default = None if top else argparse.SUPPRESS
    names = ["-n", "--namespace"] if short_namespace else ["--namespace"]
    parser.add_argument(*names, dest="namespace", default=default, metavar="NS",
                        help="namespace (default: the kubeconfig context's, else default)")
    parser.add_argument("--kubeconfig", default=default, metavar="PATH",
                        help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)")
    parser.add_argument("--context", default=default, metavar="NAME",
                        help="kubeconfig context (default: the current context)")


VERBS: dict[str, tuple[str, str]] = {
    "run": ("Run a Schedule now and wait for the outcome", """\
Sets the annotation schedulezero.io/run-now to a new value (the current time in
nanoseconds), which the operator turns into exactly one run - also while the
Schedule is suspended - and waits until that run shows in status.recentRuns.
Exit code 0 if it Succeeded, 1 otherwise (also on timeout).

examples:
  # run now, wait up to 60 s and print outcome, attempts, duration and result
  {prog} run announce-time
  # in another namespace, wait up to 5 minutes
  {prog} run nightly-report -n reports --timeout 300
  # fire and forget
  {prog} run announce-time --no-wait"""),
    "suspend": ("Stop a Schedule firing (spec.suspend=true)", """\
Merge-patches spec.suspend to true. Run-now (the run verb) still works while
suspended; slots missed while suspended are not caught up.

examples:
  {prog} suspend announce-time
  {prog} suspend job-a job-b -n batch"""),
    "resume": ("Let a suspended Schedule fire again (spec.suspend=false)", """\
examples:
  {prog} resume announce-time
  {prog} resume job-a job-b -n batch"""),
    "history": ("The recent runs of a Schedule as a table", """\
Shows status.recentRuns (newest first; runs still active show as Running):
run id, scheduled time (UTC), outcome, attempts, latency (scheduled time ->
dispatch), duration, endpoint and message. How many are kept is set by the
Schedule's successfulRunsHistoryLimit / failedRunsHistoryLimit.

examples:
  {prog} history announce-time
  {prog} history nightly-report -n reports"""),
    "next": ("The next fire times of a Schedule", """\
Computed with the operator's own trigger code from the Schedule's spec:
cron in its timeZone (DST as Vixie cron), intervals anchored at startTime or
else the creation time, one-shot times, within startTime/endTime. Printed in
the Schedule's zone and in UTC. Jitter, if set, is added per run on top.
Note: after the verb, -n is the count; give the namespace with --namespace
(or -n before the verb).

examples:
  {prog} next announce-time
  {prog} next nightly-report -n 10 --namespace reports
  {prog} -n reports next nightly-report"""),
    "cron": ("Explain a cron expression and list its next fire times", """\
Parses the expression exactly as the operator does (5 fields, or 6 with seconds
first; @hourly-style macros), explains each field in words and lists the next
fire times in --tz and UTC. An expression the operator would reject prints
the operator's message and exits with code 2.

examples:
  {prog} cron "*/5 * * * * *"
  {prog} cron "30 2 * * *" --tz Europe/Berlin -n 3 --from 2026-03-28T00:00:00Z
  {prog} cron "0 9 * * MON-FRI" --tz America/New_York"""),
    "status": ("Fleet summary per namespace: Schedules, Handlers, run counters", """\
Per namespace: Schedules (total, suspended, invalid = condition Ready False,
i.e. a spec the operator cannot use or paused after failures; failing = last
run Failed), Handlers (total, available = condition Available True) and the
Schedules' run counters summed.

examples:
  {prog} status
  {prog} status -n reports
  {prog} status -A"""),
}


def build_parser(prog: str = "kubectl sz") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Everyday verbs for ScheduleZero Schedules and Handlers "
                    f"({GROUP}); installed as kubectl-schedulezero and kubectl-sz.",
        epilog=f"Run '{prog} VERB --help' for what a verb does, with examples.")
    _connection_flags(parser, short_namespace=True, top=True)
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    def verb(name: str, *, short_namespace: bool = True) -> argparse.ArgumentParser:
        summary, epilog = VERBS[name]
        p = verbs.add_parser(name, help=summary, description=summary + ".",
                             epilog=epilog.format(prog=prog),
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        _connection_flags(p, short_namespace=short_namespace, top=False)
        return p

    p = verb("run")
    p.add_argument("name", help="Schedule name")
    p.add_argument("--timeout", type=_positive, default=60.0, metavar="SECONDS",
                   help="how long to wait for the outcome (default 60)")
    p.add_argument("--no-wait", action="store_true", help="only request the run")
    for name in ("suspend", "resume"):
        p = verb(name)
        p.add_argument("names", nargs="+", metavar="NAME", help="Schedule name(s)")
    p = verb("history")
    p.add_argument("name", help="Schedule name")
    p = verb("next", short_namespace=False)
    p.add_argument("name", help="Schedule name")
    p.add_argument("-n", "--count", type=_count, default=5, metavar="N",
                   help="how many fire times (default 5)")
    p.add_argument("--from", dest="after", type=_instant, metavar="TIME",
                   help="list times after this RFC 3339 time instead of now")
    p = verb("cron", short_namespace=False)
    p.add_argument("expression", help='cron expression, quoted, e.g. "0 */2 * * *"')
    p.add_argument("--tz", default="UTC", metavar="ZONE",
                   help="IANA time zone of the fields (default UTC)")
    p.add_argument("-n", "--count", type=_count, default=5, metavar="N",
                   help="how many fire times (default 5)")
    p.add_argument("--from", dest="after", type=_instant, metavar="TIME",
                   help="list times after this RFC 3339 time instead of now")
    p = verb("status")
    p.add_argument("-A", "--all-namespaces", action="store_true",
                   help="every namespace (one row each, and a total)")
    return parser


def _prog(argv0: str) -> str:
    """``kubectl sz`` or ``kubectl schedulezero``, as kubectl ran us."""
    name = Path(argv0).name
    return f"kubectl {name.removeprefix('kubectl-')}" if name.startswith("kubectl-") \
        else "kubectl sz"


# -- pure output -------------------------------------------------------------------
def _status(obj: dict[str, Any]) -> dict[str, Any]:
    return dict(obj.get("status") or {})


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for c in _status(obj).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == kind:
            return c
    return None


def history_table(obj: dict[str, Any]) -> str:
    """status.recentRuns (and active runs, as Running) of a Schedule as a table."""
    status = _status(obj)
    rows: list[list[object]] = []
    for a in status.get("active") or []:
        rows.append([a.get("runId"), render.status_time(a.get("scheduledTime")), "Running",
                     a.get("attempt"), None, None, a.get("endpoint"), ""])
    for r in status.get("recentRuns") or []:
        rows.append([r.get("runId"), render.status_time(r.get("scheduledTime")),
                     r.get("outcome"), r.get("attempts"), render.millis(r.get("latencyMs")),
                     render.millis(r.get("durationMs")), r.get("endpoint"),
                     render.truncate(r.get("message") or "", MESSAGE_WIDTH)])
    headers = ["RUN ID", "SCHEDULED", "OUTCOME", "ATTEMPTS", "LATENCY", "DURATION",
               "ENDPOINT", "MESSAGE"]
    return render.table(headers, rows)


def schedule_trigger(obj: dict[str, Any]) -> tuple[ScheduleSpec, Trigger]:
    """Spec and trigger of a Schedule object, parsed as the operator parses them.

    Intervals are anchored at startTime, else at metadata.creationTimestamp, the
    anchor the operator uses. Raises ValueError (TriggerError, ValidationError)
    with the message the operator would put in the Ready condition.
    """
    spec = ScheduleSpec.model_validate(obj.get("spec") or {})
    created = (obj.get("metadata") or {}).get("creationTimestamp")
    anchor = dt.datetime.fromisoformat(created.replace("Z", "+00:00")) if created else None
    trigger = parse_trigger(schedule=spec.schedule, interval=spec.interval, at=spec.at,
                            time_zone=spec.time_zone, start_time=spec.start_time,
                            end_time=spec.end_time, anchor=anchor)
    return spec, trigger


def times_table(trigger: Trigger, times: Sequence[dt.datetime], after: dt.datetime) -> str:
    zone = trigger.zone.key
    rows = [[i, render.local(t, trigger.zone), render.rfc3339(t),
             "in " + render.seconds((t - after).total_seconds())]
            for i, t in enumerate(times, 1)]
    return render.table(["#", f"TIME ({zone})", "UTC", "IN"], rows)


def _trigger_words(spec: ScheduleSpec, trigger: Trigger) -> str:
    if trigger.kind == "interval":
        anchor = trigger.anchor
        where = "startTime" if spec.start_time else "creation time"
        return (f"every {spec.interval}, anchored at the {where} "
                f"{render.rfc3339(anchor) if anchor else ''}").rstrip()
    if trigger.kind == "at":
        return f"once, at {spec.at}"
    return f"cron {spec.schedule!r}: {explain.explain_cron(trigger.expression).summary}"


def next_text(obj: dict[str, Any], now: dt.datetime, count: int) -> str:
    """``next``: the trigger in words, notes that stop it firing, and the next times."""
    name = (obj.get("metadata") or {}).get("name", "")
    try:
        spec, trigger = schedule_trigger(obj)
    except ValueError as e:
        raise CliError(f"error: schedule {name!r} is invalid: {e}") from None
    lines = [f"schedule.{GROUP}/{name}: {_trigger_words(spec, trigger)}"]
    lines.append(f"time zone: {trigger.zone.key}")
    if spec.start_time or spec.end_time:
        lines.append(f"window: {spec.start_time or '-'} .. {spec.end_time or '-'}")
    if spec.jitter:
        lines.append(f"jitter: up to {spec.jitter} is added to each run")
    if spec.suspend:
        lines.append("note: suspended - these times will not fire until resumed")
    ready = _condition(obj, "Ready")
    if ready and ready.get("status") == "False":
        lines.append(f"note: not Ready ({ready.get('reason')}): {ready.get('message')}")
    times = explain.upcoming(trigger, now, count)
    lines.append("")
    if times:
        lines.append(times_table(trigger, times, now))
    if len(times) < count:
        lines.append("no further fire times" + (" (endTime reached)" if spec.end_time
                                               else ""))
    return "\n".join(lines)


def cron_text(expression: str, zone: str, now: dt.datetime, count: int) -> str:
    """``cron``: the expression per field and in one sentence, DST behaviour, next times.

    Raises TriggerError (the operator's message) for an expression it would reject.
    """
    trigger = parse_trigger(schedule=expression, time_zone=zone)
    words = explain.explain_cron(expression)
    layout = ("6 fields, seconds first" if words.seconds_field
              else "5 fields: minute hour day-of-month month day-of-week; second 0")
    lines = [f"expression: {expression}   ({layout})",
             f"meaning:    {words.summary}",
             f"time zone:  {trigger.zone.key}",
             f"DST:        {explain.dst_note(trigger, now)}", "",
             render.table(["FIELD", "VALUE", "MEANING"], words.fields), ""]
    times = explain.upcoming(trigger, now, count)
    lines.append(times_table(trigger, times, now))
    return "\n".join(lines)


def status_table(schedules: Sequence[dict[str, Any]], handlers: Sequence[dict[str, Any]],
                 *, total: bool) -> str:
    """Per namespace: Schedules, Handlers and summed run counters (and a TOTAL row)."""
    counters = ("runs", "succeeded", "failed", "retried", "skipped", "missed")
    rows: dict[str, list[int]] = {}

    def row(ns: str) -> list[int]:
        return rows.setdefault(ns, [0] * (6 + len(counters)))

    for s in schedules:
        r = row((s.get("metadata") or {}).get("namespace", ""))
        status = _status(s)
        r[0] += 1
        r[1] += bool((s.get("spec") or {}).get("suspend"))
        r[2] += (_condition(s, "Ready") or {}).get("status") == "False"
        r[3] += status.get("lastResult") == "Failed"
        for i, key in enumerate(counters):
            value = (status.get("counters") or {}).get(key)
            r[6 + i] += value if isinstance(value, int) else 0
    for h in handlers:
        r = row((h.get("metadata") or {}).get("namespace", ""))
        r[4] += 1
        r[5] += (_condition(h, "Available") or {}).get("status") == "True"
    table_rows: list[list[object]] = [[ns, *values] for ns, values in sorted(rows.items())]
    if total and len(rows) > 1:
        table_rows.append(["TOTAL", *(sum(v) for v in zip(*rows.values(), strict=True))])
    headers = ["NAMESPACE", "SCHEDULES", "SUSPENDED", "INVALID", "FAILING", "HANDLERS",
               "AVAILABLE", *(c.upper() for c in counters)]
    return render.table(headers, table_rows)


def run_text(run: dict[str, Any]) -> str:
    """The outcome block ``run`` prints for a finished run record."""
    result = run.get("result")
    if isinstance(result, str):
        result = render.truncate(result, RESULT_WIDTH)
    pairs = [("attempts", run.get("attempts")), ("latency", render.millis(run.get("latencyMs"))),
             ("duration", render.millis(run.get("durationMs"))),
             ("endpoint", run.get("endpoint")), ("message", run.get("message") or None),
             ("result", result)]
    lines = [f"run {run.get('runId')} {run.get('outcome')}"]
    lines += [f"  {k + ':':<10} {v}" for k, v in pairs if v is not None]
    return "\n".join(lines)


# -- verbs -----------------------------------------------------------------------
class Context:
    """What a verb needs: the connection (made on first use), the namespace, output, clock."""

    def __init__(self, args: argparse.Namespace, out: TextIO, now: Now) -> None:
        self.args, self.out, self.now = args, out, now
        self._kube: Kube | None = None

    @property
    def kube(self) -> Kube:
        if self._kube is None:
            self._kube = Kube(self.args.kubeconfig, self.args.context)
        return self._kube

    @property
    def namespace(self) -> str:
        return str(self.args.namespace or self.kube.namespace)

    def print(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)


def verb_run(ctx: Context) -> int:
    # Imported here: the engine package is the operator's busiest code, and the
    # other verbs should keep working from a checkout where it does not import.
    from ..engine.decisions import run_now_id

    args, ns = ctx.args, ctx.namespace
    obj = ctx.kube.get("schedules", ns, args.name)
    uid = obj["metadata"]["uid"]
    value = str(time.time_ns())
    run_id = run_now_id(uid, value)
    ctx.kube.merge_patch("schedules", ns, args.name,
                         {"metadata": {"annotations": {RUN_NOW_ANNOTATION: value}}})
    ctx.print(f"schedule.{GROUP}/{args.name}: run {run_id} requested "
              f"({RUN_NOW_ANNOTATION}={value})")
    if args.no_wait:
        return 0
    run = wait_for_run(ctx.kube, ns, args.name, run_id, value, args.timeout)
    if run is None:
        obj = ctx.kube.get("schedules", ns, args.name)
        hint = "is the operator running?"
        ready = _condition(obj, "Ready")
        if ready and ready.get("status") == "False":
            hint = f"the Schedule is not Ready ({ready.get('reason')}): {ready.get('message')}"
        active = [a for a in _status(obj).get("active") or [] if a.get("runId") == run_id]
        if active:
            hint = f"still running (attempt {active[0].get('attempt')} on " \
                   f"{active[0].get('endpoint')})"
        ctx.print(f"run {run_id}: no outcome within {args.timeout:g}s; {hint}")
        return 1
    ctx.print(run_text(run))
    return 0 if run.get("outcome") == "Succeeded" else 1


def find_run(obj: dict[str, Any], run_id: str, value: str) -> dict[str, Any] | None:
    """The finished record of ``run_id`` in a Schedule's status, if it is there.

    A run that finished but is not kept (history limit 0, or pushed out by newer
    runs before we looked) is recognised by ``lastRunNow`` naming our value with
    no active run left: its outcome is then only known as ``lastResult``.
    """
    status = _status(obj)
    for r in status.get("recentRuns") or []:
        if r.get("runId") == run_id:
            return dict(r)
    if status.get("lastRunNow") == value and not any(
            a.get("runId") == run_id for a in status.get("active") or []):
        spec = obj.get("spec") or {}
        limits = (spec.get("successfulRunsHistoryLimit", 5), spec.get("failedRunsHistoryLimit", 5))
        if 0 in limits:
            return {"runId": run_id, "outcome": status.get("lastResult") or "Unknown",
                    "message": "not kept in status.recentRuns (history limit 0); outcome "
                               "taken from status.lastResult"}
    return None


def wait_for_run(kube: Kube, ns: str, name: str, run_id: str, value: str,
                 timeout: float) -> dict[str, Any] | None:
    """Watch the Schedule until its status records ``run_id``; None after ``timeout``.

    A watch (not polling) sees every status write, so a run is not missed even
    when newer runs push it out of a short recentRuns list soon after.
    """
    deadline = time.monotonic() + timeout
    while True:
        obj = kube.get("schedules", ns, name)
        run = find_run(obj, run_id, value)
        if run is not None:
            return run
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        for version in kube.watch("schedules", ns, name,
                                  obj["metadata"]["resourceVersion"], remaining):
            run = find_run(version, run_id, value)
            if run is not None:
                return run
            if time.monotonic() >= deadline:
                return None
        time.sleep(0.2)  # the watch ended early: read again and resume


def _set_suspend(ctx: Context, suspend: bool) -> int:
    word = "suspended" if suspend else "resumed"
    for name in ctx.args.names:
        obj = ctx.kube.get("schedules", ctx.namespace, name)
        if bool((obj.get("spec") or {}).get("suspend")) == suspend:
            ctx.print(f"schedule.{GROUP}/{name} already {word} (no change)")
            continue
        ctx.kube.merge_patch("schedules", ctx.namespace, name, {"spec": {"suspend": suspend}})
        ctx.print(f"schedule.{GROUP}/{name} {word}")
    return 0


def verb_suspend(ctx: Context) -> int:
    return _set_suspend(ctx, True)


def verb_resume(ctx: Context) -> int:
    return _set_suspend(ctx, False)


def verb_history(ctx: Context) -> int:
    obj = ctx.kube.get("schedules", ctx.namespace, ctx.args.name)
    status = _status(obj)
    if not (status.get("recentRuns") or status.get("active")):
        ctx.print(f"No runs recorded for schedule.{GROUP}/{ctx.args.name} yet.")
        return 0
    ctx.print(history_table(obj))
    return 0


def verb_next(ctx: Context) -> int:
    obj = ctx.kube.get("schedules", ctx.namespace, ctx.args.name)
    ctx.print(next_text(obj, ctx.args.after or ctx.now(), ctx.args.count))
    return 0


def verb_cron(ctx: Context) -> int:
    try:
        ctx.print(cron_text(ctx.args.expression, ctx.args.tz, ctx.args.after or ctx.now(),
                            ctx.args.count))
    except TriggerError as e:
        raise CliError(f"error: {e}", code=2) from None
    return 0


def verb_status(ctx: Context) -> int:
    ns = None if ctx.args.all_namespaces else ctx.namespace
    schedules = ctx.kube.list("schedules", ns)
    handlers = ctx.kube.list("handlers", ns)
    if not schedules and not handlers:
        where = "any namespace" if ns is None else f"namespace {ns}"
        ctx.print(f"No Schedules or Handlers found in {where}.")
        return 0
    ctx.print(status_table(schedules, handlers, total=ns is None))
    return 0


VERB_FUNCTIONS: dict[str, Callable[[Context], int]] = {
    "run": verb_run, "suspend": verb_suspend, "resume": verb_resume,
    "history": verb_history, "next": verb_next, "cron": verb_cron, "status": verb_status,
}


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None,
         err: TextIO | None = None, now: Now = _utcnow) -> int:
    """Parse, run one verb, return the exit code (errors as one line on stderr)."""
    parser = build_parser(_prog(sys.argv[0]))
    args = parser.parse_args(argv)
    ctx = Context(args, out or sys.stdout, now)
    try:
        return VERB_FUNCTIONS[args.verb](ctx)
    except CliError as e:
        print(str(e), file=err or sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130
