"""Pure builders (``build_*``) for the objects the operator owns, and pod helpers.

No client, no clock: the Deployment of a templated Handler is a function of the
Handler alone, unit-tested as data. The operator fills in what a handler pod
needs to talk to it (``SZ_*`` env, the pod IP, a readiness probe) unless the
template already says otherwise.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from ..api.models import GROUP, HANDLER_LABEL, VERSION

TEMPLATE_HASH_ANNOTATION = f"{GROUP}/template-hash"


def template_hash(template: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]


def _set_env(container: dict[str, Any], name: str, entry: dict[str, Any]) -> None:
    env = container.setdefault("env", [])
    if not any(e.get("name") == name for e in env):
        env.append({"name": name, **entry})


def build_deployment(handler: dict[str, Any], replicas: int) -> dict[str, Any]:
    """The Deployment the operator owns for a Handler with ``spec.template``."""
    meta, spec = handler["metadata"], handler["spec"]
    name = meta["name"]
    protocol = spec.get("protocol", "zmq")
    port = int(spec.get("port", 4244))
    template = copy.deepcopy(spec["template"])
    labels = {**(template.get("metadata") or {}).get("labels", {}), HANDLER_LABEL: name}
    template.setdefault("metadata", {})["labels"] = labels
    pod_spec = template.setdefault("spec", {})
    for container in pod_spec.get("containers", [])[:1]:  # the handler is the first container
        _set_env(container, "POD_IP", {"valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
        _set_env(container, "POD_NAME",
                 {"valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
        _set_env(container, "SZ_PROTOCOL", {"value": "zmq" if protocol == "zmq-legacy"
                                            else protocol})
        _set_env(container, "SZ_PORT", {"value": str(port)})
        _set_env(container, "SZ_HTTP_PORT", {"value": str(port)})
        _set_env(container, "SZ_CONCURRENCY", {"value": str(spec.get("concurrency", 4))})
        ports = container.setdefault("ports", [])
        if not any(p.get("containerPort") == port for p in ports):
            ports.append({"name": "handler", "containerPort": port})
        if "readinessProbe" not in container:
            container["readinessProbe"] = (
                {"httpGet": {"path": "/readyz", "port": port}, "periodSeconds": 1}
                if protocol == "http" else {"tcpSocket": {"port": port}, "periodSeconds": 1})
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name, "namespace": meta["namespace"],
            "labels": {HANDLER_LABEL: name, "app.kubernetes.io/managed-by": "schedulezero"},
            "annotations": {TEMPLATE_HASH_ANNOTATION: template_hash(spec["template"])},
            "ownerReferences": [{
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "Handler", "name": name,
                "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {HANDLER_LABEL: name}},
            "template": template,
        },
    }


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A Deployment's ``spec.selector`` (matchLabels + matchExpressions) against pod labels."""
    if not selector:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def pod_endpoint(pod: dict[str, Any]) -> str | None:
    """The pod IP if the pod may take new jobs: Running, Ready, not terminating."""
    status = pod.get("status") or {}
    if pod["metadata"].get("deletionTimestamp") or status.get("phase") != "Running":
        return None
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or [])
    return status.get("podIP") if ready else None
