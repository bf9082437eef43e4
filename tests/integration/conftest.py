from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from schedulezero_handler import HandlerServer, ServeOptions
from schedulezero_operator.dispatch import Dispatcher, Endpoint

from examples.handlers.testing import TestHandler


@asynccontextmanager
async def serving(handler: object | None = None, protocol: str = "zmq",
                  **options: Any) -> AsyncIterator[tuple[HandlerServer, Endpoint]]:
    """A real handler server on an ephemeral loopback port, and its endpoint."""
    server = HandlerServer(handler or TestHandler(), ServeOptions(
        protocols=[protocol], bind="127.0.0.1", port=0, http_port=0, **options))
    await server.start()
    if protocol == "zmq":
        port = int(str(server.zmq_endpoint).rsplit(":", 1)[1])
    else:
        port = int(server.http_port or 0)
    try:
        yield server, Endpoint("127.0.0.1", port, protocol)
    finally:
        if not server.stopped.is_set():
            await server.shutdown(grace=1)


@pytest.fixture
async def dispatcher() -> AsyncIterator[Dispatcher]:
    d = Dispatcher()
    yield d
    await d.close()


@pytest.fixture
def record(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[str]]:
    path = tmp_path / "executions.jsonl"
    monkeypatch.setenv("SZ_TEST_RECORD", str(path))

    def lines() -> list[str]:
        return path.read_text().splitlines() if path.exists() else []

    return lines
