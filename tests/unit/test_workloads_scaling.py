from __future__ import annotations

import datetime as dt

import pytest
from schedulezero_operator.scaling import desired_replicas
from schedulezero_operator.workloads import (
    build_deployment,
    pod_endpoint,
    selector_matches,
    template_hash,
)

NOW = dt.datetime(2026, 5, 19, 10, 0, 0, tzinfo=dt.UTC)

HANDLER = {
    "metadata": {"name": "clock", "namespace": "ns", "uid": "u-1"},
    "spec": {"protocol": "zmq", "port": 4244, "concurrency": 2, "template": {
        "metadata": {"labels": {"team": "a"}},
        "spec": {"containers": [{"name": "h", "image": "img", "command": ["python"],
                                 "env": [{"name": "SZ_PORT", "value": "9999"}]}]}}},
}


def test_build_deployment_owns_labels_and_configures_the_handler() -> None:
    dep = build_deployment(HANDLER, replicas=2)
    assert dep["metadata"]["ownerReferences"][0] == {
        "apiVersion": "schedulezero.io/v1alpha1", "kind": "Handler", "name": "clock",
        "uid": "u-1", "controller": True, "blockOwnerDeletion": True}
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["selector"] == {"matchLabels": {"schedulezero.io/handler": "clock"}}
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels == {"team": "a", "schedulezero.io/handler": "clock"}
    container = dep["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["SZ_PORT"]["value"] == "9999", "the template's own value wins"
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["SZ_CONCURRENCY"]["value"] == "2"
    assert container["readinessProbe"] == {"tcpSocket": {"port": 4244}, "periodSeconds": 1}
    assert HANDLER["spec"]["template"]["spec"]["containers"][0].get("readinessProbe") is None, \
        "the Handler itself is not mutated"
    assert dep["metadata"]["annotations"]["schedulezero.io/template-hash"] == template_hash(
        HANDLER["spec"]["template"])


def test_selector_and_pod_readiness() -> None:
    sel = {"matchLabels": {"app": "x"},
           "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}
    assert selector_matches(sel, {"app": "x", "tier": "a"})
    assert not selector_matches(sel, {"app": "x", "tier": "c"})
    assert not selector_matches(None, {"app": "x"})
    ready = {"metadata": {}, "status": {"phase": "Running", "podIP": "127.0.1.2",
                                        "conditions": [{"type": "Ready", "status": "True"}]}}
    assert pod_endpoint(ready) == "127.0.1.2"
    assert pod_endpoint({**ready, "metadata": {"deletionTimestamp": "x"}}) is None
    not_ready = {"metadata": {}, "status": {**ready["status"], "conditions": []}}
    assert pod_endpoint(not_ready) is None


def decide(**kw: object) -> tuple[int, str]:
    args: dict = {"current": 1, "in_flight": 0, "queued": 0, "concurrency": 2,
                  "min_replicas": 0, "max_replicas": 5, "scale_down_delay": 60,
                  "prewarm_seconds": 0, "upcoming": [], "last_needed_current": NOW, "now": NOW}
    args.update(kw)
    d = desired_replicas(**args)  # type: ignore[arg-type]
    return d.replicas, d.reason


@pytest.mark.parametrize(("kw", "replicas", "reason"), [
    ({"in_flight": 3, "queued": 2}, 3, "scale up: 5 job(s)"),
    ({"in_flight": 30}, 5, "scale up"),  # capped by maxReplicas
    ({"current": 3, "in_flight": 1}, 3, ""),  # below need, but not for long enough
    ({"current": 3, "in_flight": 1, "now": NOW + dt.timedelta(seconds=61)}, 1, "scale down"),
    ({"current": 1, "now": NOW + dt.timedelta(seconds=61)}, 0, "scale down"),  # to zero
    ({"current": 0, "min_replicas": 1}, 1, "scale up: minReplicas"),
    ({"current": 0, "prewarm_seconds": 30, "upcoming": [NOW + dt.timedelta(seconds=20)]}, 1,
     "scale up: pre-warm"),
    ({"current": 0, "prewarm_seconds": 30, "upcoming": [NOW + dt.timedelta(seconds=40)]}, 0,
     ""),
    ({"current": 1, "prewarm_seconds": 30, "upcoming": [NOW + dt.timedelta(seconds=105)],
      "now": NOW + dt.timedelta(seconds=100)}, 1, ""),  # pre-warm holds the replica
])
def test_desired_replicas(kw: dict, replicas: int, reason: str) -> None:
    got, why = decide(**kw)
    assert got == replicas
    assert why.startswith(reason) if reason else why == ""


def test_no_flapping_under_oscillating_demand() -> None:
    """Demand toggling every second between 0 and 4 jobs: one scale-up, no scale-down."""
    current, last_needed, changes = 1, NOW, 0
    for second in range(50):
        now = NOW + dt.timedelta(seconds=second)
        d = desired_replicas(current=current, in_flight=4 if second % 2 else 0, queued=0,
                             concurrency=2, min_replicas=1, max_replicas=4,
                             scale_down_delay=10, prewarm_seconds=0, upcoming=[],
                             last_needed_current=last_needed, now=now)
        if d.needed >= current:
            last_needed = now
        if d.replicas != current:
            changes += 1
            current, last_needed = d.replicas, now
    assert changes == 1 and current == 2
