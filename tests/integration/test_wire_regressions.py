"""Regression tests for what the wire fuzz corpus found, one (or a few) per finding.

Handler side: every malformed message is answered in the protocol's shape and the
server keeps serving. Operator side: every malformed reply is a DispatchResult
with ``ProtocolError``, never an exception or a dead reader task.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import pytest
import zmq
import zmq.asyncio
from schedulezero_handler import Executor, method
from schedulezero_handler import protocol as p
from schedulezero_operator.dispatch import Dispatcher, Endpoint

from .conftest import serving
from .wire_fakes import FakeHttp, FakeRep, FakeRouter, http_exchange, parse_http_responses

DEEP = b"[" * 10_000 + b"]" * 10_000
HUGE_INT = b"9" * 5000


class Counter:
    """Counts executions, so a test can tell whether a refused message ran anything."""

    def __init__(self) -> None:
        self.calls = 0

    @method
    def count(self) -> int:
        self.calls += 1
        return self.calls

    @method
    def echo(self, value: Any = None) -> Any:
        return value


def execute_body(rid: str, method_name: str = "count", **extra: Any) -> bytes:
    return p.encode({"v": 1, "id": rid, "type": "execute", "runId": f"run-{rid}",
                     "method": method_name, "params": {}, **extra})


class RawZmq:
    """A raw DEALER or REQ peer of an SDK server."""

    def __init__(self, port: int, kind: int = zmq.DEALER) -> None:
        self.ctx = zmq.asyncio.Context()
        self.sock = self.ctx.socket(kind)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(f"tcp://127.0.0.1:{port}")

    async def ask(self, frames: list[bytes]) -> Any:
        await self.sock.send_multipart(frames)
        reply = await asyncio.wait_for(self.sock.recv_multipart(), 3)
        return json.loads(reply[-1])

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.destroy(linger=0)


async def assert_still_serving(peer: RawZmq) -> None:
    reply = await peer.ask([p.encode({"v": 1, "id": "alive", "type": "health"})])
    assert reply["ok"] is True and reply["id"] == "alive"


def v1_error(reply: Any, error_type: str = "BadRequest") -> dict[str, Any]:
    reply = p.check_reply(reply)
    assert reply["ok"] is False and reply["error"]["type"] == error_type, reply
    return reply


# -- handler side: deep nesting and huge integers -----------------------------------
@pytest.mark.parametrize("kind", [zmq.DEALER, zmq.REQ], ids=["dealer", "req"])
async def test_deep_and_huge_int_requests_are_answered_over_zmq(kind: int) -> None:
    """Used to raise RecursionError / ValueError past the decoder: no reply at all."""
    async with serving(Counter()) as (_, ep):
        peer = RawZmq(ep.port, kind)
        try:
            cases = {
                DEEP: "nested deeper than 64",
                b'{"v":1,"id":"d","type":"execute","runId":"r","method":"echo","params":'
                b'{"value":' + DEEP + b"}}": "nested deeper than 64",
                b'{"v":1,"id":"h","type":"health","n":' + HUGE_INT + b"}":
                    "integer of 5000 digits",
                b'{"method":"echo","params":{"value":' + HUGE_INT + b"}}":
                    "integer of 5000 digits",
            }
            for body, needle in cases.items():
                reply = v1_error(await peer.ask([body]))
                assert needle in reply["error"]["message"]
                assert reply["id"] is None  # unreadable, so not echoed
                await assert_still_serving(peer)
        finally:
            peer.close()


async def test_deep_and_huge_int_requests_are_answered_over_http() -> None:
    """Used to close the connection without any response."""
    async with serving(Counter(), protocol="http") as (_, ep):
        for path, body, needle in [
            ("/v1/execute", b'{"v":1,"id":"d","runId":"r","method":"echo","params":{"value":'
             + DEEP + b"}}", b"nested deeper than 64"),
            ("/v1/execute", b'{"v":1,"id":"h","runId":"r","method":"echo","params":{"value":'
             + HUGE_INT + b"}}", b"integer of 5000 digits"),
            ("/", DEEP, b"nested deeper than 64"),
        ]:
            raw = (f"POST {path} HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                   + body)
            [(status, _, payload)] = parse_http_responses(
                await asyncio.to_thread(http_exchange, ep.port, raw))
            assert status == 400 and needle in payload
            v1_error(json.loads(payload))


# -- handler side: framing ----------------------------------------------------------
async def test_extra_frames_reject_the_whole_message() -> None:
    """Used to run the first execute and silently drop the rest."""
    handler = Counter()
    async with serving(handler) as (_, ep):
        peer = RawZmq(ep.port)
        try:
            two = v1_error(await peer.ask([execute_body("a"), execute_body("b")]))
            assert two["id"] == "a", "the id is echoed so the operator can match the error"
            assert "expected 1 to 3 frames" in two["error"]["message"]
            three = v1_error(await peer.ask([execute_body("c"), execute_body("d"),
                                             execute_body("e")]))
            assert three["id"] == "c" and "one request per message" in three["error"]["message"]
            four = v1_error(await peer.ask([execute_body("f")] * 4))
            assert four["id"] == "f"
            assert handler.calls == 0, "nothing in a refused message runs"
            # A correctly signed request still works on a handler without a secret.
            body = execute_body("signed")
            ts, sig = p.sign(b"k", body, time.time())
            ok = await peer.ask([body, ts.encode(), sig.encode()])
            assert ok["ok"] is True and ok["result"] == 1
        finally:
            peer.close()


async def test_req_peer_with_extra_frames_gets_one_legacy_reply() -> None:
    async with serving(Counter()) as (_, ep):
        peer = RawZmq(ep.port, zmq.REQ)
        try:
            legacy = p.encode({"method": "count", "params": {}})
            reply = await peer.ask([legacy, b"trailing"])
            assert reply["success"] is False and "frames" in reply["error"]
            assert (await peer.ask([legacy])) == {"success": True, "result": 1}
        finally:
            peer.close()



async def test_oversized_zmq_messages_are_answered_or_dropped_with_the_connection() -> None:
    """Up to 4x max_request_bytes: TooLarge. Past it libzmq drops the peer (documented),
    so one peer cannot make the handler buffer arbitrarily large messages."""
    async with serving(Counter(), max_request_bytes=4096) as (_, ep):
        peer = RawZmq(ep.port)
        try:
            v1_error(await peer.ask([b"x" * 10_000]), "TooLarge")
            await peer.sock.send_multipart([b"x" * 20_000])
            assert not await peer.sock.poll(500), "a giant message is dropped, not answered"
        finally:
            peer.close()
        fresh = RawZmq(ep.port)
        try:
            await assert_still_serving(fresh)
        finally:
            fresh.close()

# -- handler side: legacy shape -------------------------------------------------------
@pytest.mark.parametrize("body", [
    {"method": 5},
    {"method": "count", "params": [1]},
    {"method": "count", "params": "x"},
    {"method": None, "params": {}},
])
async def test_malformed_legacy_requests_get_the_legacy_shape(body: dict[str, Any]) -> None:
    async with serving(Counter()) as (_, ep):
        peer = RawZmq(ep.port, zmq.REQ)
        try:
            reply = p.check_legacy_reply(await peer.ask([p.encode(body)]))
            assert reply["success"] is False and "legacy request needs" in reply["error"]
            assert set(reply) == {"success", "error"}
        finally:
            peer.close()
    async with serving(Counter(), protocol="http") as (_, ep):
        data = p.encode(body)
        raw = f"POST / HTTP/1.1\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data
        [(status, _, payload)] = parse_http_responses(
            await asyncio.to_thread(http_exchange, ep.port, raw))
        assert status == 400
        assert json.loads(payload)["success"] is False


# -- handler side: private names ----------------------------------------------------
class Watched:
    """Records every attribute looked up on the instance once armed."""

    armed = False

    def __init__(self) -> None:
        self.looked_up: list[str] = []

    def __getattribute__(self, name: str) -> Any:
        if object.__getattribute__(self, "armed"):
            object.__getattribute__(self, "looked_up").append(name)
        return object.__getattribute__(self, name)

    @method
    def visible(self) -> str:
        return "ok"

    def _secret(self) -> str:
        return "leaked"


@pytest.mark.parametrize("protocol", ["zmq", "http"])
async def test_private_names_are_unknown_without_touching_the_instance(
        protocol: str, dispatcher: Dispatcher) -> None:
    handler = Watched()
    async with serving(handler, protocol=protocol) as (_, ep):
        handler.armed = True
        for name in ("__init__", "_secret", "__class__", "__getattribute__", "_"):
            r = await dispatcher.execute(ep, run_id=f"r-{name}", method=name, params={},
                                         timeout=3)
            assert r.error_type == "UnknownMethod" and not r.retryable, r
        handler.armed = False
        assert handler.looked_up == [], "no lookup on the instance for a private name"
        assert (await dispatcher.execute(ep, run_id="v", method="visible", params={},
                                         timeout=3)).result == "ok"


async def test_legacy_request_for_a_private_name_is_unknown() -> None:
    async with serving(Watched()) as (_, ep):
        peer = RawZmq(ep.port, zmq.REQ)
        try:
            reply = await peer.ask([p.encode({"method": "__init__", "params": {}})])
            assert reply["success"] is False and "Unknown method: __init__" in reply["error"]
        finally:
            peer.close()


# -- handler side: results the operator would refuse --------------------------------
class BadResults:
    @method
    def nan(self) -> float:
        return float("nan")

    @method
    def deep(self) -> Any:
        value: Any = 1
        for _ in range(100):
            value = [value]
        return value

    @method
    def surrogate(self) -> str:
        return "\ud800"

    @method
    def colliding_keys(self) -> dict[Any, int]:
        return {1: 1, "1": 2}


@pytest.mark.parametrize("name", ["nan", "deep", "surrogate", "colliding_keys"])
async def test_unsendable_results_fail_the_run_clearly(name: str) -> None:
    ex = Executor(BadResults())
    reply = json.loads(await ex.handle(execute_body("x", name)))
    assert reply["ok"] is False and reply["error"]["type"] == "HandlerError"
    assert reply["error"]["retryable"] is False
    assert "cannot be sent as protocol JSON" in reply["error"]["message"]
    await ex.drain(1)


# -- handler side: malformed HTTP framing -------------------------------------------
BAD_HTTP = [
    (b"NONSENSE\r\n\r\n", 400),
    (b"GET /healthz\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1 extra\r\n\r\n", 400),
    (b"GET healthz HTTP/1.1\r\n\r\n", 400),
    (b"G(T /healthz HTTP/1.1\r\n\r\n", 400),
    (b"GET /healthz HTTX/1.1\r\n\r\n", 400),
    (b"GET /healthz HTTP/2.0\r\n\r\n", 505),
    (b"GET /\x00 HTTP/1.1\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nX: a\x01b\r\n\r\n", 400),
    (b"POST /v1/execute HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400),
    (b"POST /v1/execute HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
    (b"POST /v1/execute HTTP/1.1\r\nContent-Length: +2\r\n\r\n{}", 400),
    (b"POST /v1/execute HTTP/1.1\r\nContent-Length: 1_0\r\n\r\n", 400),
    (b"POST /v1/execute HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400),
    (b"POST /v1/execute HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n", 413),
    (b"POST /v1/execute HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413),
    (b"POST /v1/execute HTTP/1.1\r\nContent-Length: 100\r\n\r\n{}", 400),  # truncated
    (b"POST /v1/execute HTTP/1.1\r\nContent-Le", 400),  # truncated head
    (b"POST /v1/execute HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
     400),
    (b"POST /v1/execute HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (b"POST /v1/execute HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST /v1/execute HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST /v1/execute HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    (b"POST /v1/execute HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n",
     400),
    (b"POST /v1/execute HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{}", 400),
    (b"POST /v1/execute HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
     + b"fff\r\n" + b"x" * 0xFFF + b"\r\n" + b"fff\r\n" + b"x" * 0xFFF + b"\r\n0\r\n\r\n", 413),
    (b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n", 431),
]


@pytest.mark.parametrize(("raw", "status"), BAD_HTTP, ids=range(len(BAD_HTTP)))
async def test_malformed_http_gets_a_typed_response(raw: bytes, status: int) -> None:
    """Used to drop the connection (or, for chunked, parse the body as the next request)."""
    async with serving(Counter(), protocol="http", max_request_bytes=4096) as (_, ep):
        responses = parse_http_responses(await asyncio.to_thread(http_exchange, ep.port, raw))
        assert [s for s, _, _ in responses] == [status], responses
        _, headers, payload = responses[0]
        assert headers["connection"] == "close"
        body = v1_error(json.loads(payload), "TooLarge" if status == 413 else "BadRequest")
        assert body["error"]["message"]
        ok = await asyncio.to_thread(http_exchange, ep.port, b"GET /healthz HTTP/1.1\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200")


async def test_chunked_and_expect_continue_requests_work() -> None:
    async with serving(Counter(), protocol="http") as (_, ep):
        body = execute_body("c")
        chunked = (b"POST /v1/execute HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                   b"Connection: close\r\n\r\n"
                   + b"%x;ext=1\r\n%s\r\n" % (10, body[:10])
                   + b"%X\r\n%s\r\n" % (len(body) - 10, body[10:]) + b"0\r\nTrailer: x\r\n\r\n")
        [(status, _, payload)] = parse_http_responses(
            await asyncio.to_thread(http_exchange, ep.port, chunked))
        assert status == 200 and json.loads(payload)["result"] == 1
        expect = (b"POST /v1/execute HTTP/1.1\r\nExpect: 100-continue\r\nConnection: close\r\n"
                  + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        data = await asyncio.to_thread(http_exchange, ep.port, expect)
        assert data.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200")


async def test_slow_http_request_times_out_with_408() -> None:
    async with serving(Counter(), protocol="http") as (server, ep):
        for t in server.transports:
            t.request_timeout = 0.3

        def stall() -> bytes:
            with socket.create_connection(("127.0.0.1", ep.port), timeout=5) as s:
                s.sendall(b"POST /v1/execute HTTP/1.1\r\nContent-Length: 10\r\n\r\n{")
                return s.recv(65536)

        data = await asyncio.to_thread(stall)
        assert data.startswith(b"HTTP/1.1 408 Request Timeout")


# -- operator side: ZMQ v1 -------------------------------------------------------------
async def run_pair(d: Dispatcher, ep: Endpoint, bad_timeout: float = 2.0) -> tuple[Any, Any]:
    """A valid request in flight while the broken one is answered, on one connection."""
    good = asyncio.ensure_future(d.execute(ep, run_id="g", method="good", params={},
                                           timeout=5))
    await asyncio.sleep(0.05)  # the good request is held by the fake before the bad one
    bad = await d.execute(ep, run_id="b", method="bad", params={}, timeout=bad_timeout)
    return bad, await good


def reply_with(**fields: Any) -> Any:
    def script(req: dict[str, Any]) -> list[bytes]:
        reply = {"v": 1, "id": req["id"], "runId": req.get("runId"), "ok": False,
                 "error": {"type": "HandlerError", "message": "m", "retryable": True}}
        reply.update(fields)
        return [json.dumps(reply).encode()]
    return script


@pytest.mark.parametrize("script", [
    reply_with(ok="false"),
    reply_with(ok=0),
    reply_with(ok=None),
    reply_with(v="1"),
    reply_with(v=True),
    reply_with(error={"type": "HandlerError", "message": "m", "retryable": "no"}),
    reply_with(error={"type": "HandlerError", "message": "m", "retryable": 1}),
    reply_with(error={"type": "HandlerError", "message": "m"}),
    reply_with(error="boom"),
    reply_with(ok=True, durationMs="5"),
    lambda req: [b'{"v":1,"id":"%s","ok":true,"result":%s}' % (req["id"].encode(), DEEP)],
    lambda req: [b'{"v":1,"id":"%s","ok":true,"result":%s}' % (req["id"].encode(), HUGE_INT)],
    lambda req: [b'{"v":1,"id":"%s","ok":true,"result":NaN}' % req["id"].encode()],
    lambda req: [b'{"v":1,"id":"%s","ok":true,"ok":false}' % req["id"].encode()],
    lambda req: [b'{"v":1,"id":"%s","ok":true,"result":"\\udc00"}' % req["id"].encode()],
    lambda req: [b'{"v":1,"id":"%s","ok":true,"result":"\xff"}' % req["id"].encode()],
    lambda req: [b'{"v":1,"id":"%s","ok":tr' % req["id"].encode()],
    lambda req: [p.encode(p.ok_reply(req["id"], 1)), b"extra frame"],
], ids=["ok-str", "ok-0", "ok-null", "v-str", "v-bool", "retryable-str", "retryable-1",
        "retryable-missing", "error-str", "duration-str", "deep", "huge-int", "nan", "dup-key",
        "surrogate", "not-utf8", "truncated", "two-frames"])
async def test_malformed_v1_replies_are_protocol_errors(script: Any) -> None:
    """Strict types (no truthiness), and the reader survives whatever one reply holds."""
    router = await FakeRouter(script).start()
    d = Dispatcher()
    try:
        ep = Endpoint("127.0.0.1", router.port, "zmq")
        bad, good = await run_pair(d, ep)
        assert bad.error_type == "ProtocolError" and bad.retryable, bad
        assert good.ok and good.result == "fine", good
        client = d._zmq[ep.key]
        assert client._reader is not None and not client._reader.done()
    finally:
        await d.close()
        await router.close()


async def test_unattributable_garbage_does_not_kill_the_reader() -> None:
    """The original failure: a deep reply killed the reader, stalling everything in flight."""
    router = await FakeRouter(lambda req: [DEEP]).start()
    d = Dispatcher()
    try:
        ep = Endpoint("127.0.0.1", router.port, "zmq")
        bad, good = await run_pair(d, ep, bad_timeout=0.3)
        assert bad.error_type == "Timeout", "no id in it: it cannot be attributed"
        assert good.ok, good
        client = d._zmq[ep.key]
        assert client.unmatched_replies == 1
        assert client._reader is not None and not client._reader.done()
    finally:
        await d.close()
        await router.close()


async def test_oversized_reply_is_a_protocol_error() -> None:
    router = await FakeRouter(
        lambda req: [p.encode(p.ok_reply(req["id"], "x" * 3000, req["runId"]))]).start()
    d = Dispatcher(max_reply_bytes=2000)
    try:
        bad, good = await run_pair(d, Endpoint("127.0.0.1", router.port, "zmq"))
        assert bad.error_type == "ProtocolError" and "exceeds the limit" in bad.message
        assert good.ok
    finally:
        await d.close()
        await router.close()


@pytest.mark.parametrize(("result", "expected"), [
    ("yes", False), ([1], False), (None, False), ({"cancelled": "true"}, False),
    ({"cancelled": 1}, False), ({"cancelled": True}, True),
])
async def test_cancel_reads_replies_strictly_and_never_raises(result: Any,
                                                              expected: bool) -> None:
    """``cancel`` used to raise AttributeError for a non-object result."""
    router = await FakeRouter(lambda req: [p.encode(p.ok_reply(req["id"], result,
                                                               req.get("runId")))],
                              script_cancels=True).start()
    d = Dispatcher()
    try:
        ep = Endpoint("127.0.0.1", router.port, "zmq")
        assert await d.cancel(ep, "r1") is expected
    finally:
        await d.close()
        await router.close()


async def test_background_cancel_after_a_timeout_survives_a_bad_answer() -> None:
    def script(req: dict[str, Any]) -> list[bytes]:
        if req.get("type") == "cancel":
            return [p.encode(p.ok_reply(req["id"], "not an object", req["runId"]))]
        return [b"unattributable"]

    router = await FakeRouter(script, script_cancels=True).start()
    d = Dispatcher()
    try:
        ep = Endpoint("127.0.0.1", router.port, "zmq")
        r = await d.execute(ep, run_id="t", method="slow", params={}, timeout=0.2)
        assert r.error_type == "Timeout"
        tasks = list(d._background)
        assert tasks, "a best-effort cancel was sent"
        await asyncio.wait(tasks, timeout=3)
        assert all(t.done() and t.exception() is None for t in tasks)
    finally:
        await d.close()
        await router.close()


@pytest.mark.parametrize("result", [
    "methods", [1], {"methods": "x"}, {"methods": [1]}, {"methods": [{"name": 5}]},
    {"methods": [{}]},
])
async def test_describe_results_the_engine_cannot_read_are_protocol_errors(
        result: Any) -> None:
    router = await FakeRouter(lambda req: [p.encode(p.ok_reply(req["id"], result))]).start()
    d = Dispatcher()
    try:
        r = await d.describe(Endpoint("127.0.0.1", router.port, "zmq"), timeout=2)
        assert r.error_type == "ProtocolError" and "describe" in r.message
    finally:
        await d.close()
        await router.close()


# -- operator side: legacy REQ -----------------------------------------------------------
@pytest.mark.parametrize("frames", [
    [b'{"success": "false"}'],
    [b'{"success": "true", "result": 1}'],
    [b'{"success": 1}'],
    [b'{"success": null}'],
    [b'{"result": 1}'],
    [b"[true]"],
    [b"not json"],
    [DEEP],
    [b'{"success": true, "result": ' + HUGE_INT + b"}"],
    [b'{"success": true, "success": false}'],
    [b'{"success": true}', b"second frame"],
])
async def test_malformed_legacy_replies_are_protocol_errors(frames: list[bytes]) -> None:
    """``{"success": "false"}`` used to be read as success (a non-empty string)."""
    rep = await FakeRep(lambda req: frames).start()
    d = Dispatcher()
    try:
        ep = Endpoint("127.0.0.1", rep.port, "zmq-legacy")
        bad, good = await asyncio.gather(
            d.execute(ep, run_id="b", method="bad", params={}, timeout=2),
            d.execute(ep, run_id="g", method="good", params={}, timeout=2))
        assert bad.error_type == "ProtocolError" and bad.retryable, bad
        assert good.ok and good.result == "fine", "the REQ socket is still usable"
    finally:
        await d.close()
        await rep.close()


async def test_legacy_error_of_any_json_type_is_a_handler_error() -> None:
    rep = await FakeRep(lambda req: [b'{"success": false, "error": {"code": 7}}']).start()
    d = Dispatcher()
    try:
        r = await d.execute(Endpoint("127.0.0.1", rep.port, "zmq-legacy"), run_id="x",
                            method="bad", params={}, timeout=2)
        assert r.error_type == "HandlerError" and r.message == '{"code":7}' and r.retryable
    finally:
        await d.close()
        await rep.close()


# -- operator side: HTTP -------------------------------------------------------------
def http_response(body: bytes, status: bytes = b"200 OK", extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\n" % len(body) + extra
            + b"\r\n" + body)


@pytest.mark.parametrize(("raw", "expected"), [
    (http_response(b"not json"), "ProtocolError"),
    (http_response(DEEP), "ProtocolError"),
    (http_response(b'{"v":1,"id":"x","ok":"false"}'), "ProtocolError"),
    (http_response(b'{"error":"no route"}', b"404 Not Found"), "ProtocolError"),
    (http_response(b"x" * 5000), "ProtocolError"),  # over max_reply_bytes
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}", "ProtocolError"),  # truncated
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "ProtocolError"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n", "ProtocolError"),
    (b"HTTP/9 OK\r\n\r\n", "ProtocolError"),
    (b"\x00\xff garbage\r\n\r\n", "ProtocolError"),
    (b"", "ConnectionError"),  # closed without a response
])
async def test_malformed_http_replies_are_classified(raw: bytes, expected: str) -> None:
    fake = await FakeHttp(lambda req: raw).start()
    d = Dispatcher(max_reply_bytes=4096)
    try:
        ep = Endpoint("127.0.0.1", fake.port, "http")
        bad, good = await asyncio.gather(
            d.execute(ep, run_id="b", method="bad", params={}, timeout=3),
            d.execute(ep, run_id="g", method="good", params={}, timeout=3))
        assert bad.error_type == expected and bad.retryable, bad
        assert good.ok and good.result == "fine", good
    finally:
        await d.close()
        await fake.close()
