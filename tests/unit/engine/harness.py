"""An engine on the fakes, fed by the fake watch, and object helpers for the scenarios."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from schedulezero_operator.engine import Engine
from schedulezero_operator.engine.observer import Observer

from ...fakes import FakeDispatcher, FakeKube


class Operator:
    """One operator process: an Engine, its tasks, and the watch feeding it."""

    def __init__(self, kube: FakeKube, dispatcher: FakeDispatcher | None = None,
                 identity: str = "op-a", seed: int = 7, observer: Observer | None = None,
                 write_rate: float = 50.0, dispatch_lead: float = 0.0,
                 lead_min_batch: int = 1) -> None:
        self.kube = kube
        self.dispatcher = dispatcher if dispatcher is not None else FakeDispatcher()
        if isinstance(self.dispatcher, FakeDispatcher) and self.dispatcher.clock is None:
            self.dispatcher.clock = kube.clock
        # dispatch_lead 0 unless asked: most scenarios assert dispatch times at the
        # slot; the lead's own tests (test_lead.py) turn it on.
        self.engine = Engine(kube, kube.clock, self.dispatcher, identity=identity,
                             rng=random.Random(seed), observer=observer,
                             write_rate=write_rate, write_burst=max(1, int(write_rate)),
                             dispatch_lead=dispatch_lead)
        # The lead's scenarios use one or a few Schedules: lead them too (the product
        # sends ahead only bursts of LEAD_MIN_BATCH; test_lead.py checks that as well).
        self.engine.ctx.lead_min_batch = lead_min_batch
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Operator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._task = asyncio.ensure_future(self.engine.run())
        self.kube.watch(self.deliver)
        await asyncio.sleep(0)

    async def stop(self) -> None:
        """A clean shutdown (SIGTERM): pending status is written first."""
        self.kube.unwatch(self.deliver)
        if self._task is not None:
            self._task.cancel()
        await self.engine.close()

    async def crash(self) -> None:
        """As a crash (SIGKILL) looks to the others: nothing more is written."""
        self.kube.unwatch(self.deliver)
        if self._task is not None:
            self._task.cancel()
        await self.engine.ctx.tasks.cancel_all()

    def deliver(self, kind: str, plural: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        if plural == "schedules":
            if kind == "DELETED":
                self.engine.delete_schedule((meta["namespace"], meta["name"]))
            else:
                self.engine.upsert_schedule(obj)
        elif plural == "handlers":
            if kind == "DELETED":
                self.engine.delete_handler(meta["namespace"], meta["name"])
            else:
                self.engine.upsert_handler(obj)
        elif plural == "pods":
            self.engine.on_pod(kind, obj)


def handler(kube: FakeKube, name: str = "h", endpoints: list[str] | None = None,
            **spec: Any) -> dict[str, Any]:
    body = {"protocol": "zmq", **spec}
    if "template" not in spec and "deploymentRef" not in spec:
        body["endpoints"] = endpoints or ["10.0.0.1:4244"]
    return kube.create("handlers", name, body)


def schedule(kube: FakeKube, name: str = "s", *, status: dict[str, Any] | None = None,
             annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    body = {"handler": "h", "method": "heartbeat", **spec}
    if not {"schedule", "interval", "at"} & set(spec):
        body["interval"] = "1s"
    return kube.create("schedules", name, body, status=status, annotations=annotations)
