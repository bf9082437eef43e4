"""ZMQ transport: one ROUTER socket, many jobs in flight.

The operator connects a DEALER (frames: [body, timestamp?, signature?]);
ScheduleZero clients connect a REQ socket, whose frames carry an empty delimiter
first. Both are answered on the same socket with the envelope they came with.
"""

from __future__ import annotations

import asyncio
import logging

import zmq
import zmq.asyncio

from . import protocol as p
from .executor import Executor

log = logging.getLogger("schedulezero.handler.zmq")


class ZmqServer:
    def __init__(self, executor: Executor, bind: str, port: int) -> None:
        self.executor = executor
        self.endpoint = f"tcp://{bind}:{port or '*'}"  # port 0: an ephemeral port
        self._ctx = zmq.asyncio.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 2000)
        self._sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self._tasks: set[asyncio.Task[None]] = set()
        self._receiver: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._sock.bind(self.endpoint)
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._receiver = asyncio.get_running_loop().create_task(self._receive())
        log.info("serving ZMQ on %s", self.endpoint)

    async def _receive(self) -> None:
        while True:
            frames = await self._sock.recv_multipart(copy=True)
            task = asyncio.get_running_loop().create_task(self._answer(frames))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _answer(self, frames: list[bytes]) -> None:
        identity, rest = frames[0], frames[1:]
        envelope: list[bytes] = [identity]
        if rest and rest[0] == b"":  # REQ client: keep its delimiter
            envelope.append(b"")
            rest = rest[1:]
        try:
            if not rest or len(rest) > 3:
                reply = p.encode(p.error_reply(
                    None, p.ErrorType.BAD_REQUEST,
                    f"expected 1 to 3 frames (body, timestamp, signature), got {len(rest)}"))
            else:
                body = rest[0]
                ts = rest[1] if len(rest) > 1 else None
                sig = rest[2] if len(rest) > 2 else None
                reply = await self.executor.handle(body, ts, sig)
            await self._sock.send_multipart([*envelope, reply])
        except zmq.ZMQError as e:
            log.warning("could not reply: %s", e)

    async def stop(self) -> None:
        if self._receiver is not None:
            self._receiver.cancel()
        if self._tasks:  # replies being sent (jobs are finished or aborted by now)
            await asyncio.wait(self._tasks, timeout=1)
        self._sock.close()
        self._ctx.term()
