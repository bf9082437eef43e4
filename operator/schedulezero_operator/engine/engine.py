"""The firing engine: timers -> claim -> dispatch -> retry -> record.

Schedules and Handlers arrive as watch events (level-triggered: every event
carries the whole object and ``upsert_*`` converges on it). Decisions are the
pure functions in ``timing`` and ``decisions``; this module performs them.

Firing path: the next slot of each Schedule is *claimed ahead of time* in its
status (with a resourceVersion precondition) in the same write that records the
previous slot, so when the timer fires the run is dispatched with no API call in
between. Status writes are coalesced per Schedule (at most one in flight, the
newest state wins), so frequent schedules cost at most one write per run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import itertools
import json
import logging
import os
import random
import socket
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from ..api.models import DECODE_PROBLEM, RUN_NOW_ANNOTATION, HandlerSpec, ScheduleSpec
from ..dispatch import Dispatcher, DispatchResult, Endpoint, EndpointPool
from ..timing import (
    Trigger,
    TriggerError,
    backoff_delay,
    catch_up,
    jitter_offset,
    next_fire,
    parse_duration,
    parse_trigger,
    slots_between,
)
from . import decisions as d
from .clock import Clock
from .timers import TimerQueue

log = logging.getLogger("schedulezero.engine")
UTC = dt.UTC
NO_ENDPOINT_WAIT = 300.0  # seconds a run waits for a Ready endpoint without a deadline
CLAIM_GRACE = dt.timedelta(seconds=30)
# Slots are claimed for this far ahead in one write, so that firing never waits for
# the API server, and frequent schedules need one claim write per horizon, not per run.
CLAIM_HORIZON = dt.timedelta(seconds=10)
# A Schedule's status is written at most this often unless its claim must be extended
# (status may lag a run by up to this much; the firing path never waits for it).
MIN_WRITE_INTERVAL = 1.0
# Coalescing window of status writes: a run's start, finish and the claim of the
# next slot land in one write when the run is shorter than this.
FLUSH_INTERVAL = 0.2


class KubeApi(Protocol):
    async def patch_status(self, plural: str, namespace: str, name: str,
                           resource_version: str | None, status: dict[str, Any]) -> str: ...

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]: ...

    async def event(self, obj: dict[str, Any], kind: str, type_: str, reason: str,
                    message: str, *, every: float = 30.0) -> None: ...

    async def read_secret_key(self, namespace: str, name: str, key: str) -> bytes | None: ...


def iso(t: dt.datetime | None) -> str | None:
    if t is None:
        return None
    t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{t.microsecond // 1000:03d}Z"
                                              if t.microsecond else "Z")


def parse_iso(s: str | None) -> dt.datetime | None:
    if not s:
        return None
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(UTC)


class Conflict(Exception):
    """The write's resourceVersion precondition failed (HTTP 409)."""


class NotFound(Exception):
    """The object is gone (HTTP 404)."""


# -- state ----------------------------------------------------------------------
@dataclass
class Run:
    run_id: str
    slot: dt.datetime
    fire_at: dt.datetime
    attempt: int = 1
    start: dt.datetime | None = None
    endpoint: str | None = None
    task: asyncio.Task[None] | None = None
    cancelled: bool = False
    current: Endpoint | None = None


@dataclass
class ScheduleState:
    namespace: str
    name: str
    uid: str
    body: dict[str, Any]
    generation: int = 0
    spec: ScheduleSpec | None = None
    trigger: Trigger | None = None
    invalid: str | None = None
    resource_version: str | None = None
    status: dict[str, Any] = field(default_factory=dict)
    active: dict[str, Run] = field(default_factory=dict)
    buffered: Run | None = None
    next_slot: dt.datetime | None = None
    claim: dict[str, Any] | None = None  # the claim we last asked for
    claim_until: dt.datetime | None = None  # confirmed: slots up to here are ours
    claim_lost: bool = False
    last_write_at: float = -1e9
    paused_generation: int | None = None
    dirty: bool = False
    writing: bool = False
    deleted: bool = False
    last_written: dict[str, Any] | None = None
    conditions: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class HandlerState:
    namespace: str
    name: str
    body: dict[str, Any] | None = None
    spec: HandlerSpec | None = None
    pool: EndpointPool = field(default_factory=EndpointPool)
    waiters: list[tuple[int, int, asyncio.Future[Endpoint]]] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    known_endpoints: list[Endpoint] = field(default_factory=list)
    secret: bytes | None = None
    resource_version: str | None = None
    dirty: bool = False
    writing: bool = False
    last_status: dict[str, Any] = field(default_factory=dict)
    # Deployment-backed handlers (template / deploymentRef)
    source: str = "endpoints"
    deployment: str | None = None
    selector: dict[str, Any] | None = None
    replicas: int | None = None  # the Deployment's spec.replicas as last seen or set
    pod_count: int = 0
    desired: int | None = None
    last_scale_time: dt.datetime | None = None
    last_needed_current: dt.datetime | None = None
    scale_changes: int = 0
    workload_error: str | None = None
    invalid: str | None = None  # why the spec cannot be used

    @property
    def queued(self) -> int:
        return sum(1 for _, _, f in self.waiters if not f.done())


