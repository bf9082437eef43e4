"""Property-based fuzzing of the wire in both directions, over real loopback sockets.

Handler side: random frames, bodies and HTTP byte streams (random bytes, and
JSON-ish documents with deep nesting, huge integers, NaN, duplicate keys, lone
surrogate escapes, control characters, truncation, invalid UTF-8, extra frames)
go to a running SDK server over ZMQ DEALER, ZMQ REQ and HTTP. Properties: every
message gets exactly one reply within a bound, in the right shape (v1, or the
legacy shape for a recognisable ScheduleZero request), echoing the request id
whenever one could be read; the server answers a valid request afterwards; and
the Python heap stays flat over hundreds of malformed messages.

Operator side: fake misbehaving handlers (raw ROUTER, REP and asyncio HTTP
servers) answer with garbled replies while a valid request is in flight on the
same connection. Properties: the broken call returns a ``ProtocolError`` result
quickly (``Timeout`` only when the garbage cannot be attributed to a request),
the valid one succeeds, and the connection's reader keeps serving.

The servers and fakes run on an event loop in a background thread, so the
hypothesis tests themselves are plain synchronous functions.
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
import zmq
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from schedulezero_handler import HandlerServer, ServeOptions, method
from schedulezero_handler import protocol as p
from schedulezero_handler.zmq_server import HARD_LIMIT_FACTOR
from schedulezero_operator.dispatch import Dispatcher, DispatchResult, Endpoint

from .wire_fakes import (
    FakeHttp,
    FakeRep,
    FakeRouter,
    LoopThread,
    http_exchange,
    parse_http_responses,
)

MAX_REQUEST = 16 << 10  # small, so TooLarge is reachable with cheap examples
# A ZMQ frame over this is dropped by libzmq with its connection, by design (protocol:
# the one input not answered; test_wire_regressions covers it). The strategies can
# build one (an 80 KB deepened body was seen): the "one reply" tests leave it out.
ZMQ_DROPPED_OVER = HARD_LIMIT_FACTOR * MAX_REQUEST
REPLY_WITHIN = 5.0  # seconds; every message must be answered within this
FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class FuzzHandler:
    @method
    def echo(self, value: Any = None) -> Any:
        return value

    @method
    async def add(self, a: int, b: int) -> int:
        return a + b

    @method
    def nan(self) -> float:
        return float("nan")


# -- JSON-ish documents -----------------------------------------------------------
# Rendered by hand (not json.dumps) so they can hold what json.dumps never writes:
# NaN, huge integer literals, duplicate keys, lone surrogate escapes, raw control
# characters, broken tokens.
RAW_TOKENS = [
    "NaN", "Infinity", "-Infinity", "1e400", "-1e400", "9" * 5000, "1" * 1001, "1" * 999,
    '"\\ud800"', '"\\udfff"', '"a\\ud83d"', '"\\ud83d\\ude00"', '"\\u0000"', '"\x01\x1f"',
    "01", "1.", ".5", "'x'", "tru", "[", "}", "[" * 70 + "]" * 70, "[" * 64 + "]" * 64,
    "[" * 10_000 + "]" * 10_000, '{"a":' * 100 + "1" + "}" * 100, "-", '"\\x"',
]


class Raw(str):
    """A literal JSON (or not quite JSON) token."""


class Obj(list[tuple[str, Any]]):
    """An object as a list of (key, value) pairs, so keys may repeat."""


odd_text = st.text(st.characters(codec="utf-8", categories=["L", "N", "P", "S", "Z", "Cc",
                                                             "Cf", "Co"]), max_size=10)
scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | odd_text
           | st.sampled_from(RAW_TOKENS).map(Raw))
docs = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4)
    | st.lists(st.tuples(st.sampled_from(["a", "v", "id", ""]) | odd_text, children),
               max_size=4).map(Obj),
    max_leaves=10,
)


def render(doc: Any) -> str:
    if isinstance(doc, Raw):
        return str(doc)
    if isinstance(doc, Obj):
        return "{" + ",".join(f"{json.dumps(k)}:{render(v)}" for k, v in doc) + "}"
    if isinstance(doc, list):
        return "[" + ",".join(render(v) for v in doc) + "]"
    return json.dumps(doc, ensure_ascii=False)


def mostly(valid: st.SearchStrategy[Any], odd: st.SearchStrategy[Any],
           odds: int = 5) -> st.SearchStrategy[Any]:
    """``valid`` (odds-1) times in ``odds``, else ``odd``: keeps most examples deep
    enough in the protocol to reach validation, execution and replies."""
    return st.integers(0, odds - 1).flatmap(lambda i: odd if i == 0 else valid)


plain_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=6,
)
params_values = st.one_of(
    st.fixed_dictionaries({"value": plain_json}),
    st.fixed_dictionaries({"value": docs}),
    st.fixed_dictionaries({"a": st.integers(-9, 9) | docs, "b": st.integers(-9, 9)}),
    st.dictionaries(odd_text, docs, max_size=2),
).map(lambda d: Obj(d.items()))
FIELD_VALUES: dict[str, Any] = {
    "v": st.sampled_from([2, "1", True, 1.0, None]) | docs,
    "id": st.text(max_size=8),
    "type": st.sampled_from(["execute", "execute", "describe", "cancel", "health"]),
    "runId": st.sampled_from(["run-1", "run-2"]) | odd_text,
    "method": st.sampled_from(["echo", "echo", "add", "nan", "nope", "_private", "__init__",
                               "ping"]),
    "params": mostly(params_values, docs),
    "attempt": mostly(st.integers(1, 3), st.integers(-1, 0) | st.booleans() | docs),
    "deadline": st.sampled_from(["2999-01-01T00:00:00Z", "2000-01-01T00:00:00Z", "soon",
                                 "9999-12-31T23:59:59-23:59"]),
    "schedule": mostly(st.just("ns/name"), docs),
    "scheduledTime": mostly(st.just("2024-01-01T00:00:00Z"), docs),
}


@st.composite
def envelopes(draw: st.DrawFn) -> Obj:
    """A request that is mostly well-formed, with at most a couple of corruptions."""
    kind = draw(mostly(FIELD_VALUES["type"], odd_text | docs))
    fields: list[tuple[str, Any]] = [
        ("v", draw(mostly(st.just(1), FIELD_VALUES["v"]))),
        ("id", draw(mostly(FIELD_VALUES["id"], st.integers() | docs))),
        ("type", kind),
    ]
    if kind in ("execute", "cancel"):
        fields.append(("runId", draw(FIELD_VALUES["runId"])))
    if kind == "execute":
        fields.append(("method", draw(mostly(FIELD_VALUES["method"], docs))))
        fields.append(("params", draw(FIELD_VALUES["params"])))
        for name in ("attempt", "deadline", "schedule", "scheduledTime"):
            if draw(st.booleans()):
                fields.append((name, draw(FIELD_VALUES[name])))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
        op = draw(st.sampled_from(["drop", "duplicate", "retype", "extra"]))
        i = draw(st.integers(0, len(fields) - 1)) if fields else 0
        if op == "drop" and fields:
            fields.pop(i)
        elif op == "duplicate" and fields:
            fields.append(fields[i])
        elif op == "retype" and fields:
            fields[i] = (fields[i][0], draw(docs))
        else:
            fields.append((draw(odd_text), draw(docs)))
    return Obj(fields)


def to_bytes(doc: Any) -> bytes:
    # surrogatepass: a raw lone surrogate becomes bytes that are not valid UTF-8.
    return render(doc).encode("utf-8", "surrogatepass")


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    data = draw(base)
    how = draw(st.sampled_from(["none", "truncate", "insert", "deepen"]))
    at = draw(st.integers(0, len(data)))
    if how == "truncate":
        return data[:at]
    if how == "insert":
        return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    if how == "deepen":
        n = draw(st.sampled_from([63, 64, 65, 1000, 10_000]))
        return b"[" * n + data + b"]" * n
    return data


legacy_bodies = st.tuples(
    mostly(FIELD_VALUES["method"], docs), mostly(params_values, docs | st.none()),
).map(lambda t: Obj([("method", t[0]), ("params", t[1])]))
bodies = st.one_of(
    st.binary(max_size=64),
    envelopes().map(to_bytes),
    mutated(envelopes().map(to_bytes)),
    legacy_bodies.map(to_bytes),
    mutated(legacy_bodies.map(to_bytes)),
    docs.map(to_bytes),
    st.sampled_from([MAX_REQUEST + 1, 3 * MAX_REQUEST]).map(lambda n: b"x" * n),
)
signature_frames = st.sampled_from([
    [], [b"1700000000.000", b"v1=" + b"0" * 64], [b"junk"], [b"a", b"b"], [b"", b""],
])
frame_lists = st.one_of(
    bodies.map(lambda b: [b]),
    st.tuples(bodies, signature_frames).map(lambda t: [t[0], *t[1]]),
    st.lists(bodies, min_size=2, max_size=4),
    st.lists(bodies, max_size=2).map(lambda fs: [b"", *fs]),  # a REQ-style delimiter
)


# -- what a correct answer looks like ---------------------------------------------------
def readable(body: bytes) -> Any:
    """The request as the handler can read it, or None."""
    try:
        return p.loads(body, max_bytes=MAX_REQUEST)
    except p.WireFormatError:
        return None


def note(what: str) -> None:
    """Count reply kinds (``--hypothesis-show-statistics``) to see how deep examples go."""
    if currently_in_test_context():
        event(what)


def check_answer(body: bytes | None, raw_reply: bytes) -> dict[str, Any]:
    """The reply to a message whose first body frame is ``body`` has the right shape."""
    reply = p.loads(raw_reply, max_bytes=1 << 20)
    request = readable(body) if body is not None else None
    if p.is_legacy(request):
        p.check_legacy_reply(reply)
        note(f"legacy success={reply['success']}")
        if reply["success"] is False:
            assert isinstance(reply["error"], str) and reply["error"]
        return reply
    p.check_reply(reply)
    if not reply["ok"]:
        assert reply["error"]["type"] and reply["error"]["message"]
    note(f"v1 {'ok' if reply['ok'] else reply['error']['type']}")
    if isinstance(request, dict) and isinstance(request.get("id"), str):
        assert reply["id"] == request["id"], "a readable id is always echoed"
    return reply


# -- the server under test ------------------------------------------------------------
@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture(scope="module")
def sdk(loop: LoopThread) -> Iterator[HandlerServer]:
    server = HandlerServer(FuzzHandler(), ServeOptions(
        protocols=["zmq", "http"], bind="127.0.0.1", port=0, http_port=0, concurrency=16,
        max_request_bytes=MAX_REQUEST))
    loop.run(server.start())
    yield server
    loop.run(server.shutdown(grace=1))


@pytest.fixture(scope="module")
def zctx() -> Iterator[zmq.Context[Any]]:
    ctx: zmq.Context[Any] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def zmq_port(server: HandlerServer) -> int:
    return int(str(server.zmq_endpoint).rsplit(":", 1)[1])


def exchange(ctx: zmq.Context[Any], port: int, kind: int, frames: list[bytes]) -> list[bytes]:
    """One message on a fresh socket; exactly one reply within REPLY_WITHIN seconds."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{port}")
    try:
        sock.send_multipart(frames)
        assert sock.poll(int(REPLY_WITHIN * 1000)), f"no reply to {frames!r:.300}"
        reply: list[bytes] = sock.recv_multipart()
        if kind == zmq.DEALER:
            assert not sock.poll(0), "more than one reply to one message"
            health = p.encode({"v": 1, "id": "alive", "type": "health"})
            sock.send_multipart([health])
            assert sock.poll(int(REPLY_WITHIN * 1000)), "server stopped answering"
            assert json.loads(sock.recv_multipart()[-1])["ok"] is True
        return reply
    finally:
        sock.close(0)


