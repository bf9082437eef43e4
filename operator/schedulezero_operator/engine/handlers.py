"""The Handler registry: what each Handler is and which of its endpoints take jobs.

A Handler's endpoints come from one of three sources: ``endpoints`` (external
processes, here), ``template`` or ``deploymentRef`` (pods of a Deployment:
``deployments``). Runs take endpoint slots through each Handler's
``EndpointQueue``; every change of demand or readiness marks the Handler's status
for writing and tells the Schedules that target it (``on_change``).

External endpoints are probed every ``probe_every`` seconds, each Handler's
endpoints at once and all Handlers concurrently, one probe at a time per Handler:
v1 endpoints (zmq, http) answer ``describe`` (which also lists their methods),
ScheduleZero REP endpoints (zmq-legacy) ``ping``, with a short timeout. A REP
endpoint busy with a job is not pinged (the ping would wait for the job) and
keeps its state. An endpoint that does not answer leaves the Ready set at once,
is named in the Handler's Available/Degraded conditions and a Warning Event
(``EndpointDown``), and rejoins when it answers again (a Normal
``EndpointReady``). Between probes, a legacy endpoint whose job attempt timed
out or lost its connection, or whose handler reported ``offline`` to the
registration port, leaves the Ready set at once and is pinged right away.

ScheduleZero registrations (``dispatch.registration``) show on the status of
every Handler whose endpoints include the registered address; for zmq-legacy
Handlers, which cannot describe themselves, the registered methods are the
Handler's discovered ``methods``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import ValidationError

from ..api.models import DECODE_PROBLEM, HandlerSpec, HandlerStatus, RegisteredHandler
from ..dispatch import DispatchResult, Endpoint
from ..dispatch.registration import Registration, RegistrationBook
from . import status
from .context import Context
from .deployments import Deployments
from .handler import HandlerState
from .problems import InvalidObject, validation_message
from .times import iso_or_none, parse_iso

# A Deployment-backed Handler's Deployment is re-applied at least this often (seconds).
ENSURE_EVERY = 30.0
log = logging.getLogger("schedulezero.handlers")
DESCRIBE_TIMEOUT = 2.0
PING_TIMEOUT = 2.0
PROBE_EVERY = 10.0  # seconds between probes of external endpoints
PROBE_CONCURRENCY = 64  # Handlers probed at once
# A heartbeat alone (ScheduleZero pings every ~30 s) rewrites a Handler's status at
# most this often; register and report_status are written at once.
HEARTBEAT_WRITE_EVERY = 60.0
# A Handler's status.inFlight / status.queued lag the real levels by at most this.
LEVELS_WRITE_EVERY = 5.0
MAX_REGISTERED_SHOWN = 32  # registrations listed on one Handler


class HandlerRegistry:
    def __init__(self, ctx: Context, on_change: Callable[[str, str], None],
                 on_demand: Callable[[], None]) -> None:
        self.ctx = ctx
        self._on_change = on_change  # (namespace, name): Schedules re-check their handler
        self._on_demand = on_demand  # in-flight or queued changed: the scaler looks again
        self._handlers: dict[tuple[str, str], HandlerState] = {}
        self.deployments = Deployments(ctx, handlers=lambda: self, discover=self.refresh,
                                       changed=self._endpoints_changed)
        self.registrations = RegistrationBook(ctx.clock.now, on_change=self._registered)
        self._by_address: dict[str, list[HandlerState]] | None = None  # None: rebuild
        # handler_id -> the lastHeartbeat status shows (moves at most once a minute)
        self._heartbeat_shown: dict[str, dt.datetime] = {}
        self._unmatched_logged: set[tuple[str, str]] = set()

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
            h.registrations = lambda: self._registered_at(h)
            self._handlers[(namespace, name)] = h
        return h

    def exists(self, namespace: str, name: str) -> bool:
        h = self._handlers.get((namespace, name))
        return h is not None and h.body is not None

    def _demand_changed(self, h: HandlerState) -> None:
        if not h.sampling:
            h.sampling = True
            self.ctx.tasks.spawn(self._sample_levels(h))
        self._on_demand()

    async def _sample_levels(self, h: HandlerState) -> None:
        """Show the jobs in flight and queued in the status ``LEVELS_WRITE_EVERY`` after
        they changed, if they still differ from what it shows.

        Written on every change, each run would cost its Handler two writes (up, then
        down) on top of its Schedule's one; sampled, a run shorter than the period
        (a burst sent a second ahead of its slot is in flight for that second) costs
        none. Other status writes in between carry the levels as last sampled. The
        live values are in the metrics (``schedulezero_inflight``, ``_queued``), and
        the scaler reads them directly.
        """
        try:
            await asyncio.sleep(LEVELS_WRITE_EVERY)
        finally:
            h.sampling = False
        levels = (h.in_flight, h.queued)
        if levels != h.shown_levels:
            h.shown_levels = levels
            self.ctx.writer.mark(h)

    # -- watch events -------------------------------------------------------------
    def upsert(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        h = self.ensure(meta["namespace"], meta["name"])
        if h.body is None:
            stored = status.load(HandlerStatus, body.get("status"))
            self.ctx.writer.track(h, status.document(stored))
            self._restore_registrations(stored)
        h.body = body
        previous = h.spec
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
            self._by_address = None
            self.ctx.event(body, "Handler", "Warning", "InvalidHandler", h.invalid)
            self.ctx.writer.mark(h)
            self._on_change(h.namespace, h.name)
            return
        # A REP socket (zmq-legacy) serves one request at a time.
        h.queue.pool.capacity_per_endpoint = (1 if h.spec.protocol == "zmq-legacy"
                                              else h.spec.concurrency)
        if h.spec.endpoints is not None:
            h.source = "endpoints"
            # Probed when the spec changes, then periodically: not on every watch event
            # (the operator's own status writes come back as events).
            if h.spec != previous:
                h.known_endpoints = [_endpoint(a, h.spec.protocol) for a in h.spec.endpoints]
                addresses = {e.address for e in h.known_endpoints}
                h.down = {a: why for a, why in h.down.items() if a in addresses}
                self._by_address = None
                self.ctx.tasks.spawn(self.refresh(h))
        else:
            h.source = "template" if h.spec.template is not None else "deploymentRef"
            # On a spec change, a Deployment not found yet, or now and then (it may have
            # been edited or deleted): not on every event — the Handler's own status
            # writes come back as events, and each ensure is a GET and a PATCH.
            now = self.ctx.clock.now()
            if h.spec != previous or h.deployment is None or h.ensured_at is None \
                    or (now - h.ensured_at).total_seconds() > ENSURE_EVERY:
                h.ensured_at = now
                self.ctx.tasks.spawn(self.deployments.ensure(h, body))
        self._on_change(h.namespace, h.name)

    def delete(self, namespace: str, name: str) -> None:
        h = self._handlers.get((namespace, name))
        if h is not None:
            h.body, h.spec = None, None
            h.queue.set_ready([])
            self._by_address = None
            self._on_change(namespace, name)

    def _endpoints_changed(self, h: HandlerState) -> None:
        """A Deployment's pods changed (``deployments``): status shows the Ready ones."""
        self._by_address = None
        self.ctx.writer.mark(h)
        self._on_change(h.namespace, h.name)

    # -- endpoints ------------------------------------------------------------------
    async def refresh(self, h: HandlerState) -> None:
        """Probe the Handler's endpoints now (one probe at a time per Handler: a request
        made while one runs is served by another round right after it)."""
        if h.probing:
            h.probe_again = True
            return
        h.probing = True
        try:
            while True:
                h.probe_again = False
                await self._refresh(h)
                if not h.probe_again:
                    return
        finally:
            h.probing = False

    async def _refresh(self, h: HandlerState) -> None:
        """External endpoints: the ones that answer are Ready (and, for v1, what they
        offer are the methods). For pods the kubelet's readiness decides; describe only
        discovers the methods."""
        if h.spec is None:
            return
        # The Handler's key signs every request made for it (the dispatcher takes it
        # per call, never per endpoint: another Handler may share the endpoint).
        if h.spec.auth is not None:
            ref = h.spec.auth.secret_ref
            h.secret = await self.ctx.kube.read_secret_key(h.namespace, ref.name, ref.key)
        else:
            h.secret = None
        dispatcher = self.ctx.dispatcher
        if h.source != "endpoints":
            if h.spec.protocol == "zmq-legacy":  # REP handlers cannot describe themselves
                h.methods = self._registered_methods(h)
            for e in h.queue.ready[:1] if h.spec.protocol != "zmq-legacy" else []:
                r = await dispatcher.describe(e, timeout=DESCRIBE_TIMEOUT, secret=h.secret)
                if r.ok and isinstance(r.result, dict):
                    h.methods = sorted(m["name"] for m in r.result.get("methods", []))
            self.ctx.writer.mark(h)
            return
        endpoints = list(h.known_endpoints)
        results = await asyncio.gather(*[self._probe(h, e) for e in endpoints])
        if h.spec is None or h.known_endpoints != endpoints:
            h.probe_again = True  # the spec changed meanwhile: probe what it names now
            return
        ready_now = {e.key for e in h.queue.ready}
        ready: list[Endpoint] = []
        down: dict[str, str] = {}
        methods: set[str] = set()
        for e, answer in zip(endpoints, results, strict=True):
            if answer is None:  # busy with a job: no verdict, keep what it was
                if e.key in ready_now:
                    ready.append(e)
                else:
                    down[e.address] = h.down.get(e.address, "busy")
            elif answer.ok:
                ready.append(e)
                if e.protocol != "zmq-legacy" and isinstance(answer.result, dict):
                    methods.update(m["name"] for m in answer.result.get("methods", []))
            else:
                down[e.address] = (f"{answer.error_type}: {answer.message}"
                                   if answer.error_type else answer.message)
        h.methods = (self._registered_methods(h) if h.spec.protocol == "zmq-legacy"
                     else sorted(methods))
        self._set_endpoints(h, ready, down)

    async def _probe(self, h: HandlerState, e: Endpoint) -> DispatchResult | None:
        """One endpoint's probe; None when a REP endpoint is busy with a job."""
        if e.protocol == "zmq-legacy":
            if h.queue.pool.in_flight_of(e):
                return None
            r = await self.ctx.dispatcher.ping(e, timeout=PING_TIMEOUT, secret=h.secret)
            return None if r.ok and r.result == "busy" else r
        return await self.ctx.dispatcher.describe(e, timeout=DESCRIBE_TIMEOUT, secret=h.secret)

    def _set_endpoints(self, h: HandlerState, ready: list[Endpoint],
                       down: dict[str, str]) -> None:
        """The Ready set and why the others are out; Events for the endpoints that moved."""
        newly_down = {a: why for a, why in down.items() if a not in h.down}
        back = [a for a in h.down if a not in down]
        h.down = down
        h.queue.set_ready(ready, capacity=h.queue.pool.capacity_per_endpoint)
        verb = h.probe_verb
        if newly_down:
            log.warning("handler %s/%s: endpoint(s) out of the Ready set: %s", h.namespace,
                        h.name, status.reasons_text(newly_down))
        if back:
            log.info("handler %s/%s: endpoint(s) answer %s again: %s", h.namespace, h.name,
                     verb, ", ".join(back))
        if newly_down and h.body is not None:
            self.ctx.event(h.body, "Handler", "Warning", "EndpointDown",
                           f"endpoint(s) not answering {verb}, no jobs until they answer "
                           f"again: {status.reasons_text(newly_down)}")
        if back and h.body is not None:
            self.ctx.event(h.body, "Handler", "Normal", "EndpointReady",
                           f"endpoint(s) answer {verb} again: {', '.join(back)}")
        self.ctx.writer.mark(h)
        self._on_change(h.namespace, h.name)

    def suspect(self, namespace: str, name: str, endpoint: Endpoint, reason: str) -> None:
        """A job attempt on an external endpoint timed out or lost its connection.

        A REP endpoint (zmq-legacy) leaves the Ready set at once (it did not answer,
        so it is gone or still busy with that job: either way it cannot take the next
        one) and is pinged now; a v1 endpoint, which takes several jobs and may just
        be slow, is only probed now.
        """
        h = self._handlers.get((namespace, name))
        if h is None or h.spec is None or h.source != "endpoints":
            return
        if endpoint.protocol == "zmq-legacy" and any(
                e.key == endpoint.key for e in h.queue.ready):
            self._set_endpoints(h, [e for e in h.queue.ready if e.key != endpoint.key],
                                {**h.down, endpoint.address: reason})
        self.ctx.tasks.spawn(self.refresh(h))

    async def probe_forever(self, every: float = PROBE_EVERY) -> None:
        limit = asyncio.Semaphore(PROBE_CONCURRENCY)

        async def probe(h: HandlerState) -> None:
            async with limit:
                try:
                    await self.refresh(h)
                except Exception:
                    log.exception("probing handler %s/%s failed", h.namespace, h.name)

        while True:
            await asyncio.sleep(every)
            await asyncio.gather(*[probe(h) for h in self
                                   if h.spec is not None and h.source == "endpoints"])

    # -- ScheduleZero registrations -----------------------------------------------------
    def _at(self, address: str) -> list[HandlerState]:
        """The Handlers with an endpoint at ``address`` (host:port)."""
        if self._by_address is None:
            index: dict[str, list[HandlerState]] = {}
            for h in self._handlers.values():
                if h.spec is not None:
                    for e in h.known_endpoints:
                        index.setdefault(e.address, []).append(h)
            self._by_address = index
        return self._by_address.get(address, [])

    def _registered_at(self, h: HandlerState) -> list[RegisteredHandler]:
        shown: list[RegisteredHandler] = []
        for address in sorted({e.address for e in h.known_endpoints}):
            for reg in self.registrations.at(address):
                shown.append(RegisteredHandler(
                    endpoint=address, handler_id=reg.handler_id, methods=reg.methods,
                    registered_time=iso_or_none(reg.registered),
                    last_heartbeat=iso_or_none(self._heartbeat_shown.get(reg.handler_id,
                                                                         reg.last_seen)),
                    status=reg.status))
        return shown[:MAX_REGISTERED_SHOWN]

    def _registered_methods(self, h: HandlerState) -> list[str]:
        return sorted({m for address in {e.address for e in h.known_endpoints}
                       for reg in self.registrations.at(address) for m in reg.methods})

    def _registered(self, reg: Registration, kind: str) -> None:
        """A ScheduleZero handler registered, reported a status, or sent a heartbeat."""
        handlers = self._at(reg.endpoint) if reg.endpoint else []
        if not handlers:
            if kind != "heartbeat" and (reg.handler_id, reg.address) not in \
                    self._unmatched_logged:
                if len(self._unmatched_logged) > 4 * self.registrations.limit:
                    self._unmatched_logged.clear()
                self._unmatched_logged.add((reg.handler_id, reg.address))
                log.info("ScheduleZero handler %r registered %s, which no Handler's "
                         "endpoints name; kept in memory only", reg.handler_id, reg.address)
            return
        shown = self._heartbeat_shown.get(reg.handler_id)
        if kind == "heartbeat" and shown is not None and \
                (reg.last_seen - shown).total_seconds() < HEARTBEAT_WRITE_EVERY:
            return
        if len(self._heartbeat_shown) > 2 * self.registrations.limit:
            self._heartbeat_shown.clear()
        self._heartbeat_shown[reg.handler_id] = reg.last_seen
        for h in handlers:
            endpoint = next((e for e in h.known_endpoints if e.address == reg.endpoint), None)
            if h.spec is None or endpoint is None:
                continue
            if h.spec.protocol == "zmq-legacy":
                h.methods = self._registered_methods(h)
            if kind == "status" and reg.status == "offline" and h.source == "endpoints":
                if any(e.key == endpoint.key for e in h.queue.ready):
                    self._set_endpoints(
                        h, [e for e in h.queue.ready if e.key != endpoint.key],
                        {**h.down, endpoint.address: f"handler {reg.handler_id!r} reported "
                                                     "offline (report_status)"})
            elif kind == "register" and endpoint.address in h.down:
                self.ctx.tasks.spawn(self.refresh(h))  # it is back: ping it now
            self.ctx.writer.mark(h)
            self._on_change(h.namespace, h.name)

    def _restore_registrations(self, stored: HandlerStatus) -> None:
        """After a restart: the registrations the Handler's status showed."""
        for r in stored.registered or []:
            self.registrations.restore(r.endpoint, r.handler_id, r.methods,
                                       parse_iso(r.registered_time),
                                       parse_iso(r.last_heartbeat), r.status)


def _endpoint(address: str, protocol: str) -> Endpoint:
    return Endpoint.parse(address, protocol)
