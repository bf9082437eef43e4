"""Held jobs (``executeAt``): the operator sends a job ahead of its time and the
handler starts its method at ``startAt``.

No sockets: requests go straight to an ``Executor`` (``handle`` as the ZMQ and HTTP
transports do, ``submit`` where several must arrive in one loop iteration, as in
one ZMQ drain). The handler's clock is injected and set far from the real one, so a
test passes only if the hold is measured on ``Executor.clock``; holds are short
real waits (0.2-0.3 s) checked with a tolerance.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from schedulezero_handler import Executor, method
from schedulezero_handler import executor as executor_module
from schedulezero_handler import protocol as p

SKEW = 86_400.0  # the handler's clock runs a day ahead of the real one
EARLY = 0.002  # a timer may fire this much before its time (clock sampling, rounding)
LATE = 0.1  # and this much after it on a busy test machine


def handler_clock() -> float:
    return time.time() + SKEW


def rfc3339(t: float) -> str:
    """UTC with milliseconds, as the operator writes startAt."""
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds")[:23] + "Z"


def ahead(seconds: float) -> tuple[str, float]:
    """A startAt ``seconds`` from now on the handler's clock, and the instant it names."""
    text = rfc3339(handler_clock() + seconds)
    return text, p.parse_time(text, "startAt")


class Recorder:
    """Records when (on the handler's clock) each method call started."""

    def __init__(self, clock: Callable[[], float] = handler_clock) -> None:
        self.clock = clock
        self.calls: list[tuple[str, float]] = []
        self.executor: Executor | None = None
        self.done_seen: list[int] = []  # replies remembered when each method started

    @method
    async def tick(self, label: str = "") -> str:
        self.calls.append((label, self.clock()))
        if self.executor is not None:
            self.done_seen.append(len(self.executor._done))
        return label

    @method
    def tick_sync(self, label: str = "") -> str:
        self.calls.append((label, self.clock()))
        return label

    @method
    async def slow(self, seconds: float) -> float:
        self.calls.append(("slow", self.clock()))
        await asyncio.sleep(seconds)
        return seconds


def request(run_id: str, method_name: str = "tick", start_at: str | None = None, *,
            kind: str = "executeAt", rid: str = "x", deadline: str | None = None,
            **params: Any) -> bytes:
    return p.encode(p.Request(type=kind, id=rid, run_id=run_id, method=method_name,
                              params=params, deadline=deadline, start_at=start_at).to_wire())


def cancel(run_id: str) -> bytes:
    return p.encode({"v": 1, "id": "c", "type": "cancel", "runId": run_id})


async def send(ex: Executor, body: bytes) -> dict[str, Any]:
    return dict(json.loads(await ex.handle(body)))


def executor(handler: Recorder, **options: Any) -> Executor:
    ex = Executor(handler, clock=handler_clock, **options)
    handler.executor = ex
    return ex


# -- decoding ---------------------------------------------------------------------
def execute_at_body(**fields: Any) -> bytes:
    return p.encode({"v": 1, "id": "x", "type": "executeAt", "runId": "r", "method": "m",
                     **fields})


@pytest.mark.parametrize(("start_at", "instant"), [
    ("2026-11-30T17:15:14Z", 1796058914.0),
    ("2026-11-30T17:15:14.250Z", 1796058914.25),
    ("2026-11-30T17:15:14.123456789Z", 1796058914.123456),  # nanoseconds: truncated
    ("2026-11-30T18:15:14+01:00", 1796058914.0),
    ("2026-11-30t17:15:14z", 1796058914.0),  # RFC 3339 allows lower case
])
def test_execute_at_decodes_with_its_start_time(start_at: str, instant: float) -> None:
    req = p.decode_request(execute_at_body(startAt=start_at, attempt=2, deadline="d"))
    assert req == p.Request(type="executeAt", id="x", run_id="r", method="m", params={},
                            attempt=2, deadline="d", start_at=start_at)
    assert p.parse_time(start_at, "startAt") == pytest.approx(instant, abs=1e-6)


