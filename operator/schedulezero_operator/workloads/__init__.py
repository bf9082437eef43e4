"""Handlers as workloads: pure builders of child objects and pod-to-endpoint mapping."""

from .builders import (
    TEMPLATE_HASH_ANNOTATION,
    build_deployment,
    pod_endpoint,
    selector_matches,
    template_hash,
)

__all__ = ["TEMPLATE_HASH_ANNOTATION", "build_deployment", "pod_endpoint", "selector_matches",
           "template_hash"]
