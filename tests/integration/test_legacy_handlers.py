"""ScheduleZero handlers over real loopback sockets: ``ping`` probes, which errors are
final, and the operator's registration server with a ScheduleZero-style handler."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import zmq
import zmq.asyncio
from schedulezero_operator.dispatch import Dispatcher, Endpoint
from schedulezero_operator.dispatch.registration import RegistrationBook, RegistrationServer
from schedulezero_testcluster.cluster import free_port

from examples.handlers.legacy_rep import LegacyHandler

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def legacy() -> Iterator[Endpoint]:
    """examples/handlers/legacy_rep.py (ScheduleZero's behaviour) in a thread."""
    port = free_port()
    handler = LegacyHandler(f"tcp://127.0.0.1:{port}")
    thread = threading.Thread(target=handler.run, daemon=True)
    thread.start()
    yield Endpoint("127.0.0.1", port, "zmq-legacy")
    handler.stop()
    thread.join(5)


async def test_ping_answers_busy_and_dead(legacy: Endpoint, dispatcher: Dispatcher) -> None:
    r = await dispatcher.ping(legacy, timeout=2)
    assert r.ok and r.result["message"] == "pong"
    job = asyncio.ensure_future(dispatcher.execute(
        legacy, run_id="r", method="sleep", params={"seconds": 1}, timeout=5))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    busy = await dispatcher.ping(legacy, timeout=2)
    assert busy.ok and busy.result == "busy" and time.monotonic() - started < 0.1
    assert (await job).ok
    dead = Endpoint("127.0.0.1", free_port(), "zmq-legacy")
    started = time.monotonic()
    r = await dispatcher.ping(dead, timeout=0.5)
    assert not r.ok and r.error_type == "Timeout" and r.message == \
        "no reply to ping within 0.5s"
    assert 0.4 < time.monotonic() - started < 2
    # The REQ socket was replaced after the timeout: a live handler answers next time.
    assert (await dispatcher.ping(legacy, timeout=2)).ok


async def test_errors_a_retry_cannot_fix_are_final(legacy: Endpoint,
                                                   dispatcher: Dispatcher) -> None:
    async def call(method: str, params: dict | None = None) -> tuple[str | None, bool, str]:
        r = await dispatcher.execute(legacy, run_id="r", method=method, params=params or {},
                                     timeout=5)
        return r.error_type, r.retryable, r.message

    assert await call("nope") == ("UnknownMethod", False, "Unknown method: nope")
    assert await call("add", {"a": 1}) == (
        "InvalidParams", False,
        "LegacyHandler.add() missing 1 required positional argument: 'b'")
    assert await call("fail") == ("HandlerError", True, "legacy failure")


async def test_an_sdk_handler_answering_legacy_requests_is_classified_too(
        dispatcher: Dispatcher) -> None:
    from .conftest import serving

    async with serving() as (_server, ep):
        legacy = Endpoint(ep.host, ep.port, "zmq-legacy")
        r = await dispatcher.execute(legacy, run_id="r", method="nope", params={}, timeout=5)
        assert r.error_type == "UnknownMethod" and not r.retryable
        r = await dispatcher.execute(legacy, run_id="r", method="sleep",
                                     params={"seconds": "long"}, timeout=5)
        assert r.error_type == "InvalidParams" and not r.retryable, r.message
        assert (await dispatcher.ping(legacy)).ok


# -- the registration server ----------------------------------------------------------
class Registry:
    def __init__(self, server: RegistrationServer, book: RegistrationBook) -> None:
        self.server, self.book = server, book
        self.address = f"tcp://127.0.0.1:{server.port}"


@pytest.fixture
async def registry() -> AsyncIterator[Registry]:
    book = RegistrationBook(lambda: dt.datetime.now(dt.UTC))
    server = RegistrationServer(book, "127.0.0.1", free_port())
    assert server.start()
    yield Registry(server, book)
    await server.stop()


async def test_the_server_answers_as_schedulezeros_did(registry: Registry) -> None:
    ctx = zmq.asyncio.Context()
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(registry.address)

    async def ask(body: bytes | str) -> dict:
        await req.send(body.encode() if isinstance(body, str) else body)
        return dict(json.loads(await asyncio.wait_for(req.recv(), 5)))

    try:
        assert await ask('{"method": "ping"}') == {"success": True, "message": "pong"}
        reply = await ask(json.dumps({"method": "register", "params": {
            "handler_id": "t1", "address": "tcp://127.0.0.1:4244", "methods": ["ping"]}}))
        assert reply == {"success": True, "handler_id": "t1",
                         "address": "tcp://127.0.0.1:4244", "status": "registered",
                         "methods": ["ping"], "message": "Handler 't1' registered successfully"}
        assert await ask("not json") == {"success": False, "error": "Invalid JSON"}
        assert await ask(b"\xff\xfe") == {"success": False, "error": "Invalid JSON"}
        await req.send_multipart([b'{"method": "ping"}', b"extra"])
        assert json.loads(await req.recv())["success"] is False
        assert await ask('{"method": "ping"}') == {"success": True, "message": "pong"}
        assert registry.book.get("t1").peer == "127.0.0.1"  # type: ignore[union-attr]
        assert await ask(json.dumps({"method": "report_status", "params": {
            "handler_id": "t1", "status": "offline"}})) == {
            "success": True, "handler_id": "t1", "status": "offline"}
    finally:
        req.close(0)
        ctx.destroy(linger=0)


async def test_a_second_server_on_the_same_port_says_so(registry: Registry) -> None:
    other = RegistrationServer(registry.book, "127.0.0.1", registry.server.port)
    assert other.start() is False
    await other.stop()


async def test_a_schedulezero_style_handler_registers_and_stops_promptly(
        registry: Registry, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "handler.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "examples.handlers.legacy_registering", "--id", "ding",
            "--address", f"tcp://127.0.0.1:{port}", "--server", registry.address,
            "--heartbeat", "0.3", stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        for _ in range(200):
            if registry.book.get("ding") is not None:
                break
            await asyncio.sleep(0.05)
        reg = registry.book.get("ding")
        assert reg is not None, log.read_text()
        assert reg.endpoint == f"127.0.0.1:{port}" and reg.status == "online"
        assert reg.methods == ["add", "echo", "fail", "increment_counter", "ping", "sleep"]
        first = reg.last_seen
        await asyncio.sleep(1)
        assert reg.last_seen > first, "heartbeats on its connection are its own"
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        # the server answers on this loop meanwhile
        assert await asyncio.wait_for(proc.wait(), 10) == 0, log.read_text()
        assert time.monotonic() - started < 3, "no 10 s wait for a server that never answers"
        assert reg.status == "offline"
        text = log.read_text()
        assert "registered: Handler 'ding' registered successfully" in text
        assert "reported offline" in text and "attempt" not in text, text
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