@pytest.mark.parametrize(("fields", "needle"), [
    ({}, "missing field 'startAt'"),
    ({"startAt": None}, "missing field 'startAt'"),
    ({"startAt": 1796058914}, "field 'startAt' must be str, got int"),
    ({"startAt": True}, "field 'startAt' must be str, got bool"),
    ({"startAt": ["2026-11-30T17:15:14Z"]}, "field 'startAt' must be str, got list"),
    ({"startAt": "soon"}, "'startAt' must be an RFC 3339 time"),
    ({"startAt": ""}, "'startAt' must be an RFC 3339 time"),
    ({"startAt": "2026-11-30"}, "'startAt' must be an RFC 3339 time"),
    # No offset: datetime would read it in the handler's local zone.
    ({"startAt": "2026-11-30T17:15:14"}, "'startAt' must be an RFC 3339 time"),
    ({"startAt": "20261130T171514Z"}, "'startAt' must be an RFC 3339 time"),  # ISO basic
    ({"startAt": "2026-13-01T00:00:00Z"}, "'startAt' must be an RFC 3339 time"),
    ({"startAt": "2026-11-30T25:00:00Z"}, "'startAt' must be an RFC 3339 time"),
    ({"startAt": "\u0662026-11-30T17:15:14Z"}, "'startAt' must be an RFC 3339 time"),
    ({"startAt": "2026-11-30T17:15:14Z" + "0" * 500}, "got '2026-11-30T17:15:14Z000"),
])
def test_execute_at_needs_a_valid_start_time(fields: dict[str, Any], needle: str) -> None:
    with pytest.raises(p.ProtocolError) as e:
        p.decode_request(execute_at_body(**fields))
    assert e.value.error_type == "BadRequest" and e.value.request_id == "x"
    assert needle in str(e.value) and len(str(e.value)) < 200
    # The operator reads this one phrase as "an SDK without executeAt": never here.
    assert "unknown request type" not in str(e.value)


def test_execute_at_round_trips_and_execute_has_no_start_time() -> None:
    req = p.Request(type="executeAt", id="i", run_id="r", method="m", params={"a": 1},
                    schedule="ns/s", scheduled_time="2026-11-30T17:15:14Z", attempt=3,
                    deadline="2026-11-30T17:16:14Z", start_at="2026-11-30T17:15:14.250Z")
    wire = req.to_wire()
    assert wire["type"] == "executeAt" and wire["startAt"] == "2026-11-30T17:15:14.250Z"
    assert p.decode_request(p.encode(wire)) == req
    plain = p.Request(type="execute", id="i", run_id="r", method="m").to_wire()
    assert "startAt" not in plain
    assert p.decode_request(p.encode(plain)).start_at is None
    assert "executeAt" in p.REQUEST_TYPES


@pytest.mark.parametrize(("default_type", "ok"), [
    ("execute", True),  # HTTP POST /v1/execute takes a held job too
    ("cancel", False),
])
def test_execute_at_goes_where_an_execute_goes(default_type: str, ok: bool) -> None:
    body = execute_at_body(startAt="2026-11-30T17:15:14Z")
    if ok:
        assert p.decode_request(body, default_type=default_type).type == "executeAt"
    else:
        with pytest.raises(p.ProtocolError, match="'executeAt' request sent where"):
            p.decode_request(body, default_type=default_type)


async def test_describe_lists_the_feature() -> None:
    ex = executor(Recorder())
    assert ex.describe()["features"] == ["executeAt"]
    reply = await send(ex, p.encode({"v": 1, "id": "d", "type": "describe"}))
    assert reply["result"]["features"] == ["executeAt"]


# -- when the method starts -------------------------------------------------------
@pytest.mark.parametrize("method_name", ["tick", "tick_sync"])
@pytest.mark.parametrize("lead", [0.25, 0.0, -5.0])
async def test_method_starts_at_start_at_or_at_once_if_past(method_name: str,
                                                              lead: float) -> None:
    handler = Recorder()
    ex = executor(handler)
    start_at, instant = ahead(lead)
    received = handler_clock()
    reply = await send(ex, request("r1", method_name, start_at, label="a"))
    assert reply["ok"] is True and reply["result"] == "a" and reply["runId"] == "r1"
    [(_, started)] = handler.calls
    expected = max(instant, received)
    assert expected - EARLY <= started <= expected + LATE
    await ex.drain(1)


async def test_nothing_runs_before_start_at() -> None:
    handler = Recorder()
    ex = executor(handler)
    start_at, instant = ahead(0.3)
    job = asyncio.create_task(send(ex, request("r1", "tick", start_at)))
    await asyncio.sleep(0.15)
    assert handler.calls == [] and not job.done()
    assert (await job)["ok"] is True
    assert handler.calls[0][1] >= instant - EARLY


