"""One Schedule as the engine sees it: its object, its conditions, its status writes.

Watch events arrive here (level-triggered: every event carries the whole object);
a new generation re-parses the spec and re-arms, a new run-now value fires once.
The runner is also the status writer's target for the Schedule: it builds the
status at write time (typed, via ``status``), decides which claim goes with it
(via ``claims``) and learns from the write's outcome whether the claim holds.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from ..api.models import RUN_NOW_ANNOTATION, ActiveRun, Claim, ScheduleStatus
from ..timing import Trigger
from . import claims, status
from .compact import compact
from .context import Context
from .firing import Firing
from .handlers import HandlerRegistry
from .runs import NO_ENDPOINT_WAIT, RunExecutor
from .schedule import Parsed, ScheduleState, parse_schedule, trigger_text
from .times import iso, iso_or_none, later
from .writer import MIN_WRITE_INTERVAL

# A frequent Schedule's status may lag its runs by up to this (see min_interval).
FREQUENT_MAX_LAG = 4.0
log = logging.getLogger("schedulezero.schedules")


class ScheduleRunner:
    plural = "schedules"
    @property
    def min_interval(self) -> float:
        """Seconds between two status writes of this Schedule (urgent claim writes aside).

        A Schedule firing every few seconds is written at most every second run (≤ 0.5
        writes per run) but never lags more than ``FREQUENT_MAX_LAG``; at hundreds of
        fires a second the API server is the bottleneck, and a run's record can wait.
        The price: after a crash, up to that many seconds of runs were not recorded
        and are resent by the successor (same run ids: the SDK dedupes them).
        """
        gap = self.s.gap
        if gap is None or gap > FREQUENT_MAX_LAG:
            return MIN_WRITE_INTERVAL
        return max(MIN_WRITE_INTERVAL, min(2 * gap, FREQUENT_MAX_LAG))

    def __init__(self, ctx: Context, handlers: HandlerRegistry, executor: RunExecutor,
                 body: dict[str, Any], on_gone: Callable[[tuple[str, str]], None]) -> None:
        self.ctx = ctx
        self.handlers = handlers
        self._on_gone = on_gone
        # (next slot, claim, trigger, answer) of the last urgent() (see there)
        self._urgent_memo: tuple[dt.datetime, Claim | None, Trigger, dt.timedelta,
                                 bool] | None = None
        meta = body["metadata"]
        record = compact(status.load(ScheduleStatus, body.get("status")))
        self.s = s = ScheduleState(meta["namespace"], meta["name"], meta["uid"],
                                   kept_body(body), record,
                                   resource_version=meta.get("resourceVersion"))
        if record.claim is not None and record.claim.holder != ctx.identity:
            # A predecessor's (restart, failover): the Lease already says it is gone.
            s.inherited_claim = record.claim
        self.firing = Firing(ctx, s, executor, changed=self.changed)
        ctx.writer.track(self, status.document(record))
        self._configure(body, int(meta.get("generation") or 0), first=True)
        self.firing.run_now(_run_now_value(body))
        # What the stored status says beyond the record is rebuilt at every write
        # (conditions, claim, active runs, trigger, next run): not kept twice.
        status.drop_derived(record)

    @property
    def namespace(self) -> str:
        return self.s.namespace

    @property
    def name(self) -> str:
        return self.s.name

    def changed(self) -> None:
        self.ctx.writer.mark(self)

    def warn(self, reason: str, message: str, every: float = 60) -> None:
        self.firing.warn(reason, message, every)

    # -- watch events ---------------------------------------------------------------
    def upsert(self, body: dict[str, Any]) -> None:
        s = self.s
        meta = body["metadata"]
        generation = int(meta.get("generation") or 0)
        s.body = kept_body(body)
        if generation != s.generation:
            s.resource_version = meta.get("resourceVersion")
            self._configure(body, generation, first=False)
        self.firing.run_now(_run_now_value(body))

    def delete(self, recall_held: bool = False) -> None:
        """Stop everything here. ``recall_held``: the Schedule itself is gone, so runs
        sent ahead of a slot still to come are cancelled at the handler too (they never
        start). Not on a hand-over: the new holder resumes them under the same run ids."""
        s = self.s
        s.deleted = True
        self.ctx.timers.cancel(s.key)
        now = self.ctx.clock.now()
        for run in s.active.values():
            if recall_held and run.held and run.fire_at > now:
                self.firing.cancel(run)  # the handler is told too: it never starts
            elif run.task is not None:
                run.task.cancel()
        self.ctx.writer.forget(self)
        s.settle_claim()

    def _configure(self, body: dict[str, Any], generation: int, first: bool) -> None:
        s = self.s
        s.generation = generation
        self.ctx.timers.cancel(s.key)
        now = self.ctx.clock.now()
        parsed = parse_schedule(body, now)
        if not isinstance(parsed, Parsed):
            s.spec, s.trigger, s.invalid = None, None, parsed
            s.set_condition("Ready", False, "InvalidSchedule", parsed, now)
            self.warn("InvalidSchedule", parsed)
            self.changed()
            return
        s.spec, s.trigger, s.invalid = parsed.spec, parsed.trigger, None
        if s.paused_generation is not None and s.paused_generation != generation:
            s.paused_generation = None  # a spec change resumes a paused Schedule
            s.record.consecutive_failures = 0
        if first:
            self.firing.resume()
        else:
            self.firing.recall_held(now)
        self.check_handler()
        self.firing.arm(now, catching_up=first)

    # -- what only the operator can check ------------------------------------------------
    def check_handler(self) -> None:
        """HandlerReady: does the handler exist, offer the method, have a Ready endpoint?"""
        s, spec = self.s, self.s.spec
        if spec is None:
            return
        now = self.ctx.clock.now()
        h = self.handlers.get(s.namespace, spec.handler)
        if h is None or h.body is None:
            msg = (f"Handler {spec.handler!r} not found in namespace {s.namespace}: "
                   "create it, or fix spec.handler; runs wait for it and are recorded as "
                   "Missed if it does not appear in time")
            changed = s.set_condition("HandlerReady", False, "HandlerNotFound", msg, now)
            self.warn("HandlerNotFound", msg)
        elif h.spec is not None and h.spec.methods is not None and \
                spec.method not in h.spec.methods:
            msg = (f"method {spec.method!r} is not in Handler {spec.handler}'s allow-list "
                   f"({', '.join(h.spec.methods)}): runs are recorded Failed without being "
                   "sent; fix spec.method or the Handler's spec.methods")
            changed = s.set_condition("HandlerReady", False, "UnknownMethod", msg, now)
            self.warn("UnknownMethod", msg)
        elif h.methods and spec.method not in h.methods:
            msg = (f"handler {spec.handler} does not offer method {spec.method!r}; it offers "
                   f"{', '.join(h.methods)}")
            changed = s.set_condition("HandlerReady", False, "UnknownMethod", msg, now)
            self.warn("UnknownMethod", msg)
        elif not h.queue.ready:
            why = f" ({status.reasons_text(h.down)})" if h.down else ""
            msg = (f"handler {spec.handler} has no Ready endpoint{why}; runs wait up to "
                   f"{spec.starting_deadline_seconds or NO_ENDPOINT_WAIT:g}s for one")
            changed = s.set_condition("HandlerReady", False, "NoReadyEndpoint", msg, now)
            self.warn("NoReadyEndpoint", msg, every=120)
        else:
            changed = s.set_condition("HandlerReady", True, "EndpointsReady",
                            f"{len(h.queue.ready)} Ready endpoint(s)", now)
        if changed:
            # Not on every check: probes re-check every Schedule of a Handler every
            # 10 s, and rebuilding 10,000 unchanged statuses to find nothing to write
            # was most of an idle operator's CPU.
            self.changed()

    # -- the status writer's target ----------------------------------------------------
    def deferred(self) -> bool:
        """A run sent ahead has not started yet (or only just): its record follows, and
        its start and the next slot's claim go out with it (at most ~1 s later). Not
        when the stored claim no longer covers the next slot: that write is due now."""
        s = self.s
        after = s.write_after
        if after is None or self.ctx.clock.now() >= after:
            return False
        return s.next_slot is not None and s.claim_until is not None \
            and s.next_slot <= s.claim_until

    def urgent(self) -> bool:
        """The claim must be extended before the next slot: write within the interval.

        Asked of every dirty Schedule on every flush (5 a second), so the answer is kept
        until the next slot, the claim or the trigger changes: it depends on nothing else.
        """
        s = self.s
        if s.next_slot is None or s.trigger is None or s.stopped or s.claim_lost:
            return False
        horizon = self._horizon()
        memo = self._urgent_memo
        if memo is not None and memo[0] == s.next_slot and memo[1] is s.claim and \
                memo[2] is s.trigger and memo[3] == horizon:
            return memo[4]
        answer = not claims.covers(s.claim, self.ctx.identity, s.next_slot, s.trigger,
                                   horizon)
        self._urgent_memo = (s.next_slot, s.claim, s.trigger, horizon, answer)
        return answer

    def _horizon(self) -> dt.timedelta:
        """How far ahead claims reach now (longer when the write budget is tight)."""
        return self.ctx.writer.claim_horizon(claims.CLAIM_HORIZON)

    def precondition(self) -> str | None:
        return self.s.resource_version

    def status(self) -> ScheduleStatus:
        s = self.s
        self._refresh_ready()
        claim = self._claim()
        return status.schedule_status(
            s.record, conditions=list(s.conditions.values()), generation=s.generation,
            trigger=trigger_text(s.trigger), next_run=s.next_slot if claim else None,
            active=[ActiveRun(run_id=r.run_id, scheduled_time=iso(r.slot),
                              start_time=iso_or_none(r.start), attempt=r.attempt,
                              endpoint=r.endpoint) for r in s.active.values()],
            claim=claim)

    def _refresh_ready(self) -> None:
        s, spec, now = self.s, self.s.spec, self.ctx.clock.now()
        if spec is None:
            return  # Ready=False InvalidSchedule is set
        if s.paused_generation is not None:
            pass  # Ready=False PausedAfterFailures is set
        elif spec.suspend:
            s.set_condition("Ready", True, "Suspended",
                            "suspended: no scheduled runs (run-now still works)", now)
        elif s.next_slot is None:
            s.set_condition("Ready", True, "NoMoreRuns", "the trigger has no future fire time",
                            now)
        else:
            s.set_condition("Ready", True, "Scheduled", f"next run at {iso(s.next_slot)}", now)
        s.set_condition("Suspended", spec.suspend, "Suspended" if spec.suspend else "Active",
                        "spec.suspend is true" if spec.suspend else "firing on schedule", now)

    def _claim(self) -> Claim | None:
        """The claim to store: ours (extended when needed), a live holder's, or none."""
        s = self.s
        if s.next_slot is None or s.stopped or s.trigger is None:
            s.claim = None
            return None
        if s.claim_lost:
            return s.foreign_claim  # leave the holder's claim as it is
        # Extended in this write if it would need an urgent write of its own before the
        # next regular one: a frequent Schedule then pays no separate claim writes.
        soon = later(s.next_slot, dt.timedelta(
            seconds=max(self.min_interval, self.ctx.writer.lag)))
        horizon = self._horizon()
        if not claims.covers(s.claim, self.ctx.identity, soon, s.trigger, horizon):
            s.claim = claims.new_claim(self.ctx.identity, s.uid, s.next_slot, s.trigger,
                                       horizon)
        return s.claim

    def written(self, model: BaseModel, resource_version: str | None) -> None:
        assert isinstance(model, ScheduleStatus)
        s = self.s
        if resource_version is not None:
            s.resource_version = resource_version
        ours = model.claim is not None and model.claim.holder == self.ctx.identity
        s.claim_until = claims.claim_until(model.claim) if ours and model.claim else None
        s.settle_claim()

    def conflicted(self, fresh: dict[str, Any]) -> None:
        """Someone wrote since we read: if it is another operator's live claim, respect it.

        A claim that was already there at first sight is a predecessor's and is taken
        over; one that appeared since was written by an operator that is running now.
        """
        s = self.s
        s.resource_version = fresh["metadata"]["resourceVersion"]
        other = status.load(ScheduleStatus, fresh.get("status")).claim
        if other is None or other.holder == self.ctx.identity or other == s.inherited_claim \
                or self.ctx.leased:
            s.foreign_claim = None
        else:
            s.foreign_claim = other
            if s.next_slot is not None and claims.blocks(other, self.ctx.identity, s.next_slot,
                                                         self.ctx.clock.now()):
                log.warning("%s: slot %s is claimed by %s", s.ref, other.scheduled_time,
                            other.holder)
                s.claim_lost = True
        s.settle_claim()

    def gone(self) -> None:
        self._on_gone(self.s.key)

    def handover_body(self) -> dict[str, Any]:
        """The object as a replica that gains its bucket starts from: as last seen, with
        the status as this runner would write it now."""
        return {**self.s.body, "status": status.document(self.status())}


