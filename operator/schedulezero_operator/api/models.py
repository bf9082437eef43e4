"""The Schedule and Handler resources as pydantic models: the one source of truth.

The CRD YAML in ``crds/`` and the Helm chart is generated from these models
(``python -m schedulezero_operator.api.crd``); a test fails when the committed
YAML drifts. Checks the API server can do itself (one trigger, ranges, enums)
are CEL rules here; what only the operator can check (cron syntax, time zone,
the handler and method existing) becomes a status condition and an Event.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator
from pydantic.alias_generators import to_camel

GROUP = "schedulezero.io"
VERSION = "v1alpha1"
RUN_NOW_ANNOTATION = f"{GROUP}/run-now"
HANDLER_LABEL = f"{GROUP}/handler"
# Set by the operator's decoder on an object it had to cut (too deep, unparseable
# numbers); the engine reports the object invalid instead of using it.
DECODE_PROBLEM = f"{GROUP}/decode-problem"

# Each number has at most 6 digits, so no duration overflows Go's (the API server
# evaluates the CEL range rules below) or Python's datetime arithmetic.
_DURATION = r"^([0-9]{1,6}(\.[0-9]{1,6})?(ms|s|m|h|d))+$"
# Method names a handler can expose: a Python identifier-like name that does not
# start with "_" (private and dunder attributes are never callable), plus the
# dots and dashes ScheduleZero handlers used.
METHOD_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]*$"
# Handler endpoints: host:port, tcp://host:port (ScheduleZero's form), [ipv6]:port.
ENDPOINT_PATTERN = r"^(tcp://)?([^:\s\[\]/]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}$"
# DNS-1123 subdomain: what Kubernetes object names are.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# What only the operator checks about params (the schema cannot bound a free-form
# object's depth): deep enough for any real job, far from any recursion limit.
PARAMS_MAX_DEPTH = 32
PARAMS_MAX_BYTES = 256 * 1024
ONE_YEAR_SECONDS = 366 * 86400


def _duration_rules(field: str, minimum: int, maximum: int = ONE_YEAR_SECONDS
                    ) -> list[JsonValue]:
    """CEL rules bounding a duration field; messages name the field and the bound.

    CEL's duration() takes Go durations, which have no "d" unit, so whole days
    written first are split off: "1d12h" -> 1 * 86400 s + duration("12h").
    """
    f = f"self.{field}"
    days = f"({f}.contains('d') ? int({f}.split('d')[0]) : 0)"
    rest = f"({f}.contains('d') ? {f}.split('d')[1] : {f})"
    rest_seconds = f"({rest} == '' ? 0 : duration({rest}).getSeconds())"
    rules: list[JsonValue] = [
        {"rule": f"!has({f}) || !{f}.contains('d') || {f}.matches('^[0-9]{{1,6}}d([0-9].*)?$')",
         "message": f"{field}: days must be a whole number written first, e.g. 1d12h"},
        {"rule": f"!has({f}) || {days} * 86400 + {rest_seconds} <= {maximum}",
         "message": f"{field} must be at most 366d"},
    ]
    if minimum > 0:
        rules.append({
            "rule": f"!has({f}) || {days} > 0 || ({rest} != '' && "
                    f"duration({rest}) >= duration('{minimum}s'))",
            "message": f"{field} must be at least {minimum}s"})
    return rules


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True,
                              extra="ignore")


# -- Schedule -----------------------------------------------------------------
class Backoff(_Model):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        *_duration_rules("initial", 0), *_duration_rules("max", 0)]})

    initial: str = Field("1s", pattern=_DURATION, description="Delay before the 2nd attempt.")
    max: str = Field("5m", pattern=_DURATION, description="Upper bound of the delay.")
    multiplier: float = Field(2.0, ge=1.0, le=10.0,
                              description="Growth factor of the delay per attempt.")


class Retry(_Model):
    max_attempts: int = Field(3, ge=1, le=100,
                              description="Attempts in total, the first one included.")
    backoff: Backoff = Field(default_factory=Backoff)  # type: ignore[arg-type]
    jitter: float = Field(0.5, ge=0.0, le=1.0,
                          description="Share of each delay that is randomised (0..1).")


class CatchUp(_Model):
    policy: Literal["Latest", "All", "Skip"] = Field(
        "Latest", description="After operator downtime: run the latest missed slot, all of "
        "them (up to maxRuns), or none. Slots not run are recorded as Missed.")
    max_runs: int = Field(10, ge=0, le=1000,
                          description="Cap on slots run by policy All (explicit, unlike "
                          "CronJob's silent 100).")


class ScheduleSpec(_Model):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "[has(self.schedule), has(self.interval), has(self.at)]"
                 ".filter(x, x).size() == 1",
         "message": "exactly one of schedule, interval or at must be set"},
        {"rule": "!has(self.startTime) || !has(self.endTime) || "
                 "timestamp(self.endTime) > timestamp(self.startTime)",
         "message": "endTime must be after startTime"},
        *_duration_rules("interval", 1),
        *_duration_rules("jitter", 0),
    ]})

    handler: str = Field(..., min_length=1, max_length=253, pattern=NAME_PATTERN,
                         description="Name of the Handler (same namespace) that runs the job.")
    method: str = Field(..., min_length=1, max_length=128, pattern=METHOD_PATTERN,
                        description="Handler method to call (a name not starting with _).")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description=f"JSON object passed to the method (at most {PARAMS_MAX_DEPTH} levels "
        f"deep and {PARAMS_MAX_BYTES // 1024} KiB encoded).")
    schedule: str | None = Field(
        None, max_length=256,
        description="Cron: 5 fields (minute hour day month weekday), or 6 with seconds "
        "first (Quartz/Spring), or a macro such as @hourly.")
    interval: str | None = Field(None, pattern=_DURATION, max_length=64,
                                 description="Fixed period, e.g. 30s, 5m, 1h30m; phase "
                                 "anchored at startTime (or the creation time).")
    at: str | None = Field(None, json_schema_extra={"format": "date-time"},
                           description="One-shot: RFC 3339 time to run once.")
    time_zone: str = Field("UTC", max_length=64, pattern=r"^[A-Za-z0-9_+\-/]+$",
                           description="IANA time zone of the cron fields. DST as Vixie "
                           "cron: skipped fixed times run at the transition, repeated ones "
                           "run once; wildcard hours follow the wall clock.")
    start_time: str | None = Field(None, json_schema_extra={"format": "date-time"},
                                   description="No runs before this time.")
    end_time: str | None = Field(None, json_schema_extra={"format": "date-time"},
                                 description="No runs after this time.")
    jitter: str | None = Field(None, pattern=_DURATION, max_length=64,
                               description="Random delay added to each fire, at most this, "
                               "and never more than half the gap to the next fire.")
    suspend: bool = Field(False, description="Stop firing (run-now still works).")
    concurrency_policy: Literal["Allow", "Forbid", "Replace", "BufferOne"] = Field(
        "Allow", description="When a run is still active at the next fire: run both, skip "
        "the new one, cancel the old one, or queue one.")
    starting_deadline_seconds: int | None = Field(
        None, ge=1, le=ONE_YEAR_SECONDS, description="A run that cannot start within this "
        "many seconds of its scheduled time is recorded as Missed.")
    catch_up: CatchUp = Field(default_factory=CatchUp,  # type: ignore[arg-type]
                              description="What to do with slots missed while no operator "
                              "was running.")
    retry: Retry = Field(default_factory=Retry,  # type: ignore[arg-type]
                         description="Retries with exponential backoff and jitter.")
    timeout_seconds: int = Field(60, ge=1, le=86400, description="Per-attempt timeout.")
    priority: Literal["high", "normal", "low"] = Field(
        "normal", description="Who waits first when the handler is saturated.")
    successful_runs_history_limit: int = Field(5, ge=0, le=100,
                                               description="Succeeded runs kept in status.")
    failed_runs_history_limit: int = Field(5, ge=0, le=100,
                                           description="Failed runs kept in status.")
    pause_after_failures: int | None = Field(
        None, ge=1, le=10000, description="Stop firing after this many consecutive failed "
        "runs, until the spec changes.")

    @field_validator("params")
    @classmethod
    def _bounded_params(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Depth and size the API server cannot bound (params are schemaless)."""
        depth = json_depth(value, PARAMS_MAX_DEPTH + 1)
        if depth > PARAMS_MAX_DEPTH:
            raise ValueError(f"nests more than {PARAMS_MAX_DEPTH} levels deep; flatten it")
        size = len(json.dumps(value, separators=(",", ":")))
        if size > PARAMS_MAX_BYTES:
            raise ValueError(f"is {size // 1024} KiB encoded; at most "
                             f"{PARAMS_MAX_BYTES // 1024} KiB are allowed (pass a reference "
                             "to the data instead)")
        return value


