"""ScheduleZero's registration server, answered by the operator (opt-in).

A ScheduleZero handler (``ZMQHandlerBase``) registers at start-up with its
server's REQ/REP port (4242 by default): a ``ping`` to test the connection,
``register`` with ``handler_id``, ``address`` (its REP socket, ``tcp://host:port``)
and ``methods``, then a ``ping`` heartbeat every ~30 s on the same connection,
and ``report_status`` with ``"offline"`` on shutdown. It waits up to 10 s for
each reply, so without a server it logs connection failures and hangs that long
on SIGTERM. With ``--legacy-registry-port`` the operator answers as ScheduleZero's
server did (``zmq_registration_server.py``), one JSON object per message:

- ``{"method": "ping"}`` -> ``{"success": true, "message": "pong"}``
- ``register`` -> ``{"success": true, "handler_id", "address", "status":
  "registered" | "re-registered", "methods", "message": "Handler '<id>'
  <status> successfully"}``
- ``report_status`` -> ``{"success": true, "handler_id", "status"}``, or
  ``{"success": false, "error": "Handler not registered"}`` for an unknown id
- any other method -> ``{"success": false, "error": "Unknown method: <name>"}``;
  a body that is not JSON -> ``{"success": false, "error": "Invalid JSON"}``.

Beyond ScheduleZero, which stored whatever came: ``register`` and
``report_status`` with missing or mistyped fields are refused with an error
naming them, and what is kept is bounded (``limit`` registrations, least
recently heard from dropped first). Registrations are kept in memory; the
engine shows each on the Handler whose ``endpoints`` name its address (and
restores them from there after a restart).

The socket is a ROUTER, not a REP: a REQ peer cannot tell the difference, and a
ROUTER knows which connection a request came on. A heartbeat ``ping`` names no
handler; it is attributed to the handler that registered on the same
connection. A ping on a connection never seen before (the handler's socket
reconnected to a restarted operator) is attributed by the peer's IP address when
exactly one registration came from there. A handler that registered a wildcard
address (``tcp://0.0.0.0:4244``, ``tcp://*:4244``) is recorded at the peer's IP.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.asyncio
from schedulezero_handler import protocol as p

from .clients import Endpoint

log = logging.getLogger("schedulezero.registry")

MAX_REGISTRATIONS = 1000
MAX_REQUEST_BYTES = 256 << 10
MAX_METHODS = 1000
WILDCARD_HOSTS = frozenset({"*", "0.0.0.0", "::", "0:0:0:0:0:0:0:0"})


@dataclass
class Registration:
    handler_id: str
    address: str  # as registered
    endpoint: str | None  # normalised host:port (as Handler endpoints are shown); None: unusable
    methods: list[str]
    registered: dt.datetime
    last_seen: dt.datetime  # last request of any kind on its connection
    status: str = "online"
    peer: str | None = None  # the IP address its register request came from
    # Restored from a Handler's status after an operator restart and not heard of since:
    # its heartbeats arrive on a connection this process has not seen register.
    restored: bool = False


def normalise(address: str, peer: str | None = None) -> str | None:
    """``tcp://host:port`` as ``host:port`` (a wildcard host replaced by ``peer``)."""
    try:
        e = Endpoint.parse(address, "zmq-legacy")
    except ValueError:
        return None
    if e.host in WILDCARD_HOSTS or e.host == "":
        if not peer:
            return None
        e = Endpoint(peer, e.port, e.protocol)
    return e.address


