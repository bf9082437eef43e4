"""ZMQ transport: one ROUTER socket, many jobs in flight.

The operator connects a DEALER (frames: [body] or [body, timestamp, signature]);
ScheduleZero clients connect a REQ socket, whose frames carry an empty delimiter
first. Both are answered on the same socket with the envelope they came with.

Every message that arrives is answered exactly once (a REQ peer that got no
answer would be wedged for good), malformed or not; see ``protocol`` for which
error each kind of malformed message gets. The only messages not answered are
those over ``ZMQ_MAXMSGSIZE``, which libzmq drops together with the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import zmq

from . import protocol as p
from .executor import Executor
from .zmq_loop import LoopSocket

log = logging.getLogger("schedulezero.handler.zmq")

# Hard transport cap, as a multiple of max_request_bytes: up to it an oversized
# message is answered TooLarge; past it libzmq disconnects the peer without the
# handler ever buffering the message.
HARD_LIMIT_FACTOR = 4

_INTERNAL_ERROR = p.encode(p.error_reply(None, p.ErrorType.INTERNAL,
                                         "internal error in the handler SDK (see its log)"))


class ZmqServer:
    """Every ready message is handled in the socket's reader callback (no task per
    request): replies known at once go straight back, a job's reply is sent from
    the job's completion callback (``Executor.submit``)."""

    def __init__(self, executor: Executor, bind: str, port: int) -> None:
        self.executor = executor
        self.endpoint = f"tcp://{bind}:{port or '*'}"  # port 0: an ephemeral port
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._sock: zmq.Socket[bytes] = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 2000)
        self._sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE,
                              HARD_LIMIT_FACTOR * executor.max_request_bytes)
        self._io: LoopSocket | None = None
        # Messages whose reply is not sent yet (their job is still running).
        self._tasks: set[_Reply] = set()
        self._all_sent: asyncio.Event | None = None  # set when _tasks empties (stop)

    async def start(self) -> None:
        self._sock.bind(self.endpoint)
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._io = LoopSocket(self._sock, self._on_message, name="the ZMQ server")
        log.info("serving ZMQ on %s", self.endpoint)

    def _on_message(self, frames: list[bytes]) -> None:
        identity, rest = frames[0], frames[1:]
        envelope: tuple[bytes, ...] = (identity,)
        if rest and rest[0] == b"":  # REQ client: keep its delimiter
            envelope = (identity, b"")
            rest = rest[1:]
        waiting = _Reply(self, envelope)
        try:
            if not rest:
                waiting(p.encode(p.error_reply(
                    None, p.ErrorType.BAD_REQUEST, "expected 1 to 3 frames (the body alone, or "
                    "body, timestamp and signature), got 0")))
                return
            try:
                body, ts, sig = p.split_frames(rest)
            except p.ProtocolError as e:
                waiting(self.executor.reject(rest[0], e))
                return
            self._tasks.add(waiting)
            self.executor.submit(body, ts, sig, waiting)
        # Last resort for a bug in the SDK itself: logged with its traceback, and the
        # peer still gets an answer (a REQ socket left unanswered is wedged for good).
        except Exception:
            log.exception("internal error answering a ZMQ message")
            waiting(_INTERNAL_ERROR)

    def _send(self, envelope: tuple[bytes, ...], reply: bytes) -> None:
        if self._io is None or self._io.done():
            log.warning("could not reply: the socket is closed")
            return
        try:
            self._io.send([*envelope, reply])
        except zmq.ZMQError as e:
            log.warning("could not reply: %s", e)

    async def stop(self) -> None:
        if self._tasks:  # replies still to send (jobs are finished or aborted by now)
            self._all_sent = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_sent.wait(), 1)
        if self._io is not None:
            self._io.close()
        else:
            self._sock.close()
        self._ctx.term()


class _Reply:
    """Sends the one reply to one message (a callable for ``Executor.submit``)."""

    __slots__ = ("envelope", "sent", "server")

    def __init__(self, server: ZmqServer, envelope: tuple[bytes, ...]) -> None:
        self.server = server
        self.envelope = envelope
        self.sent = False

    def __call__(self, reply: bytes) -> None:
        if self.sent:  # exactly one reply per message, whatever happens
            return
        self.sent = True
        server = self.server
        server._tasks.discard(self)
        server._send(self.envelope, reply)
        if server._all_sent is not None and not server._tasks:
            server._all_sent.set()
