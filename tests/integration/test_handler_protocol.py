"""SDK server <-> operator dispatch clients over real loopback sockets, both protocols."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
import zmq
import zmq.asyncio
from schedulezero_handler import method
from schedulezero_handler import protocol as p
from schedulezero_operator.dispatch import Dispatcher, Endpoint

from .conftest import serving

BOTH = pytest.mark.parametrize("protocol", ["zmq", "http"])


async def run(d: Dispatcher, ep: Endpoint, method_name: str, params: dict[str, Any] | None = None,
              *, run_id: str = "run-1", timeout: float = 5.0, attempt: int = 1,
              secret: bytes | None = None) -> Any:
    return await d.execute(ep, run_id=run_id, method=method_name, params=params or {},
                           timeout=timeout, attempt=attempt, secret=secret)


class WithHelper:
    @method
    def visible(self, x: int) -> int:
        return x * 2

    def helper(self) -> str:  # public but not exposed: must not be callable
        return "leaked"


@BOTH
async def test_round_trip_and_describe(protocol: str, dispatcher: Dispatcher,
                                       record: Callable[[], list[str]]) -> None:
    async with serving(protocol=protocol) as (_, ep):
        r = await run(dispatcher, ep, "heartbeat", run_id="abc")
        assert r.ok, r
        assert r.result["runId"] == "abc"
        assert len(record()) == 1
        d = await dispatcher.describe(ep)
        names = {m["name"] for m in d.result["methods"]}
        assert {"heartbeat", "sleep", "flaky", "fail"} <= names
        assert "_record" not in names
        sleep = next(m for m in d.result["methods"] if m["name"] == "sleep")
        assert sleep["params"] == [{"name": "seconds", "type": "float", "required": True}]


@BOTH
async def test_only_exposed_methods_are_callable(protocol: str, dispatcher: Dispatcher) -> None:
    async with serving(WithHelper(), protocol=protocol) as (_, ep):
        assert (await run(dispatcher, ep, "visible", {"x": 21})).result == 42
        r = await run(dispatcher, ep, "helper")
        assert r.error_type == "UnknownMethod" and not r.retryable
        assert "Unknown method: helper" in r.message and "visible" in r.message


@BOTH
@pytest.mark.parametrize(("params", "needle"), [
    ({}, "missing required parameter(s) seconds"),
    ({"seconds": "soon"}, "parameter 'seconds' must be float, got str"),
    ({"seconds": 0, "colour": "red"}, "unexpected parameter(s) colour"),
    ({"seconds": True}, "parameter 'seconds' must be float, got bool"),
])
async def test_wrong_params_name_the_parameter(protocol: str, dispatcher: Dispatcher,
                                               params: dict[str, Any], needle: str) -> None:
    async with serving(protocol=protocol) as (server, ep):
        r = await run(dispatcher, ep, "sleep", params)
        assert r.error_type == "InvalidParams" and not r.retryable
        assert needle in r.message
        assert server.executor.in_flight == 0


@BOTH
async def test_concurrency_limit_is_honoured(protocol: str, dispatcher: Dispatcher) -> None:
    async with serving(protocol=protocol, concurrency=2) as (_, ep):
        results = await asyncio.gather(*[
            run(dispatcher, ep, "sleep", {"seconds": 0.4}, run_id=f"r{i}") for i in range(3)])
        assert sorted(r.ok for r in results) == [False, True, True]
        busy = next(r for r in results if not r.ok)
        assert busy.error_type == "Busy" and busy.retryable


@BOTH
async def test_many_concurrent_requests_stay_correct(protocol: str,
                                                     dispatcher: Dispatcher) -> None:
    """ScheduleZero aborted with two concurrent run-now calls; 64 must just work."""
    async with serving(protocol=protocol, concurrency=64) as (server, ep):
        results = await asyncio.gather(*[
            run(dispatcher, ep, "sleep", {"seconds": 0.05}, run_id=f"c{i}")
            for i in range(64)])
        assert all(r.ok for r in results), [r for r in results if not r.ok][:3]
        assert {r.result["runId"] for r in results} == {f"c{i}" for i in range(64)}
        assert server.executor.in_flight == 0


@BOTH
async def test_timeout_is_retryable_and_cancels_the_job(protocol: str,
                                                        dispatcher: Dispatcher) -> None:
    async with serving(protocol=protocol) as (server, ep):
        r = await run(dispatcher, ep, "sleep", {"seconds": 5}, timeout=0.2, run_id="slow")
        assert r.error_type == "Timeout" and r.retryable
        for _ in range(50):  # the client sends a best-effort cancel after the timeout
            if server.executor.in_flight == 0:
                break
            await asyncio.sleep(0.05)
        assert server.executor.in_flight == 0


@BOTH
async def test_cancel_a_running_job(protocol: str, dispatcher: Dispatcher) -> None:
    async with serving(protocol=protocol) as (_, ep):
        job = asyncio.ensure_future(run(dispatcher, ep, "sleep", {"seconds": 5}, run_id="c1"))
        await asyncio.sleep(0.2)
        assert await dispatcher.cancel(ep, "c1")
        r = await job
        assert r.error_type == "Cancelled" and not r.retryable
        assert not await dispatcher.cancel(ep, "c1"), "nothing left to cancel"


@BOTH
async def test_duplicate_run_id_runs_once(protocol: str, dispatcher: Dispatcher,
                                          record: Callable[[], list[str]]) -> None:
    async with serving(protocol=protocol) as (_, ep):
        a, b = await asyncio.gather(
            run(dispatcher, ep, "sleep", {"seconds": 0.3}, run_id="dup"),
            run(dispatcher, ep, "sleep", {"seconds": 0.3}, run_id="dup"))
        assert a.ok and b.ok
        again = await run(dispatcher, ep, "sleep", {"seconds": 0.3}, run_id="dup")
        assert again.ok
        finished = [json.loads(x) for x in record() if json.loads(x)["method"] == "sleep"]
        assert len(finished) == 1, "one execution for one (run id, attempt)"


@BOTH
async def test_a_succeeded_run_is_replayed_to_a_later_attempt_not_run_again(
        protocol: str, dispatcher: Dispatcher, record: Callable[[], list[str]]) -> None:
    """An operator that took over after a lost reply resends the run with attempt + 1."""
    async with serving(protocol=protocol) as (_, ep):
        first = await run(dispatcher, ep, "heartbeat", run_id="hand-over", attempt=1)
        again = await run(dispatcher, ep, "heartbeat", run_id="hand-over", attempt=2)
        assert first.ok and again.ok and again.result == first.result
        assert [json.loads(x)["method"] for x in record()].count("heartbeat") == 1


@BOTH
async def test_a_failed_run_is_retried_by_a_later_attempt(
        protocol: str, dispatcher: Dispatcher, record: Callable[[], list[str]]) -> None:
    async with serving(protocol=protocol) as (_, ep):
        first = await run(dispatcher, ep, "flaky", {"failures": 1}, run_id="retry", attempt=1)
        same = await run(dispatcher, ep, "flaky", {"failures": 1}, run_id="retry", attempt=1)
        second = await run(dispatcher, ep, "flaky", {"failures": 1}, run_id="retry",
                           attempt=2)
        assert not first.ok and not same.ok and second.ok
        assert [json.loads(x)["method"] for x in record()].count("flaky") == 2


@BOTH
async def test_graceful_shutdown_finishes_in_flight_jobs(protocol: str,
                                                         dispatcher: Dispatcher) -> None:
    async with serving(protocol=protocol, concurrency=8) as (server, ep):
        jobs = [asyncio.ensure_future(run(dispatcher, ep, "sleep", {"seconds": 0.5},
                                          run_id=f"g{i}")) for i in range(5)]
        await asyncio.sleep(0.15)
        drain = asyncio.ensure_future(server.shutdown(grace=10))
        await asyncio.sleep(0.05)
        assert not server.executor.accepting
        if protocol == "http":
            from urllib.request import urlopen

            def readyz() -> int:
                try:
                    return int(urlopen(f"http://127.0.0.1:{ep.port}/readyz", timeout=2).status)
                except Exception as e:  # noqa: BLE001
                    return int(getattr(e, "code", 0))
            assert await asyncio.to_thread(readyz) == 503
        late = await run(dispatcher, ep, "heartbeat", run_id="late", timeout=2)
        assert late.error_type == "ShuttingDown" and late.retryable
        results = await asyncio.gather(*jobs)
        assert all(r.ok for r in results), "no in-flight job lost or cut"
        assert await drain is True


@BOTH
async def test_errors_are_classified(protocol: str, dispatcher: Dispatcher) -> None:
    async with serving(protocol=protocol, max_result_bytes=1000) as (_, ep):
        r = await run(dispatcher, ep, "fail")
        assert r.error_type == "HandlerError" and r.retryable and "always fails" in r.message
        r = await run(dispatcher, ep, "fail_permanently", run_id="p")
        assert r.error_type == "HandlerError" and not r.retryable
        r = await run(dispatcher, ep, "big_result", {"size": 5000}, run_id="big")
        assert r.error_type == "ResultTooLarge" and not r.retryable
        ok = await run(dispatcher, ep, "big_result", {"size": 10}, run_id="small")
        assert ok.ok and ok.result == "x" * 10


async def test_flaky_succeeds_on_a_later_attempt(dispatcher: Dispatcher) -> None:
    async with serving() as (_, ep):
        outcomes = [await run(dispatcher, ep, "flaky", {"failures": 2}, run_id="f", attempt=a)
                    for a in (1, 2, 3)]
        assert [o.ok for o in outcomes] == [False, False, True]
        assert outcomes[2].result == {"succeededOnAttempt": 3}


async def test_unreachable_endpoint_is_a_retryable_failure(dispatcher: Dispatcher) -> None:
    http = await run(dispatcher, Endpoint("127.0.0.1", 1, "http"), "x", timeout=1)
    assert http.error_type == "ConnectionError" and http.retryable
    zmq_ep = await run(dispatcher, Endpoint("127.0.0.1", 1, "zmq"), "x", timeout=0.3)
    assert zmq_ep.error_type == "Timeout" and zmq_ep.retryable


# -- signing ------------------------------------------------------------------
@BOTH
async def test_signed_requests(protocol: str, dispatcher: Dispatcher) -> None:
    async with serving(protocol=protocol, secret=b"s3cret") as (_, ep):
        r = await run(dispatcher, ep, "heartbeat", run_id="unsigned")
        assert r.error_type == "Unauthorized" and "not signed" in r.message
        r = await run(dispatcher, ep, "heartbeat", run_id="forged", secret=b"wrong")
        assert r.error_type == "Unauthorized" and "bad request signature" in r.message
        # The same connection, the right key: each request is signed with the key it is
        # given (a rotated Secret applies at once; two Handlers sharing the endpoint
        # each sign with their own), not with one cached when the connection opened.
        assert (await run(dispatcher, ep, "heartbeat", run_id="signed", secret=b"s3cret")).ok
        assert not (await dispatcher.describe(ep)).ok
        assert (await dispatcher.describe(ep, secret=b"s3cret")).ok
        r = await run(dispatcher, ep, "heartbeat", run_id="again", secret=b"other")
        assert r.error_type == "Unauthorized", "a key used earlier does not stick"


async def test_stale_signature_is_rejected() -> None:
    async with serving(secret=b"k") as (server, _):
        body = p.encode({"v": 1, "type": "health", "id": "1"})
        ts, sig = p.sign(b"k", body, server.executor.clock() - 600)
        reply = json.loads(await server.executor.handle(body, ts, sig))
        assert reply["error"]["type"] == "Unauthorized" and "stale" in reply["error"]["message"]
        ts, sig = p.sign(b"k", body, server.executor.clock())
        assert json.loads(await server.executor.handle(body, ts, sig))["ok"]


# -- legacy ScheduleZero compatibility ----------------------------------------
async def test_operator_calls_an_unchanged_scheduleszero_handler(dispatcher: Dispatcher) -> None:
    import threading

    from examples.handlers.legacy_rep import LegacyHandler

    with zmq.Context() as probe:  # pick a free port
        s = probe.socket(zmq.REP)
        port = s.bind_to_random_port("tcp://127.0.0.1")
        s.close()
    threading.Thread(target=LegacyHandler(f"tcp://127.0.0.1:{port}").run, daemon=True).start()
    ep = Endpoint("127.0.0.1", port, "zmq-legacy")
    first = await run(dispatcher, ep, "increment_counter", {"by": 2})
    assert first.ok and first.result == {"count": 2}
    failed = await run(dispatcher, ep, "fail")
    assert not failed.ok and failed.retryable and failed.message == "legacy failure"
    unknown = await run(dispatcher, ep, "nope")
    assert not unknown.ok and "Unknown method: nope" in unknown.message
    echo = await run(dispatcher, ep, "echo", {"message": "hi"})
    assert echo.ok and echo.result == "hi"
    # Concurrent calls are serialised per endpoint instead of sharing one REQ socket.
    many = await asyncio.gather(*[run(dispatcher, ep, "increment_counter") for _ in range(10)])
    assert all(m.ok for m in many)
    assert sorted(m.result["count"] for m in many) == list(range(3, 13))


async def test_sdk_server_answers_scheduleszero_clients() -> None:
    async with serving() as (_server, ep):
        ctx = zmq.asyncio.Context()
        req = ctx.socket(zmq.REQ)
        req.connect(f"tcp://127.0.0.1:{ep.port}")
        try:
            await req.send_string(json.dumps({"method": "ping", "params": {}}))
            assert json.loads(await req.recv_string()) == {"success": True, "message": "pong"}
            await req.send_string(json.dumps({"method": "increment_counter", "params": {}}))
            assert json.loads(await req.recv_string()) == {"success": True, "result": 1}
            await req.send_string(json.dumps({"method": "nope", "params": {}}))
            reply = json.loads(await req.recv_string())
            assert reply["success"] is False and "Unknown method: nope" in reply["error"]
            await req.send_string("not json")
            reply = json.loads(await req.recv_string())
            assert reply["error"]["type"] == "BadRequest"
        finally:
            req.close(0)
            ctx.destroy(linger=0)


@BOTH
async def test_jobs_cut_by_the_grace_period_are_answered_retryable(
        protocol: str, dispatcher: Dispatcher) -> None:
    async with serving(protocol=protocol) as (server, ep):
        job = asyncio.ensure_future(run(dispatcher, ep, "sleep", {"seconds": 5}, run_id="cut"))
        await asyncio.sleep(0.2)
        assert await server.shutdown(grace=0.3) is False
        r = await asyncio.wait_for(job, 3)
        # ZMQ gets the ShuttingDown reply; HTTP may see the connection close first.
        assert r.error_type in ("ShuttingDown", "ConnectionError") and r.retryable
        if protocol == "zmq":
            assert r.error_type == "ShuttingDown"
