"""Clients for the three handler protocols, all async, all classifying failures.

Every call returns a ``DispatchResult`` (never raises for a handler-side or
network failure) with ``error_type`` and ``retryable`` set, so the engine's retry
logic reads one shape whatever the protocol:
- timeout of the attempt -> ``Timeout`` (retryable); a best-effort ``cancel`` is
  sent so the handler can stop the job;
- refused/reset connections -> ``ConnectionError`` (retryable);
- a reply that is not valid JSON, or names another run -> ``ProtocolError``;
- handler errors as the handler classified them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.asyncio
from schedulezero_handler import protocol as p

log = logging.getLogger("schedulezero.dispatch")


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    protocol: str  # zmq | http | zmq-legacy
    pod: str | None = None

    @property
    def key(self) -> str:
        return f"{self.protocol}://{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.pod or f"{self.host}:{self.port}"


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
        duration = (time.monotonic() - started) * 1000
        if not isinstance(reply, dict) or "ok" not in reply:
            return cls(False, endpoint, error_type=p.ErrorType.PROTOCOL,
                       message=f"reply is not a protocol v1 object: {str(reply)[:200]}",
                       retryable=True, duration_ms=duration)
        if run_id is not None and reply.get("runId") not in (None, run_id):
            return cls(False, endpoint, error_type=p.ErrorType.PROTOCOL,
                       message=f"reply names run {reply.get('runId')!r}, expected {run_id!r}",
                       retryable=True, duration_ms=duration)
        if reply["ok"]:
            return cls(True, endpoint, result=reply.get("result"), duration_ms=duration,
                       handler_duration_ms=reply.get("durationMs"))
        err = reply.get("error") or {}
        return cls(False, endpoint, error_type=str(err.get("type", "HandlerError")),
                   message=str(err.get("message", "")), retryable=bool(err.get("retryable")),
                   duration_ms=duration, handler_duration_ms=reply.get("durationMs"))

    @classmethod
    def failure(cls, endpoint: Endpoint, error_type: str, message: str,
                started: float) -> DispatchResult:
        return cls(False, endpoint, error_type=error_type, message=message,
                   retryable=p.RETRYABLE.get(error_type, False),
                   duration_ms=(time.monotonic() - started) * 1000)


def _signed_frames(body: bytes, secret: bytes | None) -> list[bytes]:
    if secret is None:
        return [body]
    ts, sig = p.sign(secret, body, time.time())
    return [body, ts.encode(), sig.encode()]


class ZmqClient:
    """One DEALER connection per endpoint; replies matched to requests by ``id``."""

    def __init__(self, ctx: zmq.asyncio.Context, endpoint: Endpoint,
                 secret: bytes | None) -> None:
        self.endpoint = endpoint
        self.secret = secret
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.setsockopt(zmq.RECONNECT_IVL, 100)
        self.sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        self.sock.connect(f"tcp://{endpoint.host}:{endpoint.port}")
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._prefix = f"{id(self):x}-"
        self._reader: asyncio.Task[None] | None = None
        self.unmatched_replies = 0

    def _ensure_reader(self) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        while True:
            frames = await self.sock.recv_multipart()
            try:
                reply = json.loads(frames[-1])
                rid = reply.get("id") if isinstance(reply, dict) else None
            except ValueError:
                rid, reply = None, None
            future = self._pending.pop(rid, None) if isinstance(rid, str) else None
            if future is None:
                self.unmatched_replies += 1
                log.warning("dropping a reply that matches no request from %s: %.200r",
                            self.endpoint, frames[-1])
            elif not future.done():
                future.set_result(reply)

    async def request(self, message: dict[str, Any], timeout: float) -> Any:
        self._ensure_reader()
        rid = self._prefix + str(next(self._ids))
        message = {**message, "id": rid}
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        try:
            await self.sock.send_multipart(_signed_frames(p.encode(message), self.secret))
            async with asyncio.timeout(timeout):  # no extra task, unlike wait_for
                return await future
        finally:
            self._pending.pop(rid, None)

    async def close(self) -> None:
        """Close the connection; requests still waiting fail as ConnectionError (retryable)."""
        if self._reader is not None:
            self._reader.cancel()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError(f"{self.endpoint} went away"))
        self._pending.clear()
        self.sock.close(0)


class LegacyZmqClient:
    """ScheduleZero handlers: a REP socket, strictly one request at a time.

    A REQ socket whose request timed out is wedged (it may never get its reply),
    so it is closed and replaced instead of reused — reusing it, or sharing one
    REQ socket between callers, is what made ScheduleZero's server abort.
    """

    def __init__(self, ctx: zmq.asyncio.Context, endpoint: Endpoint) -> None:
        self.ctx = ctx
        self.endpoint = endpoint
        self._lock = asyncio.Lock()
        self._sock: zmq.asyncio.Socket | None = None

    def _socket(self) -> zmq.asyncio.Socket:
        if self._sock is None:
            self._sock = self.ctx.socket(zmq.REQ)
            self._sock.setsockopt(zmq.LINGER, 0)
            self._sock.connect(f"tcp://{self.endpoint.host}:{self.endpoint.port}")
        return self._sock

    async def request(self, method: str, params: dict[str, Any], timeout: float) -> Any:
        async with self._lock:
            sock = self._socket()
            try:
                await sock.send(json.dumps({"method": method, "params": params}).encode())
                raw = await asyncio.wait_for(sock.recv(), timeout)
            except BaseException:
                sock.close(0)
                self._sock = None
                raise
        return json.loads(raw)

    async def close(self) -> None:
        if self._sock is not None:
            self._sock.close(0)


class HttpClient:
    """Keep-alive pooled aiohttp session shared by all HTTP endpoints."""

    def __init__(self) -> None:
        self._session: Any = None
        self._ids = itertools.count(1)

    def _ensure(self) -> Any:
        if self._session is None:
            import aiohttp  # lazy: ZMQ-only deployments never load the HTTP stack

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=256,
                                               keepalive_timeout=30),
                json_serialize=json.dumps,
            )
        return self._session

    async def request(self, endpoint: Endpoint, verb: str, path: str,
                      message: dict[str, Any] | None, timeout: float,
                      secret: bytes | None) -> Any:
        import aiohttp

        session = self._ensure()
        if message is not None:
            message = {**message, "id": message.get("id") or f"h{next(self._ids)}"}
        body = p.encode(message) if message is not None else b""
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            ts, sig = p.sign(secret, body, time.time())
            headers.update({"X-SZ-Timestamp": ts, "X-SZ-Signature": sig})
        url = f"http://{endpoint.host}:{endpoint.port}{path}"
        async with session.request(verb, url, data=body or None, headers=headers,
                                   timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            raw = await resp.read()
        try:
            return json.loads(raw)
        except ValueError:
            return {"ok": False, "error": {
                "type": p.ErrorType.PROTOCOL, "retryable": resp.status >= 500,
                "message": f"HTTP {resp.status} with a non-JSON body: {raw[:200]!r}"}}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class Dispatcher:
    """Protocol-agnostic façade: ``execute``, ``describe``, ``cancel``, ``health``."""

    def __init__(self) -> None:
        self._ctx: zmq.asyncio.Context | None = None
        self._zmq: dict[str, ZmqClient] = {}
        self._legacy: dict[str, LegacyZmqClient] = {}
        self._secrets: dict[str, bytes | None] = {}
        self._http = HttpClient()
        self._background: set[asyncio.Task[Any]] = set()
        self._closed = False

    def _context(self) -> zmq.asyncio.Context:
        if self._closed:
            raise RuntimeError("dispatcher is closed")
        if self._ctx is None:
            self._ctx = zmq.asyncio.Context()
        return self._ctx

    def set_secret(self, endpoint: Endpoint, secret: bytes | None) -> None:
        self._secrets[endpoint.key] = secret

    async def execute(self, endpoint: Endpoint, *, run_id: str, method: str,
                      params: dict[str, Any], timeout: float, schedule: str | None = None,
                      scheduled_time: str | None = None, attempt: int = 1,
                      deadline: str | None = None) -> DispatchResult:
        started = time.monotonic()
        request = p.Request(type="execute", id="", run_id=run_id, method=method, params=params,
                            schedule=schedule, scheduled_time=scheduled_time, attempt=attempt,
                            deadline=deadline).to_wire()
        try:
            if endpoint.protocol == "zmq-legacy":
                reply = await self._legacy_client(endpoint).request(method, params, timeout)
                return _from_legacy(endpoint, reply, started)
            reply = await self._call(endpoint, "POST", "/v1/execute", request, timeout)
            return DispatchResult.from_reply(endpoint, reply, run_id, started)
        except TimeoutError:
            if endpoint.protocol != "zmq-legacy" and not self._closed:
                task = asyncio.get_running_loop().create_task(
                    self._cancel_quietly(endpoint, run_id))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            return DispatchResult.failure(endpoint, p.ErrorType.TIMEOUT,
                                          f"no reply within {timeout:g}s", started)
        except (OSError, zmq.ZMQError) as e:
            return DispatchResult.failure(endpoint, p.ErrorType.CONNECTION, str(e), started)
        except Exception as e:  # noqa: BLE001 - aiohttp's errors and anything else
            kind = type(e).__name__
            error = p.ErrorType.CONNECTION if "Connect" in kind or "Disconnect" in kind \
                or "ServerDisconnected" in kind else p.ErrorType.PROTOCOL
            return DispatchResult.failure(endpoint, error, f"{kind}: {e}", started)

    async def describe(self, endpoint: Endpoint, timeout: float = 5.0) -> DispatchResult:
        started = time.monotonic()
        if endpoint.protocol == "zmq-legacy":
            return DispatchResult(True, endpoint, result=None)  # REP handlers can't describe
        try:
            reply = await self._call(endpoint, "GET", "/v1/describe",
                                     {"v": p.VERSION, "type": "describe"}, timeout)
            return DispatchResult.from_reply(endpoint, reply, None, started)
        except TimeoutError:
            return DispatchResult.failure(endpoint, p.ErrorType.TIMEOUT, "describe timed out",
                                          started)
        except Exception as e:  # noqa: BLE001
            return DispatchResult.failure(endpoint, p.ErrorType.CONNECTION, str(e), started)

    async def cancel(self, endpoint: Endpoint, run_id: str, timeout: float = 2.0) -> bool:
        try:
            reply = await self._call(endpoint, "POST", "/v1/cancel",
                                     {"v": p.VERSION, "type": "cancel", "runId": run_id},
                                     timeout)
        except Exception:  # noqa: BLE001 - cancel is best effort
            return False
        return bool(isinstance(reply, dict) and reply.get("ok")
                    and (reply.get("result") or {}).get("cancelled"))

    async def _cancel_quietly(self, endpoint: Endpoint, run_id: str) -> None:
        await self.cancel(endpoint, run_id)

    async def _call(self, endpoint: Endpoint, verb: str, path: str,
                    message: dict[str, Any], timeout: float) -> Any:
        secret = self._secrets.get(endpoint.key)
        if endpoint.protocol == "http":
            if verb == "GET":
                return await self._http.request(endpoint, verb, path, None, timeout, secret)
            return await self._http.request(endpoint, verb, path, message, timeout, secret)
        client = self._zmq.get(endpoint.key)
        if client is None:
            client = self._zmq[endpoint.key] = ZmqClient(self._context(), endpoint, secret)
        return await client.request(message, timeout)

    def _legacy_client(self, endpoint: Endpoint) -> LegacyZmqClient:
        client = self._legacy.get(endpoint.key)
        if client is None:
            client = self._legacy[endpoint.key] = LegacyZmqClient(self._context(), endpoint)
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


def _from_legacy(endpoint: Endpoint, reply: Any, started: float) -> DispatchResult:
    duration = (time.monotonic() - started) * 1000
    if not isinstance(reply, dict) or "success" not in reply:
        return DispatchResult(False, endpoint, error_type=p.ErrorType.PROTOCOL,
                              message=f"not a ScheduleZero reply: {str(reply)[:200]}",
                              retryable=True, duration_ms=duration)
    if reply["success"]:
        result = reply.get("result", {k: v for k, v in reply.items() if k != "success"})
        return DispatchResult(True, endpoint, result=result, duration_ms=duration)
    # ScheduleZero retried every error; keep that meaning for legacy handlers.
    return DispatchResult(False, endpoint, error_type=p.ErrorType.HANDLER_ERROR,
                          message=str(reply.get("error", "")), retryable=True,
                          duration_ms=duration)
