"""The engine's port to the API server (``engine.ports.KubePort``): status, Events,
Secrets and Deployments.

kopf owns the watches; these few calls go through the operator's one API client
(:mod:`.apiclient`, aiohttp on the event loop).
Status patches are JSON merge patches carrying ``metadata.resourceVersion``, so
the API server rejects them (409) if anything changed since we last looked:
that precondition is what makes a slot claim exclusive.
"""

from __future__ import annotations

import logging
from typing import Any

from ..api.models import GROUP, VERSION
from ..engine.ports import NotFound
from .apiclient import ApiClient
from .credentials import load
from .events import EventRecorder

log = logging.getLogger("schedulezero.kube")

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"  # built-in kinds, as kubectl patches


class Kube:
    def __init__(self, api: ApiClient | None = None) -> None:
        self.api = api or ApiClient(load())
        self._request = self.api.request
        self.events = EventRecorder(self)

    async def patch_status(self, plural: str, namespace: str, name: str,
                           resource_version: str | None, status: dict[str, Any]) -> str:
        """Merge-patch ``status``; returns the new resourceVersion."""
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        obj = await self._request(
            "PATCH", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}/{name}/status",
            body, MERGE)
        return str(obj["metadata"]["resourceVersion"])

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        return await self._request(
            "GET", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}/{name}")

    async def close(self) -> None:
        await self.events.close()
        await self.api.close()

    async def read_secret_key(self, namespace: str, name: str, key: str) -> bytes | None:
        import base64

        try:
            secret = await self._request("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")
        except NotFound:
            return None
        raw = (secret.get("data") or {}).get(key)
        return base64.b64decode(raw) if raw is not None else None

    async def event(self, obj: dict[str, Any], kind: str, type_: str, reason: str,
                    message: str, *, every: float = 60.0) -> None:
        """A core/v1 Event; repeats of (object, reason) within ``every`` s fold into a count."""
        await self.events.record(obj, kind, type_, reason, message, interval=every)

    async def create_event(self, namespace: str, body: dict[str, Any]) -> str:
        obj = await self._request("POST", f"/api/v1/namespaces/{namespace}/events", body)
        return str(obj["metadata"]["name"])

    async def patch_event(self, namespace: str, name: str, body: dict[str, Any]) -> bool:
        """Merge-patch an Event; False if it is gone (expired by its TTL or deleted)."""
        try:
            await self._request("PATCH", f"/api/v1/namespaces/{namespace}/events/{name}",
                                body, MERGE)
        except NotFound:
            return False
        return True

    # -- Deployments: create/update the ones the operator owns, scale any it is told to --
    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._request("GET", _deployment(namespace, name))
        except NotFound:
            return None

    async def apply_deployment(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create, or update metadata+template (never replicas: the scaler owns those)."""
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        current = await self.get_deployment(ns, name)
        if current is None:
            return await self._request("POST", f"/apis/apps/v1/namespaces/{ns}/deployments",
                                       body)
        patch = {"metadata": {"labels": body["metadata"]["labels"],
                              "annotations": body["metadata"]["annotations"],
                              "ownerReferences": body["metadata"]["ownerReferences"]},
                 "spec": {"template": body["spec"]["template"]}}
        return await self._request("PATCH", _deployment(ns, name), patch, STRATEGIC)

    async def scale(self, namespace: str, name: str, replicas: int) -> None:
        await self._request("PATCH", _deployment(namespace, name) + "/scale",
                            {"spec": {"replicas": replicas}}, STRATEGIC)


def _deployment(namespace: str, name: str) -> str:
    return f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
