"""Handler autoscaling: ``desired_replicas`` is pure; ``Scaler`` is the one place
that changes a Deployment's replica count (through the scale subresource)."""

from .policy import ScaleDecision, desired_replicas

__all__ = ["ScaleDecision", "desired_replicas"]
