"""Clients for the three handler protocols, all async, all classifying failures.

Every call returns a ``DispatchResult`` (never raises for a handler-side or
network failure) with ``error_type`` and ``retryable`` set, so the engine's retry
logic reads one shape whatever the protocol:
- timeout of the attempt -> ``Timeout`` (retryable); a best-effort ``cancel`` is
  sent so the handler can stop the job;
- refused/reset connections -> ``ConnectionError`` (retryable);
- a malformed reply -> ``ProtocolError`` (retryable: the handler may be sick, or
  something else answers on that port, and another endpoint may do better; as
  with ``Timeout``, the job may have run);
- handler errors as the handler classified them.

Malformed replies: every reply is read with the handler SDK's own strict decoder
(``protocol.loads``: UTF-8, depth, huge integers, NaN, duplicate keys, unpaired
surrogates) and shape check (``protocol.check_reply``: strict booleans, field
types), so one garbled message is a ``ProtocolError`` result for its request and
never an exception in a task:
- ZMQ DEALER: the reader task serves every request on the connection, so it
  survives anything one message holds. A reply that cannot be parsed (or has no
  string ``id``) is matched to its request by finding exactly one pending
  request id (a random per-connection prefix plus a counter, quoted) in the raw
  frames; with no such id, or several, it cannot be attributed, is counted in
  ``unmatched_replies`` and dropped, and its request ends as ``Timeout``.
  Replies over ``max_reply_bytes`` are ``ProtocolError``; over twice that,
  libzmq drops the connection (``ZMQ_MAXMSGSIZE``) and the requests waiting on
  it end as ``Timeout``.
- Legacy REQ: the reply is read whole (a multi-frame reply would otherwise
  wedge the REQ socket), then checked; ``success`` must be a JSON boolean.
- HTTP: bodies are read up to ``max_reply_bytes``; unparseable HTTP (status
  line, headers, chunking) and malformed bodies are ``ProtocolError``, a closed
  connection ``ConnectionError``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import itertools
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.asyncio
from schedulezero_handler import protocol as p
from schedulezero_handler.zmq_loop import LoopSocket

log = logging.getLogger("schedulezero.dispatch")

MAX_REPLY_BYTES = 8 << 20


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    protocol: str  # zmq | http | zmq-legacy
    pod: str | None = None

    @classmethod
    def parse(cls, address: str, protocol: str, pod: str | None = None) -> Endpoint:
        """``host:port``, ``tcp://host:port`` (ScheduleZero's form) or ``[v6addr]:port``."""
        text = address.strip().removeprefix("tcp://")
        if text.startswith("["):
            host, sep, port = text[1:].partition("]:")
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                sep = ""
            if not sep:
                raise ValueError(f"invalid endpoint {address!r}: use [ipv6]:port")
        else:
            host, _, port = text.rpartition(":")
            if any(c.isspace() or c in "/[]:" for c in host):
                host = ""  # an unbracketed IPv6 address or junk: refused below
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"invalid endpoint {address!r}: use host:port")
        return cls(host, int(port), protocol, pod=pod)

    @property
    def address(self) -> str:
        """``host:port``, with an IPv6 host in brackets (as URLs and ZMQ want it)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def ipv6(self) -> bool:
        return ":" in self.host

    @property
    def key(self) -> str:
        return f"{self.protocol}://{self.address}"

    def __str__(self) -> str:
        return self.pod or self.address


@dataclass
class DispatchResult:
    ok: bool
    endpoint: Endpoint
    result: Any = None
    error_type: str | None = None
    message: str = ""
    retryable: bool = False
    duration_ms: float = 0.0
    handler_duration_ms: float | None = None

    @classmethod
    def from_reply(cls, endpoint: Endpoint, reply: Any, run_id: str | None,
                   started: float) -> DispatchResult:
        """Classify a decoded v1 reply; a malformed one is a ``ProtocolError`` result."""
        try:
            reply = p.check_reply(reply)
        except p.ProtocolError as e:
            return cls.failure(endpoint, e.error_type, str(e), started)
        duration = (time.monotonic() - started) * 1000
        if run_id is not None and reply.get("runId") not in (None, run_id):
            return cls(False, endpoint, error_type=p.ErrorType.PROTOCOL,
                       message=f"reply names run {reply.get('runId')!r}, expected {run_id!r}",
                       retryable=True, duration_ms=duration)
        if reply["ok"]:
            return cls(True, endpoint, result=reply.get("result"), duration_ms=duration,
                       handler_duration_ms=reply.get("durationMs"))
        err = reply["error"]
        return cls(False, endpoint, error_type=err["type"], message=err["message"],
                   retryable=err["retryable"], duration_ms=duration,
                   handler_duration_ms=reply.get("durationMs"))

    @classmethod
    def failure(cls, endpoint: Endpoint, error_type: str, message: str,
                started: float) -> DispatchResult:
        return cls(False, endpoint, error_type=error_type, message=message,
                   retryable=p.RETRYABLE.get(error_type, False),
                   duration_ms=(time.monotonic() - started) * 1000)


def _encode_request(message: dict[str, Any]) -> bytes:
    """Encode a request; params that are not JSON (NaN, odd keys) fail the call, not a task."""
    try:
        return p.encode(message)
    except (ValueError, TypeError, RecursionError) as e:
        raise p.ProtocolError(p.ErrorType.BAD_REQUEST,
                              f"request cannot be encoded as JSON: {type(e).__name__}: "
                              f"{e}") from None


def _loads_reply(raw: bytes, max_bytes: int) -> Any:
    try:
        return p.loads(raw, max_bytes=max_bytes, what="reply")
    except p.WireFormatError as e:
        raise p.ProtocolError(p.ErrorType.PROTOCOL, f"malformed reply: {e}") from None


def _signed_frames(body: bytes, secret: bytes | None) -> list[bytes]:
    if secret is None:
        return [body]
    ts, sig = p.sign(secret, body, time.time())
    return [body, ts.encode(), sig.encode()]


class ZmqClient:
    """One DEALER connection per endpoint; replies matched to requests by ``id``.

    The socket is served by a ``LoopSocket`` (the SDK's, shared with the handler
    side): one reader callback per loop wake-up delivers every reply that is ready,
    and requests go straight to libzmq, with no task or awaited send per request.
    The reader must outlive any single message: everything a message can hold is
    classified in ``_deliver`` (which raises nothing for bad input) and receive
    errors other than the socket closing are logged and survived.
    """

    def __init__(self, ctx: zmq.Context[Any], endpoint: Endpoint,
                 max_reply_bytes: int = MAX_REPLY_BYTES) -> None:
        self.endpoint = endpoint
        self.max_reply_bytes = max_reply_bytes
        # A plain socket even from an asyncio context: LoopSocket drives it.
        self.sock: zmq.Socket[bytes] = zmq.Socket(ctx, zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.setsockopt(zmq.RECONNECT_IVL, 100)
        self.sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        # Memory guard: libzmq drops the connection rather than buffer a giant reply.
        self.sock.setsockopt(zmq.MAXMSGSIZE, 2 * max_reply_bytes)
        if endpoint.ipv6:
            self.sock.setsockopt(zmq.IPV6, 1)
        self.sock.connect(f"tcp://{endpoint.address}")
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        # Random, so an id seen in a garbled reply is ours and this connection's.
        self._prefix = f"{os.urandom(6).hex()}-"
        self._id_token = re.compile(rb'"(' + re.escape(self._prefix.encode()) + rb'[0-9]+)"')
        self._reader: LoopSocket | None = None  # started on the first request's loop
        self.unmatched_replies = 0

    def _ensure_reader(self) -> LoopSocket:
        if self._reader is None or self._reader.done():
            self._reader = LoopSocket(self.sock, self._deliver, name=str(self.endpoint))
        return self._reader

    def _deliver(self, frames: list[bytes]) -> None:
        """Hand one reply to its request: the decoded object, or a ProtocolError."""
        if len(frames) == 1:
            try:
                reply = _loads_reply(frames[0], self.max_reply_bytes)
            except p.ProtocolError as e:
                problem = str(e)
            else:
                rid = reply.get("id") if isinstance(reply, dict) else None
                if isinstance(rid, str):
                    future = self._pending.pop(rid, None)
                    if future is None:  # late (timed out) or not ours: nobody to tell
                        self._unmatched(frames, "its id matches no request in flight")
                    elif not future.done():
                        future.set_result(reply)
                    return
                problem = "malformed reply: no string 'id'"
        else:
            problem = f"malformed reply: {len(frames)} frames, expected 1"
        rid = self._attribute(frames)
        if rid is None:
            self._unmatched(frames, problem)
            return
        future = self._pending.pop(rid)
        if not future.done():
            future.set_exception(p.ProtocolError(p.ErrorType.PROTOCOL, problem))

    def _attribute(self, frames: list[bytes]) -> str | None:
        """The one request in flight whose id a garbled reply quotes, if exactly one."""
        found = {m.group(1).decode() for frame in frames
                 for m in self._id_token.finditer(frame)} & self._pending.keys()
        return found.pop() if len(found) == 1 else None

    def _unmatched(self, frames: list[bytes], why: str) -> None:
        self.unmatched_replies += 1
        log.warning("dropping a reply from %s (%s): %.200r", self.endpoint, why,
                    frames[0] if frames else b"")

    async def request(self, message: dict[str, Any], timeout: float,
                      secret: bytes | None = None) -> Any:
        """Send one request, signed with ``secret`` if given (per request: Handlers
        that share an endpoint each sign with their own, and a rotated Secret applies
        at once); the decoded reply object, or ProtocolError/TimeoutError."""
        reader = self._ensure_reader()
        rid = self._prefix + str(next(self._ids))
        body = _encode_request({**message, "id": rid})
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending[rid] = future
        # A timer on the future itself: cheaper than asyncio.timeout (no task
        # cancel/uncancel dance), same TimeoutError for the caller.
        timer = loop.call_later(timeout, _expire, future)
        try:
            reader.send(_signed_frames(body, secret))
            return await future
        finally:
            timer.cancel()
            self._pending.pop(rid, None)

    async def close(self) -> None:
        """Close the connection; requests still waiting fail as ConnectionError (retryable)."""
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError(f"{self.endpoint} went away"))
        self._pending.clear()
        if self._reader is not None:
            self._reader.close(0)
        else:
            self.sock.close(0)


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class LegacyZmqClient:
    """ScheduleZero handlers: a REP socket, strictly one request at a time.

    A REQ socket whose request timed out is wedged (it may never get its reply),
    so it is closed and replaced instead of reused — reusing it, or sharing one
    REQ socket between callers, is what made ScheduleZero's server abort. A reply
    is received whole (all its frames), so a malformed multi-frame reply cannot
    leave the socket mid-message either.
    """

    def __init__(self, ctx: zmq.asyncio.Context, endpoint: Endpoint,
                 max_reply_bytes: int = MAX_REPLY_BYTES) -> None:
        self.ctx = ctx
        self.endpoint = endpoint
        self.max_reply_bytes = max_reply_bytes
        self._lock = asyncio.Lock()
        self._sock: zmq.asyncio.Socket | None = None

    def _socket(self) -> zmq.asyncio.Socket:
        if self._sock is None:
            self._sock = self.ctx.socket(zmq.REQ)
            self._sock.setsockopt(zmq.LINGER, 0)
            self._sock.setsockopt(zmq.MAXMSGSIZE, 2 * self.max_reply_bytes)
            if self.endpoint.ipv6:
                self._sock.setsockopt(zmq.IPV6, 1)
            self._sock.connect(f"tcp://{self.endpoint.address}")
        return self._sock

    @property
    def busy(self) -> bool:
        """A request is waiting for its reply (the handler is serving it, or is gone)."""
        return self._lock.locked()

    async def request(self, method: str, params: dict[str, Any], timeout: float
                      ) -> list[bytes]:
        """Send one request; the reply's raw frames (decoding is the caller's)."""
        body = _encode_request({"method": method, "params": params})
        async with self._lock:
            sock = self._socket()
            try:
                await sock.send(body)
                async with asyncio.timeout(timeout):
                    frames: list[bytes] = await sock.recv_multipart()
            except BaseException:
                sock.close(0)
                self._sock = None
                raise
        return frames

    async def close(self) -> None:
        if self._sock is not None:
            self._sock.close(0)


class HttpClient:
    """Keep-alive pooled aiohttp session shared by all HTTP endpoints."""

    def __init__(self, max_reply_bytes: int = MAX_REPLY_BYTES) -> None:
        self._session: Any = None
        self._ids = itertools.count(1)
        self.max_reply_bytes = max_reply_bytes

    def _ensure(self) -> Any:
        if self._session is None:
            import aiohttp  # lazy: ZMQ-only deployments never load the HTTP stack

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=256,
                                               keepalive_timeout=30),
                # Handlers never compress; decoding a gzip body would let a small
                # reply inflate past max_reply_bytes before the limit is checked.
                auto_decompress=False,
            )
        return self._session

    async def request(self, endpoint: Endpoint, verb: str, path: str,
                      message: dict[str, Any] | None, timeout: float,
                      secret: bytes | None) -> dict[str, Any]:
        """One exchange; a checked v1 reply, or ProtocolError/ConnectionError/TimeoutError."""
        import aiohttp
        from aiohttp.http_exceptions import HttpProcessingError

        session = self._ensure()
        if message is not None:
            message = {**message, "id": message.get("id") or f"h{next(self._ids)}"}
        body = _encode_request(message) if message is not None else b""
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            ts, sig = p.sign(secret, body, time.time())
            headers.update({"X-SZ-Timestamp": ts, "X-SZ-Signature": sig})
        url = f"http://{endpoint.address}{path}"
        try:
            async with session.request(verb, url, data=body or None, headers=headers,
                                       timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                status = resp.status
                raw = await self._read_body(resp, status)
        except TimeoutError:
            raise  # includes aiohttp's ServerTimeoutError, which is also a connection error
        except aiohttp.ClientConnectionError as e:
            raise ConnectionError(f"{type(e).__name__}: {e}") from e
        except (aiohttp.ClientError, HttpProcessingError) as e:  # unparseable HTTP
            raise p.ProtocolError(p.ErrorType.PROTOCOL,
                                  f"malformed HTTP reply: {type(e).__name__}: {e}") from e
        try:
            return p.check_reply(_loads_reply(raw, self.max_reply_bytes))
        except p.ProtocolError as e:
            raise p.ProtocolError(p.ErrorType.PROTOCOL, f"HTTP {status}: {e}") from None

    async def _read_body(self, resp: Any, status: int) -> bytes:
        limit = self.max_reply_bytes
        if resp.content_length is not None and resp.content_length > limit:
            raise p.ProtocolError(p.ErrorType.PROTOCOL, f"HTTP {status}: reply of "
                                  f"{resp.content_length} bytes exceeds the limit of {limit}")
        chunks: list[bytes] = []
        total = 0
        while chunk := await resp.content.read(65536):
            total += len(chunk)
            if total > limit:
                raise p.ProtocolError(p.ErrorType.PROTOCOL, f"HTTP {status}: reply over the "
                                                            f"limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class Dispatcher:
    """Protocol-agnostic façade: ``execute``, ``describe``, ``cancel``, ``health``.

    ``max_reply_bytes`` bounds what one reply may hold (default 8 MiB, well above
    the handlers' 256 KiB result limit).
    """

    def __init__(self, *, max_reply_bytes: int = MAX_REPLY_BYTES) -> None:
        self.max_reply_bytes = max_reply_bytes
        self._ctx: zmq.asyncio.Context | None = None
        self._zmq: dict[str, ZmqClient] = {}
        self._legacy: dict[str, LegacyZmqClient] = {}
        self._http = HttpClient(max_reply_bytes)
        self._background: set[asyncio.Task[Any]] = set()
        self._no_hold: set[str] = set()  # endpoints that refused executeAt (older SDKs)
        self._closed = False

    def _context(self) -> zmq.asyncio.Context:
        if self._closed:
            raise RuntimeError("dispatcher is closed")
        if self._ctx is None:
            self._ctx = zmq.asyncio.Context()
        return self._ctx

    async def execute(self, endpoint: Endpoint, *, run_id: str, method: str,
                      params: dict[str, Any], timeout: float, schedule: str | None = None,
                      scheduled_time: str | None = None, attempt: int = 1,
                      deadline: str | None = None, start_at: dt.datetime | None = None,
                      secret: bytes | None = None) -> DispatchResult:
        """Run one attempt; with ``start_at``, the job starts at that (wall-clock) time.

        ``secret``: the Handler's signing key, passed with every call rather than kept
        per endpoint, because two Handlers (in two namespaces, say) may name the same
        endpoint with different Secrets: keyed by endpoint, one Handler's jobs were
        signed with the other's key.

        A held job: an SDK handler over ZMQ gets it now as ``executeAt`` and starts
        it at ``start_at`` itself, so a burst due at one instant is delivered before
        the instant and starts on time instead of one dispatch after another. Any
        other endpoint (HTTP, ScheduleZero's REP, an SDK too old for
        ``executeAt``, which refuses the type) gets a plain ``execute`` sent at
        ``start_at``: held here instead. Either way no job starts early.
        """
        started = time.monotonic()
        if self._closed:
            return DispatchResult.failure(endpoint, p.ErrorType.CONNECTION,
                                          "dispatcher is closed", started)
        request = p.Request(type="execute", id="", run_id=run_id, method=method, params=params,
                            schedule=schedule, scheduled_time=scheduled_time, attempt=attempt,
                            deadline=deadline).to_wire()
        if start_at is not None:
            hold = start_at.timestamp() - time.time()
            if hold > 0 and endpoint.protocol == "zmq" and endpoint.key not in self._no_hold:
                held = await self._send(endpoint, {**request, "type": "executeAt",
                                                   "startAt": _rfc3339(start_at)},
                                        run_id, timeout + hold, started, secret)
                if not _refused_type(held):
                    return held
                log.info("%s does not take held jobs (an older SDK); holding them here",
                         endpoint)
                self._no_hold.add(endpoint.key)
                hold = start_at.timestamp() - time.time()
            while hold > 0:  # never early: the loop may wake a hair before its timer
                await asyncio.sleep(hold)
                hold = start_at.timestamp() - time.time()
        return await self._send(endpoint, request, run_id, timeout, started, secret)

    async def _send(self, endpoint: Endpoint, request: dict[str, Any], run_id: str,
                    timeout: float, started: float, secret: bytes | None) -> DispatchResult:
        method, params = request["method"], request["params"]
        try:
            if endpoint.protocol == "zmq-legacy":
                frames = await self._legacy_client(endpoint).request(method, params, timeout)
                return _from_legacy(endpoint, frames, started, self.max_reply_bytes, method)
            reply = await self._call(endpoint, "POST", "/v1/execute", request, timeout, secret)
            return DispatchResult.from_reply(endpoint, reply, run_id, started)
        except TimeoutError:
            if endpoint.protocol != "zmq-legacy" and not self._closed:
                task = asyncio.get_running_loop().create_task(
                    self._cancel_quietly(endpoint, run_id, secret))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            return DispatchResult.failure(endpoint, p.ErrorType.TIMEOUT,
                                          f"no reply within {timeout:g}s", started)
        except p.ProtocolError as e:
            return DispatchResult.failure(endpoint, e.error_type, str(e), started)
        except (OSError, zmq.ZMQError) as e:
            return DispatchResult.failure(endpoint, p.ErrorType.CONNECTION,
                                          str(e) or type(e).__name__, started)

    async def describe(self, endpoint: Endpoint, timeout: float = 5.0,
                       secret: bytes | None = None) -> DispatchResult:
        """Describe an endpoint; a result the engine could not read is a ProtocolError."""
        started = time.monotonic()
        if endpoint.protocol == "zmq-legacy":
            return DispatchResult(True, endpoint, result=None)  # REP handlers can't describe
        if self._closed:
            return DispatchResult.failure(endpoint, p.ErrorType.CONNECTION,
                                          "dispatcher is closed", started)
        try:
            reply = await self._call(endpoint, "GET", "/v1/describe",
                                     {"v": p.VERSION, "type": "describe"}, timeout, secret)
        except TimeoutError:
            return DispatchResult.failure(endpoint, p.ErrorType.TIMEOUT, "describe timed out",
                                          started)
        except p.ProtocolError as e:
            return DispatchResult.failure(endpoint, e.error_type, str(e), started)
        except (OSError, zmq.ZMQError) as e:
            return DispatchResult.failure(endpoint, p.ErrorType.CONNECTION,
                                          str(e) or type(e).__name__, started)
        result = DispatchResult.from_reply(endpoint, reply, None, started)
        problem = _describe_problem(result.result) if result.ok else None
        if problem is not None:
            return DispatchResult.failure(endpoint, p.ErrorType.PROTOCOL,
                                          f"malformed describe result: {problem}", started)
        return result

    async def ping(self, endpoint: Endpoint, timeout: float = 2.0,
                   secret: bytes | None = None) -> DispatchResult:
        """Is a ScheduleZero (REQ/REP) handler there? ``{"method": "ping"}``, which it answers.

        Any well-formed ScheduleZero reply counts (a handler without ``ping`` still
        answered); no reply within ``timeout`` is ``Timeout``, a reply that is not
        ScheduleZero's shape ``ProtocolError``. A REP socket serves one request at a
        time: while a job is in flight on the endpoint, the ping is not queued
        behind it (it would only measure the job) and the result is ok with
        ``result == "busy"``. Other protocols are asked ``describe``.
        """
        if endpoint.protocol != "zmq-legacy":
            return await self.describe(endpoint, timeout, secret)
        started = time.monotonic()
        if self._closed:
            return DispatchResult.failure(endpoint, p.ErrorType.CONNECTION,
                                          "dispatcher is closed", started)
        client = self._legacy_client(endpoint)
        if client.busy:
            return DispatchResult(True, endpoint, result="busy")
        try:
            frames = await client.request("ping", {}, timeout)
            reply = _legacy_reply(frames, self.max_reply_bytes)
        except TimeoutError:
            return DispatchResult.failure(endpoint, p.ErrorType.TIMEOUT,
                                          f"no reply to ping within {timeout:g}s", started)
        except p.ProtocolError as e:
            return DispatchResult.failure(endpoint, e.error_type, str(e), started)
        except (OSError, zmq.ZMQError) as e:
            return DispatchResult.failure(endpoint, p.ErrorType.CONNECTION,
                                          str(e) or type(e).__name__, started)
        return DispatchResult(True, endpoint, result=reply,
                              duration_ms=(time.monotonic() - started) * 1000)

    async def cancel(self, endpoint: Endpoint, run_id: str, timeout: float = 2.0,
                     secret: bytes | None = None) -> bool:
        """Best effort: True only if the handler answered ``{"cancelled": true}``; never raises."""
        if endpoint.protocol == "zmq-legacy" or self._closed:
            return False  # ScheduleZero has no cancel
        started = time.monotonic()
        try:
            reply = await self._call(endpoint, "POST", "/v1/cancel",
                                     {"v": p.VERSION, "type": "cancel", "runId": run_id},
                                     timeout, secret)
        except (TimeoutError, p.ProtocolError, OSError, zmq.ZMQError) as e:
            log.debug("cancel of %s on %s failed: %s", run_id, endpoint, e)
            return False
        result = DispatchResult.from_reply(endpoint, reply, run_id, started)
        return (result.ok and isinstance(result.result, dict)
                and result.result.get("cancelled") is True)

    async def _cancel_quietly(self, endpoint: Endpoint, run_id: str,
                              secret: bytes | None) -> None:
        await self.cancel(endpoint, run_id, secret=secret)

    async def _call(self, endpoint: Endpoint, verb: str, path: str,
                    message: dict[str, Any], timeout: float, secret: bytes | None) -> Any:
        if endpoint.protocol == "http":
            if verb == "GET":
                return await self._http.request(endpoint, verb, path, None, timeout, secret)
            return await self._http.request(endpoint, verb, path, message, timeout, secret)
        client = self._zmq.get(endpoint.key)
        if client is None:
            client = self._zmq[endpoint.key] = ZmqClient(self._context(), endpoint,
                                                         self.max_reply_bytes)
        return await client.request(message, timeout, secret)

    def _legacy_client(self, endpoint: Endpoint) -> LegacyZmqClient:
        client = self._legacy.get(endpoint.key)
        if client is None:
            client = self._legacy[endpoint.key] = LegacyZmqClient(
                self._context(), endpoint, self.max_reply_bytes)
        return client

    async def forget(self, endpoint: Endpoint) -> None:
        """Close the connection to an endpoint that left the Ready set."""
        client = self._zmq.pop(endpoint.key, None)
        if client is not None:
            await client.close()
        legacy = self._legacy.pop(endpoint.key, None)
        if legacy is not None:
            await legacy.close()

    async def close(self) -> None:
        self._closed = True
        for task in list(self._background):
            task.cancel()
        for c in list(self._zmq.values()):
            await c.close()
        for lc in list(self._legacy.values()):
            await lc.close()
        self._zmq.clear()
        self._legacy.clear()
        await self._http.close()
        if self._ctx is not None:
            self._ctx.destroy(linger=0)
            self._ctx = None


def _rfc3339(t: dt.datetime) -> str:
    """UTC with milliseconds, as the protocol's times are written."""
    return t.astimezone(dt.UTC).isoformat(timespec="milliseconds")[:23] + "Z"


def _refused_type(result: DispatchResult) -> bool:
    """An SDK that predates ``executeAt`` answers it BadRequest "unknown request type"
    (before running anything): the one reply that means "send it as execute"."""
    return (not result.ok and result.error_type == p.ErrorType.BAD_REQUEST
            and "unknown request type" in result.message)


def _describe_problem(result: Any) -> str | None:
    """What the engine could not read in a describe result (it indexes methods[].name)."""
    if not isinstance(result, dict):
        return f"expected an object, got {type(result).__name__}"
    methods = result.get("methods", [])
    if not isinstance(methods, list):
        return f"'methods' must be a list, got {type(methods).__name__}"
    for m in methods:
        if not isinstance(m, dict) or not isinstance(m.get("name"), str):
            return "every entry of 'methods' must be an object with a string 'name'"
    return None


def _legacy_reply(frames: list[bytes], max_bytes: int) -> dict[str, Any]:
    """One REP reply: exactly one frame holding a legacy ``{"success": ...}`` object."""
    if len(frames) != 1:
        raise p.ProtocolError(p.ErrorType.PROTOCOL,
                              f"malformed reply: {len(frames)} frames, expected 1")
    return p.check_legacy_reply(_loads_reply(frames[0], max_bytes))


def _from_legacy(endpoint: Endpoint, frames: list[bytes], started: float,
                 max_bytes: int, method: str = "") -> DispatchResult:
    try:
        reply = _legacy_reply(frames, max_bytes)
    except p.ProtocolError as e:
        return DispatchResult.failure(endpoint, e.error_type, str(e), started)
    duration = (time.monotonic() - started) * 1000
    if reply["success"]:
        result = reply["result"] if "result" in reply else {
            k: v for k, v in reply.items() if k != "success"}
        return DispatchResult(True, endpoint, result=result, duration_ms=duration)
    error = reply.get("error", "")
    message = error if isinstance(error, str) else p.encode(error).decode()
    error_type = legacy_error_type(method, message)
    return DispatchResult(False, endpoint, error_type=error_type, message=message,
                          retryable=error_type == p.ErrorType.HANDLER_ERROR,
                          duration_ms=duration)


def legacy_error_type(method: str, error: str) -> str:
    """How a ScheduleZero ``{"success": false, "error": ...}`` reply is classified.

    ScheduleZero retried every error; the operator still does, except for the
    errors that say the call itself cannot work, so a retry would only repeat it
    (and whatever the handler did before failing):

    - ``UnknownMethod``: ``"Unknown method: <method>"``, ScheduleZero's reply for a
      method the handler does not have (the handler SDK adds `` (available: ...)``);
    - ``InvalidParams``: Python's own ``TypeError`` for a call of ``<method>`` that
      does not fit its signature (ScheduleZero calls ``method(params)``, so a
      method taking other arguments fails so), e.g. ``"Handler.write() missing 1
      required positional argument: 'path'"``, and the handler SDK's InvalidParams
      messages (``"<method>() is missing required parameter(s) ..."``).

    Everything else (an exception in the method: ``str(e)``) stays a retryable
    ``HandlerError``.
    """
    if not method:
        return p.ErrorType.HANDLER_ERROR
    if error == f"Unknown method: {method}" or error.startswith(f"Unknown method: {method} ("):
        return p.ErrorType.UNKNOWN_METHOD
    if _signature_error(method).match(error):
        return p.ErrorType.INVALID_PARAMS
    return p.ErrorType.HANDLER_ERROR


_SIGNATURE_ERRORS: dict[str, re.Pattern[str]] = {}


def _signature_error(method: str) -> re.Pattern[str]:
    pattern = _SIGNATURE_ERRORS.get(method)
    if pattern is None:
        if len(_SIGNATURE_ERRORS) > 1024:
            _SIGNATURE_ERRORS.clear()
        name = re.escape(method)
        pattern = _SIGNATURE_ERRORS[method] = re.compile(
            # Python's TypeError for the call (qualified name: Class.method()):
            rf"^(?:[\w<>]+\.)*{name}\(\) (?:"
            r"missing \d+ required (?:positional|keyword-only) arguments?: "
            r"|takes (?:\d+|from \d+ to \d+) positional arguments? but \d+ (?:was|were) given"
            r"|got an unexpected keyword argument "
            r"|got multiple values for argument "
            # the handler SDK's InvalidParams, in the legacy shape:
            r"|is missing required parameter\(s\) "
            r"|got unexpected parameter\(s\) )"
            rf"|^{name}\(\): parameter '")
    return pattern
