"""Transport-independent request processing: the heart of a handler process.

Both servers (ZMQ and HTTP) hand raw request bytes to ``Executor.handle`` and
send back the bytes it returns, so validation, concurrency, deduplication,
cancellation, signing and shutdown behave identically on either protocol.

Decisions:
- Past ``concurrency`` jobs in flight a request is refused with ``Busy``
  (retryable) instead of queued: the operator does per-pod accounting and can
  send the job to another replica; a hidden queue here would defeat that.
- A run id already in flight is *joined*, not run twice: when the operator
  re-sends a run (lost reply, failover), the handler executes it once. Finished
  runs are remembered (bounded) per run id for the same reason: a run that
  *succeeded* is replayed to any later attempt (an operator that took over after
  the reply was lost resends it with the next attempt number, and the job must
  not run again); a failed one is replayed only to the same or an earlier
  attempt, so a genuine retry runs again.
- Sync methods run in a thread pool sized to the concurrency, so they never block
  the event loop; a sync method cannot be interrupted, so a cancelled or expired
  sync job keeps its slot until its thread returns (capacity stays honest).
- A result is checked with the operator's own decoder (``protocol.loads``) before
  it is sent: a result the operator would refuse (NaN, nesting over the depth
  limit, an unpaired surrogate, keys that collide once stringified) fails the run
  here with a clear non-retryable ``HandlerError`` instead of arriving as a
  garbled reply that the operator would retry.
- Held jobs (``executeAt``): the operator sends a job up to about a second before
  its time, so a burst due at one instant is delivered ahead and starts on time
  instead of one dispatch after another. From receipt the job is an ordinary one
  (same checks, its slot taken, joinable and cancellable by run id: the operator
  counts it in flight); its own task waits until ``startAt`` (on the loop's
  monotonic clock, fixed at receipt), then runs the method. The deadline's
  timeout covers the method, not the hold (the operator sends ``startAt`` plus the
  timeout as the deadline), and ``durationMs`` is the method's time alone.
- Holds and deadlines are timers shared per instant (``shared_timers``): a burst of
  a thousand jobs sets one timer for its start and one for its deadline, not two per
  job (each a push and a pop on the loop's heap); that took a 1,000-job burst's
  method starts from ~40 us a job to ~10.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from . import protocol as p
from .methods import InvalidParams, JobContext, MethodSpec, bind, discover, is_private
from .shared_timers import SharedTimers

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

SDK_VERSION = "0.1.0"
log = logging.getLogger("schedulezero.handler")


class PermanentError(Exception):
    """Raise from a method to fail the run without retries."""

    retryable = False


class RetryableError(Exception):
    """Raise from a method to ask for a retry (the default for other exceptions)."""

    retryable = True


class _Job:
    """One job this handler holds or runs, from receipt to reply.

    A plain slotted class, not a dataclass: the SDK does not import ``dataclasses``
    (~0.35 MiB of an idle handler with its generated methods; see ``make
    bench-sdk-rss``).
    """

    __slots__ = (
        "attempt",
        "cancel_first",
        "cancelled",
        "expired",
        "future",
        "method",
        "received",
        "returned",
        "run_id",
        "started",
        "stepped",
        "task",
    )

    def __init__(self, run_id: str, attempt: int, method: str,
                 future: asyncio.Future[dict[str, Any]]) -> None:
        self.run_id = run_id
        self.attempt = attempt
        self.method = method
        self.future = future
        self.task: asyncio.Task[Any] | None = None
        # Only a method that takes a JobContext can look at it: made for those alone.
        self.cancelled: threading.Event | None = None
        # Monotonic times: received (a held job is received well before it starts), the
        # method started (None if it never did), the method returned (None until it
        # has; from then on the job can no longer be cancelled).
        self.received = time.monotonic()
        self.started: float | None = None
        self.returned: float | None = None
        # A task cancelled before its first step never enters ``_run`` (the coroutine
        # is closed unstarted): no reply, and the slot never released. A cancel that
        # comes first (in the loop iteration that received the job, e.g. the same ZMQ
        # drain) is therefore left here for ``_run`` to act on when it begins.
        self.stepped = False
        self.cancel_first = False
        # Its deadline passed while the method ran: the task was cancelled for it
        # (_expire).
        self.expired = False


def _parse_deadline(value: str | None) -> float | None:
    if not value:
        return None
    import datetime as dt  # on the first deadline: an idle handler does not need it

    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError):  # not a time, or one the platform cannot place
        raise p.ProtocolError(p.ErrorType.BAD_REQUEST,
                              f"deadline {value!r} is not an RFC 3339 time") from None


MAX_THREADS = 32  # default cap of the sync-method thread pool (as ThreadPoolExecutor's)
# The longest a held job waits after receipt, whatever its startAt says. The operator
# sends jobs at most about a second ahead, so a startAt further out means the two
# clocks disagree or the value is wrong (or hostile): uncapped, one request could
# pin a slot for hours, long after the operator stopped waiting for its reply. Ten
# seconds is far above any legitimate lead and bounds the damage of a bad one.
MAX_HOLD_SECONDS = 10.0


class Executor:
    def __init__(
        self,
        handler: object,
        *,
        concurrency: int = 4,
        threads: int | None = None,
        secret: bytes | None = None,
        max_request_bytes: int = p.MAX_REQUEST_BYTES,
        max_result_bytes: int = p.MAX_RESULT_BYTES,
        max_skew_seconds: float = p.MAX_SKEW_SECONDS,
        clock: Callable[[], float] = time.time,
        protocols: tuple[str, ...] = (),
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.handler = handler
        self.methods: dict[str, MethodSpec] = discover(handler)
        self.concurrency = concurrency
        # Threads for sync methods: the concurrency, but at most MAX_THREADS unless asked.
        # Python threads contend for one GIL: a thousand of them running a short method
        # cost the process 4x the CPU of 32 (and starting each one walks every other's
        # shutdown lock). Jobs beyond it wait for a thread, still holding their slot.
        self.threads = max(1, threads) if threads else min(concurrency, MAX_THREADS)
        self.secret = secret
        self.max_request_bytes = max_request_bytes
        self.max_result_bytes = max_result_bytes
        self.max_skew_seconds = max_skew_seconds
        self.clock = clock
        self.protocols = protocols
        self.accepting = True
        self._jobs: dict[str, _Job] = {}
        self._busy_slots = 0
        # run id -> (attempt, method, reply) of its last finished attempt
        self._done: collections.OrderedDict[str, tuple[int, str, dict[str, Any]]] = (
            collections.OrderedDict())
        self._pool: ThreadPoolExecutor | None = None  # made for the first sync method call
        self._idle = asyncio.Event()
        # startAt -> (it as unix seconds, its loop time): see _hold
        self._hold_targets: dict[str, tuple[float, float]] = {}
        # (held starts by startAt, deadlines by unix seconds): one timer per instant,
        # made for the loop that runs the jobs (see _timers).
        self._shared_timers: tuple[SharedTimers, SharedTimers] | None = None
        self._idle.set()

    # -- public --------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return self._busy_slots

    def health(self) -> dict[str, Any]:
        return {"ready": self.accepting, "inFlight": self._busy_slots,
                "concurrency": self.concurrency}

    def describe(self) -> dict[str, Any]:
        return {"methods": [s.describe() for s in sorted(self.methods.values(),
                                                          key=lambda s: s.name)],
                "sdkVersion": SDK_VERSION, "protocolVersion": p.VERSION,
                "concurrency": self.concurrency, "protocols": list(self.protocols),
                "features": list(p.FEATURES)}

    async def handle(self, raw: bytes, timestamp: bytes | str | None = None,
                     signature: bytes | str | None = None) -> bytes:
        """Process one request; always returns an encoded reply (never raises)."""
        reply, legacy = await self._handle(raw, _text(timestamp), _text(signature))
        return _encode(reply, legacy)

    def submit(self, raw: bytes, timestamp: bytes | str | None,
               signature: bytes | str | None, deliver: Callable[[bytes], None]) -> None:
        """Process one request and call ``deliver`` with its encoded reply, exactly once.

        The callback form of ``handle`` for the ZMQ transport: a reply known at once
        (errors, health, describe, a replayed run) is delivered before this returns;
        a job's reply is delivered from the job's completion callback. No task or
        future is created per request beyond the job's own, and nothing is awaited,
        so a transport can serve every ready message in one loop iteration.
        """
        started = self._begin(raw, _text(timestamp), _text(signature))
        if not isinstance(started, _Wait):
            deliver(_encode(*started))
            return
        wait = started

        def done(future: asyncio.Future[dict[str, Any]]) -> None:
            try:
                body = _encode(_with_id(future.result(), wait.request_id), wait.legacy)
            # A bug in the SDK: logged, and the peer still gets an answer.
            except Exception:
                log.exception("internal error encoding a job's reply")
                body = p.encode(p.error_reply(wait.request_id, p.ErrorType.INTERNAL,
                                              "internal error in the handler SDK (see its log)"))
            deliver(body)

        wait.future.add_done_callback(done)

    async def handle_message(
        self, raw: bytes, timestamp: str | None = None, signature: str | None = None,
        signed_body: bytes | None = None, default_type: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Like ``handle`` but returns the reply dict and whether it is a legacy request.

        ``signed_body`` is what the signature covers when it is not ``raw`` (a GET
        signs the empty body). ``default_type`` is the request type the transport
        already knows (the HTTP path); see ``protocol.decode_request``.
        """
        return await self._handle(raw, timestamp, signature, signed_body, default_type)

    def reject(self, body: bytes, error: p.ProtocolError) -> bytes:
        """Encoded error reply for a message refused before it was handled (framing).

        The body is decoded only to echo its ``id`` (so the operator can match the
        error to its request instead of timing out) and to pick the legacy shape
        for a ScheduleZero request; it is never acted on.
        """
        rid, legacy = None, False
        try:
            request = p.decode_request(body, self.max_request_bytes)
            rid, legacy = request.id, request.legacy
        except p.ProtocolError as e:
            rid, legacy = e.request_id, e.legacy
        reply = p.error_reply(rid, error.error_type, str(error))
        return p.encode(p.legacy_reply(reply) if legacy else reply)

    async def drain(self, grace: float) -> bool:
        """Stop taking jobs, wait up to ``grace`` seconds for in-flight ones. True if idle."""
        self.accepting = False
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
            return True
        except TimeoutError:
            log.warning("grace period over with %d job(s) in flight", self._busy_slots)
            return False
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)

    # -- request handling ----------------------------------------------------
    async def _handle(self, raw: bytes, timestamp: str | None, signature: str | None,
                      signed_body: bytes | None = None,
                      default_type: str | None = None) -> tuple[dict[str, Any], bool]:
        started = self._begin(raw, timestamp, signature, signed_body, default_type)
        if not isinstance(started, _Wait):
            return started
        # Shielded: a caller that goes away must not cancel a job others may join.
        reply = await asyncio.shield(started.future)
        return _with_id(reply, started.request_id), started.legacy

    def _begin(self, raw: bytes, timestamp: str | None, signature: str | None,
               signed_body: bytes | None = None,
               default_type: str | None = None) -> tuple[dict[str, Any], bool] | _Wait:
        """Everything up to the job's reply, synchronously: (reply, legacy) when the
        reply is known now, else the ``_Wait`` for a job started or joined."""
        request: p.Request | None = None
        try:
            request = p.decode_request(raw, self.max_request_bytes, default_type)
            if self.secret is not None:
                covered = raw if signed_body is None else signed_body
                p.verify(self.secret, covered, timestamp, signature, self.clock(),
                         self.max_skew_seconds)
            if request.legacy and request.method == "ping":
                return {"ok": True, "result": {"success": True, "message": "pong"}}, True
            if request.type == "health":
                return p.ok_reply(request.id, self.health()), False
            if request.type == "describe":
                return p.ok_reply(request.id, self.describe()), False
            if request.type == "cancel":
                return p.ok_reply(request.id, {"cancelled": self._cancel(request.run_id)},
                                  request.run_id), False
            outcome = self._execute(request)
            if isinstance(outcome, _Wait):
                return outcome
            return outcome, request.legacy
        except p.ProtocolError as e:
            rid = e.request_id if e.request_id is not None else (
                request.id if request else None)  # "" is an id too
            legacy = e.legacy or bool(request and request.legacy)
            return p.error_reply(rid, e.error_type, str(e),
                                 request.run_id if request else None), legacy

    def _execute(self, req: p.Request) -> dict[str, Any] | _Wait:
        assert req.method is not None
        if is_private(req.method):
            # Refused by name before any lookup: never reaches getattr or the registry.
            return p.error_reply(req.id, p.ErrorType.UNKNOWN_METHOD,
                                 f"Unknown method: {req.method} (names starting with '_' are "
                                 "never callable)", req.run_id)
        run_id = req.run_id or f"legacy-{time.monotonic_ns()}"
        done = self._done.get(run_id)
        if done is not None and done[1] == req.method and (
                done[2].get("ok") is True or req.attempt <= done[0]):
            return {**done[2], "id": req.id}
        joined = self._jobs.get(run_id)
        if joined is not None and joined.method != req.method:
            return p.error_reply(req.id, p.ErrorType.BAD_REQUEST,
                                 f"run {run_id} is already running method {joined.method}",
                                 req.run_id)
        if joined is not None:
            log.info("run already in flight; joining it", extra={"run_id": run_id})
            return _Wait(joined.future, req.id, req.legacy)
        if not self.accepting:
            return p.error_reply(req.id, p.ErrorType.SHUTTING_DOWN,
                                 "handler is shutting down; send the job elsewhere", req.run_id)
        spec = self.methods.get(req.method)
        if spec is None:
            return p.error_reply(req.id, p.ErrorType.UNKNOWN_METHOD,
                                 f"Unknown method: {req.method} (available: "
                                 f"{', '.join(sorted(self.methods)) or 'none'})", req.run_id)
        try:
            kwargs = bind(spec, req.params or {})
        except InvalidParams as e:
            return p.error_reply(req.id, p.ErrorType.INVALID_PARAMS, str(e), req.run_id)
        deadline = _parse_deadline(req.deadline)
        now = self.clock()
        if deadline is not None and deadline <= now:
            return p.error_reply(req.id, p.ErrorType.DEADLINE_EXCEEDED,
                                 "deadline already passed on arrival", req.run_id)
        if self._busy_slots >= self.concurrency:
            return p.error_reply(req.id, p.ErrorType.BUSY,
                                 f"all {self.concurrency} slots busy", req.run_id)

        loop = asyncio.get_running_loop()
        job = _Job(run_id, req.attempt, req.method, loop.create_future())
        start_at = hold_until = None
        if req.start_at is not None:
            start_at, hold_until = self._hold(req, now, loop, run_id)
        if spec.context_param:
            job.cancelled = threading.Event()
            kwargs[spec.context_param] = JobContext(req.run_id, req.attempt, req.schedule,
                                                    req.scheduled_time, req.deadline,
                                                    job.cancelled)
        self._jobs[run_id] = job
        self._busy_slots += 1
        self._idle.clear()
        job.task = loop.create_task(self._run(spec, kwargs, job, req, deadline, hold_until,
                                              start_at))
        return _Wait(job.future, req.id, req.legacy)

    async def _run(self, spec: MethodSpec, kwargs: dict[str, Any], job: _Job, req: p.Request,
                   deadline: float | None, hold_until: float | None,
                   start_at: float | None = None) -> None:
        # One line per job at INFO (the default), when it finished, with its duration and
        # how long it was held; "job started" is DEBUG. A line costs ~50 us (a record,
        # JSON, a write): logged as each method of a burst starts, the start of the last
        # of 500 held jobs due at one instant waited ~25 ms for the others' lines.
        # Below INFO, not even their dicts.
        logging_jobs = log.isEnabledFor(logging.INFO)
        logging_starts = log.isEnabledFor(logging.DEBUG)
        loop = asyncio.get_running_loop()
        thread_future: asyncio.Future[Any] | None = None
        reply: dict[str, Any] | None = None
        job.stepped = True
        try:
            if job.cancel_first:
                raise asyncio.CancelledError
            if hold_until is not None:
                # The hold: a cancel (or shutdown) lands here and the method never runs.
                # An absolute loop time fixed at receipt, not a delay from now: in a
                # burst this task first runs after the rest of the burst was received.
                # One timer for the whole burst (its startAt): see shared_timers.
                await self._wait_start(loop, req.start_at, hold_until, job)
                # Checked here first: no coroutine per job in the usual case (not early).
                if start_at is not None and _left_before(self.clock, start_at):
                    await _not_before(self.clock, start_at)
                if deadline is not None and deadline <= self.clock():
                    # A startAt past the deadline, or a loop that woke too late: starting
                    # now would run a method whose result is no longer wanted.
                    reply = p.error_reply(req.id, p.ErrorType.DEADLINE_EXCEEDED,
                                          "deadline passed before the run's startAt; the "
                                          "method was not started", job.run_id)
            if reply is None:
                job.started = time.monotonic()
                if logging_starts:
                    log.debug("job started", extra=_log_fields(job, spec, hold_until))
                # The deadline: one shared timer per deadline (a burst has one), which
                # cancels the task, like asyncio.timeout_at without a timer per job.
                deadlines = self._timers(loop)[1]
                if deadline is not None:
                    deadlines.add(deadline, loop.time() + max(0.0, deadline - self.clock()),
                                  job.run_id, functools.partial(_expire, job))
                try:
                    if spec.is_async:
                        result = await spec.func(**kwargs)
                    else:
                        thread_future = loop.run_in_executor(
                            self._threads(), functools.partial(spec.func, **kwargs))
                        result = await asyncio.shield(thread_future)
                finally:
                    if deadline is not None:
                        deadlines.discard(deadline, job.run_id)
                    if job.expired:
                        # As asyncio.timeout: the cancel it made is taken back, so the
                        # task's count stays true (raised or swallowed by the method).
                        asyncio.current_task().uncancel()  # type: ignore[union-attr]
                job.returned = time.monotonic()
                if spec.is_async:
                    # Burst fairness: held jobs due at one instant all wake in the same
                    # loop iteration, and without this turn each would check, encode and
                    # log its reply before the next one's method starts (the last of
                    # 1,000 tens of ms late). One turn lets every due method start first.
                    # Free for correctness: the result is in hand, outside the deadline's
                    # timeout (which cannot overtake it now), a cancel is refused from
                    # here on (``returned`` is set; the method can no longer be stopped),
                    # and durationMs ends at the return. To a peer it is the same as a
                    # method that took one more loop turn. Sync methods already come back
                    # through a loop turn (their thread's future).
                    await _one_loop_turn()
                reply = self._result_reply(req, result)
        except asyncio.CancelledError:
            if job.expired:
                reply = p.error_reply(req.id, p.ErrorType.DEADLINE_EXCEEDED,
                                      "run did not finish before its deadline", job.run_id)
            else:
                reply = p.error_reply(req.id, p.ErrorType.CANCELLED, "run was cancelled",
                                      job.run_id)
        except TimeoutError:
            reply = p.error_reply(req.id, p.ErrorType.DEADLINE_EXCEEDED,
                                  "run did not finish before its deadline", job.run_id)
        except Exception as e:  # noqa: BLE001 - a method's failure is the job's result
            retryable = getattr(e, "retryable", True)
            reply = p.error_reply(req.id, p.ErrorType.HANDLER_ERROR,
                                  f"{type(e).__name__}: {e}", job.run_id, retryable=bool(retryable))
        reply["durationMs"] = _duration_ms(job)
        if not job.future.done():
            job.future.set_result(reply)
        # A legacy run's made-up id is never asked for again. A job whose method never
        # started (withdrawn or expired while held) is not remembered either: it did not
        # run, and the operator re-sends a withdrawn slot under the same run id when a
        # spec change keeps it (that resend must run, not replay "Cancelled").
        if req.run_id is not None and job.started is not None:
            self._remember(job, reply)
        if logging_jobs:
            log.info("job finished", extra={**_log_fields(job, spec, hold_until),
                                            "ok": reply["ok"],
                                            "duration_ms": reply["durationMs"]})
        if thread_future is not None and not thread_future.done():
            # An interrupted sync method still occupies its thread: keep the slot.
            await asyncio.wait([thread_future])
        self._release(job)

    def _result_reply(self, req: p.Request, result: Any) -> dict[str, Any]:
        reply = p.ok_reply(req.id, result, req.run_id)
        try:
            body = p.encode(reply)
        except (ValueError, TypeError, RecursionError) as e:  # NaN, odd keys, cycles, depth
            return self._unsendable(req, f"{type(e).__name__}: {e}")
        if len(body) > self.max_result_bytes:
            return p.error_reply(
                req.id, p.ErrorType.RESULT_TOO_LARGE,
                f"result of {len(body)} bytes exceeds the limit of {self.max_result_bytes}; "
                "the method ran but its result was not returned", req.run_id)
        if p.plainly_decodable(result, body):
            return reply
        try:
            p.loads(body, max_bytes=len(body))  # what the operator will apply to it
        except p.WireFormatError as e:
            return self._unsendable(req, str(e))
        return reply

    @staticmethod
    def _unsendable(req: p.Request, why: str) -> dict[str, Any]:
        return p.error_reply(req.id, p.ErrorType.HANDLER_ERROR,
                             f"the method ran but its result cannot be sent as protocol "
                             f"JSON ({why})", req.run_id, retryable=False)

    async def _wait_start(self, loop: asyncio.AbstractEventLoop, start_at: str | None,
                          hold_until: float, job: _Job) -> None:
        """Until loop time ``hold_until``, on the timer shared by every job held for
        the same ``startAt``; a cancel lands here (and takes the job off the timer)."""
        timers, waiter = self._timers(loop)[0], loop.create_future()
        timers.add(start_at, hold_until, job.run_id, functools.partial(_wake, waiter))
        try:
            await waiter
        finally:
            timers.discard(start_at, job.run_id)

    def _timers(self, loop: asyncio.AbstractEventLoop) -> tuple[SharedTimers, SharedTimers]:
        """(held starts, deadlines) on ``loop``: made anew if the executor meets another
        loop (tests run one per test), since a timer belongs to its loop."""
        if self._shared_timers is None or self._shared_timers[0].loop is not loop:
            self._shared_timers = (SharedTimers(loop), SharedTimers(loop))
        return self._shared_timers

    def _threads(self) -> ThreadPoolExecutor:
        """The pool for sync methods (``threads`` workers); made on first use, so a
        handler with only async methods never loads concurrent.futures' thread pool."""
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=self.threads,
                                            thread_name_prefix="job")
        return self._pool

    def _hold(self, req: p.Request, now: float, loop: asyncio.AbstractEventLoop,
              run_id: str) -> tuple[float, float | None]:
        """A held job's startAt (unix seconds) and the loop time to start it at (None:
        at once, its startAt is now or past).

        One loop time per startAt: the jobs of a burst (one startAt) all come due in the
        same loop iteration. Computed per job, their targets differ by the jitter
        between two clock reads; on a busy machine some then came due one iteration
        later and started only after every earlier job of the burst had built, encoded
        and logged its reply. The startAt is parsed once per burst as well
        (``decode_request`` has already checked it).
        """
        assert req.start_at is not None
        cached = self._hold_targets.get(req.start_at)
        if cached is not None and cached[1] > loop.time():
            return cached
        start_at = p.parse_time(req.start_at, "startAt", req.id)
        target = _hold_until(loop, start_at - now, run_id)
        if target is not None:
            if len(self._hold_targets) >= 256:  # bursts are a second or so apart
                self._hold_targets = {k: v for k, v in self._hold_targets.items()
                                      if v[1] > loop.time()}
            self._hold_targets[req.start_at] = (start_at, target)
        return start_at, target

    def _remember(self, job: _Job, reply: dict[str, Any]) -> None:
        self._done[job.run_id] = (job.attempt, job.method, reply)
        self._done.move_to_end(job.run_id)
        while len(self._done) > 1024:
            self._done.popitem(last=False)

    def _release(self, job: _Job) -> None:
        if self._jobs.get(job.run_id) is job:
            del self._jobs[job.run_id]
        self._busy_slots -= 1
        if self._busy_slots == 0:
            self._idle.set()

    def abort_all(self) -> int:
        """Grace period over: answer every unfinished job with a retryable ShuttingDown."""
        aborted = 0
        for job in list(self._jobs.values()):
            if not job.future.done():
                job.future.set_result(p.error_reply(
                    None, p.ErrorType.SHUTTING_DOWN,
                    "handler shut down before the job finished (grace period over)",
                    job.run_id))
                _interrupt(job)
                aborted += 1
        return aborted

    def _cancel(self, run_id: str | None) -> bool:
        job = self._jobs.get(run_id or "")
        # A job whose method has returned is past stopping: its result will be sent.
        if job is None or job.future.done() or job.returned is not None:
            return False
        _interrupt(job)
        log.info("job cancelled", extra={"run_id": run_id})
        return True


