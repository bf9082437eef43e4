"""HTTP/1.1 transport on asyncio streams.

A deliberately small server (keep-alive, Content-Length bodies, no chunked
requests) so the SDK needs no web framework: a ZMQ-only handler loads no HTTP
stack at all, and an HTTP handler stays small.

Routes: ``POST /v1/execute`` (the execute request as body; ``type`` may be
omitted), ``GET /v1/describe``, ``POST /v1/cancel``, ``GET /healthz`` (alive),
``GET /readyz`` (200 while taking jobs, 503 while draining). ``POST /`` accepts
ScheduleZero-style ``{"method","params"}`` bodies. With ``health_only`` only the
probe routes are served (the health port of a ZMQ handler).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from . import protocol as p
from .executor import Executor

log = logging.getLogger("schedulezero.handler.http")

_STATUS = {
    None: 200, p.ErrorType.BAD_REQUEST: 400, p.ErrorType.UNSUPPORTED_VERSION: 400,
    p.ErrorType.UNKNOWN_METHOD: 404, p.ErrorType.INVALID_PARAMS: 422,
    p.ErrorType.TOO_LARGE: 413, p.ErrorType.UNAUTHORIZED: 401, p.ErrorType.BUSY: 429,
    p.ErrorType.SHUTTING_DOWN: 503, p.ErrorType.RESULT_TOO_LARGE: 500,
    p.ErrorType.HANDLER_ERROR: 500, p.ErrorType.CANCELLED: 409,
    p.ErrorType.DEADLINE_EXCEEDED: 504,
}
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 409: "Conflict", 413: "Payload Too Large",
            422: "Unprocessable Entity", 429: "Too Many Requests",
            500: "Internal Server Error", 503: "Service Unavailable", 504: "Gateway Timeout"}
_MAX_HEADER_BYTES = 16 << 10


class HttpServer:
    def __init__(self, executor: Executor, bind: str, port: int, *,
                 health_only: bool = False) -> None:
        self.executor = executor
        self.bind, self.port = bind, port
        self.health_only = health_only
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, self.bind, self.port,
                                                  limit=_MAX_HEADER_BYTES)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("serving HTTP on %s:%d%s", self.bind, self.port,
                 " (health only)" if self.health_only else "")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._conns):
            t.cancel()

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            while True:
                keep_alive = await self._one_request(reader, writer)
                if not keep_alive:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError,
                ValueError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._conns.discard(task)
            writer.close()

    async def _one_request(self, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        try:
            verb, target, version = lines[0].split(" ", 2)
        except ValueError:
            await self._send(writer, 400, {"error": "malformed request line"}, False)
            return False
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        keep_alive = headers.get("connection", "").lower() != "close" and version == "HTTP/1.1"
        length = int(headers.get("content-length", "0") or 0)
        if length > self.executor.max_request_bytes:
            await self._send(writer, 413, p.error_reply(
                None, p.ErrorType.TOO_LARGE,
                f"request of {length} bytes exceeds the limit of "
                f"{self.executor.max_request_bytes}"), False)
            return False
        body = await reader.readexactly(length) if length else b""
        path = target.split("?", 1)[0]
        status, payload = await self._route(verb, path, body, headers)
        await self._send(writer, status, payload, keep_alive)
        return keep_alive

    async def _route(self, verb: str, path: str, body: bytes,
                     headers: dict[str, str]) -> tuple[int, Any]:
        ex = self.executor
        if path == "/healthz":
            return 200, {"ok": True}
        if path == "/readyz":
            return (200 if ex.accepting else 503), ex.health()
        if self.health_only:
            return 404, {"error": f"no route {path}"}
        ts, sig = headers.get("x-sz-timestamp"), headers.get("x-sz-signature")
        signed = body
        if path == "/v1/describe" and verb == "GET":
            body = p.encode({"v": p.VERSION, "type": "describe", "id": "http"})
        elif path == "/v1/execute" and verb == "POST":
            body = _with_type(body, "execute")
        elif path == "/v1/cancel" and verb == "POST":
            body = _with_type(body, "cancel")
        elif path == "/" and verb == "POST":
            pass  # ScheduleZero-style body, decoded as legacy
        elif path in ("/v1/describe", "/v1/execute", "/v1/cancel", "/"):
            return 405, {"error": f"{verb} not allowed on {path}"}
        else:
            return 404, {"error": f"no route {path}"}
        reply, legacy = await ex.handle_message(body, ts, sig, signed_body=signed)
        error = None if reply.get("ok") else reply["error"]["type"]
        if legacy:
            return _STATUS.get(error, 500), p.legacy_reply(reply)
        return _STATUS.get(error, 500), reply

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, status: int, payload: Any,
                    keep_alive: bool) -> None:
        data = p.encode(payload) if not isinstance(payload, bytes) else payload
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n")
        writer.write(head.encode() + data)
        await writer.drain()


def _with_type(body: bytes, kind: str) -> bytes:
    """Fill in ``type`` when the path already says it; leaves bad JSON to the decoder."""
    try:
        msg = json.loads(body)
    except ValueError:
        return body
    if isinstance(msg, dict) and "type" not in msg and "v" in msg:
        msg["type"] = kind
        return json.dumps(msg).encode()
    return body
