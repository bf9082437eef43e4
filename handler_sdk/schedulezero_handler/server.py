"""Run a handler: transports, signals, graceful shutdown.

SIGTERM (what Kubernetes sends on pod deletion) starts a drain: the handler
turns not-ready (``/readyz`` 503, new jobs refused with the retryable
``ShuttingDown``) while in-flight jobs finish within the grace period; then the
sockets close and the process exits. Nothing in flight is cut unless the grace
period runs out.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from typing import Any, NamedTuple

from .executor import Executor

log = logging.getLogger("schedulezero.handler")


class ServeOptions(NamedTuple):
    """How a handler serves; ``serve(handler, **options)`` takes the same names.

    A NamedTuple, not a dataclass: the SDK does not import ``dataclasses`` (~0.35 MiB
    of an idle handler; see ``make bench-sdk-rss``).
    """

    protocols: Sequence[str] = ("zmq",)
    bind: str = "0.0.0.0"
    port: int = 4244
    http_port: int | None = None  # defaults to `port` when HTTP is the only protocol
    health_port: int | None = None
    concurrency: int = 4
    threads: int | None = None  # sync-method threads (default min(concurrency, 32))
    secret: bytes | None = None
    grace_seconds: float = 30.0
    max_request_bytes: int = 1 << 20
    max_result_bytes: int = 256 << 10


class HandlerServer:
    """Owns an Executor and its transports; ``async with`` or ``start``/``shutdown``."""

    def __init__(self, handler: object, options: ServeOptions) -> None:
        unknown = set(options.protocols) - {"zmq", "http"}
        if unknown or not options.protocols:
            raise ValueError(f"protocols must be zmq and/or http, got {list(options.protocols)}")
        self.options = options
        self.executor = Executor(
            handler, concurrency=options.concurrency, threads=options.threads,
            secret=options.secret,
            max_request_bytes=options.max_request_bytes,
            max_result_bytes=options.max_result_bytes, protocols=tuple(options.protocols),
        )
        self.transports: list[Any] = []
        self.stopped = asyncio.Event()

    @property
    def zmq_endpoint(self) -> str | None:
        for t in self.transports:
            if hasattr(t, "endpoint"):
                return str(t.endpoint)
        return None

    @property
    def http_port(self) -> int | None:
        for t in self.transports:
            if hasattr(t, "health_only") and not t.health_only:
                return int(t.port)
        return None

    async def start(self) -> None:
        o = self.options
        if "zmq" in o.protocols:
            from .zmq_server import ZmqServer

            self.transports.append(ZmqServer(self.executor, o.bind, o.port))
        if "http" in o.protocols:
            from .http_server import HttpServer

            port = o.http_port if o.http_port is not None else (
                o.port if "zmq" not in o.protocols else o.port + 1)
            self.transports.append(HttpServer(self.executor, o.bind, port))
        if o.health_port is not None:
            from .http_server import HttpServer

            self.transports.append(HttpServer(self.executor, o.bind, o.health_port,
                                              health_only=True))
        for t in self.transports:
            await t.start()

    async def shutdown(self, grace: float | None = None) -> bool:
        grace = self.options.grace_seconds if grace is None else grace
        log.info("draining: %d job(s) in flight, grace %.0fs", self.executor.in_flight, grace)
        clean = await self.executor.drain(grace)
        if not clean:
            aborted = self.executor.abort_all()
            log.warning("grace period over: %d job(s) answered ShuttingDown (retryable)",
                        aborted)
            await asyncio.sleep(0)  # let the aborted replies go out
        for t in self.transports:
            await t.stop()
        self.stopped.set()
        log.info("stopped%s", "" if clean else " with jobs still running")
        return clean

    async def __aenter__(self) -> HandlerServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self.stopped.is_set():
            await self.shutdown()

    async def run_until_signalled(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        await self.shutdown()


def serve(handler: object, **options: Any) -> None:
    """Serve ``handler`` until SIGTERM/SIGINT: ``serve(MyHandler(), protocols=["http"])``."""
    asyncio.run(HandlerServer(handler, ServeOptions(**options)).run_until_signalled())
