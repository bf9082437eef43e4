"""A plain pyzmq socket driven by an asyncio loop: batched receives, direct sends.

Why not ``zmq.asyncio``: every awaited ``recv_multipart``/``send_multipart`` there
costs a future, enum conversions, an ``EVENTS`` poll and usually a loop wake-up per
message; profiled at concurrency 32 that machinery was a third of a handler's (and
the operator client's) CPU. Here one reader callback on the socket's file
descriptor receives *every* message that is ready (``NOBLOCK`` until ``EAGAIN``)
and hands each to a plain callback, and ``send`` calls libzmq directly.

The rules libzmq sets for driving a socket by its ``FD`` (``zmq_getsockopt``,
``ZMQ_FD``), and how they are kept:

- The descriptor only says that the socket's state *may* have changed, and any
  operation on the socket (a send included) may consume that signal while
  leaving messages to read. So after every send, and whenever a batch stops
  early, a drain is scheduled with ``call_soon`` (at most one pending at a time),
  which reads until ``EAGAIN``.
- A batch is capped (``batch``) so that a flood on one socket cannot starve the
  rest of the loop; the remainder is read on the next iteration.
- Sends never wait: the first of a loop iteration goes at once, later ones are
  queued and leave together at the start of the next drain, so the I/O thread is
  woken about once per batch. The sockets used here (ROUTER without
  ``ROUTER_MANDATORY``, DEALER with ``SNDHWM`` 0) do not return ``EAGAIN``; if
  one ever does, the queue is retried every millisecond until it goes, in order.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable

import zmq

log = logging.getLogger("schedulezero.zmq")

# Plain ints: pyzmq's send_multipart/recv_multipart combine IntFlag enums per frame
# (``SNDMORE | flags``), a measurable cost at tens of thousands of messages a second.
_NOBLOCK = int(zmq.NOBLOCK)
_MORE = int(zmq.SNDMORE) | _NOBLOCK
_RCVMORE = int(zmq.RCVMORE)
FLUSH_AT = 32  # queued sends that leave at once, without waiting for the next drain


class LoopSocket:
    """Serve ``sock`` on the running loop: ``on_message(frames)`` for each message.

    ``on_message`` must not raise (an exception is logged and the socket keeps
    being served). ``close`` stops reading and closes the socket.
    """

    def __init__(self, sock: zmq.Socket[bytes], on_message: Callable[[list[bytes]], None],
                 *, batch: int = 256, name: str = "socket") -> None:
        self.sock = sock
        self.on_message = on_message
        self.batch = batch
        self.name = name
        self._loop = asyncio.get_running_loop()
        fd = sock.getsockopt(zmq.FD)
        assert isinstance(fd, int)
        self._fd = fd
        self._drain_pending = False
        self._outbox: collections.deque[list[bytes]] = collections.deque()
        self._closed = False
        self._loop.add_reader(self._fd, self._drain)
        self._schedule_drain()  # messages may already be waiting

    def done(self) -> bool:
        """True once closed (then nothing is received any more)."""
        return self._closed

    def send(self, frames: list[bytes]) -> None:
        """Send one message, in order; never waits.

        The first message of a loop iteration goes out at once; the ones after it
        are queued and leave back to back at the start of the next drain, so
        libzmq's I/O thread is woken once for the lot, not once per message (each
        wake-up is a system call on both sides of the connection).
        """
        if self._closed:
            raise zmq.ZMQError(zmq.ENOTSOCK, "socket is closed")
        self._outbox.append(frames)
        if not self._drain_pending or len(self._outbox) >= FLUSH_AT:
            # The first send of an iteration goes at once (no added latency for a
            # lone request); the ones after it queue behind the drain it schedules,
            # but leave in batches of FLUSH_AT, so a burst of hundreds reaches the
            # peer while the rest are still being made (it works on another core).
            self._flush()
        self._schedule_drain()

    def _schedule_drain(self) -> None:
        if not self._drain_pending:
            self._drain_pending = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._drain_pending = False
        if self._closed:
            return
        if self._outbox:
            self._flush()
        recv = self.sock.recv
        more = self.sock.getsockopt
        for _ in range(self.batch):
            try:
                frames = [recv(_NOBLOCK)]
                while more(_RCVMORE):  # the rest of a message is there once its first part is
                    frames.append(recv(_NOBLOCK))
            except zmq.Again:
                break
            except zmq.ZMQError as e:
                if self.sock.closed or e.errno in (zmq.ETERM, zmq.ENOTSOCK):
                    return
                # Transient (e.g. EINTR): keep serving rather than go deaf.
                log.warning("receive on %s failed: %s", self.name, e)
                self._loop.call_later(0.01, self._schedule_drain)
                return
            try:
                self.on_message(frames)
            except Exception:
                log.exception("unhandled error on a message from %s", self.name)
        else:
            self._schedule_drain()  # more may be waiting: after the loop's other work
        # Replies made while receiving go now; those sends may take the descriptor's
        # wake-up for input that arrived meanwhile, so look again next iteration.
        if self._outbox and self._flush():
            self._schedule_drain()

    def _flush(self) -> bool:
        """Send what is queued; True if anything went out."""
        sent = False
        send = self.sock.send
        outbox = self._outbox
        while outbox:
            frames = outbox[0]
            try:
                # Atomic in libzmq: EAGAIN can only come for the first part.
                for frame in frames[:-1]:
                    send(frame, _MORE)
                send(frames[-1], _NOBLOCK)
            except zmq.Again:
                # Rare (see the module docstring): retry shortly rather than spin.
                self._loop.call_later(0.001, self._schedule_drain)
                return sent
            except zmq.ZMQError as e:
                log.warning("send on %s failed: %s", self.name, e)
            outbox.popleft()
            sent = True
        return sent

    def close(self, linger: int | None = None) -> None:
        if self._closed:
            return
        if self._outbox:
            self._flush()  # best effort: what was accepted for sending still goes
        self._closed = True
        if not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        self.sock.close(linger)