# -- engine ---------------------------------------------------------------------
class Engine:
    def __init__(self, kube: KubeApi, clock: Clock, dispatcher: Dispatcher | None = None,
                 identity: str | None = None, rng: random.Random | None = None) -> None:
        self.kube = kube
        self.clock = clock
        self.dispatcher = dispatcher or Dispatcher()
        self.identity = identity or (
            f"{os.environ.get('POD_NAME') or socket.gethostname()}-{os.getpid()}")
        self.rng = rng or random.Random()
        self.timers = TimerQueue(clock)
        self.schedules: dict[tuple[str, str], ScheduleState] = {}
        self.handlers: dict[tuple[str, str], HandlerState] = {}
        self._seq = itertools.count()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._flush_wake = asyncio.Event()
        self.apps: Any = None  # AppsKube when Deployment-backed handlers are enabled
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.scaler_wake = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------
    async def run(self) -> None:
        self._spawn(self.timers.run())
        self._spawn(self._flusher())
        self._spawn(self._probe_handlers_forever())
        await asyncio.Event().wait()

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.dispatcher.close()
        closer = getattr(self.kube, "close", None)
        if closer is not None:
            await closer()

    # -- schedules: watch events ---------------------------------------------------
    def upsert_schedule(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        state = self.schedules.get(key)
        if state is not None and state.uid != meta["uid"]:
            self.delete_schedule(key)  # same name, new object
            state = None
        generation = int(meta.get("generation") or 0)
        if state is None:
            state = ScheduleState(meta["namespace"], meta["name"], meta["uid"], body)
            state.resource_version = meta.get("resourceVersion")
            state.status = dict(body.get("status") or {})
            self.schedules[key] = state
            self._configure(state, body, generation, first=True)
        elif generation != state.generation:
            state.body = body
            state.resource_version = meta.get("resourceVersion")
            self._configure(state, body, generation, first=False)
        else:
            state.body = body
        self._check_run_now(state, body)

    def delete_schedule(self, key: tuple[str, str]) -> None:
        state = self.schedules.pop(key, None)
        if state is None:
            return
        state.deleted = True
        self.timers.cancel(key)
        for run in state.active.values():
            if run.task:
                run.task.cancel()

    def _configure(self, state: ScheduleState, body: dict[str, Any], generation: int,
                   first: bool) -> None:
        state.generation = generation
        state.body = body
        self.timers.cancel(state.key)
        try:
            problem = body.get(DECODE_PROBLEM)
            if problem:
                raise TriggerError(f"invalid spec: {problem}; the operator cannot use this "
                                   "object (fix or delete it)")
            spec = ScheduleSpec.model_validate(body.get("spec") or {})
            created = parse_iso(body["metadata"].get("creationTimestamp")) or self.clock.now()
            trigger = parse_trigger(schedule=spec.schedule, interval=spec.interval, at=spec.at,
                                    time_zone=spec.time_zone, start_time=spec.start_time,
                                    end_time=spec.end_time, anchor=created)
            if spec.jitter:
                parse_duration(spec.jitter)
        except (ValidationError, TriggerError) as e:
            message = _validation_message(e)
            state.spec, state.trigger, state.invalid = None, None, message
            self._condition(state, "Ready", False, "InvalidSchedule", message)
            self._warn(state, "InvalidSchedule", message)
            self._mark(state)
            return
        state.spec, state.trigger, state.invalid = spec, trigger, None
        if state.paused_generation is not None and state.paused_generation != generation:
            state.paused_generation = None
            state.status["consecutiveFailures"] = 0
        if first:
            self._recover(state)
        self._check_handler(state)
        self._arm(state, self.clock.now(), catching_up=first)

    def _recover(self, state: ScheduleState) -> None:
        """First sight (operator start): resolve runs a previous operator left active."""
        status = state.status
        if status.get("consecutiveFailures") and state.spec and d.should_pause(
                int(status["consecutiveFailures"]), state.spec.pause_after_failures):
            state.paused_generation = state.generation
        for entry in status.get("active") or []:
            slot = parse_iso(entry.get("scheduledTime")) or self.clock.now()
            attempt = int(entry.get("attempt") or 1)
            run = Run(entry["runId"], slot, slot, attempt=attempt)
            assert state.spec is not None
            if attempt < state.spec.retry.max_attempts:
                # Same run id: a handler that still has it running joins, not re-runs.
                run.attempt = attempt + 1
                log.info("%s: resuming run %s left active by a previous operator (attempt %d)",
                         state.ref, run.run_id, run.attempt)
                self._start(state, run)
            else:
                self._record(state, run, "Failed", message="operator restarted during the "
                             "last attempt; no attempts left")

    # -- timing ----------------------------------------------------------------------
    def _arm(self, state: ScheduleState, now: dt.datetime, catching_up: bool) -> None:
        """Set the Schedule's next timer; after a restart, first handle missed slots."""
        spec, trigger = state.spec, state.trigger
        assert spec is not None and trigger is not None
        last = parse_iso(state.status.get("lastScheduleTime"))
        created = parse_iso(state.body["metadata"].get("creationTimestamp")) or now
        if catching_up and not self._stopped(state):
            # Only on first sight (operator start): slots missed while no operator ran.
            # Time spent suspended or paused is not caught up.
            since = last or created
            slots, cut = slots_between(trigger, since, now, cap=max(spec.catch_up.max_runs, 1)
                                       * 10 + 10)
            if slots:
                plan = catch_up(slots, cut, now, policy=spec.catch_up.policy,
                                max_runs=spec.catch_up.max_runs,
                                starting_deadline=spec.starting_deadline_seconds)
                self._record_missed(state, plan.missed, cut)
                for slot in plan.run:
                    self._fire(state, slot)
                last = slots[-1]
        after = max(now, last) if last else now
        self._set_next(state, next_fire(trigger, after))

    def _set_next(self, state: ScheduleState, slot: dt.datetime | None) -> None:
        state.next_slot = slot
        state.claim_lost = False
        if slot is None or self._stopped(state):
            self.timers.cancel(state.key)
            self._mark(state)
            return
        spec, trigger = state.spec, state.trigger
        assert spec is not None and trigger is not None
        fire_at = slot
        if spec.jitter:
            following = next_fire(trigger, slot)
            gap = (following - slot).total_seconds() if following else None
            jitter = parse_duration(spec.jitter)
            fire_at = slot + dt.timedelta(seconds=jitter_offset(
                d.run_id_for(state.uid, slot), jitter, gap))
            self._check_jitter(state, jitter, gap)
        key = state.key
        self.timers.schedule(key, fire_at, lambda: self._on_timer(key, slot, fire_at))
        self._mark(state)  # writes the claim for `slot` (with the previous run's record)

    def _check_jitter(self, state: ScheduleState, jitter: float, gap: float | None) -> None:
        """Jitter is clamped to half the gap to the next fire (so runs keep their order).

        Clamping, not refusing: the Schedule still fires, and the condition plus a
        Warning Event tell the user the delay they asked for is not the one applied.
        """
        assert state.spec is not None
        if gap is not None and jitter > gap / 2:
            msg = (f"spec.jitter {state.spec.jitter} is more than half the {gap:g}s gap to the "
                   f"next fire; each fire is delayed by at most {gap / 2:g}s instead")
            self._condition(state, "JitterApplied", False, "JitterClamped", msg)
            self._warn(state, "JitterClamped", msg, every=3600)
        else:
            self._condition(state, "JitterApplied", True, "WithinGap",
                            f"fires are delayed by up to {state.spec.jitter}")

    def _stopped(self, state: ScheduleState) -> bool:
        spec = state.spec
        return spec is None or spec.suspend or state.paused_generation is not None

    def _on_timer(self, key: tuple[str, str], slot: dt.datetime, fire_at: dt.datetime) -> None:
        state = self.schedules.get(key)
        if state is None or state.trigger is None:
            return
        if state.claim_lost:
            log.info("%s: slot %s claimed by another operator; not firing", state.ref, iso(slot))
        elif state.claim_until is None or slot > state.claim_until:
            # Our claim write has not landed yet (only right after start-up): wait for it.
            self._spawn(self._fire_when_claimed(state, slot, fire_at))
            return
        else:
            self._fire(state, slot, fire_at=fire_at)
        self._set_next(state, next_fire(state.trigger, slot))

    async def _fire_when_claimed(self, state: ScheduleState, slot: dt.datetime,
                                 fire_at: dt.datetime) -> None:
        # Late rather than lost: wait for our claim to land (or to be refused).
        deadline = self.clock.now() + CLAIM_GRACE
        while self.clock.now() < deadline:
            if (state.claim_until is not None and slot <= state.claim_until) or \
                    state.claim_lost or state.deleted:
                break
            await asyncio.sleep(0.02)
        if state.claim_until is not None and slot <= state.claim_until and not state.deleted:
            self._fire(state, slot, fire_at=fire_at)
        if state.trigger is not None and not state.deleted:
            self._set_next(state, next_fire(state.trigger, slot))

    # -- firing ------------------------------------------------------------------------
    def _fire(self, state: ScheduleState, slot: dt.datetime, *, fire_at: dt.datetime | None = None,
              run_id: str | None = None, policy: str | None = None) -> None:
        spec = state.spec
        assert spec is not None
        run = Run(run_id or d.run_id_for(state.uid, slot), slot, fire_at or slot)
        if run_id is None:
            state.status["lastScheduleTime"] = iso(slot)
        if run.run_id in state.active:
            return  # already running (e.g. a catch-up of a slot being resumed)
        action = d.on_slot_due(policy or spec.concurrency_policy, len(state.active))
        if action == "skip":
            self._record(state, run, "Skipped", message="previous run still active "
                         "(concurrencyPolicy Forbid)")
            return
        if action == "replace":
            for other in list(state.active.values()):
                self._cancel_run(state, other)
        if action == "buffer":
            if state.buffered is not None:
                self._record(state, state.buffered, "Skipped",
                             message="replaced by a newer buffered run (BufferOne)")
            state.buffered = run
            self._mark(state)
            return
        self._start(state, run)

    def _start(self, state: ScheduleState, run: Run) -> None:
        state.active[run.run_id] = run
        run.task = self._spawn(self._execute(state, run))
        self._mark(state)

    def _cancel_run(self, state: ScheduleState, run: Run) -> None:
        run.cancelled = True
        if run.task is not None:
            run.task.cancel()
        if run.current is not None:
            self._spawn(self.dispatcher.cancel(run.current, run.run_id))

    async def _execute(self, state: ScheduleState, run: Run) -> None:
        spec = state.spec
        assert spec is not None
        handler = self._handler(state.namespace, spec.handler)
        result: DispatchResult | None = None
        outcome, message = "Failed", ""
        try:
            while True:
                wait = spec.starting_deadline_seconds or NO_ENDPOINT_WAIT
                endpoint = await self._acquire(handler, spec.priority, wait,
                                               avoid=run.endpoint)
                if endpoint is None:
                    outcome = "Missed"
                    message = (f"no Ready endpoint of handler {spec.handler} within {wait:g}s"
                               if self._handler_exists(state) else
                               f"handler {spec.handler} not found in {state.namespace}")
                    break
                run.current = endpoint
                run.endpoint = str(endpoint)
                now = self.clock.now()
                if run.start is None:
                    run.start = now
                    self._mark(state)
                deadline = now + dt.timedelta(seconds=spec.timeout_seconds)
                try:
                    result = await self.dispatcher.execute(
                        endpoint, run_id=run.run_id, method=spec.method, params=spec.params,
                        timeout=spec.timeout_seconds, schedule=state.ref,
                        scheduled_time=iso(run.slot), attempt=run.attempt,
                        deadline=iso(deadline))
                finally:
                    handler.pool.release(endpoint)
                    run.current = None
                    self._wake_waiters(handler)
                verdict = d.after_attempt(ok=result.ok, retryable=result.retryable,
                                          error_type=result.error_type, attempt=run.attempt,
                                          max_attempts=spec.retry.max_attempts)
                if not verdict.retry:
                    outcome = verdict.outcome or "Failed"
                    message = "" if result.ok else f"{result.error_type}: {result.message}"
                    break
                delay = backoff_delay(
                    run.attempt, initial=parse_duration(spec.retry.backoff.initial),
                    maximum=parse_duration(spec.retry.backoff.max),
                    multiplier=spec.retry.backoff.multiplier, jitter=spec.retry.jitter,
                    random_fraction=self.rng.random())
                log.info("%s: run %s attempt %d failed (%s: %s); retrying in %.2fs", state.ref,
                         run.run_id, run.attempt, result.error_type, result.message, delay)
                _bump(state.status, "retried")
                run.attempt += 1
                self._mark(state)
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            if state.deleted:
                return
            outcome, message = "Cancelled", "replaced by a newer run (concurrencyPolicy Replace)"
        except Exception as e:
            log.exception("%s: run %s crashed", state.ref, run.run_id)
            outcome, message = "Failed", f"operator error: {e}"
        self._record(state, run, outcome, message=message, result=result)

    # -- handlers & endpoints ------------------------------------------------------
    def _handler(self, namespace: str, name: str) -> HandlerState:
        key = (namespace, name)
        h = self.handlers.get(key)
        if h is None:
            h = self.handlers[key] = HandlerState(namespace, name)
        return h

    def _handler_exists(self, state: ScheduleState) -> bool:
        assert state.spec is not None
        h = self.handlers.get((state.namespace, state.spec.handler))
        return h is not None and h.body is not None

    async def _acquire(self, h: HandlerState, priority: str, wait: float,
                       avoid: str | None) -> Endpoint | None:
        avoid_key = next((e.key for e in h.pool.ready_endpoints if str(e) == avoid), None)
        if not h.waiters:
            ep = h.pool.acquire(avoid=avoid_key)
            if ep is not None:
                return ep
        fut: asyncio.Future[Endpoint] = asyncio.get_running_loop().create_future()
        heapq.heappush(h.waiters, (d.PRIORITY_RANK[priority], next(self._seq), fut))
        self._demand_changed(h)
        try:
            async with asyncio.timeout(wait):
                return await fut
        except TimeoutError:
            # A slot handed over just as the wait ran out is still ours to use.
            return fut.result() if fut.done() and not fut.cancelled() else None
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                h.pool.release(fut.result())
                self._wake_waiters(h)
            raise
        finally:
            if not fut.done():
                fut.cancel()
            self._demand_changed(h)

    def _wake_waiters(self, h: HandlerState) -> None:
        while h.waiters:
            _, _, fut = h.waiters[0]
            if fut.done():
                heapq.heappop(h.waiters)
                continue
            ep = h.pool.acquire()
            if ep is None:
                break
            heapq.heappop(h.waiters)
            fut.set_result(ep)
        self._demand_changed(h)

    def _demand_changed(self, h: HandlerState) -> None:
        h.dirty = True
        self._flush_wake.set()
        self.scaler_wake.set()

    def upsert_handler(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        h = self._handler(meta["namespace"], meta["name"])
        h.body = body
        h.resource_version = meta.get("resourceVersion")
        try:
            problem = body.get(DECODE_PROBLEM)
            if problem:
                raise TriggerError(f"invalid spec: {problem}; the operator cannot use this "
                                   "object (fix or delete it)")
            h.spec = HandlerSpec.model_validate(body.get("spec") or {})
            h.invalid = None
        except (ValidationError, TriggerError) as e:
            h.spec, h.invalid = None, _validation_message(e)
            h.pool.set_ready([])
            self._spawn(self.kube.event(body, "Handler", "Warning", "InvalidHandler",
                                        h.invalid))
            h.dirty = True
            self._flush_wake.set()
            self._recheck_schedules(h.namespace, h.name)
            return
        h.pool.capacity_per_endpoint = h.spec.concurrency
        if h.spec.protocol == "zmq-legacy":
            h.pool.capacity_per_endpoint = 1  # a REP socket serves one request at a time
        if h.spec.endpoints is not None:
            h.source = "endpoints"
            h.known_endpoints = [_endpoint(a, h.spec.protocol) for a in h.spec.endpoints]
            self._spawn(self._refresh_handler(h))
        else:
            h.source = "template" if h.spec.template is not None else "deploymentRef"
            self._spawn(self._ensure_workload(h, body))
        self._recheck_schedules(h.namespace, h.name)

    def set_handler_endpoints(self, namespace: str, name: str, endpoints: list[Endpoint]) -> None:
        """Ready endpoints from pod discovery (Deployment-backed handlers)."""
        h = self._handler(namespace, name)
        h.known_endpoints = endpoints
        self._spawn(self._refresh_handler(h))

    def delete_handler(self, namespace: str, name: str) -> None:
        h = self.handlers.get((namespace, name))
        if h is not None:
            h.body, h.spec = None, None
            h.pool.set_ready([])
            self._recheck_schedules(namespace, name)

    async def _refresh_handler(self, h: HandlerState) -> None:
        """Probe known endpoints (describe); the ones that answer are Ready."""
        if h.spec is None:
            return
        if h.spec.auth is not None:
            ref = h.spec.auth.secret_ref
            h.secret = await self.kube.read_secret_key(h.namespace, ref.name, ref.key)
        for e in h.known_endpoints:
            self.dispatcher.set_secret(e, h.secret)
        if h.source != "endpoints":
            # Pods: the kubelet's readiness decides; describe only discovers methods.
            for e in h.pool.ready_endpoints[:1]:
                r = await self.dispatcher.describe(e, timeout=2.0)
                if r.ok and isinstance(r.result, dict):
                    h.methods = sorted(m["name"] for m in r.result.get("methods", []))
            h.dirty = True
            self._flush_wake.set()
            return
        results = await asyncio.gather(*[self.dispatcher.describe(e, timeout=2.0)
                                         for e in h.known_endpoints])
        ready = [r.endpoint for r in results if r.ok]
        methods: set[str] = set()
        for r in results:
            if r.ok and isinstance(r.result, dict):
                methods.update(m["name"] for m in r.result.get("methods", []))
        h.methods = sorted(methods)
        h.pool.set_ready(ready, capacity=h.pool.capacity_per_endpoint)
        self._wake_waiters(h)
        h.dirty = True
        self._flush_wake.set()
        self._recheck_schedules(h.namespace, h.name)

    async def _probe_handlers_forever(self, every: float = 10.0) -> None:
        while True:
            await asyncio.sleep(every)
            for h in list(self.handlers.values()):
                if h.spec is not None and h.source == "endpoints":
                    try:
                        await self._refresh_handler(h)
                    except Exception:
                        log.exception("probing handler %s/%s failed", h.namespace, h.name)

    # -- Deployment-backed handlers --------------------------------------------------
    async def _ensure_workload(self, h: HandlerState, body: dict[str, Any]) -> None:
        from ..api.models import HANDLER_LABEL
        from ..workloads import build_deployment

        assert h.spec is not None
        if self.apps is None:
            return
        try:
            if h.spec.template is not None:
                existing = await self.apps.get_deployment(h.namespace, h.name)
                scaling = h.spec.scaling
                replicas = (int(existing["spec"].get("replicas") or 0) if existing else
                            (scaling.min_replicas if scaling else 1))
                dep = await self.apps.apply_deployment(build_deployment(body, replicas))
                h.deployment = h.name
                h.selector = {"matchLabels": {HANDLER_LABEL: h.name}}
            else:
                assert h.spec.deployment_ref is not None
                name = h.spec.deployment_ref.name
                dep = await self.apps.get_deployment(h.namespace, name)
                if dep is None:
                    h.workload_error = (f"Deployment {name!r} (spec.deploymentRef) not found "
                                        f"in {h.namespace}")
                    await self.kube.event(body, "Handler", "Warning", "DeploymentNotFound",
                                          h.workload_error)
                    h.dirty = True
                    self._flush_wake.set()
                    return
                h.deployment = name
                h.selector = dep["spec"].get("selector")
            h.workload_error = None
            if h.replicas is None or h.desired is None:
                h.replicas = int(dep["spec"].get("replicas") or 0)
        except Exception as e:
            log.exception("handler %s/%s: managing its Deployment failed", h.namespace, h.name)
            h.workload_error = f"cannot manage the Deployment: {_api_error_text(e)}"
            await self.kube.event(body, "Handler", "Warning", "WorkloadError", h.workload_error)
        self._reindex(h)

    def on_pod(self, event_type: str, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        key = (meta["namespace"], meta["name"])
        if event_type == "DELETED":
            old = self.pods.pop(key, None)
            pod = old or pod
        else:
            self.pods[key] = pod
        labels = meta.get("labels") or {}
        from ..workloads import selector_matches

        for h in list(self.handlers.values()):
            if h.namespace == meta["namespace"] and h.source != "endpoints" and \
                    selector_matches(h.selector, labels):
                self._reindex(h)
                if event_type == "DELETED":
                    ip = (pod.get("status") or {}).get("podIP")
                    if ip and h.spec is not None:
                        gone = Endpoint(ip, h.spec.port, h.spec.protocol, pod=meta["name"])
                        # Jobs still waiting on the gone pod fail now and are retried.
                        self._spawn(self.dispatcher.forget(gone))

    def _reindex(self, h: HandlerState) -> None:
        """Ready pods of the handler -> its endpoint pool (new jobs go only there)."""
        from ..workloads import pod_endpoint, selector_matches

        if h.spec is None or h.selector is None:
            return
        endpoints, count = [], 0
        for (ns, name), pod in self.pods.items():
            if ns != h.namespace or not selector_matches(
                    h.selector, pod["metadata"].get("labels") or {}):
                continue
            if not pod["metadata"].get("deletionTimestamp"):
                count += 1
            ip = pod_endpoint(pod)
            if ip:
                endpoints.append(Endpoint(ip, h.spec.port, h.spec.protocol, pod=name))
        had_methods = bool(h.methods)
        h.pod_count = count
        h.known_endpoints = endpoints
        h.pool.set_ready(endpoints, capacity=h.pool.capacity_per_endpoint)
        for e in endpoints:
            self.dispatcher.set_secret(e, h.secret)
        self._wake_waiters(h)
        if endpoints and not had_methods:
            self._spawn(self._refresh_handler(h))
        self._recheck_schedules(h.namespace, h.name)

    def schedules_of(self, namespace: str, handler: str) -> list[ScheduleState]:
        """The valid Schedules that target a Handler."""
        return [s for s in self.schedules.values() if s.namespace == namespace
                and s.spec is not None and s.spec.handler == handler]

    def _recheck_schedules(self, namespace: str, handler: str) -> None:
        for s in self.schedules_of(namespace, handler):
            self._check_handler(s)

    def _check_handler(self, state: ScheduleState) -> None:
        """Conditions only the operator can know: does the handler/method exist?"""
        spec = state.spec
        if spec is None:
            return
        h = self.handlers.get((state.namespace, spec.handler))
        if h is None or h.body is None:
            msg = (f"Handler {spec.handler!r} not found in namespace {state.namespace}: "
                   "create it, or fix spec.handler; runs wait for it and are recorded as "
                   "Missed if it does not appear in time")
            self._condition(state, "HandlerReady", False, "HandlerNotFound", msg)
            self._warn(state, "HandlerNotFound", msg)
        elif h.spec is not None and h.spec.methods is not None and \
                spec.method not in h.spec.methods:
            msg = (f"method {spec.method!r} is not in Handler {spec.handler}'s allow-list "
                   f"({', '.join(h.spec.methods)})")
            self._condition(state, "HandlerReady", False, "UnknownMethod", msg)
            self._warn(state, "UnknownMethod", msg)
        elif h.methods and spec.method not in h.methods:
            msg = (f"handler {spec.handler} does not offer method {spec.method!r}; it offers "
                   f"{', '.join(h.methods)}")
            self._condition(state, "HandlerReady", False, "UnknownMethod", msg)
            self._warn(state, "UnknownMethod", msg)
        elif not h.pool.ready_endpoints:
            msg = (f"handler {spec.handler} has no Ready endpoint; runs wait up to "
                   f"{spec.starting_deadline_seconds or NO_ENDPOINT_WAIT:g}s for one")
            self._condition(state, "HandlerReady", False, "NoReadyEndpoint", msg)
            self._warn(state, "NoReadyEndpoint", msg, every=120)
        else:
            self._condition(state, "HandlerReady", True, "EndpointsReady",
                            f"{len(h.pool.ready_endpoints)} Ready endpoint(s)")
        self._mark(state)

    # -- run-now ---------------------------------------------------------------------
    def _check_run_now(self, state: ScheduleState, body: dict[str, Any]) -> None:
        value = (body["metadata"].get("annotations") or {}).get(RUN_NOW_ANNOTATION)
        if not value or value == state.status.get("lastRunNow") or state.spec is None:
            return
        state.status["lastRunNow"] = value
        now = self.clock.now()
        log.info("%s: run-now %r", state.ref, value)
        self._fire(state, now, run_id=d.run_now_id(state.uid, value), policy="Allow")
        self._mark(state)

    # -- recording -------------------------------------------------------------------
    def _record(self, state: ScheduleState, run: Run, outcome: str, *, message: str = "",
                result: DispatchResult | None = None) -> None:
        state.active.pop(run.run_id, None)
        spec = state.spec
        now = self.clock.now()
        status = state.status
        entry = {
            "runId": run.run_id, "scheduledTime": iso(run.slot), "startTime": iso(run.start),
            "finishTime": iso(now), "outcome": outcome, "attempts": run.attempt,
            "endpoint": run.endpoint,
            "latencyMs": round((run.start - run.fire_at).total_seconds() * 1000, 3)
            if run.start else None,
            "durationMs": round((now - run.start).total_seconds() * 1000, 3)
            if run.start else None,
            "message": message[:1024],
            "result": d.truncate_result(result.result) if result and result.ok else None,
        }
        history = [entry, *(status.get("recentRuns") or [])]
        status["recentRuns"] = d.trim_history(
            history, spec.successful_runs_history_limit if spec else 5,
            spec.failed_runs_history_limit if spec else 5)
        counter = {"Succeeded": "succeeded", "Failed": "failed", "TimedOut": "failed",
                   "Skipped": "skipped", "Missed": "missed", "Cancelled": "failed"}[outcome]
        if outcome not in ("Skipped", "Missed"):
            _bump(status, "runs")
        _bump(status, counter)
        status["lastResult"] = outcome
        if outcome == "Succeeded":
            status["lastSuccessfulTime"] = iso(now)
            status["consecutiveFailures"] = 0
        elif outcome in ("Failed", "TimedOut"):
            status["lastFailureTime"] = iso(now)
            status["consecutiveFailures"] = int(status.get("consecutiveFailures") or 0) + 1
            # Folded per interval into one Event with a count (not one per run).
            self._warn(state, f"Run{outcome}", f"run {run.run_id} {outcome.lower()} after "
                       f"{run.attempt} attempt(s): {message}")
            if spec and d.should_pause(status["consecutiveFailures"], spec.pause_after_failures):
                state.paused_generation = state.generation
                self.timers.cancel(state.key)
                msg = (f"paused after {status['consecutiveFailures']} consecutive failed runs "
                       "(pauseAfterFailures); change the spec to resume")
                self._condition(state, "Ready", False, "PausedAfterFailures", msg)
                self._warn(state, "PausedAfterFailures", msg, every=0)
        elif outcome == "Missed":
            self._warn(state, "RunMissed", f"run {run.run_id}: {message}")
        if state.buffered is not None and not state.active:
            buffered, state.buffered = state.buffered, None
            self._start(state, buffered)
        self._mark(state)

    def _record_missed(self, state: ScheduleState, slots: list[dt.datetime], cut: bool) -> None:
        if not slots:
            return
        for slot in slots[-3:]:  # a few entries in history; the counter has them all
            run = Run(d.run_id_for(state.uid, slot), slot, slot, attempt=0)
            entry_msg = "missed while no operator was running (catch-up policy)"
            self._record(state, run, "Missed", message=entry_msg)
        extra = len(slots) - min(3, len(slots))
        if extra:
            _bump(state.status, "missed", extra)
        self._warn(state, "MissedSlots", f"{len(slots)}{'+' if cut else ''} slot(s) missed "
                   "while no operator was running")

    def _condition(self, state: ScheduleState, kind: str, ok: bool, reason: str,
                   message: str) -> None:
        current = state.conditions.get(kind)
        status = "True" if ok else "False"
        if current and current["status"] == status and current["reason"] == reason and \
                current["message"] == message:
            return
        changed = not current or current["status"] != status
        state.conditions[kind] = {
            "type": kind, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": iso(self.clock.now()) if changed or not current
            else current.get("lastTransitionTime"),
            "observedGeneration": state.generation,
        }

    def _warn(self, state: ScheduleState, reason: str, message: str, every: float = 60) -> None:
        self._spawn(self.kube.event(state.body, "Schedule", "Warning", reason, message,
                                    every=every))

    # -- status writes -------------------------------------------------------------
    def _mark(self, state: ScheduleState) -> None:
        state.dirty = True
        self._flush_wake.set()

    def _claim_covers(self, state: ScheduleState) -> bool:
        """Our current claim covers the next slot with half a horizon to spare."""
        claim, slot = state.claim, state.next_slot
        if claim is None or slot is None or claim.get("holder") != self.identity:
            return False
        start, until = parse_iso(claim.get("scheduledTime")), parse_iso(claim.get("until"))
        if start is None or until is None or slot < start:
            return False
        return _later(slot, CLAIM_HORIZON / 2) <= until or (
            state.trigger is not None and next_fire(state.trigger, until) is None)

    def _urgent(self, state: ScheduleState) -> bool:
        return state.next_slot is not None and not self._stopped(state) and \
            not state.claim_lost and not self._claim_covers(state)

    def build_status(self, state: ScheduleState) -> dict[str, Any]:
        spec = state.spec
        status = state.status
        if spec is not None and state.invalid is None:
            if state.paused_generation is not None:
                pass  # Ready=False PausedAfterFailures is already set
            elif spec.suspend:
                self._condition(state, "Ready", True, "Suspended",
                                "suspended: no scheduled runs (run-now still works)")
            elif state.next_slot is None:
                self._condition(state, "Ready", True, "NoMoreRuns",
                                "the trigger has no future fire time")
            else:
                self._condition(state, "Ready", True, "Scheduled",
                                f"next run at {iso(state.next_slot)}")
        if spec is not None:
            self._condition(state, "Suspended", spec.suspend,
                            "Suspended" if spec.suspend else "Active",
                            "spec.suspend is true" if spec.suspend else "firing on schedule")
        claim = None
        if state.next_slot is not None and not self._stopped(state) and not state.claim_lost:
            claim = state.claim
            if not self._claim_covers(state):
                until = state.next_slot
                assert state.trigger is not None
                while True:  # the last slot within the horizon
                    nxt = next_fire(state.trigger, until)
                    if nxt is None or nxt > _later(state.next_slot, CLAIM_HORIZON):
                        break
                    until = nxt
                claim = {"holder": self.identity,
                         "runId": d.run_id_for(state.uid, state.next_slot),
                         "scheduledTime": iso(state.next_slot), "until": iso(until),
                         "expires": iso(_later(until, CLAIM_GRACE))}
            state.claim = claim
        trigger = state.trigger.description if state.trigger else None
        if state.trigger and state.trigger.kind == "interval":
            trigger = f"every {state.trigger.expression}"
        return {
            "conditions": list(state.conditions.values()),
            "observedGeneration": state.generation,
            "trigger": trigger,
            "nextRunTime": iso(state.next_slot) if claim else None,
            "lastScheduleTime": status.get("lastScheduleTime"),
            "lastSuccessfulTime": status.get("lastSuccessfulTime"),
            "lastFailureTime": status.get("lastFailureTime"),
            "active": [{"runId": r.run_id, "scheduledTime": iso(r.slot),
                        "startTime": iso(r.start), "attempt": r.attempt,
                        "endpoint": r.endpoint} for r in state.active.values()],
            "recentRuns": status.get("recentRuns") or [],
            "counters": {k: int((status.get("counters") or {}).get(k) or 0) for k in
                         ("runs", "succeeded", "failed", "retried", "skipped", "missed")},
            "claim": claim,
            "lastRunNow": status.get("lastRunNow"),
            "consecutiveFailures": int(status.get("consecutiveFailures") or 0),
            "lastResult": status.get("lastResult"),
        }

    async def _flusher(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._flush_wake.wait()
            self._flush_wake.clear()
            await asyncio.sleep(FLUSH_INTERVAL)  # coalesce what changes meanwhile
            now = loop.time()
            waiting = False
            for state in list(self.schedules.values()):
                if state.dirty and not state.writing:
                    if now - state.last_write_at < MIN_WRITE_INTERVAL and \
                            not self._urgent(state):
                        waiting = True
                        continue
                    state.writing = True
                    self._spawn(self._write_schedule(state))
            if waiting:
                self._flush_wake.set()
            for h in list(self.handlers.values()):
                if h.dirty and not h.writing and h.body is not None:
                    h.writing = True
                    self._spawn(self._write_handler(h))

    async def _write_schedule(self, state: ScheduleState) -> None:
        try:
            for _ in range(5):
                state.dirty = False
                status = self.build_status(state)
                if status == state.last_written:
                    return  # nothing new (e.g. a periodic handler check): no write
                try:
                    state.resource_version = await self.kube.patch_status(
                        "schedules", state.namespace, state.name, state.resource_version,
                        status)
                    claim = status.get("claim")
                    state.claim_until = parse_iso(claim["until"]) if claim else None
                    state.last_written = status
                    state.last_write_at = asyncio.get_running_loop().time()
                    return
                except Conflict:
                    fresh = await self.kube.get("schedules", state.namespace, state.name)
                    state.resource_version = fresh["metadata"]["resourceVersion"]
                    other = (fresh.get("status") or {}).get("claim") or {}
                    expires = parse_iso(other.get("expires"))
                    other_until = parse_iso(other.get("until"))
                    if other.get("holder") not in (None, self.identity) and expires and \
                            expires > self.clock.now() and state.next_slot is not None and \
                            other_until is not None and state.next_slot <= other_until:
                        log.warning("%s: slot %s is claimed by %s", state.ref,
                                    other.get("scheduledTime"), other.get("holder"))
                        state.claim_lost = True
                    state.dirty = True
            log.warning("%s: status write kept conflicting; will retry", state.ref)
        except NotFound:
            self.delete_schedule(state.key)
        except Exception:
            log.exception("%s: status write failed", state.ref)
            state.dirty = True
            await asyncio.sleep(1)
        finally:
            state.writing = False
            if state.dirty:
                self._flush_wake.set()

    async def _write_handler(self, h: HandlerState) -> None:
        try:
            h.dirty = False
            status = self.build_handler_status(h)
            if status == h.last_status:
                return
            await self.kube.patch_status("handlers", h.namespace, h.name, None, status)
            h.last_status = status
        except Exception as e:  # noqa: BLE001
            log.warning("handler %s/%s status write failed: %s", h.namespace, h.name, e)
        finally:
            h.writing = False

    def build_handler_status(self, h: HandlerState) -> dict[str, Any]:
        ready = [str(e) if e.pod else f"{e.host}:{e.port}" for e in h.pool.ready_endpoints]
        known = len(h.known_endpoints)
        available = bool(ready)
        now = iso(self.clock.now())
        previous = {c["type"]: c for c in h.last_status.get("conditions", [])}

        def cond(kind: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
            status = "True" if ok else "False"
            prev = previous.get(kind)
            since = prev["lastTransitionTime"] if prev and prev["status"] == status else now
            return {"type": kind, "status": status, "reason": reason, "message": message,
                    "lastTransitionTime": since}

        if h.invalid is not None:
            return {
                "conditions": [cond("Available", False, "InvalidHandler", h.invalid),
                               cond("Degraded", True, "InvalidHandler", h.invalid)],
                "readyEndpoints": [], "ready": "0/0", "methods": [], "inFlight": 0,
                "queued": h.queued,
            }
        if h.source == "endpoints":
            return {
                "conditions": [
                    cond("Available", available, "EndpointsReady" if available
                         else "NoEndpoints", f"{len(ready)}/{known} endpoint(s) answer describe"),
                    cond("Degraded", len(ready) < known, "EndpointsDown" if len(ready) < known
                         else "AllReady", f"{known - len(ready)} endpoint(s) not answering"),
                ],
                "readyEndpoints": ready,
                "ready": f"{len(ready)}/{known}",
                "methods": h.methods,
                "inFlight": h.pool.in_flight,
                "queued": h.queued,
            }
        desired = h.desired if h.desired is not None else h.replicas
        progressing = desired is not None and len(ready) != desired
        return {
            "conditions": [
                cond("Available", available, "PodsReady" if available else "NoReadyPods",
                     f"{len(ready)} Ready pod(s) of Deployment {h.deployment}"
                     if h.workload_error is None else h.workload_error),
                cond("Progressing", progressing, "Scaling" if progressing else "Stable",
                     f"{len(ready)}/{desired} replicas Ready"),
                cond("Degraded", h.workload_error is not None,
                     "WorkloadError" if h.workload_error else "Healthy",
                     h.workload_error or "Deployment managed"),
            ],
            "readyEndpoints": ready,
            "ready": f"{len(ready)}/{desired if desired is not None else h.pod_count}",
            "methods": h.methods,
            "inFlight": h.pool.in_flight,
            "queued": h.queued,
            "replicas": h.pod_count,
            "readyReplicas": len(ready),
            "desiredReplicas": desired,
            "lastScaleTime": iso(h.last_scale_time),
        }


def _later(t: dt.datetime, delta: dt.timedelta) -> dt.datetime:
    """``t + delta``, saturating at the end of time (an `at` in year 9999 is legal)."""
    try:
        return t + delta
    except OverflowError:
        return dt.datetime.max.replace(tzinfo=UTC)


def _bump(status: dict[str, Any], counter: str, by: int = 1) -> None:
    counters = status.setdefault("counters", {})
    counters[counter] = int(counters.get(counter) or 0) + by


def _endpoint(address: str, protocol: str) -> Endpoint:
    host, _, port = address.rpartition(":")
    return Endpoint(host, int(port), protocol)


def _validation_message(e: Exception) -> str:
    if isinstance(e, ValidationError):
        parts = []
        for err in e.errors()[:5]:
            where = ".".join(str(x) for x in err["loc"])
            parts.append(f"spec.{where}: {err['msg'].removeprefix('Value error, ')}")
        return "invalid spec: " + "; ".join(parts)
    return str(e)


def _api_error_text(e: Exception) -> str:
    """What a person can act on: the API server's message, never a bare KeyError."""
    status, reason = getattr(e, "status", None), getattr(e, "reason", None)
    body = getattr(e, "body", None)
    if status is not None:
        detail = ""
        if isinstance(body, str | bytes):
            try:
                detail = str(json.loads(body).get("message") or "")
            except (ValueError, AttributeError):
                detail = ""
        return f"the API server answered {status} {reason or ''}: {detail}".strip(": ")
    return f"operator error ({type(e).__name__}); see the operator log"