async def test_a_start_at_far_ahead_is_held_only_the_maximum(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(executor_module, "MAX_HOLD_SECONDS", 0.2)
    handler = Recorder()
    ex = executor(handler)
    received = handler_clock()
    with caplog.at_level(logging.WARNING, "schedulezero.handler"):
        reply = await send(ex, request("r1", "tick", ahead(3600)[0]))
    assert reply["ok"] is True
    [(_, started)] = handler.calls
    assert received + 0.2 - EARLY <= started <= received + 0.2 + LATE
    assert any("clock skew" in r.getMessage() for r in caplog.records)


async def test_a_burst_due_together_starts_together() -> None:
    """Jobs due at one instant all start at it, and every method starts before any
    job does its reply bookkeeping (no job waits behind another's reply)."""
    handler = Recorder()
    ex = executor(handler, concurrency=500)
    start_at, instant = ahead(0.3)
    replies: list[bytes] = []
    for i in range(300):
        ex.submit(request(f"r{i}", "tick", start_at, label=str(i)), None, None, replies.append)
    assert ex.in_flight == 300
    await ex.drain(5)
    assert len(replies) == 300 and all(json.loads(r)["ok"] for r in replies)
    starts = [t for _, t in handler.calls]
    assert instant - EARLY <= min(starts) and max(starts) <= instant + LATE
    # One loop time per startAt: all 300 came due in one loop iteration, so every
    # method started before any job built, remembered or logged its reply.
    assert handler.done_seen == [0] * 300


async def test_jobs_held_for_different_start_times_keep_their_own() -> None:
    handler = Recorder()
    ex = executor(handler, concurrency=10)
    (first, t1), (second, t2) = ahead(0.2), ahead(0.35)
    replies: list[bytes] = []
    for i in range(3):
        ex.submit(request(f"a{i}", "tick", first, label="a"), None, None, replies.append)
        ex.submit(request(f"b{i}", "tick", second, label="b"), None, None, replies.append)
    await ex.drain(5)
    for label, instant in (("a", t1), ("b", t2)):
        starts = [t for name, t in handler.calls if name == label]
        assert len(starts) == 3
        assert instant - EARLY <= min(starts) and max(starts) <= instant + LATE


async def test_methods_of_a_burst_all_start_before_any_reply_is_made() -> None:
    """Deterministic form of the above: jobs whose start is due when they arrive
    all begin in the same loop iteration; one loop turn after each method returns
    lets every method start before any reply is built, remembered or logged."""
    handler = Recorder()
    ex = executor(handler, concurrency=500)
    past = ahead(-1)[0]
    replies: list[bytes] = []
    for i in range(300):
        ex.submit(request(f"r{i}", "tick", past), None, None, replies.append)
    await ex.drain(5)
    assert len(replies) == 300
    assert handler.done_seen == [0] * 300


# -- a held job is a job from receipt ---------------------------------------------
async def test_a_held_job_takes_its_slot_during_the_hold() -> None:
    handler = Recorder()
    ex = executor(handler, concurrency=1)
    held = asyncio.create_task(send(ex, request("r1", "tick", ahead(0.3)[0])))
    await asyncio.sleep(0.05)
    assert ex.in_flight == 1 and ex.health()["inFlight"] == 1 and handler.calls == []
    busy = await send(ex, request("r2", "tick", kind="execute"))
    assert busy["error"]["type"] == "Busy"
    assert (await held)["ok"] is True
    await ex.drain(1)
    assert ex.in_flight == 0


@pytest.mark.parametrize("second_kind", ["executeAt", "execute"])
async def test_a_duplicate_while_held_joins_the_held_job(second_kind: str) -> None:
    handler = Recorder()
    ex = executor(handler)
    start_at, instant = ahead(0.25)
    first = asyncio.create_task(send(ex, request("r1", "tick", start_at, rid="a")))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(send(ex, request("r1", "tick", start_at, rid="b",
                                                  kind=second_kind)))
    await asyncio.sleep(0.05)
    assert ex.in_flight == 1 and handler.calls == []
    one, two = await asyncio.gather(first, second)
    assert len(handler.calls) == 1 and handler.calls[0][1] >= instant - EARLY
    assert (one["id"], two["id"]) == ("a", "b")
    assert {**one, "id": None} == {**two, "id": None}  # the same reply, durationMs too
    await ex.drain(1)


@pytest.mark.parametrize("while_", ["held", "received"])
async def test_cancel_while_held_never_runs_the_method(while_: str) -> None:
    """``received``: the cancel arrives in the loop iteration that received the job
    (one ZMQ drain), before the job's task has taken a step."""
    handler = Recorder()
    ex = executor(handler)
    start_at, instant = ahead(0.2)
    replies: list[dict[str, Any]] = []
    ex.submit(request("r1", "tick", start_at), None, None,
              lambda body: replies.append(json.loads(body)))
    if while_ == "held":
        await asyncio.sleep(0.05)
    ex.submit(cancel("r1"), None, None, lambda body: replies.append(json.loads(body)))
    assert replies[0]["result"] == {"cancelled": True}
    assert await ex.drain(1)
    assert len(replies) == 2 and handler.calls == []
    error = replies[1]["error"]
    assert error["type"] == "Cancelled" and error["retryable"] is False
    assert replies[1]["durationMs"] == 0
    assert ex.in_flight == 0 and ex._jobs == {}
    await asyncio.sleep(instant - handler_clock() + 0.05)  # past startAt: still never ran
    assert handler.calls == []


async def test_a_plain_execute_cancelled_before_its_first_step_is_answered() -> None:
    """The same race without a hold: the job is answered Cancelled and its slot freed
    (a task cancelled before its first step would never run the code that does it)."""
    handler = Recorder()
    ex = executor(handler)
    replies: list[dict[str, Any]] = []
    ex.submit(request("r1", "tick", kind="execute"), None, None,
              lambda body: replies.append(json.loads(body)))
    ex.submit(cancel("r1"), None, None, lambda body: replies.append(json.loads(body)))
    assert await ex.drain(1)
    assert [r.get("error", {}).get("type") for r in replies] == [None, "Cancelled"]
    assert handler.calls == [] and ex.in_flight == 0


async def test_a_cancel_after_the_method_returned_is_refused_and_the_result_stands() -> None:
    """The loop turn between a method's return and its reply changes no outcome."""
    replies: list[dict[str, Any]] = []

    class CancelsItself(Recorder):
        @method
        async def done(self) -> str:
            # Runs on the loop after this method has returned, before its reply.
            assert self.executor is not None
            asyncio.get_running_loop().call_soon(
                self.executor.submit, cancel("r1"), None, None,
                lambda body: replies.append(json.loads(body)))
            return "done"

    ex = executor(CancelsItself())
    reply = await send(ex, request("r1", "done", ahead(-1)[0]))
    assert replies == [{"v": 1, "id": "c", "ok": True, "result": {"cancelled": False},
                        "runId": "r1"}]
    assert reply["ok"] is True and reply["result"] == "done"


# -- durations, deadlines and logs ------------------------------------------------
async def test_duration_is_the_method_and_the_log_says_how_long_it_was_held(
        caplog: pytest.LogCaptureFixture) -> None:
    handler = Recorder()
    ex = executor(handler)
    with caplog.at_level(logging.DEBUG, "schedulezero.handler"):
        job = asyncio.create_task(send(ex, request("r1", "slow", ahead(0.3)[0],
                                                   seconds=0.1)))
        await asyncio.sleep(0.15)
        assert not [r for r in caplog.records if r.getMessage() == "job started"]
        reply = await job
        assert (await send(ex, request("r2", "tick", kind="execute")))["ok"] is True
    assert reply["ok"] is True
    assert 90 <= reply["durationMs"] < 250  # the 0.1 s method, not the 0.3 s hold
    held, not_held = [r for r in caplog.records if r.getMessage() == "job started"]
    assert held.levelno == logging.DEBUG, "one INFO line per job: when it finished"
    assert 300 - 1000 * EARLY <= getattr(held, "held_ms") <= 300 + 1000 * LATE  # noqa: B009
    assert not hasattr(not_held, "held_ms")
    finished = [r for r in caplog.records if r.getMessage() == "job finished"]
    assert [r.levelno for r in finished] == [logging.INFO, logging.INFO]
    assert getattr(finished[0], "held_ms") == getattr(held, "held_ms")  # noqa: B009


@pytest.mark.parametrize(("seconds", "error"), [(0.05, None), (0.5, "DeadlineExceeded")])
async def test_the_deadline_times_the_method_not_the_hold(seconds: float,
                                                          error: str | None) -> None:
    handler = Recorder()
    ex = executor(handler)
    start_at, instant = ahead(0.3)
    reply = await send(ex, request("r1", "slow", start_at, deadline=rfc3339(instant + 0.2),
                                   seconds=seconds))
    if error is None:
        assert reply["ok"] is True
    else:
        assert reply["error"]["type"] == error
        assert 150 <= reply["durationMs"] < 300  # the method's 0.2 s, not the hold's 0.5
    await ex.drain(1)


async def test_a_start_at_past_the_deadline_never_starts_the_method() -> None:
    handler = Recorder()
    ex = executor(handler)
    start_at, instant = ahead(0.2)
    reply = await send(ex, request("r1", "tick", start_at, deadline=rfc3339(instant - 0.1)))
    assert reply["error"]["type"] == "DeadlineExceeded" and reply["error"]["retryable"]
    assert "not started" in reply["error"]["message"]
    assert handler.calls == [] and ex.in_flight == 0


async def test_http_takes_a_held_job_at_the_execute_route() -> None:
    """What ``POST /v1/execute`` does with the body (``default_type`` "execute")."""
    handler = Recorder()
    ex = executor(handler)
    start_at, instant = ahead(0.2)
    reply, legacy = await ex.handle_message(request("r1", "tick", start_at),
                                            default_type="execute")
    assert reply["ok"] is True and not legacy
    assert handler.calls[0][1] >= instant - EARLY


async def test_a_job_withdrawn_while_held_runs_when_sent_again() -> None:
    """The operator withdraws a held run on a spec change and re-sends the same run id
    when the new spec keeps the slot: the resend runs (nothing ran to replay)."""
    handler = Recorder()
    ex = executor(handler)
    start_at, _ = ahead(0.2)
    first = asyncio.ensure_future(send(ex, request("r1", "tick", start_at, label="old")))
    await asyncio.sleep(0.05)
    assert (await send(ex, cancel("r1")))["result"] == {"cancelled": True}
    assert (await first)["error"]["type"] == "Cancelled"
    again = await send(ex, request("r1", "tick", start_at, label="new"))
    assert again["ok"] is True and again["result"] == "new"
    assert [label for label, _ in handler.calls] == ["new"]
    # A job that did run is remembered: a third send replays it, the method runs once.
    replay = await send(ex, request("r1", "tick", start_at, label="third"))
    assert replay["result"] == "new" and len(handler.calls) == 1


async def test_a_held_job_never_starts_before_start_at_by_the_handler_clock() -> None:
    """The hold sleeps on the loop's clock, matched to the wall clock at receipt; if the
    wall clock then lags it (slewed by NTP, or the two read a hair apart), the start
    still waits for startAt on the handler's clock."""
    lag = [0.0]

    def clock() -> float:
        return handler_clock() - lag[0]

    handler = Recorder(clock)
    ex = Executor(handler, clock=clock)
    start_at, instant = ahead(0.2)
    job = asyncio.ensure_future(send(ex, request("r1", "tick", start_at)))
    await asyncio.sleep(0.05)
    lag[0] = 0.03  # from now on the handler's clock is 30 ms behind the loop's
    assert (await job)["ok"] is True
    (_, started), = handler.calls
    assert started >= instant, "not before startAt on the handler's clock"
    assert started <= instant + LATE


async def test_a_burst_shares_one_hold_target(monkeypatch: pytest.MonkeyPatch) -> None:
    """One loop time per startAt, so the jobs of a burst come due in one loop iteration
    whatever the jitter between clock reads (on a loaded machine, per-job targets left
    some a loop turn behind the others' replies)."""
    computed: list[float] = []
    real = executor_module._hold_until

    def counting(*args: Any, **kwargs: Any) -> float | None:
        target = real(*args, **kwargs)
        computed.append(target or -1)
        return target

    monkeypatch.setattr(executor_module, "_hold_until", counting)
    handler = Recorder()
    ex = executor(handler, concurrency=100)
    (first, _), (second, _) = ahead(0.2), ahead(0.3)
    for i in range(50):
        ex.submit(request(f"a{i}", "tick", first), None, None, lambda body: None)
        ex.submit(request(f"b{i}", "tick", second), None, None, lambda body: None)
    assert len(computed) == 2, "one target per startAt, not one per job"
    assert await ex.drain(5)
    assert len(handler.calls) == 100