# -- handler side ----------------------------------------------------------------------
@FUZZ
@given(frames=frame_lists)
def test_zmq_dealer_messages_always_get_one_reply(sdk: HandlerServer, zctx: zmq.Context[Any],
                                                  frames: list[bytes]) -> None:
    assume(all(len(f) <= ZMQ_DROPPED_OVER for f in frames))
    reply = exchange(zctx, zmq_port(sdk), zmq.DEALER, frames)
    delimited = frames[0] == b""
    assert len(reply) == (2 if delimited else 1) and (not delimited or reply[0] == b"")
    rest = frames[1:] if delimited else frames
    check_answer(rest[0] if rest else None, reply[-1])


@FUZZ
@given(frames=st.one_of(bodies.map(lambda b: [b]), st.lists(bodies, min_size=1, max_size=3)))
def test_zmq_req_messages_always_get_one_reply(sdk: HandlerServer, zctx: zmq.Context[Any],
                                               frames: list[bytes]) -> None:
    """A REQ peer (ScheduleZero's server) is wedged for good if a request goes unanswered."""
    assume(frames[0] != b"")  # an empty first frame reads as a second delimiter
    assume(all(len(f) <= ZMQ_DROPPED_OVER for f in frames))
    reply = exchange(zctx, zmq_port(sdk), zmq.REQ, frames)
    assert len(reply) == 1
    check_answer(frames[0], reply[0])


