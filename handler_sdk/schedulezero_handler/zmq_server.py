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
import logging

import zmq
import zmq.asyncio

from . import protocol as p
from .executor import Executor

log = logging.getLogger("schedulezero.handler.zmq")

# Hard transport cap, as a multiple of max_request_bytes: up to it an oversized
# message is answered TooLarge; past it libzmq disconnects the peer without the
# handler ever buffering the message.
HARD_LIMIT_FACTOR = 4


class ZmqServer:
    def __init__(self, executor: Executor, bind: str, port: int) -> None:
        self.executor = executor
        self.endpoint = f"tcp://{bind}:{port or '*'}"  # port 0: an ephemeral port
        self._ctx = zmq.asyncio.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 2000)
        self._sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE,
                              HARD_LIMIT_FACTOR * executor.max_request_bytes)
        self._tasks: set[asyncio.Task[None]] = set()
        self._receiver: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._sock.bind(self.endpoint)
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._receiver = asyncio.get_running_loop().create_task(self._receive())
        log.info("serving ZMQ on %s", self.endpoint)

    async def _receive(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                frames = await self._sock.recv_multipart(copy=True)
            except zmq.ZMQError as e:
                if self._sock.closed or e.errno in (zmq.ETERM, zmq.ENOTSOCK):
                    return
                # Transient (e.g. EINTR): keep serving rather than go deaf.
                log.warning("receive failed: %s", e)
                await asyncio.sleep(0.01)
                continue
            task = loop.create_task(self._answer(frames))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _answer(self, frames: list[bytes]) -> None:
        identity, rest = frames[0], frames[1:]
        envelope: list[bytes] = [identity]
        if rest and rest[0] == b"":  # REQ client: keep its delimiter
            envelope.append(b"")
            rest = rest[1:]
        try:
            reply = await self._reply(rest)
        # Last resort for a bug in the SDK itself: logged with its traceback, and the
        # peer still gets an answer (a REQ socket left unanswered is wedged for good).
        except Exception:
            log.exception("internal error answering a ZMQ message")
            reply = p.encode(p.error_reply(None, p.ErrorType.INTERNAL,
                                           "internal error in the handler SDK (see its log)"))
        try:
            await self._sock.send_multipart([*envelope, reply])
        except zmq.ZMQError as e:
            log.warning("could not reply: %s", e)

    async def _reply(self, frames: list[bytes]) -> bytes:
        if not frames:
            return p.encode(p.error_reply(None, p.ErrorType.BAD_REQUEST,
                                          "expected 1 to 3 frames (the body alone, or body, "
                                          "timestamp and signature), got 0"))
        try:
            body, ts, sig = p.split_frames(frames)
        except p.ProtocolError as e:
            return self.executor.reject(frames[0], e)
        return await self.executor.handle(body, ts, sig)

    async def stop(self) -> None:
        if self._receiver is not None:
            self._receiver.cancel()
        if self._tasks:  # replies being sent (jobs are finished or aborted by now)
            await asyncio.wait(self._tasks, timeout=1)
        self._sock.close()
        self._ctx.term()
