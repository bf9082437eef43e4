"""HTTP/1.1 transport on asyncio streams.

A deliberately small server (keep-alive, Content-Length or chunked bodies) so the
SDK needs no web framework: a ZMQ-only handler loads no HTTP stack at all, and an
HTTP handler stays small.

Parsing is strict, because a lenient parser is how requests get smuggled or
connections silently dropped: a malformed request line, header line,
``Content-Length`` (not plain digits, repeated with another value, or alongside
``Transfer-Encoding``) or chunked framing gets ``400``; an unknown transfer
coding ``501``; an HTTP version other than 1.0/1.1 ``505``; a header section
over 16 KiB ``431``; a body over the limit ``413``; a request not completed
within ``request_timeout`` (30 s; idle keep-alive time between requests does not
count) ``408``. Each carries a v1 error body and closes the connection after a
short lingering read, so the peer sees the response rather than a reset. A peer
that closes before sending anything is simply closed.

Routes: ``POST /v1/execute`` (the execute request as body; ``type`` may be
omitted, or be ``executeAt`` for a held job: see ``protocol``),
``GET /v1/describe``, ``POST /v1/cancel``, ``GET /healthz`` (alive),
``GET /readyz`` (200 while taking jobs, 503 while draining). ``POST /`` accepts
ScheduleZero-style ``{"method","params"}`` bodies. With ``health_only`` only the
probe routes are served (the health port of a ZMQ handler).
"""

from __future__ import annotations

import asyncio
import logging
import re
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
    p.ErrorType.DEADLINE_EXCEEDED: 504, p.ErrorType.INTERNAL: 500,
}
_REASONS = {100: "Continue", 200: "OK", 400: "Bad Request", 401: "Unauthorized",
            404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
            409: "Conflict", 413: "Payload Too Large", 422: "Unprocessable Entity",
            429: "Too Many Requests", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
            504: "Gateway Timeout", 505: "HTTP Version Not Supported"}
_MAX_HEADER_BYTES = 16 << 10
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(r"HTTP/[0-9]\.[0-9]")
_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # control characters but HTAB
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_LINGER_SECONDS = 1.0
_LINGER_BYTES = 1 << 20


