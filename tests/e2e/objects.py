"""What e2e and fault tests share: access to Schedules and Handlers in one namespace,
and the figures they print at the end of the session (see tests/conftest.py)."""

from __future__ import annotations

from typing import Any

from kubernetes import client

LATENESS_MS: list[float] = []
FIGURES: dict[str, float | str] = {}


class Objects:
    """Create/read Schedules and Handlers in one namespace."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.ns = namespace

    def create(self, kind: str, name: str, spec: dict[str, Any],
               annotations: dict[str, str] | None = None) -> dict[str, Any]:
        body = {"apiVersion": "schedulezero.io/v1alpha1", "kind": kind,
                "metadata": {"name": name, "annotations": annotations or {}}, "spec": spec}
        return dict(self.custom.create_namespaced_custom_object(
            "schedulezero.io", "v1alpha1", self.ns, kind.lower() + "s", body))

    def handler(self, name: str, address: str, **spec: Any) -> dict[str, Any]:
        return self.create("Handler", name, {"protocol": "zmq", "endpoints": [address], **spec})

    def schedule(self, name: str, **spec: Any) -> dict[str, Any]:
        return self.create("Schedule", name, spec)

    def get(self, name: str, plural: str = "schedules") -> dict[str, Any]:
        return dict(self.custom.get_namespaced_custom_object(
            "schedulezero.io", "v1alpha1", self.ns, plural, name))

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.get(name).get("status") or {})

    def patch(self, name: str, body: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            "schedulezero.io", "v1alpha1", self.ns, "schedules", name, body,
            _content_type="application/merge-patch+json")

    def condition(self, name: str, kind: str) -> dict[str, Any] | None:
        for c in self.status(name).get("conditions") or []:
            if c["type"] == kind:
                return dict(c)
        return None

    def events(self, name: str) -> list[Any]:
        return [e for e in self.core.list_namespaced_event(self.ns).items
                if e.involved_object.name == name]