def json_depth(value: Any, stop_at: int) -> int:
    """Nesting depth of a JSON value (a scalar is 0), iteratively, counting to ``stop_at``."""
    deepest = 0
    todo: list[tuple[Any, int]] = [(value, 0)]
    while todo:
        v, depth = todo.pop()
        if isinstance(v, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            if depth >= stop_at:
                return depth
            todo.extend((x, depth) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


class Condition(_Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


class ActiveRun(_Model):
    run_id: str
    scheduled_time: str
    start_time: str | None = None
    attempt: int = 1
    endpoint: str | None = None


class RunRecord(_Model):
    run_id: str
    scheduled_time: str
    start_time: str | None = None
    finish_time: str | None = None
    outcome: Literal["Succeeded", "Failed", "TimedOut", "Skipped", "Missed", "Cancelled"]
    attempts: int = 0
    endpoint: str | None = None
    latency_ms: float | None = Field(None, description="Scheduled time -> dispatch.")
    duration_ms: float | None = None
    message: str = ""
    result: str | None = Field(None, description="Result JSON, truncated.")


class Counters(_Model):
    runs: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    skipped: int = 0
    missed: int = 0


class Claim(_Model):
    holder: str = Field(..., description="Identity of the operator that fires these slots.")
    run_id: str = Field(..., description="Run id of the first claimed slot.")
    scheduled_time: str = Field(..., description="The first claimed slot.")
    # Optional only so claims stored before this field existed still parse (they cover
    # their own slot); the operator always writes it.
    until: str | None = Field(None, description="The last claimed slot (claims cover a "
                              "horizon of slots ahead).")
    expires: str = Field(..., description="Until when other operators respect the claim.")


class ScheduleStatus(_Model):
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None
    next_run_time: str | None = None
    last_schedule_time: str | None = None
    last_successful_time: str | None = None
    last_failure_time: str | None = None
    active: list[ActiveRun] = Field(default_factory=list)
    recent_runs: list[RunRecord] = Field(default_factory=list)
    counters: Counters = Field(default_factory=Counters)
    claim: Claim | None = Field(None, description="Next slot claimed by an operator.")
    last_run_now: str | None = Field(None, description="Last run-now annotation handled.")
    consecutive_failures: int = 0
    last_result: str | None = Field(None, description="Outcome of the last finished run.")
    trigger: str | None = Field(None, description="The trigger in words (printer column).")


# -- Handler ------------------------------------------------------------------
class SecretKeyRef(_Model):
    name: str
    key: str = "secret"


class Auth(_Model):
    secret_ref: SecretKeyRef = Field(..., description="Shared secret for request signing.")


class Scaling(_Model):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "self.maxReplicas >= self.minReplicas",
         "message": "scaling.maxReplicas must be at least scaling.minReplicas"},
    ]})

    min_replicas: int = Field(1, ge=0, le=1000, description="Replicas kept when idle (0 "
                              "allowed: scale to zero).")
    max_replicas: int = Field(1, ge=1, le=1000, description="Upper bound of replicas.")
    scale_down_delay_seconds: int = Field(60, ge=0, le=86400,
                                          description="Idle time before scaling down.")
    prewarm_seconds: int = Field(0, ge=0, le=86400,
                                 description="Scale up this long before a known fire time.")


