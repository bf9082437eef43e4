"""A corpus of hostile and malformed Schedules and Handlers, with what must happen to each.

Every case is applied to a running operator by ``test_hostile_input.py``:
- ``Refused``: the API server (schema, CEL) or kubectl refuses it, and the error
  names the field (``needle``);
- ``Surfaced``: it is stored, and the operator reports it on the object itself — a
  condition with the given type/status/reason and a message containing ``needle``,
  plus a Warning Event with that reason;
- ``Accepted``: odd but legal; the operator takes it and reports Ready=True.

Cases are data (``yaml`` text as a user would ``kubectl apply`` it, or raw bytes
sent as JSON with ``kubectl create --raw``), so adding one is one line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

API = "schedulezero.io/v1alpha1"
GOOD_HANDLER = "corpus-handler"  # created by the test, allow-list [heartbeat, echo]


@dataclass(frozen=True)
class Refused:
    needle: str  # a substring of the error, naming the field or the rule


@dataclass(frozen=True)
class Surfaced:
    condition: str
    reason: str
    needle: str
    status: str = "False"
    event: str | None = None  # the Warning Event's reason, when not the condition's


@dataclass(frozen=True)
class Accepted:
    pass


@dataclass(frozen=True)
class Case:
    name: str
    kind: str
    expect: Refused | Surfaced | Accepted
    spec: dict[str, Any] | None = None  # applied as YAML via kubectl apply
    raw: bytes | None = None  # sent as-is via kubectl create --raw
    yaml_text: str | None = None  # applied as-is via kubectl apply
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def plural(self) -> str:
        return self.kind.lower() + "s"


def sched(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"handler": GOOD_HANDLER, "method": "heartbeat", "interval": "1h"}
    base.update(spec)
    return {k: v for k, v in base.items() if v is not None}


def handler(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"protocol": "zmq", "endpoints": ["127.0.0.1:9"]}
    base.update(spec)
    return {k: v for k, v in base.items() if v is not None}


def nested(depth: int) -> dict[str, Any]:
    """A JSON object ``depth`` levels deep, built without recursion."""
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def deep_json_text(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def raw_object(kind: str, name: str, spec_json: str) -> bytes:
    return (f'{{"apiVersion":"{API}","kind":"{kind}","metadata":{{"name":"{name}"}},'
            f'"spec":{spec_json}}}').encode()


TEMPLATE = {"spec": {"containers": [{"name": "h", "image": "python:3.11",
                                     "command": ["python", "-m", "schedulezero_handler"]}]}}
ALIAS_BOMB = """apiVersion: schedulezero.io/v1alpha1
kind: Schedule
metadata: {name: alias-bomb}
spec:
  handler: corpus-handler
  method: heartbeat
  interval: 1h
  params:
    a: &a ["x","x","x","x","x","x","x","x","x","x"]
    b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]
    c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]
    d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]
    e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]
    f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]
    g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]
    h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]
    i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""

