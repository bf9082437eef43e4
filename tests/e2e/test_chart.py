"""The Helm chart: installs, runs the operator as a pod under its own least-privilege
RBAC (the node agent hands the pod a token for its ServiceAccount), and that pod
fires Schedules."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from .conftest import Objects
from .kube import unique, wait_for
from .operator_harness import REPO, HandlerProcess, OperatorProcess

pytestmark = pytest.mark.cluster
CHART = REPO / "charts" / "schedulezero-operator"


def helm() -> str:
    from schedulezero_testcluster.cluster import helm_binary

    return str(helm_binary())


@pytest.fixture
def chart_release(kubeconfig: str, operator: OperatorProcess,
                  api: client.ApiClient) -> Iterator[str]:
    """The chart's operator, alone: the session's operator steps aside meanwhile."""
    operator.stop()
    ns = unique("sz-system")
    subprocess.run([helm(), "--kubeconfig", kubeconfig, "install", "sz", str(CHART),
                    "--namespace", ns, "--create-namespace", "--wait", "--timeout", "120s"],
                   check=True, capture_output=True, text=True)
    try:
        yield ns
    finally:
        subprocess.run([helm(), "--kubeconfig", kubeconfig, "uninstall", "sz", "-n", ns,
                        "--wait"], capture_output=True)
        client.CoreV1Api(api).delete_namespace(ns)
        operator.start()


def can_i(kubeconfig: str, sa: str, *args: str) -> bool:
    r = subprocess.run(["kubectl", "--kubeconfig", kubeconfig, "auth", "can-i", *args,
                        f"--as={sa}"], capture_output=True, text=True)
    return r.stdout.strip() == "yes"


def test_chart_renders_deterministically(kubeconfig: str) -> None:
    out = subprocess.run([helm(), "template", "sz", str(CHART), "--namespace", "x",
                          "--kube-version", "1.33.0"],
                         check=True, capture_output=True, text=True).stdout
    assert "readOnlyRootFilesystem: true" in out and "runAsNonRoot: true" in out
    assert "kind: ClusterRole" in out and "verbs: [get, patch]" in out
    crds = sorted(p.name for p in (CHART / "crds").iterdir())
    assert crds == ["handlers.yaml", "schedules.yaml"]


def test_chart_operator_fires_with_least_privilege(
        chart_release: str, kubeconfig: str, api: client.ApiClient, namespace: str,
        tmp_path: Path) -> None:
    core = client.CoreV1Api(api)
    pod = wait_for("operator pod Ready", lambda: next(
        (p for p in core.list_namespaced_pod(chart_release).items
         if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])),
        None), timeout=90)
    sa = f"system:serviceaccount:{chart_release}:sz-schedulezero-operator"
    assert pod.spec.service_account_name == "sz-schedulezero-operator"
    assert can_i(kubeconfig, sa, "patch", "schedules", "--subresource=status", "-n", namespace)
    assert can_i(kubeconfig, sa, "watch", "schedules", "-A")
    assert not can_i(kubeconfig, sa, "patch", "schedules", "-n", namespace), \
        "the operator never writes spec"
    assert not can_i(kubeconfig, sa, "list", "secrets", "-n", namespace)
    assert not can_i(kubeconfig, sa, "delete", "pods", "-n", namespace)
    assert not can_i(kubeconfig, sa, "delete", "deployments", "-n", namespace)
    assert can_i(kubeconfig, sa, "patch", "deployments", "--subresource=scale", "-n", namespace)

    handler = HandlerProcess(tmp_path)
    handler.start()
    try:
        objects = Objects(api, namespace)
        objects.handler("h", handler.address)
        objects.schedule("beat", handler="h", method="heartbeat", interval="1s")
        wait_for("runs by the chart's operator", lambda: (
            objects.status("beat").get("counters", {}).get("succeeded", 0) >= 2), timeout=60)
        holder = objects.status("beat")["claim"]["holder"]
        assert holder.startswith(pod.metadata.name), "the pod (not a local process) fired it"
    finally:
        handler.stop()