class RegistrationBook:
    """The registrations (pure bookkeeping; the server below does the I/O).

    ``on_change(registration, kind)`` is called after each change; ``kind`` is
    ``register``, ``status`` (a report_status) or ``heartbeat`` (any other request
    on a registered connection).
    """

    def __init__(self, now: Callable[[], dt.datetime], *, limit: int = MAX_REGISTRATIONS,
                 on_change: Callable[[Registration, str], None] | None = None) -> None:
        self._now = now
        self.limit = limit
        self._on_change = on_change or (lambda reg, kind: None)
        self._by_id: OrderedDict[str, Registration] = OrderedDict()  # oldest activity first
        self._by_endpoint: dict[str, set[str]] = {}
        self._connections: OrderedDict[bytes, str] = OrderedDict()  # -> handler_id

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Registration]:
        return iter(list(self._by_id.values()))

    def on_change(self, reg: Registration, kind: str) -> None:
        """Tell the listener; its failure is logged, never the handler's problem."""
        try:
            self._on_change(reg, kind)
        except Exception:
            log.exception("registration of %r: updating the operator failed", reg.handler_id)

    def get(self, handler_id: str) -> Registration | None:
        return self._by_id.get(handler_id)

    def at(self, endpoint: str) -> list[Registration]:
        """The registrations whose address is ``endpoint`` (``host:port``, normalised)."""
        return [self._by_id[i] for i in sorted(self._by_endpoint.get(endpoint, ()))]

    # -- requests -------------------------------------------------------------------
    def handle(self, request: Any, *, connection: bytes | None = None,
               peer: str | None = None) -> dict[str, Any]:
        """One decoded request -> its reply (ScheduleZero's shapes)."""
        if not isinstance(request, dict):
            return {"success": False, "error": "a request is a JSON object with 'method' and "
                                               "'params'"}
        method = request.get("method")
        params = request.get("params")
        if params is None:
            params = {}
        reg = self._heard(connection, peer)
        if method == "ping":
            if reg is not None:
                self.on_change(reg, "heartbeat")
            return {"success": True, "message": "pong"}
        if method not in ("register", "report_status"):
            if reg is not None:
                self.on_change(reg, "heartbeat")
            return {"success": False, "error": f"Unknown method: {_text(method)}"}
        if not isinstance(params, dict):
            return {"success": False, "error": f"{method}: 'params' must be an object"}
        if method == "register":
            return self._register(params, connection, peer)
        return self._report_status(params, connection)

    def _register(self, params: dict[str, Any], connection: bytes | None,
                  peer: str | None) -> dict[str, Any]:
        handler_id, address = params.get("handler_id"), params.get("address")
        methods = params.get("methods", [])
        if methods is None:
            methods = []
        if not isinstance(handler_id, str) or not 0 < len(handler_id) <= 253:
            return {"success": False, "error": "register: 'handler_id' must be a non-empty "
                                               "string (at most 253 characters)"}
        if not isinstance(address, str) or not 0 < len(address) <= 300:
            return {"success": False, "error": "register: 'address' must be a string such "
                                               "as tcp://host:port"}
        if not isinstance(methods, list) or len(methods) > MAX_METHODS or not all(
                isinstance(m, str) and len(m) <= 128 for m in methods):
            return {"success": False, "error": "register: 'methods' must be a list of "
                                               f"at most {MAX_METHODS} method names"}
        now = self._now()
        previous = self._by_id.get(handler_id)
        status = "registered" if previous is None else "re-registered"
        if previous is not None:
            self._unindex(previous)
        reg = Registration(handler_id, address, normalise(address, peer), list(methods),
                           registered=now, last_seen=now, peer=peer)
        self._by_id[handler_id] = reg
        self._by_id.move_to_end(handler_id)
        if reg.endpoint is not None:
            self._by_endpoint.setdefault(reg.endpoint, set()).add(handler_id)
        if connection is not None:
            self._bind(connection, handler_id)
        self._bound()
        log.debug("handler %r %s at %s with %d method(s)", handler_id, status, address,
                  len(methods))
        self.on_change(reg, "register")
        return {"success": True, "handler_id": handler_id, "address": address,
                "status": status, "methods": methods,
                "message": f"Handler '{handler_id}' {status} successfully"}

    def _report_status(self, params: dict[str, Any], connection: bytes | None
                       ) -> dict[str, Any]:
        handler_id, status = params.get("handler_id"), params.get("status")
        reg = self._by_id.get(handler_id) if isinstance(handler_id, str) else None
        if reg is None:
            return {"success": False, "error": "Handler not registered"}
        if not isinstance(status, str) or not 0 < len(status) <= 64:
            return {"success": False, "error": "report_status: 'status' must be a string "
                                               "such as offline"}
        reg.status = status
        reg.last_seen = self._now()
        self._by_id.move_to_end(reg.handler_id)
        if connection is not None:
            self._bind(connection, reg.handler_id)
        self.on_change(reg, "status")
        return {"success": True, "handler_id": handler_id, "status": status}

    # -- connections -------------------------------------------------------------------
    def _heard(self, connection: bytes | None, peer: str | None) -> Registration | None:
        """The registration a request's connection belongs to (its last_seen updated)."""
        if connection is None:
            return None
        handler_id = self._connections.get(connection)
        reg = self._by_id.get(handler_id) if handler_id is not None else None
        if reg is None and peer:
            # A connection not seen before: the handler's socket reconnected to this
            # (restarted) operator. Attributable when one restored registration is there.
            candidates = [r for r in self._by_id.values() if r.restored and r.peer == peer]
            if len(candidates) == 1:
                reg = candidates[0]
                self._bind(connection, reg.handler_id)
        if reg is None:
            return None
        reg.restored = False
        reg.last_seen = self._now()
        self._by_id.move_to_end(reg.handler_id)
        return reg

    def _bind(self, connection: bytes, handler_id: str) -> None:
        self._connections[connection] = handler_id
        self._connections.move_to_end(connection)
        while len(self._connections) > 4 * self.limit:
            self._connections.popitem(last=False)

    # -- bounds, restore ---------------------------------------------------------------
    def _unindex(self, reg: Registration) -> None:
        if reg.endpoint is not None:
            ids = self._by_endpoint.get(reg.endpoint)
            if ids is not None:
                ids.discard(reg.handler_id)
                if not ids:
                    del self._by_endpoint[reg.endpoint]

    def _bound(self) -> None:
        while len(self._by_id) > self.limit:
            _, oldest = self._by_id.popitem(last=False)
            self._unindex(oldest)
            log.info("forgetting the registration of %r (%s): more than %d registrations",
                     oldest.handler_id, oldest.address, self.limit)

    def restore(self, endpoint: str, handler_id: str, methods: list[str],
                registered: dt.datetime | None, last_seen: dt.datetime | None,
                status: str) -> None:
        """A registration as a Handler's stored status shows it (after an operator
        restart); one the operator has heard of since wins."""
        if handler_id in self._by_id:
            return
        now = self._now()
        host = endpoint.rsplit(":", 1)[0].strip("[]")
        reg = Registration(handler_id, f"tcp://{endpoint}", endpoint, list(methods),
                           registered=registered or now, last_seen=last_seen or now,
                           status=status, peer=host, restored=True)
        self._by_id[handler_id] = reg
        self._by_id.move_to_end(handler_id, last=False)  # first to go when bounded
        self._by_endpoint.setdefault(endpoint, set()).add(handler_id)
        self._bound()


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else p.encode(value).decode()
    return text if len(text) <= 200 else text[:197] + "..."


