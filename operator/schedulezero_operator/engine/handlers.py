"""The Handler registry: what each Handler is and which of its endpoints take jobs.

A Handler's endpoints come from one of three sources: ``endpoints`` (external
processes, Ready when they answer ``describe``, probed periodically, here),
``template`` or ``deploymentRef`` (pods of a Deployment: ``deployments``). Runs
take endpoint slots through each Handler's ``EndpointQueue``; every change of
demand or readiness marks the Handler's status for writing and tells the
Schedules that target it (``on_change``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import ValidationError

from ..api.models import DECODE_PROBLEM, HandlerSpec, HandlerStatus
from ..dispatch import Endpoint
from . import status
from .context import Context
from .deployments import Deployments
from .handler import HandlerState
from .problems import InvalidObject, validation_message

log = logging.getLogger("schedulezero.handlers")
DESCRIBE_TIMEOUT = 2.0
PROBE_EVERY = 10.0  # seconds between describe probes of external endpoints


class HandlerRegistry:
    def __init__(self, ctx: Context, on_change: Callable[[str, str], None],
                 on_demand: Callable[[], None]) -> None:
        self.ctx = ctx
        self._on_change = on_change  # (namespace, name): Schedules re-check their handler
        self._on_demand = on_demand  # in-flight or queued changed: the scaler looks again
        self._handlers: dict[tuple[str, str], HandlerState] = {}
        self.deployments = Deployments(ctx, handlers=lambda: self, discover=self.refresh,
                                       changed=lambda h: on_change(h.namespace, h.name))

    def __iter__(self) -> Iterator[HandlerState]:
        return iter(list(self._handlers.values()))

    def get(self, namespace: str, name: str) -> HandlerState | None:
        return self._handlers.get((namespace, name))

    def ensure(self, namespace: str, name: str) -> HandlerState:
        """The Handler's state, created empty if unseen (runs may wait for it to appear)."""
        h = self._handlers.get((namespace, name))
        if h is None:
            h = HandlerState(namespace, name, now=self.ctx.clock.now)
            h.queue.on_change = lambda: self._demand_changed(h)
            self._handlers[(namespace, name)] = h
        return h

    def exists(self, namespace: str, name: str) -> bool:
        h = self._handlers.get((namespace, name))
        return h is not None and h.body is not None

    def _demand_changed(self, h: HandlerState) -> None:
        self.ctx.writer.mark(h)
        self._on_demand()

    # -- watch events -------------------------------------------------------------
    def upsert(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        h = self.ensure(meta["namespace"], meta["name"])
        if h.body is None:
            self.ctx.writer.track(h, status.normalise(HandlerStatus, body.get("status")))
        h.body = body
        try:
            problem = body.get(DECODE_PROBLEM)
            if problem:
                raise InvalidObject(f"invalid spec: {problem}; the operator cannot use this "
                                    "object (fix or delete it)")
            h.spec = HandlerSpec.model_validate(body.get("spec") or {})
            h.invalid = None
        except (ValidationError, InvalidObject) as e:
            h.spec, h.invalid = None, validation_message(e)
            h.queue.set_ready([])
            self.ctx.event(body, "Handler", "Warning", "InvalidHandler", h.invalid)
            self.ctx.writer.mark(h)
            self._on_change(h.namespace, h.name)
            return
        # A REP socket (zmq-legacy) serves one request at a time.
        h.queue.pool.capacity_per_endpoint = (1 if h.spec.protocol == "zmq-legacy"
                                              else h.spec.concurrency)
        if h.spec.endpoints is not None:
            h.source = "endpoints"
            h.known_endpoints = [_endpoint(a, h.spec.protocol) for a in h.spec.endpoints]
            self.ctx.tasks.spawn(self.refresh(h))
        else:
            h.source = "template" if h.spec.template is not None else "deploymentRef"
            self.ctx.tasks.spawn(self.deployments.ensure(h, body))
        self._on_change(h.namespace, h.name)

    def delete(self, namespace: str, name: str) -> None:
        h = self._handlers.get((namespace, name))
        if h is not None:
            h.body, h.spec = None, None
            h.queue.set_ready([])
            self._on_change(namespace, name)

    # -- endpoints ------------------------------------------------------------------
    async def refresh(self, h: HandlerState) -> None:
        """Probe known endpoints (describe): the ones that answer are Ready, and what
        they offer are the methods. For pods the kubelet's readiness decides; describe
        only discovers the methods."""
        if h.spec is None:
            return
        if h.spec.auth is not None:
            ref = h.spec.auth.secret_ref
            h.secret = await self.ctx.kube.read_secret_key(h.namespace, ref.name, ref.key)
        dispatcher = self.ctx.dispatcher
        for e in h.known_endpoints:
            dispatcher.set_secret(e, h.secret)
        if h.source != "endpoints":
            for e in h.queue.ready[:1]:
                r = await dispatcher.describe(e, timeout=DESCRIBE_TIMEOUT)
                if r.ok and isinstance(r.result, dict):
                    h.methods = sorted(m["name"] for m in r.result.get("methods", []))
            self.ctx.writer.mark(h)
            return
        results = await asyncio.gather(*[dispatcher.describe(e, timeout=DESCRIBE_TIMEOUT)
                                         for e in h.known_endpoints])
        methods: set[str] = set()
        for r in results:
            if r.ok and isinstance(r.result, dict):
                methods.update(m["name"] for m in r.result.get("methods", []))
        h.methods = sorted(methods)
        h.queue.set_ready([r.endpoint for r in results if r.ok],
                          capacity=h.queue.pool.capacity_per_endpoint)
        self.ctx.writer.mark(h)
        self._on_change(h.namespace, h.name)

    async def probe_forever(self, every: float = PROBE_EVERY) -> None:
        while True:
            await asyncio.sleep(every)
            for h in self:
                if h.spec is not None and h.source == "endpoints":
                    try:
                        await self.refresh(h)
                    except Exception:
                        log.exception("probing handler %s/%s failed", h.namespace, h.name)


def _endpoint(address: str, protocol: str) -> Endpoint:
    return Endpoint.parse(address, protocol)