class _Wait(NamedTuple):
    """A request whose reply is a job's: the job's reply future, and how to answer."""

    future: asyncio.Future[dict[str, Any]]
    request_id: str
    legacy: bool


def _hold_until(loop: asyncio.AbstractEventLoop, ahead: float, run_id: str) -> float | None:
    """The loop time to start a held job at, ``ahead`` wall-clock seconds from now; None
    to start it at once (its startAt is now or past).

    On the loop's monotonic clock, so a wall-clock step during the hold changes
    nothing, and capped at ``MAX_HOLD_SECONDS``. A capped hold is logged: it means
    the operator's clock and this one disagree, or a bad startAt.
    """
    if ahead <= 0:
        return None
    if ahead > MAX_HOLD_SECONDS:
        log.warning("startAt is %.3fs ahead of this handler's clock; holding the job "
                    "%gs only (clock skew?)", ahead, MAX_HOLD_SECONDS, extra={"run_id": run_id})
        ahead = MAX_HOLD_SECONDS
    return loop.time() + ahead


_NOT_BEFORE_GAP = 0.05  # the most _not_before waits out


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():  # cancelled with its task
        waiter.set_result(None)


def _expire(job: _Job) -> None:
    """A job's deadline came while its method ran: cancel it, marked as expired (its
    reply says DeadlineExceeded). A task already being cancelled (by a cancel request
    or shutdown) is left to that, as asyncio.timeout leaves it."""
    task = job.task
    if task is None or task.done() or job.returned is not None or task.cancelling():
        return
    job.expired = True
    task.cancel()


