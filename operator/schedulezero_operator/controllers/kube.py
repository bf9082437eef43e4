"""The engine's port to the API server (``engine.ports.KubePort``): status, Events,
Secrets and Deployments.

kopf owns the watches; these few calls go over aiohttp on the event loop (the
hot status path and Events) or through the kubernetes client in worker threads
(the client is synchronous) with bounded concurrency.
Status patches are JSON merge patches carrying ``metadata.resourceVersion``, so
the API server rejects them (409) if anything changed since we last looked:
that precondition is what makes a slot claim exclusive.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from ..api.models import GROUP, VERSION
from ..engine.ports import Conflict, NotFound
from . import safe_decode
from .events import EventRecorder

log = logging.getLogger("schedulezero.kube")


def load_api_client() -> client.ApiClient:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    cfg = client.Configuration.get_default_copy()
    cfg.connection_pool_maxsize = 32
    return client.ApiClient(cfg)


class Kube:
    def __init__(self, api: client.ApiClient | None = None, max_parallel: int = 16) -> None:
        self.api = api or load_api_client()
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self._limit = asyncio.Semaphore(max_parallel)
        self._session: Any = None
        self.events = EventRecorder(self)

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        async with self._limit:
            return await asyncio.to_thread(fn, *args, **kwargs)

    def _http(self) -> Any:
        """An aiohttp session with the client's credentials, for the hot status path.

        Status patches are the operator's most frequent write; doing them on the event
        loop (aiohttp is a kopf dependency already) instead of the synchronous client in
        threads avoids its per-call validation and the GIL contention of the threads.
        """
        if self._session is None:
            import ssl

            import aiohttp

            cfg = self.api.configuration
            ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert) if cfg.ssl_ca_cert \
                else ssl.create_default_context()
            if not cfg.verify_ssl:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            if cfg.cert_file and cfg.key_file:
                ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ctx, limit=32),
                timeout=aiohttp.ClientTimeout(total=30))
        return self._session

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        # Whatever the client itself would send (bearer token, refreshed when it rotates).
        for auth in (self.api.configuration.auth_settings() or {}).values():
            if auth.get("in") == "header" and auth.get("value"):
                headers[str(auth["key"]).title()] = str(auth["value"])
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def _request(self, verb: str, path: str, body: Any = None,
                       content_type: str | None = None) -> dict[str, Any]:
        url = self.api.configuration.host + path
        data = json.dumps(body, separators=(",", ":")) if body is not None else None
        async with self._limit, self._http().request(
                verb, url, data=data, headers=self._headers(content_type)) as resp:
            payload = await resp.read()
            if resp.status == 409:
                raise Conflict(path)
            if resp.status == 404:
                raise NotFound(path)
            if resp.status >= 400:
                raise ApiException(status=resp.status, reason=payload[:300].decode(
                    "utf-8", "replace"))
            return dict(safe_decode.loads(payload))

    async def patch_status(self, plural: str, namespace: str, name: str,
                           resource_version: str | None, status: dict[str, Any]) -> str:
        """Merge-patch ``status``; returns the new resourceVersion."""
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        obj = await self._request(
            "PATCH", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}/{name}/status",
            body, "application/merge-patch+json")
        return str(obj["metadata"]["resourceVersion"])

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        return await self._request(
            "GET", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}/{name}")

    async def close(self) -> None:
        await self.events.close()
        if self._session is not None:
            await self._session.close()

    async def read_secret_key(self, namespace: str, name: str, key: str) -> bytes | None:
        import base64

        try:
            secret = await self._call(self.core.read_namespaced_secret, name, namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        raw = (secret.data or {}).get(key)
        return base64.b64decode(raw) if raw is not None else None

    async def event(self, obj: dict[str, Any], kind: str, type_: str, reason: str,
                    message: str, *, every: float = 60.0) -> None:
        """A core/v1 Event; repeats of (object, reason) within ``every`` s fold into a count."""
        await self.events.record(obj, kind, type_, reason, message, interval=every)

    async def create_event(self, namespace: str, body: dict[str, Any]) -> str:
        obj = await self._request("POST", f"/api/v1/namespaces/{namespace}/events", body,
                                  "application/json")
        return str(obj["metadata"]["name"])

    async def patch_event(self, namespace: str, name: str, body: dict[str, Any]) -> bool:
        """Merge-patch an Event; False if it is gone (expired by its TTL or deleted)."""
        try:
            await self._request("PATCH", f"/api/v1/namespaces/{namespace}/events/{name}",
                                body, "application/merge-patch+json")
        except NotFound:
            return False
        return True

    # -- Deployments: create/update the ones the operator owns, scale any it is told to --
    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj = await self._call(self.apps.read_namespaced_deployment, name, namespace,
                                   _preload_content=False)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return dict(json.loads(obj.data))

    async def apply_deployment(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create, or update metadata+template (never replicas: the scaler owns those)."""
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        current = await self.get_deployment(ns, name)
        if current is None:
            obj = await self._call(self.apps.create_namespaced_deployment, ns, body,
                                   _preload_content=False)
            return dict(json.loads(obj.data))
        patch = {"metadata": {"labels": body["metadata"]["labels"],
                              "annotations": body["metadata"]["annotations"],
                              "ownerReferences": body["metadata"]["ownerReferences"]},
                 "spec": {"template": body["spec"]["template"]}}
        obj = await self._call(self.apps.patch_namespaced_deployment, name, ns, patch,
                               _preload_content=False)
        return dict(json.loads(obj.data))

    async def scale(self, namespace: str, name: str, replicas: int) -> None:
        await self._call(self.apps.patch_namespaced_deployment_scale, name, namespace,
                         {"spec": {"replicas": replicas}})
