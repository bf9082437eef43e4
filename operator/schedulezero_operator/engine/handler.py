"""What the engine holds per Handler; it is also the status writer's target for it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from ..api.models import HandlerSpec, HandlerStatus, RegisteredHandler
from ..dispatch import Endpoint
from . import status
from .endpoints import EndpointQueue


@dataclass(eq=False)
class HandlerState:
    """One Handler: its spec, endpoints (``queue``), Deployment, and status inputs."""

    namespace: str
    name: str
    now: Callable[[], dt.datetime] = field(repr=False)
    queue: EndpointQueue = field(default_factory=EndpointQueue)
    body: dict[str, Any] | None = None  # None: not seen (yet), or deleted
    spec: HandlerSpec | None = None
    invalid: str | None = None  # why the spec cannot be used
    methods: list[str] = field(default_factory=list)
    known_endpoints: list[Endpoint] = field(default_factory=list)
    secret: bytes | None = None
    source: str = "endpoints"  # endpoints | template | deploymentRef
    # External endpoints out of the Ready set: host:port -> why (the probe's answer)
    down: dict[str, str] = field(default_factory=dict)
    probing: bool = False  # a probe of the endpoints is running
    probe_again: bool = False  # ... and another was asked for meanwhile
    # ScheduleZero handlers registered at its endpoints (set by the registry)
    registrations: Callable[[], list[RegisteredHandler]] = field(default=lambda: [],
                                                                 repr=False)
    # Deployment-backed handlers
    deployment: str | None = None
    ensured_at: dt.datetime | None = None  # when the Deployment was last ensured
    selector: dict[str, Any] | None = None
    replicas: int | None = None  # the Deployment's spec.replicas as last seen or set
    pod_count: int = 0
    desired: int | None = None
    last_scale_time: dt.datetime | None = None
    workload_error: str | None = None
    last_status: HandlerStatus | None = None  # as written: conditions keep their times
    # status.inFlight / status.queued: the levels as last sampled, and whether a sample
    # is pending (HandlerRegistry._sample_levels)
    shown_levels: tuple[int, int] = (0, 0)
    sampling: bool = False
    # what the status writer needs (a ``writer.Target``)
    plural: str = "handlers"
    min_interval: float = 0.0

    @property
    def ready(self) -> list[str]:
        return [str(e) for e in self.queue.ready]  # pod name, else host:port ([v6]:port)

    @property
    def protocol(self) -> str:
        return self.spec.protocol if self.spec is not None else "zmq"

    @property
    def probe_verb(self) -> str:
        """What external endpoints are asked to be Ready."""
        return "ping" if self.protocol == "zmq-legacy" else "describe"

    @property
    def registered(self) -> list[RegisteredHandler]:
        return self.registrations()

    @property
    def in_flight(self) -> int:
        return self.queue.in_flight

    @property
    def queued(self) -> int:
        return self.queue.queued

    def urgent(self) -> bool:
        return False

    def deferred(self) -> bool:
        return False

    def precondition(self) -> str | None:
        return None  # only this operator writes a Handler's status; no claims here

    def status(self) -> HandlerStatus | None:
        if self.body is None:
            return None
        return status.handler_status(self, now=self.now(), previous=self.last_status)

    def written(self, model: BaseModel, resource_version: str | None) -> None:
        assert isinstance(model, HandlerStatus)
        self.last_status = model

    def conflicted(self, fresh: dict[str, Any]) -> None:
        """Unconditional writes do not conflict."""

    def gone(self) -> None:
        """The watch reports the deletion; nothing to do here."""