async def _not_before(clock: Callable[[], float], start_at: float) -> None:
    """Never early by this handler's clock: the loop may wake a hair before its timer,
    and the loop clock was matched to the wall clock at receipt. Only small gaps are
    waited out (a capped hold, far from startAt, is not extended here)."""
    for _ in range(8):
        left = _left_before(clock, start_at)
        if not left:
            return
        await asyncio.sleep(left)


def _left_before(clock: Callable[[], float], start_at: float) -> float:
    """How far this handler's clock is short of ``start_at``, if by a small gap (up to
    ``_NOT_BEFORE_GAP``); 0 when it is not early, or too early to wait out here."""
    left = start_at - clock()
    return left if 0 < left <= _NOT_BEFORE_GAP else 0.0


async def _one_loop_turn() -> None:
    """Yield once to the loop between a method's return and its reply (see ``_run``)."""
    try:
        await asyncio.sleep(0)
    except asyncio.CancelledError:
        # The method has returned: nothing is left to interrupt and its result stands.
        # Only shutdown (``abort_all``, which has already answered the job) or the
        # loop's own teardown cancels here, as ``_cancel`` refuses a returned job;
        # uncancel so the task's cancel count stays true after it is swallowed.
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()


def _duration_ms(job: _Job) -> float:
    """How long the method ran: 0 if it never started (cancelled or expired while
    held); up to now if it did not return (failed, cancelled, timed out)."""
    if job.started is None:
        return 0.0
    ended = job.returned if job.returned is not None else time.monotonic()
    return round((ended - job.started) * 1000, 3)