# kubectl's copy of the whole object as last applied (`kubectl apply`, and GitOps
# tools that apply client-side): as large as the spec again, read by kubectl only.
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def kept_body(body: dict[str, Any], *, with_status: bool = False) -> dict[str, Any]:
    """An object as the engine keeps it between watch events.

    Not ``metadata.managedFields``, the API server's record of which client set which
    field (a nested dict per field, per manager), nor kubectl's last-applied copy of
    the whole object: nothing here reads them. In ``bench/fleet.py``'s fleet (one
    creating client, one status manager, no kubectl) dropping them was not measurable;
    objects applied by kubectl or GitOps tools, or touched by several managers, carry
    much more of both. And, for a runner, not the status: it is in its record.
    Shallow: the spec and the remaining metadata are the watch event's own dicts.
    """
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations")
    kept_meta = {k: v for k, v in meta.items() if k != "managedFields"}
    if annotations and LAST_APPLIED in annotations:
        kept_meta["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
    kept = {k: v for k, v in body.items() if k != "metadata"
            and (with_status or k != "status")}
    kept["metadata"] = kept_meta
    return kept


def _run_now_value(body: dict[str, Any]) -> str | None:
    value = (body["metadata"].get("annotations") or {}).get(RUN_NOW_ANNOTATION)
    return str(value) if value else None
