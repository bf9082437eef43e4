"""Misbehaving handlers and raw peers for wire-level tests.

The fakes speak just enough of each transport to feed the operator's Dispatcher
scripted (usually broken) replies: a raw ROUTER (v1 ZMQ), a raw REP (ScheduleZero)
and a raw asyncio HTTP server. Requests for the method ``good`` are always
answered correctly, so a test can check that a valid request sharing the
connection with a broken one is unaffected.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import zmq
import zmq.asyncio
from schedulezero_handler import protocol as p

T = TypeVar("T")

# Builds the frames (ZMQ) or raw bytes (HTTP) a fake sends for a non-"good" request.
FramesScript = Callable[[dict[str, Any]], list[bytes]]
BytesScript = Callable[[dict[str, Any]], bytes]


def good_reply(req: dict[str, Any]) -> dict[str, Any]:
    if req.get("type") == "cancel":
        return p.ok_reply(req["id"], {"cancelled": False}, req.get("runId"))
    if req.get("type") == "describe":
        return p.ok_reply(req["id"], {"methods": [{"name": "good"}]})
    return p.ok_reply(req["id"], "fine", req.get("runId"))


class LoopThread:
    """An event loop in a daemon thread, so sync (hypothesis) tests can drive async code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class FakeRouter:
    """A v1 handler on a raw ROUTER. ``good`` executes are held until the next other
    request has been answered with ``script``'s frames, so each valid request is in
    flight on the same connection while the broken reply arrives."""

    def __init__(self, script: FramesScript, *, script_cancels: bool = False) -> None:
        self.script = script
        self.script_cancels = script_cancels  # else cancels get a valid answer
        self.ctx = zmq.asyncio.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.held: list[tuple[bytes, dict[str, Any]]] = []
        self.requests: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> FakeRouter:
        self._task = asyncio.get_running_loop().create_task(self._serve())
        return self

    async def _serve(self) -> None:
        while True:
            ident, *frames = await self.sock.recv_multipart()
            req = json.loads(frames[0])
            self.requests.append(req)
            if req.get("method") == "good":
                self.held.append((ident, req))
                continue
            if req.get("type") == "cancel" and not self.script_cancels:
                await self.sock.send_multipart([ident, p.encode(good_reply(req))])
                continue
            await self.sock.send_multipart([ident, *self.script(req)])
            for held_ident, held in self.held:
                await self.sock.send_multipart([held_ident, p.encode(good_reply(held))])
            self.held.clear()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.sock.close(0)
        self.ctx.destroy(linger=0)


class FakeRep:
    """A ScheduleZero handler on a raw REP socket: ``good`` gets a valid reply, any
    other method ``script``'s frames (a REP must answer every request once)."""

    def __init__(self, script: FramesScript) -> None:
        self.script = script
        self.ctx = zmq.asyncio.Context()
        self.sock = self.ctx.socket(zmq.REP)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> FakeRep:
        self._task = asyncio.get_running_loop().create_task(self._serve())
        return self

    async def _serve(self) -> None:
        while True:
            req = json.loads(await self.sock.recv())
            if req.get("method") == "good":
                await self.sock.send(p.encode({"success": True, "result": "fine"}))
            else:
                await self.sock.send_multipart(self.script(req))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.sock.close(0)
        self.ctx.destroy(linger=0)


class FakeHttp:
    """An HTTP handler on raw asyncio streams: ``good`` gets a valid response (keep-alive);
    anything else gets ``script``'s raw bytes, then the connection is closed."""

    def __init__(self, script: BytesScript) -> None:
        self.script = script
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> FakeHttp:
        self._server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.decode("latin-1").split("\r\n"):
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                req = json.loads(body) if body else {"type": "describe", "id": "h0"}
                if req.get("method") == "good":
                    data = p.encode(good_reply(req))
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(data), data))
                    await writer.drain()
                    continue
                writer.write(self.script(req))
                await writer.drain()
                return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()


def http_exchange(port: int, raw: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, half-close, and read everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
        return b"".join(chunks)


def parse_http_responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split a byte stream into HTTP responses (status, headers, body); strict, so a
    malformed response from the server fails the calling test."""
    responses = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"response without an end of headers: {data[:200]!r}"
        lines = head.decode("latin-1").split("\r\n")
        version, status, _reason = lines[0].split(" ", 2)
        assert version == "HTTP/1.1", lines[0]
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if int(status) == 100:  # an interim response: no body
            data = rest
            continue
        length = int(headers["content-length"])
        body, data = rest[:length], rest[length:]
        assert len(body) == length, "truncated response body"
        responses.append((int(status), headers, body))
    return responses
