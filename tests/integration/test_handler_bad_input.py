"""Garbage in: every bad frame gets a clear error and the server keeps serving."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import zmq
import zmq.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schedulezero_handler import Executor
from schedulezero_handler import protocol as p
from schedulezero_operator.dispatch import Dispatcher, Endpoint

from examples.handlers.testing import TestHandler

from .conftest import serving

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


async def raw_dealer_exchange(port: int, frames: list[bytes]) -> dict:
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{port}")
    try:
        await sock.send_multipart(frames)
        reply = await asyncio.wait_for(sock.recv_multipart(), 3)
        return json.loads(reply[-1])
    finally:
        sock.close(0)
        ctx.destroy(linger=0)


async def test_garbage_zmq_frames_get_clear_errors() -> None:
    async with serving(max_request_bytes=4096) as (_, ep):
        cases = {
            b"\xff\xfe\x00": "Invalid JSON",
            b"[1, 2]": "must be a JSON object",
            b"{}": "protocol version None not supported",
            b'{"v": 1, "id": "x", "type": "explode"}': "unknown request type 'explode'",
            b'{"v": 1, "id": "x", "type": "execute", "method": "heartbeat"}':
                "missing field 'runId'",
            b'{"v": 1, "id": "x", "type": "execute", "runId": 5, "method": "m"}':
                "field 'runId' must be str, got int",
            b'{"v": 2, "id": "x", "type": "health"}': "version 2 not supported",
            b"x" * 5000: "exceeds the limit of 4096",
        }
        for frame, needle in cases.items():
            reply = await raw_dealer_exchange(ep.port, [frame])
            assert reply["ok"] is False, frame
            assert needle in reply["error"]["message"], (frame, reply)
        too_many = await raw_dealer_exchange(ep.port, [b"a", b"b", b"c", b"d"])
        assert "expected 1 to 3 frames" in too_many["error"]["message"]
        # still serving
        healthy = await raw_dealer_exchange(ep.port, [p.encode(
            {"v": 1, "id": "h", "type": "health"})])
        assert healthy["ok"] and healthy["result"]["ready"]


async def test_garbage_http_requests_get_clear_errors() -> None:
    async with serving(protocol="http", max_request_bytes=4096) as (_, ep):

        def exchange(raw: bytes) -> bytes:
            with socket.create_connection(("127.0.0.1", ep.port), timeout=3) as s:
                s.sendall(raw)
                chunks = []
                while data := s.recv(65536):
                    chunks.append(data)
                return b"".join(chunks)

        def post(body: bytes, path: str = "/v1/execute") -> bytes:
            return exchange(f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                            f"Content-Length: {len(body)}\r\n\r\n".encode() + body)

        assert b"400 Bad Request" in await asyncio.to_thread(post, b"{nope")
        assert b"Invalid JSON" in await asyncio.to_thread(post, b"{nope")
        assert b"413 Payload Too Large" in await asyncio.to_thread(post, b"x" * 5000)
        assert b"404 Not Found" in await asyncio.to_thread(post, b"{}", "/elsewhere")
        assert b"400" in await asyncio.to_thread(exchange, b"NONSENSE\r\n\r\n")
        unknown = await asyncio.to_thread(post, p.encode(
            {"v": 1, "id": "1", "type": "execute", "runId": "r", "method": "zap"}))
        assert b"404 Not Found" in unknown and b"Unknown method: zap" in unknown
        ok = await asyncio.to_thread(exchange, b"GET /healthz HTTP/1.1\r\nConnection: close"
                                                b"\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200")


async def test_reply_with_wrong_run_id_is_a_protocol_error() -> None:
    """A fake handler that answers with another run's id."""
    ctx = zmq.asyncio.Context()
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")

    async def liar() -> None:
        ident, body = await router.recv_multipart()
        req = json.loads(body)
        await router.send_multipart([ident, p.encode(p.ok_reply(req["id"], 1, "someone-else"))])
        ident, body = await router.recv_multipart()  # second: a reply nobody asked for
        await router.send_multipart([ident, p.encode(p.ok_reply("bogus", 1, "x"))])

    task = asyncio.ensure_future(liar())
    d = Dispatcher()
    try:
        ep = Endpoint("127.0.0.1", port, "zmq")
        r = await d.execute(ep, run_id="mine", method="m", params={}, timeout=2)
        assert r.error_type == "ProtocolError" and "someone-else" in r.message
        r2 = await d.execute(ep, run_id="mine2", method="m", params={}, timeout=0.3)
        assert r2.error_type == "Timeout", "an unmatched reply is dropped, not misdelivered"
    finally:
        task.cancel()
        await d.close()
        router.close(0)
        ctx.destroy(linger=0)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.binary(max_size=300))
def test_decoder_only_raises_protocol_errors_on_bytes(raw: bytes) -> None:
    try:
        p.decode_request(raw)
    except p.ProtocolError as e:
        assert str(e)


@settings(max_examples=300, deadline=None)
@given(msg=st.dictionaries(st.sampled_from(
    ["v", "id", "type", "runId", "method", "params", "attempt", "deadline", "schedule"]),
    json_values, max_size=9))
def test_executor_answers_any_json_object(msg: dict, tmp_path_factory: Any) -> None:
    """Arbitrary envelopes: always exactly one well-formed reply, never an exception."""
    handler = TestHandler()
    handler.record_path = tmp_path_factory.mktemp("rec") / "executions.jsonl"

    async def go() -> dict:
        ex = Executor(handler, concurrency=2)
        reply = json.loads(await ex.handle(json.dumps(msg).encode()))
        # if something started, let it finish so the executor stays consistent
        await ex.drain(2)
        return reply

    reply = asyncio.run(go())
    assert ("ok" in reply) or ("success" in reply)
    if reply.get("ok") is False:
        assert reply["error"]["type"] and reply["error"]["message"]