def _log_fields(job: _Job, spec: MethodSpec, hold_until: float | None = None
                ) -> dict[str, Any]:
    fields: dict[str, Any] = {"run_id": job.run_id, "method": spec.name,
                              "attempt": job.attempt}
    if hold_until is not None and job.started is not None:
        fields["held_ms"] = round((job.started - job.received) * 1000, 3)
    return fields


def _interrupt(job: _Job) -> None:
    """Cancel a job: its method (or its hold) is interrupted, and it replies Cancelled."""
    _set(job.cancelled)
    if not job.stepped:
        job.cancel_first = True  # see _Job.stepped
    elif job.task is not None:
        job.task.cancel()


def _set(event: threading.Event | None) -> None:
    if event is not None:
        event.set()


def _with_id(reply: dict[str, Any], request_id: str) -> dict[str, Any]:
    """The job's reply as the answer to one request (joined requests have their own id).

    The job's reply dict is shared (remembered for replays, joined requests), so it
    is copied rather than changed, and only when the id differs.
    """
    return reply if reply.get("id") == request_id else {**reply, "id": request_id}


def _encode(reply: dict[str, Any], legacy: bool) -> bytes:
    return p.encode(p.legacy_reply(reply) if legacy else reply)


def _text(value: bytes | str | None) -> str | None:
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return value
