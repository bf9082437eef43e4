"""One run, from the endpoint slot to how it ended: dispatch, retry with backoff, verdict.

No status here: the caller learns about progress through two callbacks (first
dispatch, each retry) and gets a ``Finished``; recording it is its business.
Cancellation (Replace, deletion, shutdown) propagates to the caller as usual.

A method outside the Handler's ``methods`` allow-list is never sent, whatever the
protocol: the run fails at once, without an attempt and without a retry. An
attempt on an external endpoint that timed out or lost its connection has the
endpoint probed at once (``HandlerRegistry.suspect``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..api.models import ScheduleSpec
from ..timing import backoff_delay, parse_duration
from . import decisions
from .context import Context
from .handler import HandlerState
from .handlers import HandlerRegistry
from .schedule import Run
from .status import Outcome, reasons_text
from .times import iso, later

log = logging.getLogger("schedulezero.runs")
NO_ENDPOINT_WAIT = 300.0  # seconds a run waits for a Ready endpoint without a deadline
SUSPECT_ERRORS = frozenset({"Timeout", "ConnectionError"})


@dataclass(frozen=True)
class Finished:
    outcome: Outcome
    message: str = ""
    result: Any = None  # what the handler returned, when it succeeded


class Fenced(Exception):
    """This process may no longer act for the Schedule: the run stays ``active`` in
    status, and the new holder resumes it under the same run id."""


class RunExecutor:
    def __init__(self, ctx: Context, handlers: HandlerRegistry) -> None:
        self.ctx = ctx
        self.handlers = handlers
        # Runs between their first attempt and their verdict, backoff waits included:
        # while any is, a successor must be able to take over within the plain lease
        # duration (see controllers.buckets, quiet Leases).
        self.active = 0

    async def execute(self, run: Run, spec: ScheduleSpec, *, namespace: str, name: str,
                      ref: str,
                      started: Callable[[], None], retrying: Callable[[], None]) -> Finished:
        """Attempts until one succeeds, fails for good, or the attempts run out."""
        self.active += 1
        try:
            return await self._attempts(run, spec, namespace=namespace, name=name, ref=ref,
                                        started=started, retrying=retrying)
        finally:
            self.active -= 1

    async def _attempts(self, run: Run, spec: ScheduleSpec, *, namespace: str, name: str,
                        ref: str, started: Callable[[], None],
                        retrying: Callable[[], None]) -> Finished:
        handler = self.handlers.ensure(namespace, spec.handler)
        wait = float(spec.starting_deadline_seconds or NO_ENDPOINT_WAIT)
        while True:
            refused = not_allowed(handler, spec.method)
            if refused:
                run.attempt -= 1  # this one is not sent: attempts made so far
                return Finished(Outcome.FAILED, refused)
            endpoint = await handler.queue.acquire(
                spec.priority, wait, avoid=run.endpoint, prefer=run.resume_on,
                home=run.run_id if run.endpoint is None else None, bounded=not run.sticky,
                home_since=run.slot.timestamp() if run.sticky else None)
            run.resume_on = None
            if endpoint is None:
                why = f" ({reasons_text(handler.down)})" if handler.down else ""
                return Finished(Outcome.MISSED, (
                    f"no Ready endpoint of handler {spec.handler} within {wait:g}s{why}"
                    if self.handlers.exists(namespace, spec.handler)
                    else f"handler {spec.handler} not found in {namespace}"))
            if not self.ctx.fence(namespace, name):
                handler.queue.release(endpoint)
                if not await self.ctx.fence_returns(namespace, name):
                    raise Fenced(run.run_id)
                continue
            refused = not_allowed(handler, spec.method)  # the Handler changed meanwhile
            if refused:
                handler.queue.release(endpoint)
                continue
            run.current, run.endpoint = endpoint, str(endpoint)
            now = self.ctx.clock.now()
            # A held run's first attempt starts at fire_at (if that is still ahead):
            # its deadline, start time and lateness count from there.
            start_at = run.fire_at if run.held and run.start is None and \
                run.fire_at > now else None
            begins = start_at or now
            observer = self.ctx.observer
            if run.start is None:
                run.start = begins
                if run.attempt == 1:  # not a run resumed from a previous operator
                    observer.fired(namespace, name,
                                   max(0.0, (now - run.fire_at).total_seconds()))
                started()
            loop = asyncio.get_running_loop()
            sent = loop.time() + (begins - now).total_seconds()
            try:
                result = await self.ctx.dispatcher.execute(
                    endpoint, run_id=run.run_id, method=spec.method, params=spec.params,
                    timeout=spec.timeout_seconds, schedule=ref, scheduled_time=iso(run.slot),
                    attempt=run.attempt, start_at=start_at,
                    deadline=iso(later(begins, dt.timedelta(seconds=spec.timeout_seconds))),
                    secret=handler.secret)
                # A reply garbled on the wire counts towards a quarantine, a well-formed
                # one (success or the handler's own error) clears it; a timeout or a lost
                # connection is neither (probes judge those, and a slow job is no sign).
                quarantine = None
                if result.ok or result.error_type not in SUSPECT_ERRORS:
                    quarantine = handler.queue.pool.report(
                        endpoint, bad_reply=result.error_type == "ProtocolError")
                if quarantine:
                    log.warning("%s: endpoint %s answers jobs with malformed replies; no "
                                "jobs for it for %gs (%s)", spec.handler, endpoint, quarantine,
                                result.message)
                if not result.ok and result.error_type in SUSPECT_ERRORS:
                    # Before the slot is released: no waiting run gets this endpoint first.
                    self.handlers.suspect(namespace, spec.handler, endpoint,
                                          f"last job attempt: {result.error_type}: "
                                          f"{result.message}")
            finally:
                handler.queue.release(endpoint)
                run.current = None
            observer.attempt(endpoint.protocol, max(0.0, loop.time() - sent))
            verdict = decisions.after_attempt(
                ok=result.ok, retryable=result.retryable, error_type=result.error_type,
                attempt=run.attempt, max_attempts=spec.retry.max_attempts)
            if not verdict.retry:
                if result.ok:
                    return Finished(Outcome.SUCCEEDED, result=result.result)
                return Finished(Outcome(verdict.outcome or Outcome.FAILED),
                                f"{result.error_type}: {result.message}")
            delay = self.backoff(spec, run.attempt)
            log.info("%s: run %s attempt %d failed (%s: %s); retrying in %.2fs", ref,
                     run.run_id, run.attempt, result.error_type, result.message, delay)
            run.attempt += 1
            retrying()
            await asyncio.sleep(delay)

    def backoff(self, spec: ScheduleSpec, attempt: int) -> float:
        """Delay after failed attempt ``attempt``: exponential, jittered by the engine's rng."""
        backoff = spec.retry.backoff
        return backoff_delay(attempt, initial=parse_duration(backoff.initial),
                             maximum=parse_duration(backoff.max),
                             multiplier=backoff.multiplier, jitter=spec.retry.jitter,
                             random_fraction=self.ctx.rng.random())


def not_allowed(handler: HandlerState, method: str) -> str | None:
    """Why ``method`` may not be sent to the Handler (its ``methods`` allow-list), or None."""
    spec = handler.spec
    if spec is None or spec.methods is None or method in spec.methods:
        return None
    return (f"method {method!r} is not in Handler {handler.name}'s allow-list "
            f"(spec.methods: {', '.join(spec.methods)}); not sent")