header_names = st.sampled_from(["Content-Length", "Transfer-Encoding", "Connection", "Expect",
                                "Host", "X-SZ-Signature", "Content-Length "]) | odd_text
header_values = st.sampled_from(["0", "5", "-1", "abc", "chunked", "gzip", "close",
                                 "100-continue", "9" * 30]) | odd_text


@st.composite
def http_requests(draw: st.DrawFn) -> bytes:
    verb = draw(mostly(st.sampled_from(["GET", "POST"]), st.sampled_from(["PUT", "G T", ""])
                       | odd_text))
    path = draw(st.sampled_from(["/v1/execute", "/v1/execute", "/v1/cancel", "/v1/describe",
                                 "/", "/healthz", "/readyz", "/nope", "*", "v1/execute"]))
    version = draw(mostly(st.just("HTTP/1.1"), st.sampled_from(
        ["HTTP/1.0", "HTTP/2.0", "HTTP/1.1 x", "", "http/1.1"])))
    line = f"{verb} {path} {version}"
    body = draw(bodies)
    headers = draw(mostly(st.just([]), st.lists(st.tuples(header_names, header_values),
                                                min_size=1, max_size=4), odds=2))
    framing = draw(mostly(st.just("length"), st.sampled_from(
        ["wrong-length", "chunked", "bad-chunked", "none"]), odds=3))
    if framing == "length":
        headers.append(("Content-Length", str(len(body))))
    elif framing == "wrong-length":
        headers.append(("Content-Length", str(len(body) + draw(st.integers(-5, 5)))))
    elif framing in ("chunked", "bad-chunked"):
        headers.append(("Transfer-Encoding", "chunked"))
        cut = draw(st.integers(0, len(body)))
        parts = [body[:cut], body[cut:]]
        body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in parts if c) + b"0\r\n\r\n"
        if framing == "bad-chunked":
            at = draw(st.integers(0, len(body)))
            body = body[:at] + draw(st.binary(min_size=1, max_size=4)) + body[at:]
    head = line + "".join(f"\r\n{k}: {v}" for k, v in headers) + "\r\n\r\n"
    return head.encode("utf-8", "surrogatepass") + body