class RegistrationServer:
    """The ROUTER socket in front of a ``RegistrationBook``, on the running event loop."""

    def __init__(self, book: RegistrationBook, bind: str, port: int,
                 max_request_bytes: int = MAX_REQUEST_BYTES) -> None:
        self.book = book
        self.bind_host = bind
        self.port = port
        self.max_request_bytes = max_request_bytes
        self._ctx: zmq.asyncio.Context | None = None
        self._sock: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        host = f"[{self.bind_host}]" if ":" in self.bind_host else self.bind_host
        return f"tcp://{host}:{self.port}"

    def start(self) -> bool:
        """Bind and serve; False (logged) when the port cannot be bound."""
        self._ctx = zmq.asyncio.Context()
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        # A bigger message disconnects its peer instead of being buffered.
        sock.setsockopt(zmq.MAXMSGSIZE, 2 * self.max_request_bytes)
        if ":" in self.bind_host:
            sock.setsockopt(zmq.IPV6, 1)
        try:
            sock.bind(self.address)
        except zmq.ZMQError as e:
            log.error("cannot serve ScheduleZero registrations on %s: %s", self.address, e)
            sock.close(0)
            self._ctx.destroy(linger=0)
            self._ctx = None
            return False
        self._sock = sock
        self._task = asyncio.get_running_loop().create_task(self._serve())
        log.info("serving ScheduleZero registrations on %s", self.address)
        return True

    async def _serve(self) -> None:
        sock = self._sock
        assert sock is not None
        while True:
            try:
                frames = await sock.recv_multipart(copy=False)
            except zmq.ZMQError as e:
                if sock.closed or e.errno in (zmq.ETERM, zmq.ENOTSOCK):
                    return
                log.warning("registration server: receive failed: %s", e)
                await asyncio.sleep(0.01)
                continue
            try:
                reply = self._answer(frames)
            except Exception:  # a bug here must not stop the server or leave a peer waiting
                log.exception("registration server: answering a request failed")
                reply = None
            if reply is None:
                continue
            try:
                await sock.send_multipart(reply)
            except zmq.ZMQError as e:
                log.debug("registration server: reply not sent: %s", e)

    def _answer(self, frames: list[Any]) -> list[bytes] | None:
        """[routing id, (envelope...), b"", body] -> the same envelope and a reply body."""
        raw = [bytes(f.buffer) for f in frames]
        if len(raw) < 2:
            return None  # nothing to route a reply to
        try:
            delimiter = raw.index(b"", 1)
        except ValueError:  # a DEALER peer without the REQ delimiter
            delimiter = 0
        envelope, body = raw[:delimiter + 1], raw[delimiter + 1:]
        connection = raw[0]
        peer = None
        try:
            peer = frames[-1].get("Peer-Address")
        except (zmq.ZMQError, AttributeError, UnicodeDecodeError):
            pass
        reply: dict[str, Any]
        if len(body) != 1:
            reply = {"success": False, "error": f"expected one JSON message, got {len(body)} "
                                                "frames"}
        else:
            try:
                request = p.loads(body[0], max_bytes=self.max_request_bytes, what="request")
            except p.WireFormatError as e:
                reply = {"success": False, "error": "Invalid JSON"}
                log.debug("registration server: %s", e)
            else:
                try:
                    reply = self.book.handle(request, connection=connection, peer=peer)
                except Exception as e:  # a bug here must not leave the peer waiting
                    log.exception("registration server: answering a request failed")
                    reply = {"success": False, "error": f"operator error: {e}"}
        return [*envelope, p.encode(reply)]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None
        if self._ctx is not None:
            self._ctx.destroy(linger=0)
            self._ctx = None
