"""The status of Schedules and Handlers, built only from the typed models in ``api.models``.

This is the one module that gives status its shape: the engine keeps a typed
``ScheduleStatus`` per Schedule (the part that must survive restarts: history,
counters, last times, run-now) and builds the full document from it. What is
written, what is compared to decide whether to write, and what the API server
stores are the same thing: ``document()`` (camelCase aliases, no nulls, exactly
the fields the CRD schema keeps). ``merge_patch()`` adds explicit nulls for the
top-level fields the document leaves out, so a JSON merge patch removes them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from enum import StrEnum
from typing import Any, Literal, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from ..api.models import (
    ActiveRun,
    Claim,
    Condition,
    Counters,
    HandlerStatus,
    RegisteredHandler,
    RunRecord,
    ScheduleStatus,
)
from .compact import compact
from .times import iso, iso_or_none

log = logging.getLogger("schedulezero.status")
RESULT_LIMIT = 1024  # characters of a result kept in status
MESSAGE_LIMIT = 1024
M = TypeVar("M", bound=BaseModel)


class Outcome(StrEnum):
    """How a run ended (``RunRecord.outcome``)."""

    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    TIMED_OUT = "TimedOut"
    SKIPPED = "Skipped"
    MISSED = "Missed"
    CANCELLED = "Cancelled"

    @property
    def counter(self) -> str:
        """The ``Counters`` field an outcome counts in."""
        return _COUNTER[self]

    @property
    def is_run(self) -> bool:
        """Whether the run was attempted (counts in ``counters.runs``)."""
        return self not in (Outcome.SKIPPED, Outcome.MISSED)


_COUNTER = {Outcome.SUCCEEDED: "succeeded", Outcome.FAILED: "failed",
            Outcome.TIMED_OUT: "failed", Outcome.SKIPPED: "skipped", Outcome.MISSED: "missed",
            Outcome.CANCELLED: "failed"}


# -- serialisation -----------------------------------------------------------------
def document(model: BaseModel) -> dict[str, Any]:
    """The JSON the API server stores for ``model`` (aliases, no nulls)."""
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")


def merge_patch(doc: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """A JSON merge patch that makes the stored status equal ``doc``.

    Nested objects of our models are always written whole, so nulls are needed
    only at the top level, for the fields ``doc`` leaves out.
    """
    patch: dict[str, Any] = {
        (f.alias or name): None for name, f in model.model_fields.items()}
    patch.update(doc)
    return patch


def load(model: type[M], raw: Any) -> M:
    """A status as stored, typed; an unreadable one counts as empty (never a crash)."""
    try:
        return model.model_validate(raw or {})
    except ValidationError as e:
        log.warning("ignoring an unreadable %s: %s", model.__name__, e)
        return model()


def drop_derived(record: ScheduleStatus) -> None:
    """Empty what a write rebuilds from the engine's state (``schedule_status``), once
    first sight has read it: kept, a stored status was held twice (~5 KB a Schedule)."""
    record.conditions, record.active, record.claim = [], [], None
    record.trigger = record.next_run_time = record.observed_generation = None


def normalise(model: type[BaseModel], raw: Any) -> dict[str, Any]:
    """A stored status as ``document()`` would write it (for comparing with ours)."""
    return document(load(model, raw))


# -- conditions ----------------------------------------------------------------------
def _status(ok: bool) -> Literal["True", "False"]:
    return "True" if ok else "False"


def set_condition(conditions: dict[str, Condition], kind: str, ok: bool, reason: str,
                  message: str, *, now: dt.datetime, generation: int | None = None) -> bool:
    """Set one condition; ``lastTransitionTime`` moves only when its status changes.
    Whether anything changed."""
    current = conditions.get(kind)
    status = _status(ok)
    if current is not None and (current.status, current.reason, current.message) == (
            status, reason, message):
        return False
    changed = current is None or current.status != status
    # Built without validation (our own values, fixed types) and compact: see compact.py.
    conditions[kind] = compact(Condition.model_construct(
        type=kind, status=status, reason=reason, message=message,
        last_transition_time=iso(now) if changed or current is None
        else current.last_transition_time,
        observed_generation=generation))
    return True


# -- runs ------------------------------------------------------------------------------
def truncate_result(result: Any) -> str | None:
    if result is None:
        return None
    text = json.dumps(result, default=str, separators=(",", ":"))
    return text if len(text) <= RESULT_LIMIT else text[: RESULT_LIMIT - 1] + "…"


def run_record(*, run_id: str, slot: dt.datetime, fire_at: dt.datetime,
               start: dt.datetime | None, finish: dt.datetime, outcome: Outcome,
               attempts: int, endpoint: str | None, message: str = "",
               result: Any = None) -> RunRecord:
    """One entry of ``recentRuns``; lateness is fire time -> first dispatch."""
    return compact(RunRecord(
        run_id=run_id, scheduled_time=iso(slot), start_time=iso_or_none(start),
        finish_time=iso(finish), outcome=outcome.value, attempts=attempts, endpoint=endpoint,
        latency_ms=round((start - fire_at).total_seconds() * 1000, 3) if start else None,
        duration_ms=round((finish - start).total_seconds() * 1000, 3) if start else None,
        message=message[:MESSAGE_LIMIT], result=truncate_result(result)))


def trim_history(runs: list[RunRecord], successful_limit: int,
                 failed_limit: int) -> list[RunRecord]:
    """Newest first; keep at most N succeeded and M of every other outcome."""
    kept, ok, bad = [], 0, 0
    for r in runs:
        if r.outcome == Outcome.SUCCEEDED:
            if ok < successful_limit:
                kept.append(r)
                ok += 1
        elif bad < failed_limit:
            kept.append(r)
            bad += 1
    return kept


def bump(counters: Counters, counter: str, by: int = 1) -> None:
    setattr(counters, counter, getattr(counters, counter) + by)


def record_run(status: ScheduleStatus, record: RunRecord, *, successful_limit: int,
               failed_limit: int) -> None:
    """Add a finished run to history, counters, last times and the failure streak."""
    outcome = Outcome(record.outcome)
    status.recent_runs = trim_history([record, *status.recent_runs], successful_limit,
                                      failed_limit)
    if outcome.is_run:
        bump(status.counters, "runs")
    bump(status.counters, outcome.counter)
    status.last_result = outcome.value
    if outcome is Outcome.SUCCEEDED:
        status.last_successful_time = record.finish_time
        status.consecutive_failures = 0
    elif outcome in (Outcome.FAILED, Outcome.TIMED_OUT):
        status.last_failure_time = record.finish_time
        status.consecutive_failures += 1


# -- whole documents ---------------------------------------------------------------
def schedule_status(record: ScheduleStatus, *, conditions: list[Condition], generation: int,
                    trigger: str | None, next_run: dt.datetime | None,
                    active: list[ActiveRun], claim: Claim | None) -> ScheduleStatus:
    """The Schedule's status: what it keeps (``record``) plus what the engine knows now."""
    return record.model_copy(update={
        "conditions": conditions, "observed_generation": generation, "trigger": trigger,
        "next_run_time": iso_or_none(next_run), "active": active, "claim": claim})