@FUZZ
@given(raw=st.one_of(st.binary(max_size=200), http_requests()))
def test_http_streams_always_get_a_typed_answer(sdk: HandlerServer, raw: bytes) -> None:
    port = int(sdk.http_port or 0)
    data = http_exchange(port, raw, timeout=REPLY_WITHIN)
    responses = parse_http_responses(data)
    if not raw:
        assert responses == [], "nothing sent, nothing answered"
    else:
        assert responses, f"no response to {raw!r:.300}"
    for status, headers, payload in responses:
        note(f"HTTP {status}")
        assert headers.get("content-type") == "application/json"
        body = p.loads(payload, max_bytes=1 << 20)
        assert isinstance(body, dict)
        if status >= 400 and not (status == 503 and "ready" in body):
            if "success" in body:
                assert body["success"] is False and isinstance(body["error"], str)
            else:
                assert p.check_reply(body)["ok"] is False
    ok = http_exchange(port, b"GET /healthz HTTP/1.1\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200")


def test_heap_stays_flat_over_malformed_traffic(sdk: HandlerServer,
                                                zctx: zmq.Context[Any]) -> None:
    """500 rounds of malformed and valid traffic on all three transports: the traced
    Python heap (server and client, same process) grows by less than 128 KiB after
    warm-up (measured: ~25 KiB, caches settling; a leak of 256 bytes per round would
    fail), and no per-message state (jobs, reply tasks, connections) is left."""
    rng = random.Random(7)
    deep = b"[" * 10_000 + b"]" * 10_000
    corpus = [
        deep, b"9" * 5000, b"\xff\xfe", b'{"v":1,"id":"m","type":"health","n":NaN}',
        b'{"v":1,"id":"m","id":"n","type":"health"}', b'{"method":5}', b"x" * (MAX_REQUEST + 1),
        p.encode({"v": 1, "id": "m", "type": "execute", "runId": "mem", "method": "echo",
                  "params": {"value": "\ud800"}}),
        p.encode({"v": 1, "id": "m", "type": "execute", "runId": "mem", "method": "echo",
                  "params": {"value": [1, 2, 3]}}),
        p.encode({"method": "echo", "params": {"value": 1}}),
    ]
    http_corpus = [b"NONSENSE\r\n\r\n", b"POST /v1/execute HTTP/1.1\r\nContent-Length: x\r\n\r\n",
                   b"POST /v1/execute HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                   b"POST /v1/execute HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (
                       len(deep), deep)]
    port, http = zmq_port(sdk), int(sdk.http_port or 0)
    dealer = zctx.socket(zmq.DEALER)
    dealer.connect(f"tcp://127.0.0.1:{port}")

    def round_trip() -> None:
        body = rng.choice(corpus)
        frames = [body] if rng.random() < 0.7 else [body, rng.choice(corpus)]
        dealer.send_multipart(frames)
        assert dealer.poll(int(REPLY_WITHIN * 1000))
        check_answer(frames[0], dealer.recv_multipart()[-1])
        if rng.random() < 0.3:
            exchange(zctx, port, zmq.REQ, [rng.choice(corpus)])
        if rng.random() < 0.3:
            assert parse_http_responses(http_exchange(http, rng.choice(http_corpus)))

    tracemalloc.start()
    try:
        for _ in range(100):
            round_trip()
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(500):
            round_trip()
        time.sleep(0.2)  # let reply tasks and closed connections be reaped
        gc.collect()
        growth = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        dealer.close(0)
    print(f"heap growth over 500 rounds: {growth} bytes")
    assert growth < 128 << 10, f"heap grew by {growth} bytes over 500 rounds"
    ex = sdk.executor
    assert ex.in_flight == 0 and not ex._jobs and len(ex._done) <= 1024
    zmq_t = next(t for t in sdk.transports if hasattr(t, "endpoint"))
    http_t = next(t for t in sdk.transports if hasattr(t, "health_only"))
    assert not zmq_t._tasks and not http_t._conns