S, H = "Schedule", "Handler"
CASES: list[Case] = [
    # -- triggers ------------------------------------------------------------------
    Case("two-triggers", S, Refused("exactly one of schedule, interval or at"),
         sched(schedule="* * * * *")),
    Case("no-trigger", S, Refused("exactly one of schedule, interval or at"),
         sched(interval=None)),
    Case("three-triggers", S, Refused("exactly one of schedule, interval or at"),
         sched(schedule="* * * * *", at="2030-01-01T00:00:00Z")),
    Case("interval-zero", S, Refused("interval must be at least 1s"), sched(interval="0s")),
    Case("interval-sub-second", S, Refused("interval must be at least 1s"),
         sched(interval="500ms")),
    Case("interval-overflow", S, Refused("spec.interval"), sched(interval="9999999999h")),
    Case("interval-over-a-year", S, Refused("interval must be at most 366d"),
         sched(interval="367d")),
    Case("interval-hours-over-a-year", S, Refused("interval must be at most 366d"),
         sched(interval="999999h")),
    Case("interval-fractional-days", S, Refused("days must be a whole number"),
         sched(interval="1.5d")),
    Case("interval-words", S, Refused("spec.interval"), sched(interval="every minute")),
    Case("interval-negative", S, Refused("spec.interval"), sched(interval="-5s")),
    Case("interval-wrong-type", S, Refused("spec.interval"), sched(interval=30)),
    Case("jitter-negative", S, Refused("spec.jitter"), sched(jitter="-1s")),
    Case("jitter-over-a-year", S, Refused("jitter must be at most 366d"),
         sched(jitter="400d")),
    Case("schedule-too-long", S, Refused("spec.schedule"), sched(interval=None,
                                                                  schedule="* " * 200)),
    Case("at-not-a-time", S, Refused("spec.at"), sched(interval=None, at="tomorrow")),
    Case("at-no-offset", S, Refused("spec.at"), sched(interval=None, at="2030-01-01 10:00")),
    Case("window-backwards", S, Refused("endTime must be after startTime"),
         sched(startTime="2030-01-02T00:00:00Z", endTime="2030-01-01T00:00:00Z")),
    Case("start-not-a-time", S, Refused("spec.startTime"), sched(startTime="soon")),
    Case("zone-injection", S, Refused("spec.timeZone"),
         sched(interval=None, schedule="* * * * *", timeZone="UTC; rm -rf /")),
    Case("zone-too-long", S, Refused("spec.timeZone"),
         sched(interval=None, schedule="* * * * *", timeZone="A" * 100)),
    # -- names and methods --------------------------------------------------------------
    Case("method-private", S, Refused("spec.method"), sched(method="_private")),
    Case("method-dunder", S, Refused("spec.method"), sched(method="__init__")),
    Case("method-empty", S, Refused("spec.method"), sched(method="")),
    Case("method-space", S, Refused("spec.method"), sched(method="run it")),
    Case("method-too-long", S, Refused("spec.method"), sched(method="m" * 200)),
    Case("method-bidi", S, Refused("spec.method"), sched(method="run\u202eevil")),
    Case("method-missing", S, Refused("spec.method"), sched(method=None)),
    Case("handler-empty", S, Refused("spec.handler"), sched(handler="")),
    Case("handler-uppercase", S, Refused("spec.handler"), sched(handler="Bad_Name")),
    Case("handler-too-long", S, Refused("spec.handler"), sched(handler="h" * 300)),
    Case("handler-control-char", S, Refused("spec.handler"), sched(handler="h\u0007x")),
    Case("handler-missing", S, Refused("spec.handler"), sched(handler=None)),
    Case("no-spec", S, Refused("spec"), yaml_text=f"apiVersion: {API}\nkind: Schedule\n"
         "metadata: {name: no-spec}\n"),
    Case("name-uppercase", S, Refused("metadata.name"), sched(),
         metadata={"name": "Upper-Case"}),
    Case("name-bidi", S, Refused("metadata.name"), sched(), metadata={"name": "x\u202eexe"}),
    Case("name-too-long", S, Refused("metadata.name"), sched(), metadata={"name": "n" * 254}),
    Case("name-invalid-utf8", S, Refused("metadata.name"),
         raw=raw_object(S, "PLACEHOLDER", json.dumps(sched())).replace(
             b"PLACEHOLDER", b"bad\xff\xfename")),
    # -- policies and ranges --------------------------------------------------------------
    Case("policy-unknown", S, Refused("spec.concurrencyPolicy"),
         sched(concurrencyPolicy="Sometimes")),
    Case("priority-unknown", S, Refused("spec.priority"), sched(priority="urgent")),
    Case("attempts-zero", S, Refused("spec.retry.maxAttempts"), sched(retry={"maxAttempts": 0})),
    Case("attempts-huge", S, Refused("spec.retry.maxAttempts"),
         sched(retry={"maxAttempts": 1000})),
    Case("retry-jitter-two", S, Refused("spec.retry.jitter"), sched(retry={"jitter": 2})),
    Case("backoff-multiplier-small", S, Refused("spec.retry.backoff.multiplier"),
         sched(retry={"backoff": {"multiplier": 0.5}})),
    Case("backoff-forever", S, Refused("spec.retry.backoff.initial"),
         sched(retry={"backoff": {"initial": "forever"}})),
    Case("backoff-huge", S, Refused("max must be at most 366d"),
         sched(retry={"backoff": {"max": "99999d"}})),
    Case("timeout-zero", S, Refused("spec.timeoutSeconds"), sched(timeoutSeconds=0)),
    Case("timeout-words", S, Refused("spec.timeoutSeconds"), sched(timeoutSeconds="sixty")),
    Case("suspend-yes", S, Refused("spec.suspend"), sched(suspend="yes")),
    Case("history-negative", S, Refused("spec.successfulRunsHistoryLimit"),
         sched(successfulRunsHistoryLimit=-1)),
    Case("catchup-never", S, Refused("spec.catchUp.policy"), sched(catchUp={"policy": "Never"})),
    Case("catchup-huge", S, Refused("spec.catchUp.maxRuns"),
         sched(catchUp={"maxRuns": 100000})),
    Case("pause-zero", S, Refused("spec.pauseAfterFailures"), sched(pauseAfterFailures=0)),
    Case("deadline-zero", S, Refused("spec.startingDeadlineSeconds"),
         sched(startingDeadlineSeconds=0)),
    Case("params-list", S, Refused("spec.params"), sched(params=[1, 2])),
    Case("params-string", S, Refused("spec.params"), sched(params="x=1")),
    Case("alias-bomb", S, Refused("alias"), yaml_text=ALIAS_BOMB),
    # -- what only the operator can check ---------------------------------------------------
    Case("cron-out-of-range", S, Surfaced("Ready", "InvalidSchedule", "61"),
         sched(interval=None, schedule="61 * * * *")),
    Case("cron-seven-fields", S, Surfaced("Ready", "InvalidSchedule", "5 fields"),
         sched(interval=None, schedule="0 0 0 * * * *")),
    Case("cron-garbage", S, Surfaced("Ready", "InvalidSchedule", "cron"),
         sched(interval=None, schedule="every day at noon")),
    Case("cron-february-30", S, Surfaced("Ready", "InvalidSchedule", "never fires"),
         sched(interval=None, schedule="0 0 30 2 *")),
    Case("cron-april-31", S, Surfaced("Ready", "InvalidSchedule", "never fires"),
         sched(interval=None, schedule="0 0 31 4,6,9,11 *")),
    Case("zone-unknown", S, Surfaced("Ready", "InvalidSchedule", "unknown time zone"),
         sched(interval=None, schedule="* * * * *", timeZone="Mars/Olympus_Mons")),
    Case("handler-unknown", S, Surfaced("HandlerReady", "HandlerNotFound", "'ghost' not found"),
         sched(handler="ghost")),
    Case("method-not-allowed", S, Surfaced("HandlerReady", "UnknownMethod", "allow-list"),
         sched(method="rm_everything")),
    Case("jitter-over-gap", S, Surfaced("JitterApplied", "JitterClamped", "at most 5s"),
         sched(interval="10s", jitter="1m", suspend=False)),
    Case("params-5000-deep", S, Surfaced("Ready", "InvalidSchedule", "deeper than"),
         raw=raw_object(S, "params-5000-deep", '{"handler":"corpus-handler","method":'
                        '"heartbeat","interval":"1h","params":' + deep_json_text(5000) + "}")),
    Case("params-40-deep", S, Surfaced("Ready", "InvalidSchedule", "more than 32 levels"),
         sched(params=nested(40))),
    Case("params-300-kib", S, Surfaced("Ready", "InvalidSchedule", "KiB"),
         # raw: kubectl apply would refuse its own last-applied annotation (256 KiB)
         raw=raw_object(S, "params-300-kib", json.dumps(sched(
             params={"blob": "x" * 300 * 1024})))),
    Case("params-huge-integer", S, Refused("cannot unmarshal number"),
         raw=raw_object(S, "params-huge-integer", '{"handler":"corpus-handler","method":'
                        '"heartbeat","interval":"1h","params":{"n":' + "9" * 5000 + "}}")),
    Case("params-huge-float", S, Refused("cannot unmarshal number"),
         raw=raw_object(S, "params-huge-float", '{"handler":"corpus-handler","method":'
                        '"heartbeat","interval":"1h","params":{"x":1e999}}')),
    # -- odd but legal ----------------------------------------------------------------------
    Case("params-unicode", S, Accepted(),
         sched(params={"emoji": "\U0001F600", "rtl": "\u202e", "nul": "\u0000",
                       "zh": "\u4e2d\u6587", "ctl": "\u0001\u001f"})),
    Case("params-invalid-utf8", S, Accepted(),
         raw=raw_object(S, "params-invalid-utf8", '{"handler":"corpus-handler","method":'
                        '"heartbeat","interval":"1h","params":{"s":"PLACEHOLDER"}}').replace(
             b"PLACEHOLDER", b"\xff\xfe\xc3")),
    Case("params-32-deep", S, Accepted(), sched(params=nested(32))),
    Case("interval-one-year", S, Accepted(), sched(interval="366d")),
    Case("at-far-future", S, Accepted(), sched(interval=None, at="9999-12-31T23:59:59Z")),
    Case("at-long-past", S, Accepted(), sched(interval=None, at="0001-01-01T00:00:00Z")),
    Case("cron-leap-day", S, Accepted(), sched(interval=None, schedule="0 0 29 2 *")),
    # -- Handlers ---------------------------------------------------------------------------
    Case("endpoints-empty", H, Refused("spec.endpoints"), handler(endpoints=[])),
    Case("two-sources", H, Refused("exactly one of endpoints, template or deploymentRef"),
         handler(template=TEMPLATE)),
    Case("no-source", H, Refused("exactly one of endpoints, template or deploymentRef"),
         handler(endpoints=None)),
    Case("endpoint-no-port", H, Refused("spec.endpoints"), handler(endpoints=["no-port"])),
    Case("endpoint-spaces", H, Refused("spec.endpoints"), handler(endpoints=["a b:1"])),
    Case("deploymentref-empty", H, Refused("spec.deploymentRef.name"),
         handler(endpoints=None, deploymentRef={"name": ""})),
    Case("deploymentref-bad-name", H, Refused("spec.deploymentRef.name"),
         handler(endpoints=None, deploymentRef={"name": "Bad Name"})),
    Case("deploymentref-no-name", H, Refused("spec.deploymentRef.name"),
         handler(endpoints=None, deploymentRef={})),
    Case("scaling-max-below-min", H, Refused("maxReplicas must be at least"),
         handler(endpoints=None, template=TEMPLATE,
                 scaling={"minReplicas": 3, "maxReplicas": 1})),
    Case("scaling-negative", H, Refused("spec.scaling.minReplicas"),
         handler(endpoints=None, template=TEMPLATE, scaling={"minReplicas": -1})),
    Case("methods-private", H, Refused("spec.methods"),
         handler(methods=["__init__", "_private"])),
    Case("methods-empty", H, Refused("spec.methods"), handler(methods=[])),
    Case("concurrency-zero", H, Refused("spec.concurrency"), handler(concurrency=0)),
    Case("port-too-big", H, Refused("spec.port"), handler(port=70000)),
    Case("protocol-grpc", H, Refused("spec.protocol"), handler(protocol="grpc")),
    Case("auth-no-secret", H, Refused("spec.auth.secretRef"), handler(auth={})),
    Case("template-5000-deep", H, Surfaced("Available", "InvalidHandler", "deeper than"),
         raw=raw_object(H, "template-5000-deep", '{"protocol":"zmq","template":{"spec":'
                        + deep_json_text(5000) + "}}")),
    Case("deploymentref-missing", H, Surfaced("Degraded", "WorkloadError", "not found",
                                              status="True", event="DeploymentNotFound"),
         handler(endpoints=None, deploymentRef={"name": "no-such-deployment"})),
]

# The worst objects: present while the operator restarts (second e2e test).
WORST = ("params-5000-deep", "template-5000-deep", "params-300-kib", "params-40-deep")


def manifest(case: Case) -> str:
    """The case as a user would write it (YAML; JSON is YAML), for kubectl apply."""
    if case.yaml_text is not None:
        return case.yaml_text
    meta = {"name": case.name, **case.metadata}
    return json.dumps({"apiVersion": API, "kind": case.kind, "metadata": meta,
                       "spec": case.spec}, ensure_ascii=False)
