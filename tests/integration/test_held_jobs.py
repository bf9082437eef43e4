"""Held jobs on the wire: ``Dispatcher.execute(start_at=...)`` against real sockets.

An SDK handler over ZMQ gets ``executeAt`` ahead of time and starts the job at
``start_at``; an endpoint that cannot hold (an SDK older than ``executeAt``, which
refuses the type) gets a plain ``execute`` at ``start_at``. Either way the job
never starts early.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio
from schedulezero_handler import protocol as p
from schedulezero_operator.dispatch import Dispatcher, Endpoint

from tests.e2e.operator_harness import HandlerProcess


class OldSdk:
    """A v1 ROUTER that predates ``executeAt``: refuses it as an unknown request type
    (the exact reply an older SDK gives) and runs ``execute`` at once."""

    def __init__(self) -> None:
        self.ctx = zmq.asyncio.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.received: list[tuple[float, dict[str, Any]]] = []  # (wall time, request)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> OldSdk:
        self._task = asyncio.ensure_future(self._serve())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        self.sock.close(0)
        self.ctx.term()

    async def _serve(self) -> None:
        while True:
            ident, body = await self.sock.recv_multipart()
            req = json.loads(body)
            self.received.append((time.time(), req))
            if req["type"] == "execute":
                reply = p.ok_reply(req["id"], "ran", req.get("runId"))
            else:
                reply = p.error_reply(req["id"], p.ErrorType.BAD_REQUEST,
                                      f"unknown request type {req['type']!r}; expected one of "
                                      "['cancel', 'describe', 'execute', 'health']")
            await self.sock.send_multipart([ident, p.encode(reply)])


async def test_an_sdk_without_execute_at_gets_execute_at_the_start_time() -> None:
    async with OldSdk() as old:
        d = Dispatcher()
        ep = Endpoint("127.0.0.1", old.port, "zmq")
        try:
            start_at = dt.datetime.fromtimestamp(time.time() + 0.4, dt.UTC)
            result = await d.execute(ep, run_id="r1", method="m", params={}, timeout=5,
                                     start_at=start_at)
            assert result.ok and result.result == "ran"
            kinds = [(req["type"], at) for at, req in old.received]
            assert [k for k, _ in kinds] == ["executeAt", "execute"]
            assert kinds[0][1] < start_at.timestamp(), "offered ahead"
            assert kinds[1][1] >= start_at.timestamp(), "sent as execute, not before"
            # Remembered: the next held job is held here at once, no executeAt offered.
            later = dt.datetime.fromtimestamp(time.time() + 0.2, dt.UTC)
            result = await d.execute(ep, run_id="r2", method="m", params={}, timeout=5,
                                     start_at=later)
            assert result.ok
            assert [req["type"] for _, req in old.received[2:]] == ["execute"]
            assert old.received[2][0] >= later.timestamp()
        finally:
            await d.close()


async def test_a_start_time_already_past_is_a_plain_execute() -> None:
    async with OldSdk() as old:
        d = Dispatcher()
        ep = Endpoint("127.0.0.1", old.port, "zmq")
        try:
            past = dt.datetime.fromtimestamp(time.time() - 1, dt.UTC)
            result = await d.execute(ep, run_id="r1", method="m", params={}, timeout=5,
                                     start_at=past)
            assert result.ok
            assert [req["type"] for _, req in old.received] == ["execute"]
        finally:
            await d.close()


async def test_an_sdk_handler_holds_the_job_and_starts_it_at_the_start_time(
        tmp_path: Path) -> None:
    handler = HandlerProcess(tmp_path)
    handler.start()
    d = Dispatcher()
    try:
        ep = Endpoint.parse(handler.address, "zmq")
        start_at = dt.datetime.fromtimestamp(time.time() + 0.5, dt.UTC)
        sent = time.time()
        result = await d.execute(ep, run_id="held-1", method="heartbeat", params={},
                                 timeout=5, start_at=start_at)
        assert result.ok, result
        (row,) = handler.executions("heartbeat")
        assert row["runId"] == "held-1"
        assert start_at.timestamp() - 0.002 <= row["receivedAt"] < start_at.timestamp() + 0.1
        assert d._no_hold == set(), "taken as executeAt, not held by the dispatcher"
        assert result.handler_duration_ms is not None and result.handler_duration_ms < 100, \
            "the handler's duration is the method's, not the hold"
        assert sent < start_at.timestamp() - 0.3
    finally:
        await d.close()
        handler.stop()