# -- operator side ---------------------------------------------------------------------
def valid_reply_text(rid: str, ok: bool) -> str:
    reply = (p.ok_reply(rid, {"x": [1, 2]}, "b") if ok
             else p.error_reply(rid, "HandlerError", "m", "b"))
    return json.dumps(reply)


WRONG_TYPES: dict[str, list[Any]] = {
    "ok": ["false", "true", 0, 1, None, [], {}],
    "v": ["1", 1.0, True, 2, None],
    "durationMs": ["5", True, [], {}],
    "runId": [5, True, []],
    "error": [None, "boom", [], 5, {"type": "X"}, {"type": "X", "message": "m",
                                                   "retryable": "no"},
              {"type": "", "message": "m", "retryable": True},
              {"type": "X", "message": 5, "retryable": False}],
}


@st.composite
def garbled_replies(draw: st.DrawFn, rid: str) -> list[bytes]:
    """A reply that quotes ``rid`` (so it can be attributed) but is never acceptable."""
    ok = draw(st.booleans())
    text = valid_reply_text(rid, ok)
    token = f'"{rid}"'
    after = text.index(token) + len(token)
    how = draw(st.sampled_from(["truncate", "bad-utf8", "wrong-type", "deep", "duplicate",
                                "bad-number", "surrogate", "frames", "garbage"]))
    if how == "truncate":
        return [text[:draw(st.integers(after, len(text) - 1))].encode()]
    if how == "bad-utf8":
        at = draw(st.integers(after, len(text)))
        junk = draw(st.binary(max_size=4))
        return [text[:at].encode() + b"\xff" + junk + text[at:].encode()]
    if how == "wrong-type":
        field = draw(st.sampled_from(sorted(WRONG_TYPES)))
        if field == "error":
            reply = json.loads(valid_reply_text(rid, False))
        else:
            reply = json.loads(text)
        reply[field] = draw(st.sampled_from(WRONG_TYPES[field]))
        return [json.dumps(reply).encode()]
    if how == "deep":
        n = draw(st.sampled_from([64, 65, 1000, 10_000]))
        return [f'{{"v":1,"id":{token},"ok":true,"result":{"[" * n}{"]" * n}}}'.encode()]
    if how == "duplicate":
        return [f'{{"v":1,"id":{token},"ok":true,"ok":false,"result":1}}'.encode()]
    if how == "bad-number":
        value = draw(st.sampled_from(["NaN", "Infinity", "1e999", "7" * 4400, "3" * 1001]))
        return [f'{{"v":1,"id":{token},"ok":true,"result":{value}}}'.encode()]
    if how == "surrogate":
        value = draw(st.sampled_from(['"\\ud800"', '{"\\udc00":1}', '["a\\udbff"]']))
        return [f'{{"v":1,"id":{token},"ok":true,"result":{value}}}'.encode()]
    if how == "frames":
        extra = draw(st.lists(st.binary(max_size=16), min_size=1, max_size=3))
        return [text.encode(), *extra]
    before, after_junk = draw(st.binary(max_size=32)), draw(st.binary(max_size=32))
    return [before + token.encode() + after_junk]


