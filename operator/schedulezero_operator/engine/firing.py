"""One Schedule's run state machine: slot -> claim check -> run -> record.

- **Arming**: the next slot gets a timer (plus its deterministic jitter); on first
  sight (operator start) missed slots are handled first, per ``catchUp``.
- **Firing**: at the timer, if our claim of the slot is confirmed, the run is
  started at once; the next slot is computed only afterwards (a continuation
  of the timer), so no schedule math sits between the clock and the dispatch.
  A slot whose claim has not landed yet waits for it (late rather than lost); a
  slot another operator holds is not fired.
- **Concurrency policy** with runs still active: Allow runs both, Forbid
  records the new one Skipped, Replace cancels the old ones, BufferOne keeps
  the newest one waiting.
- **Recording**: history, counters and the failure streak, Warning Events for
  failures, and the circuit breaker (``pauseAfterFailures``).
- **Restart**: runs left active by a previous operator resume with the same run
  id and the next attempt (a handler that still runs one joins it).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable

from ..timing import (
    catch_up,
    jitter_offset,
    next_fire,
    parse_duration,
    slots_between,
)
from . import claims, decisions, problems, status
from .context import Context
from .runs import Fenced, Finished, RunExecutor
from .schedule import Run, ScheduleState
from .status import Outcome
from .timers import Continuation
from .times import iso, parse_iso
from .writer import FLUSH_INTERVAL

log = logging.getLogger("schedulezero.firing")
# A held run's start is written at the earliest this long after it (see write_after):
# the writer's coalescing window, as for a run dispatched at its slot.
WRITE_AFTER_START = FLUSH_INTERVAL


class Firing:
    def __init__(self, ctx: Context, state: ScheduleState, executor: RunExecutor,
                 changed: Callable[[], None]) -> None:
        self.ctx = ctx
        self.s = state
        self.executor = executor
        self.changed = changed  # the status changed: have it written
        self._armed = 0  # bumped by every (re-)arming; stale continuations see it

    def warn(self, reason: str, message: str, every: float = 60) -> None:
        self.ctx.event(self.s.body, "Schedule", "Warning", reason, message, every=every)

    # -- arming ------------------------------------------------------------------------
    def arm(self, now: dt.datetime, catching_up: bool) -> None:
        """Set the next timer; on first sight, first handle the slots missed meanwhile.

        Time spent suspended or paused is not caught up.
        """
        s = self.s
        assert s.spec is not None and s.trigger is not None
        last = parse_iso(s.record.last_schedule_time)
        if catching_up and not s.stopped:
            created = parse_iso(s.body["metadata"].get("creationTimestamp")) or now
            cap = max(s.spec.catch_up.max_runs, 1) * 10 + 10
            slots, cut = slots_between(s.trigger, last or created, now, cap=cap)
            if slots:
                # The slots a predecessor claimed it may have fired without recording
                # them yet (status lags runs by up to the writer's lag): not missed
                # while no operator ran, so resent whatever the policy, and never
                # recorded Missed for a run that ran.
                handed = claims.claim_until(s.inherited_claim) if s.inherited_claim else None
                maybe_ran = [x for x in slots if handed is not None and x <= handed]
                plan = catch_up(slots[len(maybe_ran):], cut, now,
                                policy=s.spec.catch_up.policy,
                                max_runs=s.spec.catch_up.max_runs,
                                starting_deadline=s.spec.starting_deadline_seconds)
                self.record_missed(plan.missed, cut)
                for slot in maybe_ran + plan.run:
                    # A predecessor may have dispatched it without recording it: to
                    # its home endpoint whatever the load, where the SDK dedupes.
                    self.fire(slot, sticky=True)
                last = slots[-1]
        self.set_next(next_fire(s.trigger, max(now, last) if last else now))

    def set_next(self, slot: dt.datetime | None) -> None:
        s = self.s
        self._armed += 1
        if slot is not None and s.next_slot is not None and slot > s.next_slot:
            s.gap = (slot - s.next_slot).total_seconds()
        s.next_slot = slot
        s.claim_lost = slot is not None and not self.ctx.leased and claims.blocks(
            s.foreign_claim, self.ctx.identity, slot, self.ctx.clock.now())
        if slot is None or s.stopped:
            self.ctx.timers.cancel(s.key)
            self.changed()
            return
        assert s.spec is not None and s.trigger is not None
        fire_at = slot
        if s.spec.jitter:
            following = next_fire(s.trigger, slot)
            gap = (following - slot).total_seconds() if following else None
            jitter = parse_duration(s.spec.jitter)
            fire_at = slot + dt.timedelta(seconds=jitter_offset(
                decisions.run_id_for(s.uid, slot), jitter, gap))
            self._check_jitter(jitter, gap)
        lead_at = fire_at - dt.timedelta(seconds=self.ctx.dispatch_lead)
        if self.ctx.dispatch_lead and fire_at > self.ctx.clock.now():
            self.ctx.timers.schedule(s.key, lead_at, lambda: self.on_lead(slot, fire_at))
        else:
            self.ctx.timers.schedule(s.key, fire_at, lambda: self.on_timer(slot, fire_at))
        self.changed()  # the claim of `slot` goes out with the previous run's record

    def _check_jitter(self, jitter: float, gap: float | None) -> None:
        """Jitter is clamped to half the gap to the next fire (so runs keep their order).

        Clamping, not refusing: the Schedule still fires, and the condition plus a
        Warning Event tell the user the delay they asked for is not the one applied.
        """
        s = self.s
        assert s.spec is not None
        now = self.ctx.clock.now()
        if gap is not None and jitter > gap / 2:
            msg = (f"spec.jitter {s.spec.jitter} is more than half the {gap:g}s gap to the "
                   f"next fire; each fire is delayed by at most {gap / 2:g}s instead")
            s.set_condition("JitterApplied", False, "JitterClamped", msg, now)
            self.warn("JitterClamped", msg, every=3600)
        else:
            s.set_condition("JitterApplied", True, "WithinGap",
                            f"fires are delayed by up to {s.spec.jitter}", now)

    # -- the firing instant --------------------------------------------------------------
    def on_lead(self, slot: dt.datetime, fire_at: dt.datetime) -> Continuation | None:
        """``dispatch_lead`` before ``fire_at``: dispatch the run now, held until then.

        Only when nothing can change the decision by ``fire_at``: we may act for the
        Schedule (fence; without Leases, our claim covers the slot), and the
        concurrency policy lets it run whatever happens meanwhile (Allow, or no run
        active or buffered). Otherwise the slot waits for its own instant
        (``on_timer``), where the usual checks apply. A held run is a run: a spec
        change, suspension or pause before its slot withdraws it (``recall_held``).

        Only for a burst: when fewer than ``lead_min_batch`` lead timers come due together
        (they share the instant ``dispatch_lead`` before their slot), sending at the slot
        costs a few ms, and holding would only widen the window in which a handler cut
        off from the operator runs a job whose reply is lost (then retried elsewhere:
        twice). A burst of hundreds is worth that: delivered at the slot, its last runs
        started hundreds of ms late.
        """
        s = self.s
        if s.deleted or s.trigger is None or s.spec is None:
            return None
        leadable = (self.ctx.timers.batch >= self.ctx.lead_min_batch
                    and not s.claim_lost and self.ctx.fence(s.namespace, s.name)
                    and (self.ctx.leased or (s.claim_until is not None
                                             and slot <= s.claim_until))
                    and (s.spec.concurrency_policy == "Allow"
                         or (not s.active and s.buffered is None)))
        if not leadable:
            self.ctx.timers.schedule(s.key, fire_at, lambda: self.on_timer(slot, fire_at))
            return None
        self.fire(slot, fire_at=fire_at, held=True)
        armed = self._armed
        return lambda: self._advance(slot, armed)

    def on_timer(self, slot: dt.datetime, fire_at: dt.datetime) -> Continuation | None:
        """Start the run now; the next slot is the continuation's job (after dispatch)."""
        s = self.s
        if s.deleted or s.trigger is None:
            return None
        if s.claim_lost:
            log.info("%s: slot %s claimed by another operator; not firing", s.ref, iso(slot))
        elif not self.ctx.fence(s.namespace, s.name):
            self.ctx.tasks.spawn(self._fire_when_fenced_in(slot, fire_at))
            return None
        elif not self.ctx.leased and (s.claim_until is None or slot > s.claim_until):
            # Our claim write has not landed yet (right after start-up): wait for it.
            # Not with Leases: the fence already says no other operator acts for this
            # Schedule, so a takeover or a large fleet's first claims (a full pass of
            # the write budget) never hold slots back.
            self.ctx.tasks.spawn(self._fire_when_claimed(slot, fire_at))
            return None
        else:
            self.fire(slot, fire_at=fire_at)
        armed = self._armed
        return lambda: self._advance(slot, armed)

    def _advance(self, slot: dt.datetime, armed: int) -> None:
        """Arm the slot after ``slot``, unless something re-armed the Schedule meanwhile."""
        s = self.s
        if not s.deleted and s.trigger is not None and armed == self._armed:
            self.set_next(next_fire(s.trigger, slot))

    async def _fire_when_fenced_in(self, slot: dt.datetime, fire_at: dt.datetime) -> None:
        """Our fence lapsed (a slow Lease renewal): late rather than lost, again."""
        s = self.s
        armed = self._armed
        if await self.ctx.fence_returns(s.namespace, s.name) and not s.deleted:
            self.fire(slot, fire_at=fire_at)  # says "not firing" if the wait ran out
            await asyncio.sleep(0)
        self._advance(slot, armed)

    async def _fire_when_claimed(self, slot: dt.datetime, fire_at: dt.datetime) -> None:
        """Late rather than lost: wait for our claim to land, at most the claim grace
        plus the time the writer needs to write every object once on its budget (the
        first claims of a large fleet after a start take that long)."""
        s = self.s
        armed = self._armed
        deadline = self.ctx.clock.now() + claims.CLAIM_GRACE + dt.timedelta(
            seconds=self.ctx.writer.full_pass_seconds())
        while not self._claim_settled(slot):
            left = (deadline - self.ctx.clock.now()).total_seconds()
            if left <= 0:
                break
            if s.claim_settled is None:
                s.claim_settled = asyncio.Event()
            try:
                await asyncio.wait_for(s.claim_settled.wait(), min(left, 1.0))
            except TimeoutError:
                pass
        if s.claim_until is not None and slot <= s.claim_until and not s.deleted \
                and not s.claim_lost:
            await self.ctx.fence_returns(s.namespace, s.name)
            if not s.deleted:
                self.fire(slot, fire_at=fire_at)
                await asyncio.sleep(0)  # dispatch before the next-slot math
        elif not s.deleted and not s.claim_lost:
            run = Run(decisions.run_id_for(s.uid, slot), slot, fire_at, attempt=0)
            self.record(run, Outcome.MISSED, "its claim could not be written to status in "
                        "time (status writes failing or far behind); not fired")
        self._advance(slot, armed)

    def _claim_settled(self, slot: dt.datetime) -> bool:
        s = self.s
        return (s.claim_until is not None and slot <= s.claim_until) or s.claim_lost \
            or s.deleted

    # -- runs --------------------------------------------------------------------------
    def fire(self, slot: dt.datetime, *, fire_at: dt.datetime | None = None,
             run_id: str | None = None, policy: str | None = None,
             sticky: bool = False, held: bool = False) -> None:
        """A slot (or a run-now) is due: apply the concurrency policy and start the run."""
        s = self.s
        assert s.spec is not None
        if not self.ctx.fence(s.namespace, s.name):
            log.warning("%s: not firing %s: this operator no longer holds the Schedule "
                        "(lease lost or expired)", s.ref, iso(slot))
            return
        run = Run(run_id or decisions.run_id_for(s.uid, slot), slot, fire_at or slot,
                  sticky=sticky, held=held, last_before=s.record.last_schedule_time)
        if held and (s.write_after is None or s.write_after <= self.ctx.clock.now()):
            # Not pushed further by the next held run while one deferral is on: a
            # Schedule firing every second would never be written.
            s.write_after = run.fire_at + dt.timedelta(seconds=WRITE_AFTER_START)
        if run_id is None:
            s.record.last_schedule_time = iso(slot)
        if run.run_id in s.active:
            return  # already running (e.g. a catch-up of a slot being resumed)
        action = decisions.on_slot_due(policy or s.spec.concurrency_policy, len(s.active))
        if action == "skip":
            self.record(run, Outcome.SKIPPED,
                        "previous run still active (concurrencyPolicy Forbid)")
            return
        if action == "replace":
            for other in list(s.active.values()):
                self.cancel(other)
        if action == "buffer":
            if s.buffered is not None:
                self.record(s.buffered, Outcome.SKIPPED,
                            "replaced by a newer buffered run (BufferOne)")
            s.buffered = run
            self.changed()
            return
        self.start(run)

    def start(self, run: Run) -> None:
        self.s.active[run.run_id] = run
        run.task = self.ctx.tasks.spawn(self._run(run))
        self.changed()

    def recall_held(self, now: dt.datetime) -> None:
        """The spec changed (or the Schedule was suspended or paused): withdraw the runs
        sent ahead whose start is still to come, so what fires from now on follows it.

        They never started: cancelled at the handler, dropped without a record, and
        ``lastScheduleTime`` goes back to before them, so re-arming finds their slots
        again if the new spec still has them.
        """
        s = self.s
        recalled = sorted((r for r in s.active.values() if r.held and r.fire_at > now),
                          key=lambda r: r.slot)
        for run in recalled:
            run.recalled = True
            self.cancel(run)
        if recalled:
            s.record.last_schedule_time = recalled[0].last_before
            log.info("%s: spec changed; %d run(s) sent ahead of their slot withdrawn",
                     s.ref, len(recalled))

    def cancel(self, run: Run) -> None:
        if run.task is not None:
            run.task.cancel()
        if run.current is not None:
            spec = self.s.spec
            h = self.executor.handlers.get(self.s.namespace, spec.handler) if spec else None
            self.ctx.tasks.spawn(self.ctx.dispatcher.cancel(
                run.current, run.run_id, secret=h.secret if h is not None else None))

    async def _run(self, run: Run) -> None:
        s = self.s
        assert s.spec is not None
        try:
            finished = await self.executor.execute(
                run, s.spec, namespace=s.namespace, name=s.name, ref=s.ref,
                started=self.changed,
                retrying=self._retrying)
        except Fenced:
            log.warning("%s: run %s left to the new holder (lease lost)", s.ref, run.run_id)
            return
        except asyncio.CancelledError:
            if s.deleted:
                return
            if run.recalled:
                s.active.pop(run.run_id, None)
                self.changed()
                return
            finished = Finished(Outcome.CANCELLED,
                                "replaced by a newer run (concurrencyPolicy Replace)")
        except Exception as e:
            log.exception("%s: run %s crashed", s.ref, run.run_id)
            # The traceback is in the log; the status says what and where, not repr(e).
            finished = Finished(Outcome.FAILED, problems.api_error_text(e))
        try:
            await self.ctx.timers.quiet()  # a burst's dispatches before its bookkeeping
        except asyncio.CancelledError:
            if s.deleted:
                return
            # Cancelled while waiting (Replace, shutdown): the run has already ended,
            # and its outcome is the one to record.
        self.record(run, finished.outcome, finished.message, finished.result)

    def _retrying(self) -> None:
        status.bump(self.s.record.counters, "retried")
        self.ctx.observer.retried()
        self.changed()

    # -- recording ---------------------------------------------------------------------
    def record(self, run: Run, outcome: Outcome, message: str = "", result: object = None
               ) -> None:
        s = self.s
        s.active.pop(run.run_id, None)
        spec = s.spec
        status.record_run(
            s.record,
            status.run_record(run_id=run.run_id, slot=run.slot, fire_at=run.fire_at,
                              start=run.start, finish=self.ctx.clock.now(), outcome=outcome,
                              attempts=run.attempt, endpoint=run.endpoint, message=message,
                              result=result),
            successful_limit=spec.successful_runs_history_limit if spec else 5,
            failed_limit=spec.failed_runs_history_limit if spec else 5)
        self.ctx.observer.finished(outcome.value)
        if outcome in (Outcome.FAILED, Outcome.TIMED_OUT):
            # Folded per interval into one Event with a count (not one per run).
            self.warn(f"Run{outcome.value}", f"run {run.run_id} {outcome.value.lower()} "
                      f"after {run.attempt} attempt(s): {message}")
            self._maybe_pause()
        elif outcome is Outcome.MISSED:
            self.warn("RunMissed", f"run {run.run_id}: {message}")
        if s.buffered is not None and not s.active:
            buffered, s.buffered = s.buffered, None
            self.start(buffered)
        self.changed()

    def _maybe_pause(self, quiet: bool = False) -> None:
        """The circuit breaker: stop firing after pauseAfterFailures failed runs in a row.

        ``quiet``: pausing again after a restart (the Event was posted back then).
        """
        s = self.s
        failures = s.record.consecutive_failures
        if s.spec is None or not decisions.should_pause(failures, s.spec.pause_after_failures):
            return
        s.paused_generation = s.generation
        self.ctx.timers.cancel(s.key)
        self.recall_held(self.ctx.clock.now())  # a run sent ahead is not fired either
        msg = (f"paused after {failures} consecutive failed runs (pauseAfterFailures); "
               "change the spec to resume")
        s.set_condition("Ready", False, "PausedAfterFailures", msg, self.ctx.clock.now())
        if not quiet:
            self.warn("PausedAfterFailures", msg, every=0)

    def record_missed(self, slots: list[dt.datetime], cut: bool) -> None:
        if not slots:
            return
        for slot in slots[-3:]:  # a few entries in history; the counter has them all
            run = Run(decisions.run_id_for(self.s.uid, slot), slot, slot, attempt=0)
            self.record(run, Outcome.MISSED,
                        "missed while no operator was running (catch-up policy)")
        extra = len(slots) - min(3, len(slots))
        if extra:
            status.bump(self.s.record.counters, "missed", extra)
            self.ctx.observer.finished(Outcome.MISSED.value, extra)
        self.warn("MissedSlots", f"{len(slots)}{'+' if cut else ''} slot(s) missed "
                  "while no operator was running")

    # -- restart and run-now ---------------------------------------------------------
    def resume(self) -> None:
        """First sight: resolve the runs a previous operator left active."""
        s = self.s
        assert s.spec is not None
        if s.record.consecutive_failures:
            self._maybe_pause(quiet=True)
        for entry in s.record.active:
            slot = parse_iso(entry.scheduled_time) or self.ctx.clock.now()
            run = Run(entry.run_id, slot, slot, attempt=entry.attempt or 1,
                      resume_on=entry.endpoint, sticky=True)
            if run.attempt < s.spec.retry.max_attempts:
                # Same run id: a handler that still has it running joins, not re-runs.
                run.attempt += 1
                log.info("%s: resuming run %s left active by a previous operator (attempt %d)",
                         s.ref, run.run_id, run.attempt)
                self.start(run)
            else:
                self.record(run, Outcome.FAILED, "operator restarted during the last "
                            "attempt; no attempts left")

    def run_now(self, value: str | None) -> None:
        """Each new value of the run-now annotation is one run (also while suspended)."""
        s = self.s
        if not value or value == s.record.last_run_now or s.spec is None:
            return
        s.record.last_run_now = value
        log.info("%s: run-now %r", s.ref, value)
        self.fire(self.ctx.clock.now(), run_id=decisions.run_now_id(s.uid, value),
                  policy="Allow")
        self.changed()