class DeploymentRef(_Model):
    name: str = Field(..., min_length=1, max_length=253, pattern=NAME_PATTERN,
                      description="Name of a Deployment in the Handler's namespace.")


class HandlerSpec(_Model):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "[has(self.endpoints), has(self.template), has(self.deploymentRef)]"
                 ".filter(x, x).size() == 1",
         "message": "exactly one of endpoints, template or deploymentRef must be set"},
    ]})

    protocol: Literal["zmq", "http", "zmq-legacy"] = Field(
        "zmq", description="zmq (DEALER->ROUTER, many jobs per connection), http, or "
        "zmq-legacy (ScheduleZero REQ/REP handlers, one job at a time).")
    port: int = Field(4244, ge=1, le=65535, description="Port the handler listens on.")
    endpoints: list[str] | None = Field(
        None, min_length=1, max_length=256,
        description="External handlers as host:port, tcp://host:port (ScheduleZero's form) "
        "or [ipv6]:port (not scaled); at least one.",
        json_schema_extra={"items": {"type": "string", "maxLength": 262,
                                     "pattern": ENDPOINT_PATTERN}})
    template: dict[str, Any] | None = Field(
        None, description="PodTemplateSpec: the operator creates and owns a Deployment.")
    deployment_ref: DeploymentRef | None = Field(
        None, description="An existing Deployment whose pods run the handler.")
    concurrency: int = Field(4, ge=1, le=10000, description="Jobs in flight per replica.")
    methods: list[str] | None = Field(
        None, min_length=1, max_length=1000,
        description="Allow-list of callable methods (names not starting with _).",
        json_schema_extra={"items": {"type": "string", "maxLength": 128,
                                     "pattern": METHOD_PATTERN}})
    auth: Auth | None = None
    scaling: Scaling | None = None