@pytest.fixture(scope="module")
def operator_side(loop: LoopThread) -> Iterator[dict[str, Any]]:
    """One Dispatcher and one fake per transport for the whole module: the same
    connections live through every garbled example."""
    router = loop.run(FakeRouter(lambda req: []).start())
    rep = loop.run(FakeRep(lambda req: [b"{}"]).start())
    http = loop.run(FakeHttp(lambda req: b"").start())
    d = Dispatcher(max_reply_bytes=64 << 10)
    yield {"router": router, "rep": rep, "http": http, "d": d}
    loop.run(d.close())
    for fake in (router, rep, http):
        loop.run(fake.close())


async def bad_with_good_in_flight(d: Dispatcher, ep: Endpoint, router: FakeRouter | None,
                                  bad_timeout: float) -> tuple[DispatchResult, DispatchResult]:
    good = asyncio.ensure_future(d.execute(ep, run_id="g", method="good", params={},
                                           timeout=5))
    if router is not None:  # wait until the fake holds the good request
        for _ in range(2000):
            if router.held:
                break
            await asyncio.sleep(0.001)
    bad = await d.execute(ep, run_id="b", method="bad", params={}, timeout=bad_timeout)
    return bad, await good


# Drawn before the request exists (the fake runs on another thread): the placeholder
# is replaced by the real request id when the fake answers.
RID = "@@rid@@"


@FUZZ
@given(frames=garbled_replies(RID))
def test_garbled_v1_replies_are_protocol_errors(loop: LoopThread, operator_side: dict[str, Any],
                                                frames: list[bytes]) -> None:
    router: FakeRouter = operator_side["router"]
    d: Dispatcher = operator_side["d"]
    scripted: list[list[bytes]] = []

    def script(req: dict[str, Any]) -> list[bytes]:
        scripted.append([f.replace(RID.encode(), req["id"].encode()) for f in frames])
        return scripted[-1]

    router.script = script
    ep = Endpoint("127.0.0.1", router.port, "zmq")
    started = time.monotonic()
    bad, good = loop.run(bad_with_good_in_flight(d, ep, router, 5.0))
    assert bad.error_type == "ProtocolError" and bad.retryable, (bad, scripted)
    assert time.monotonic() - started < 2.0, "answered at once, not by a timeout"
    assert good.ok and good.result == "fine", good
    client = d._zmq[ep.key]
    assert client._reader is not None and not client._reader.done()
    assert not client._pending


@settings(FUZZ, max_examples=25)
@given(frames=st.lists(st.binary(max_size=64), min_size=1, max_size=3))
def test_unattributable_v1_garbage_times_out_alone(loop: LoopThread,
                                                   operator_side: dict[str, Any],
                                                   frames: list[bytes]) -> None:
    """Garbage quoting no request id cannot be matched: only its own request times out."""
    router: FakeRouter = operator_side["router"]
    d: Dispatcher = operator_side["d"]
    router.script = lambda req: frames
    ep = Endpoint("127.0.0.1", router.port, "zmq")
    bad, good = loop.run(bad_with_good_in_flight(d, ep, router, 0.05))
    assert bad.error_type in ("Timeout", "ProtocolError"), bad
    assert good.ok, good


