"""The pods the operator watches, indexed by namespace, and which of them are endpoints.

Deployment-backed handlers get their endpoints from here: the Ready pods
(Running, Ready, not terminating) that their Deployment's selector matches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..dispatch import Endpoint
from ..workloads import pod_endpoint, selector_matches

Key = tuple[str, str]


@dataclass(frozen=True)
class PodMatch:
    endpoints: list[Endpoint]  # Ready pods: new jobs go only there
    count: int  # pods not terminating (replicas as the Handler's status shows them)


class PodIndex:
    def __init__(self) -> None:
        self._pods: dict[str, dict[str, dict[str, Any]]] = {}  # namespace -> name -> pod

    def update(self, event_type: str, pod: dict[str, Any]) -> dict[str, Any]:
        """Apply a watch event; returns the pod as last known (for a deletion: before it)."""
        meta = pod["metadata"]
        pods = self._pods.setdefault(meta["namespace"], {})
        if event_type == "DELETED":
            return pods.pop(meta["name"], None) or pod
        pods[meta["name"]] = pod
        return pod

    def match(self, namespace: str, selector: dict[str, Any] | None, port: int,
              protocol: str) -> PodMatch:
        endpoints, count = [], 0
        for name, pod in self._pods.get(namespace, {}).items():
            if not selector_matches(selector, pod["metadata"].get("labels") or {}):
                continue
            if not pod["metadata"].get("deletionTimestamp"):
                count += 1
            ip = pod_endpoint(pod)
            if ip:
                endpoints.append(Endpoint(ip, port, protocol, pod=name))
        return PodMatch(endpoints, count)