class RegisteredHandler(_Model):
    """A ScheduleZero handler that registered with the operator's registration port."""

    endpoint: str = Field(..., description="The address it registered, as host:port.")
    handler_id: str = Field(..., description="The handler_id it registered under.")
    methods: list[str] = Field(default_factory=list, description="The methods it registered.")
    registered_time: str | None = Field(None, description="Its last register request.")
    last_heartbeat: str | None = Field(None, description="Its last request of any kind "
                                       "(register, ping, report_status); written at most "
                                       "once a minute.")
    status: str = Field("online", description="online after register, else what it last "
                        "reported with report_status (offline on shutdown).")


class HandlerStatus(_Model):
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None
    ready_endpoints: list[str] = Field(default_factory=list)
    ready: str = Field("0/0", description="Ready endpoints / known endpoints.")
    methods: list[str] = Field(default_factory=list, description="Discovered via describe "
                               "(zmq, http) or registration (zmq-legacy).")
    registered: list[RegisteredHandler] | None = Field(
        None, description="ScheduleZero handlers at these endpoints that "
        "registered with the operator (--legacy-registry-port).")
    in_flight: int = Field(default=0, description="Jobs in flight, sampled at most every 5 s "
                           "(live: the schedulezero_inflight metric).")
    queued: int = Field(default=0, description="Runs waiting for a free endpoint slot, sampled "
                        "at most every 5 s (live: the schedulezero_queued metric).")
    replicas: int | None = None
    ready_replicas: int | None = None
    desired_replicas: int | None = None
    last_scale_time: str | None = None