@st.composite
def garbled_legacy(draw: st.DrawFn) -> list[bytes]:
    how = draw(st.sampled_from(["bytes", "doc", "success", "frames"]))
    if how == "bytes":
        raw = draw(st.binary(max_size=64))
        try:
            decoded = json.loads(raw)
            assume(not (isinstance(decoded, dict) and isinstance(decoded.get("success"), bool)))
        except (ValueError, RecursionError):
            pass
        return [raw]
    if how == "doc":  # any document that is not an object
        doc = draw(docs.filter(lambda x: not isinstance(x, Obj)))
        return [to_bytes(doc)]
    if how == "success":
        value = draw(st.sampled_from(["false", "true", 0, 1, None, [], {}]).map(json.dumps)
                     | st.sampled_from(RAW_TOKENS))
        return [f'{{"success":{value},"result":1}}'.encode("utf-8", "surrogatepass")]
    return [b'{"success":true}', *draw(st.lists(st.binary(max_size=8), min_size=1,
                                                max_size=2))]


@FUZZ
@given(frames=garbled_legacy())
def test_garbled_legacy_replies_are_protocol_errors(loop: LoopThread,
                                                    operator_side: dict[str, Any],
                                                    frames: list[bytes]) -> None:
    rep: FakeRep = operator_side["rep"]
    d: Dispatcher = operator_side["d"]
    rep.script = lambda req: frames
    ep = Endpoint("127.0.0.1", rep.port, "zmq-legacy")

    async def go() -> tuple[DispatchResult, DispatchResult]:
        bad, good = await asyncio.gather(
            d.execute(ep, run_id="b", method="bad", params={}, timeout=5),
            d.execute(ep, run_id="g", method="good", params={}, timeout=5))
        return bad, good

    started = time.monotonic()
    bad, good = loop.run(go())
    assert bad.error_type == "ProtocolError" and bad.retryable, (bad, frames)
    assert time.monotonic() - started < 2.0
    assert good.ok and good.result == "fine", "the REQ socket is still usable"


@st.composite
def garbled_http(draw: st.DrawFn) -> tuple[bytes, set[str]]:
    """Raw response bytes and the error types acceptable for them."""
    how = draw(st.sampled_from(["bytes", "body", "framing", "large"]))
    if how == "bytes":
        return draw(st.binary(max_size=128)), {"ProtocolError", "ConnectionError"}
    if how == "large":
        body = b"x" * (65 << 10)
        return (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body),
                {"ProtocolError"})
    # Extra "frames" follow a NUL, so the body never happens to be one valid document.
    body = b"\x00".join(draw(garbled_replies(RID)))
    if how == "body":
        status = draw(st.sampled_from([b"200 OK", b"400 Bad Request", b"500 Oops"]))
        return (b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body),
                {"ProtocolError"})
    head = draw(st.sampled_from([
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(body) + 10),
        b"HTTP/1.1 200 OK\r\nContent-Length: zz\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: " + b"a" * 10_000 + b"\r\n\r\n",
    ]))
    return head + body, {"ProtocolError", "ConnectionError"}


@FUZZ
@given(case=garbled_http())
def test_garbled_http_replies_are_classified(loop: LoopThread, operator_side: dict[str, Any],
                                             case: tuple[bytes, set[str]]) -> None:
    raw, acceptable = case
    fake: FakeHttp = operator_side["http"]
    d: Dispatcher = operator_side["d"]
    fake.script = lambda req: raw
    ep = Endpoint("127.0.0.1", fake.port, "http")
    started = time.monotonic()
    bad, good = loop.run(bad_with_good_in_flight(d, ep, None, 5.0))
    assert bad.error_type in acceptable and bad.retryable, (bad, raw[:300])
    assert time.monotonic() - started < 2.0
    assert good.ok and good.result == "fine", good


def test_fuzzed_connections_are_still_healthy(loop: LoopThread,
                                              operator_side: dict[str, Any]) -> None:
    """After every garbled example, plain requests on the same connections succeed."""
    d: Dispatcher = operator_side["d"]
    for name, protocol in (("router", "zmq"), ("rep", "zmq-legacy"), ("http", "http")):
        ep = Endpoint("127.0.0.1", operator_side[name].port, protocol)
        if name == "router":
            operator_side[name].script = lambda req: [p.encode(p.ok_reply(req["id"], 1))]
            r = loop.run(d.execute(ep, run_id="x", method="plain", params={}, timeout=3))
        else:
            r = loop.run(d.execute(ep, run_id="x", method="good", params={}, timeout=3))
        assert r.ok, (name, r)

