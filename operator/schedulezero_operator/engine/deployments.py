"""Handlers whose endpoints are pods: their Deployment, and its Ready pods as endpoints.

``template`` Handlers get a Deployment the operator creates and owns (template
changes roll out; replicas belong to the scaler); ``deploymentRef`` Handlers name
an existing one, of which only the selector and the replica count are read. The
pod watch keeps an index; a Handler's endpoints are the Ready pods its
Deployment's selector matches, so a pod that turns NotReady or starts
terminating gets no new jobs at once, and jobs on a pod that disappears fail
fast (its connection is closed) and are retried elsewhere.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from ..api.models import HANDLER_LABEL
from ..dispatch import Endpoint
from ..workloads import build_deployment, selector_matches
from .context import Context
from .handler import HandlerState
from .pods import PodIndex
from .problems import api_error_text

log = logging.getLogger("schedulezero.deployments")


class Deployments:
    def __init__(self, ctx: Context, handlers: Callable[[], Iterable[HandlerState]],
                 discover: Callable[[HandlerState], Coroutine[Any, Any, None]],
                 changed: Callable[[HandlerState], None]) -> None:
        self.ctx = ctx
        self._handlers = handlers
        self._discover = discover  # ask a pod which methods the handler offers
        self._changed = changed  # endpoints changed: the Schedules re-check their handler
        self.pods = PodIndex()

    async def ensure(self, h: HandlerState, body: dict[str, Any]) -> None:
        """Create/update the owned Deployment, or find the referenced one."""
        assert h.spec is not None
        kube = self.ctx.kube
        try:
            if h.spec.template is not None:
                existing = await kube.get_deployment(h.namespace, h.name)
                scaling = h.spec.scaling
                replicas = (int(existing["spec"].get("replicas") or 0) if existing else
                            (scaling.min_replicas if scaling else 1))
                dep = await kube.apply_deployment(build_deployment(body, replicas))
                h.deployment = h.name
                h.selector = {"matchLabels": {HANDLER_LABEL: h.name}}
            else:
                assert h.spec.deployment_ref is not None
                name = h.spec.deployment_ref.name
                found = await kube.get_deployment(h.namespace, name)
                if found is None:
                    h.workload_error = (f"Deployment {name!r} (spec.deploymentRef) not found "
                                        f"in {h.namespace}")
                    await kube.event(body, "Handler", "Warning", "DeploymentNotFound",
                                     h.workload_error)
                    self.ctx.writer.mark(h)
                    return
                dep = found
                h.deployment = name
                h.selector = dep["spec"].get("selector")
            h.workload_error = None
            if h.replicas is None or h.desired is None:
                h.replicas = int(dep["spec"].get("replicas") or 0)
        except Exception as e:
            log.exception("handler %s/%s: managing its Deployment failed", h.namespace, h.name)
            h.workload_error = f"cannot manage the Deployment: {api_error_text(e)}"
            await kube.event(body, "Handler", "Warning", "WorkloadError", h.workload_error)
        self.ctx.writer.mark(h)
        self.reindex(h)

    def on_pod(self, event_type: str, pod: dict[str, Any]) -> None:
        known = self.pods.update(event_type, pod)
        meta = known["metadata"]
        for h in self._handlers():
            if h.namespace != meta["namespace"] or h.source == "endpoints" or \
                    not selector_matches(h.selector, meta.get("labels") or {}):
                continue
            self.reindex(h)
            ip = (known.get("status") or {}).get("podIP")
            if event_type == "DELETED" and ip and h.spec is not None:
                # Jobs still waiting on the gone pod fail now and are retried elsewhere.
                gone = Endpoint(ip, h.spec.port, h.spec.protocol, pod=meta["name"])
                self.ctx.tasks.spawn(self.ctx.dispatcher.forget(gone))

    def reindex(self, h: HandlerState) -> None:
        """Ready pods of the handler -> its endpoint queue (new jobs go only there)."""
        if h.spec is None or h.selector is None:
            return
        match = self.pods.match(h.namespace, h.selector, h.spec.port, h.spec.protocol)
        had_methods = bool(h.methods)
        h.pod_count = match.count
        h.known_endpoints = match.endpoints
        h.queue.set_ready(match.endpoints, capacity=h.queue.pool.capacity_per_endpoint)
        if match.endpoints and not had_methods:
            self.ctx.tasks.spawn(self._discover(h))
        self._changed(h)