class _BadHttp(Exception):
    """A request the HTTP layer refuses: answered with ``status`` and closed."""

    def __init__(self, status: int, message: str,
                 error_type: str = p.ErrorType.BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type


class _Request:
    """A request being read: the body is filled in after the headers."""

    __slots__ = ("body", "headers", "target", "verb", "version")

    def __init__(self, verb: str, target: str, version: str, headers: dict[str, str]) -> None:
        self.verb = verb
        self.target = target
        self.version = version
        self.headers = headers
        self.body = b""


class HttpServer:
    request_timeout = 30.0

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
            while await self._one_request(reader, writer):
                pass
        except ConnectionError:
            pass  # the peer went away; there is no one to answer
        except asyncio.CancelledError:
            pass
        # Last resort for a bug in the SDK itself: logged with its traceback, and the
        # peer still gets a 500 instead of a connection closed without a response.
        except Exception:
            log.exception("internal error answering an HTTP request")
            await self._refuse(reader, writer, 500, p.ErrorType.INTERNAL,
                               "internal error in the handler SDK (see its log)")
        finally:
            self._conns.discard(task)
            writer.close()

    async def _one_request(self, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> bool:
        """Serve one request; True to keep the connection for the next one."""
        first = await reader.read(1)  # idle keep-alive time is not part of the timeout
        if not first:
            return False
        try:
            async with asyncio.timeout(self.request_timeout):
                request = await self._read_request(first, reader, writer)
        except _BadHttp as e:
            await self._refuse(reader, writer, e.status, e.error_type, str(e))
            return False
        except TimeoutError:
            await self._refuse(reader, writer, 408, p.ErrorType.BAD_REQUEST,
                               f"request not completed within {self.request_timeout:g}s")
            return False
        connection = {t.strip().lower() for t in request.headers.get("connection", "").split(",")}
        keep_alive = request.version == "HTTP/1.1" and "close" not in connection
        path = request.target.split("?", 1)[0]
        status, payload = await self._route(request.verb, path, request.body, request.headers)
        await self._send(writer, status, payload, keep_alive)
        return keep_alive

    async def _read_request(self, first: bytes, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> _Request:
        try:
            head = first + await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            raise _BadHttp(400, "truncated request: connection closed inside the header "
                                "section") from None
        except asyncio.LimitOverrunError:
            raise _BadHttp(431, f"header section over {_MAX_HEADER_BYTES} bytes") from None
        lines = head[:-4].decode("latin-1").split("\r\n")
        request = self._request_line(lines[0])
        request.headers = self._headers(lines[1:])
        length = self._content_length(request)
        if length is None and "transfer-encoding" not in request.headers:
            return request
        if request.headers.get("expect", "").lower() == "100-continue" and \
                request.version == "HTTP/1.1":  # RFC 9110 10.1.1: ignored from HTTP/1.0
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        if length is not None:
            try:
                request.body = await reader.readexactly(length) if length else b""
            except asyncio.IncompleteReadError as e:
                raise _BadHttp(400, f"truncated body: {len(e.partial)} of {length} bytes "
                                    "before the connection closed") from None
        else:
            request.body = await self._chunked(reader)
        return request

    @staticmethod
    def _request_line(line: str) -> _Request:
        parts = line.split(" ")
        if len(parts) != 3 or _CTL.search(line):
            raise _BadHttp(400, "malformed request line (expected 'METHOD /path HTTP/1.1')")
        verb, target, version = parts
        if not _TOKEN.fullmatch(verb) or not target.startswith("/"):
            raise _BadHttp(400, "malformed request line (expected 'METHOD /path HTTP/1.1')")
        if not _VERSION.fullmatch(version):
            raise _BadHttp(400, "malformed HTTP version in the request line")
        if version not in ("HTTP/1.0", "HTTP/1.1"):
            raise _BadHttp(505, f"{version} is not supported (HTTP/1.0 and 1.1 are)")
        return _Request(verb, target, version, {})

    @staticmethod
    def _headers(lines: list[str]) -> dict[str, str]:
        headers: dict[str, str] = {}
        for line in lines:
            name, colon, value = line.partition(":")
            if not colon or not _TOKEN.fullmatch(name):
                # Also catches obs-fold continuation lines and "Name : value".
                raise _BadHttp(400, "malformed header line")
            value = value.strip(" \t")
            if _CTL.search(value):
                raise _BadHttp(400, f"control character in header {name!r}")
            key = name.lower()
            if key in ("content-length", "transfer-encoding") and key in headers:
                raise _BadHttp(400, f"repeated {name} header")
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return headers

    def _content_length(self, request: _Request) -> int | None:
        """The declared body length, None for chunked or no body; refuses ambiguity."""
        text = request.headers.get("content-length")
        coding = request.headers.get("transfer-encoding")
        limit = self.executor.max_request_bytes
        if coding is not None:
            if text is not None:
                raise _BadHttp(400, "both Content-Length and Transfer-Encoding (ambiguous "
                                    "framing)")
            if request.version != "HTTP/1.1":
                raise _BadHttp(400, "Transfer-Encoding needs HTTP/1.1")
            if coding.lower() != "chunked":
                raise _BadHttp(501, f"transfer coding {coding[:60]!r} is not supported "
                                    "(only 'chunked')")
            return None
        if text is None:
            return None
        if not text.isdigit() or not text.isascii():
            raise _BadHttp(400, f"Content-Length {text[:40]!r} is not a number")
        if len(text) > 18 or int(text) > limit:
            raise _BadHttp(413, f"request of {text[:40]} bytes exceeds the limit of {limit}",
                           p.ErrorType.TOO_LARGE)
        return int(text)

    async def _chunked(self, reader: asyncio.StreamReader) -> bytes:
        limit = self.executor.max_request_bytes
        chunks: list[bytes] = []
        total = 0
        try:
            while True:
                line = await reader.readuntil(b"\r\n")
                size_text = line[:-2].split(b";", 1)[0].strip(b" \t")
                if not _CHUNK_SIZE.fullmatch(size_text):
                    raise _BadHttp(400, "malformed chunk size line")
                size = int(size_text, 16)
                if size == 0:
                    break
                total += size
                if total > limit:
                    raise _BadHttp(413, f"chunked request over the limit of {limit} bytes",
                                   p.ErrorType.TOO_LARGE)
                chunks.append(await reader.readexactly(size))
                if await reader.readexactly(2) != b"\r\n":
                    raise _BadHttp(400, "chunk data not followed by CRLF")
            trailers = 0
            while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                trailers += len(line)
                if trailers > _MAX_HEADER_BYTES:
                    raise _BadHttp(431, "trailer section too large")
        except asyncio.IncompleteReadError:
            raise _BadHttp(400, "truncated chunked body: connection closed mid-chunk") from None
        except asyncio.LimitOverrunError:
            raise _BadHttp(400, "malformed chunked body (line too long)") from None
        return b"".join(chunks)

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      status: int, error_type: str, message: str) -> None:
        """Answer an unusable request, then close without a reset.

        Closing a socket with unread input makes the kernel send RST, which can
        destroy the response before the peer reads it; so half-close and drain what
        the peer still sends (bounded in time and bytes) first.
        """
        try:
            await self._send(writer, status, p.error_reply(None, error_type, message), False)
            if writer.can_write_eof():
                writer.write_eof()
            async with asyncio.timeout(_LINGER_SECONDS):
                drained = 0
                while drained < _LINGER_BYTES and (data := await reader.read(65536)):
                    drained += len(data)
        except (ConnectionError, TimeoutError):
            pass

    async def _route(self, verb: str, path: str, body: bytes,
                     headers: dict[str, str]) -> tuple[int, Any]:
        ex = self.executor
        if path == "/healthz":
            return 200, {"ok": True}
        if path == "/readyz":
            return (200 if ex.accepting else 503), ex.health()
        if self.health_only:
            return 404, p.error_reply(None, p.ErrorType.BAD_REQUEST, f"no route {path[:200]}")
        ts, sig = headers.get("x-sz-timestamp"), headers.get("x-sz-signature")
        signed: bytes | None = None
        default_type: str | None = None
        if path == "/v1/describe" and verb == "GET":
            signed = body
            body = p.encode({"v": p.VERSION, "type": "describe", "id": "http"})
        elif path == "/v1/execute" and verb == "POST":
            default_type = "execute"
        elif path == "/v1/cancel" and verb == "POST":
            default_type = "cancel"
        elif path == "/" and verb == "POST":
            pass  # ScheduleZero-style body, decoded as legacy
        elif path in ("/v1/describe", "/v1/execute", "/v1/cancel", "/"):
            return 405, p.error_reply(None, p.ErrorType.BAD_REQUEST,
                                      f"{verb} not allowed on {path}")
        else:
            return 404, p.error_reply(None, p.ErrorType.BAD_REQUEST, f"no route {path[:200]}")
        reply, legacy = await ex.handle_message(body, ts, sig, signed_body=signed,
                                                default_type=default_type)
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
