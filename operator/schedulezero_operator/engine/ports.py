"""The engine's two ports: the few Kubernetes API calls it makes, and the dispatcher.

Everything the engine does to the outside world goes through these Protocols, so
unit tests run the whole engine against in-memory fakes (``tests/fakes.py``) and
the engine never imports kopf or a Kubernetes client. The real implementations
are ``controllers.kube.Kube`` and ``dispatch.Dispatcher``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Protocol

from ..dispatch import DispatchResult, Endpoint


class Conflict(Exception):
    """The write's resourceVersion precondition failed (HTTP 409)."""


class NotFound(Exception):
    """The object is gone (HTTP 404)."""


class KubePort(Protocol):
    async def patch_status(self, plural: str, namespace: str, name: str,
                           resource_version: str | None, status: dict[str, Any]) -> str:
        """JSON-merge-patch ``status``; returns the new resourceVersion.

        With ``resource_version`` the write is conditional: :class:`Conflict` if the
        object changed since. :class:`NotFound` if it is gone.
        """
        ...

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        """The whole object as stored now (:class:`NotFound` if gone)."""
        ...

    async def event(self, obj: dict[str, Any], kind: str, type_: str, reason: str,
                    message: str, *, every: float = 60.0) -> None:
        """A core/v1 Event about ``obj``; repeats within ``every`` s fold into a count."""
        ...

    async def read_secret_key(self, namespace: str, name: str, key: str) -> bytes | None: ...

    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def apply_deployment(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create, or update metadata + template (never replicas: the scaler owns those)."""
        ...

    async def scale(self, namespace: str, name: str, replicas: int) -> None:
        """Set a Deployment's replicas through its scale subresource."""
        ...

    async def close(self) -> None: ...


class DispatcherPort(Protocol):
    """What the engine uses of ``dispatch.Dispatcher`` (calls never raise for a
    handler-side or network failure: they return a classified ``DispatchResult``)."""

    async def execute(self, endpoint: Endpoint, *, run_id: str, method: str,
                      params: dict[str, Any], timeout: float, schedule: str | None = None,
                      scheduled_time: str | None = None, attempt: int = 1,
                      deadline: str | None = None, start_at: dt.datetime | None = None,
                      secret: bytes | None = None) -> DispatchResult:
        """One attempt; with ``start_at`` the job starts then, not before (held).
        ``secret``: the Handler's signing key (every call takes its own: Handlers that
        share an endpoint may sign with different Secrets)."""
        ...

    async def describe(self, endpoint: Endpoint, timeout: float = 5.0,
                       secret: bytes | None = None) -> DispatchResult: ...

    async def ping(self, endpoint: Endpoint, timeout: float = 2.0,
                   secret: bytes | None = None) -> DispatchResult:
        """ScheduleZero's ``ping`` (zmq-legacy); ok with ``result == "busy"`` when a job
        is in flight on the endpoint (a REP socket would queue the ping behind it)."""
        ...

    async def cancel(self, endpoint: Endpoint, run_id: str, timeout: float = 2.0,
                     secret: bytes | None = None) -> bool: ...

    async def forget(self, endpoint: Endpoint) -> None: ...

    async def close(self) -> None: ...