class HandlerView(Protocol):
    """What a Handler's status is made of (``handlers.HandlerState`` has it)."""

    invalid: str | None
    source: str
    known_endpoints: list[Any]
    methods: list[str]
    deployment: str | None
    desired: int | None
    replicas: int | None
    pod_count: int
    workload_error: str | None
    last_scale_time: dt.datetime | None
    down: dict[str, str]  # external endpoints not Ready: host:port -> why

    @property
    def probe_verb(self) -> str: ...

    @property
    def registered(self) -> list[RegisteredHandler]: ...

    @property
    def ready(self) -> list[str]: ...

    # (jobs in flight, queued) as the status shows them: sampled, not live
    shown_levels: tuple[int, int]


def reasons_text(reasons: dict[str, str], limit: int = 5) -> str:
    """``host:port: why; ...`` for the first ``limit`` endpoints, and how many more."""
    items = sorted(reasons.items())
    text = "; ".join(f"{a}: {why}" for a, why in items[:limit])
    if len(items) > limit:
        text += f"; and {len(items) - limit} more"
    return text[:MESSAGE_LIMIT]


def handler_status(h: HandlerView, *, now: dt.datetime,
                   previous: HandlerStatus | None) -> HandlerStatus:
    """Available / Progressing / Degraded and the counts behind them."""
    since = {c.type: c for c in (previous.conditions if previous else [])}

    def cond(kind: str, ok: bool, reason: str, message: str) -> Condition:
        status = _status(ok)
        prev = since.get(kind)
        return Condition(type=kind, status=status, reason=reason, message=message,
                         last_transition_time=prev.last_transition_time
                         if prev is not None and prev.status == status else iso(now))

    registered = h.registered or None  # left out of status when there are none
    in_flight, queued = h.shown_levels
    if h.invalid is not None:
        return HandlerStatus(
            conditions=[cond("Available", False, "InvalidHandler", h.invalid),
                        cond("Degraded", True, "InvalidHandler", h.invalid)],
            ready="0/0", queued=queued, registered=registered)
    ready, known = h.ready, len(h.known_endpoints)
    available = bool(ready)
    if h.source == "endpoints":
        verb = h.probe_verb
        down = {e.address: h.down.get(e.address, "not probed yet")
                for e in h.known_endpoints if str(e) not in ready}
        answer = f"{len(ready)}/{known} endpoint(s) answer {verb}"
        return HandlerStatus(
            conditions=[
                cond("Available", available, "EndpointsReady" if available else "NoEndpoints",
                     answer if available else f"{answer}: {reasons_text(down)}"),
                cond("Degraded", bool(down), "EndpointsDown" if down else "AllReady",
                     f"{len(down)} endpoint(s) not answering {verb}: {reasons_text(down)}"
                     if down else f"every endpoint answers {verb}"),
            ],
            ready_endpoints=ready, ready=f"{len(ready)}/{known}", methods=h.methods,
            in_flight=in_flight, queued=queued, registered=registered)
    desired = h.desired if h.desired is not None else h.replicas
    progressing = desired is not None and len(ready) != desired
    return HandlerStatus(
        conditions=[
            cond("Available", available, "PodsReady" if available else "NoReadyPods",
                 f"{len(ready)} Ready pod(s) of Deployment {h.deployment}"
                 if h.workload_error is None else h.workload_error),
            cond("Progressing", progressing, "Scaling" if progressing else "Stable",
                 f"{len(ready)}/{desired} replicas Ready"),
            cond("Degraded", h.workload_error is not None,
                 "WorkloadError" if h.workload_error else "Healthy",
                 h.workload_error or "Deployment managed"),
        ],
        ready_endpoints=ready,
        ready=f"{len(ready)}/{desired if desired is not None else h.pod_count}",
        methods=h.methods, in_flight=in_flight, queued=queued, replicas=h.pod_count,
        ready_replicas=len(ready), desired_replicas=desired,
        last_scale_time=iso_or_none(h.last_scale_time), registered=registered)
