"""The Helm chart: installs into a namespace enforcing the `restricted` Pod Security
Standard, runs the operator from the image `make images` builds as a pod under its
own least-privilege RBAC (the node agent runs it from the image in a sandbox, with
the ServiceAccount token projected by the API server's admission), that pod fires
Schedules, and `helm test` passes."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from .kube import unique, wait_for
from .objects import Objects
from .operator_harness import REPO, HandlerProcess, OperatorProcess

pytestmark = pytest.mark.cluster
CHART = REPO / "charts" / "schedulezero-operator"


def helm() -> str:
    from schedulezero_testcluster.cluster import helm_binary

    return str(helm_binary())


RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/enforce-version": "latest"}


@pytest.fixture
def chart_release(kubeconfig: str, operator: OperatorProcess,
                  api: client.ApiClient) -> Iterator[str]:
    """The chart's operator, alone (the session's operator steps aside meanwhile), in a
    namespace whose PodSecurity admission enforces `restricted`."""
    operator.stop()
    ns = unique("sz-system")
    client.CoreV1Api(api).create_namespace({"metadata": {"name": ns, "labels": RESTRICTED}})
    install = subprocess.run([helm(), "--kubeconfig", kubeconfig, "install", "sz", str(CHART),
                              "--namespace", ns, "--wait", "--timeout", "120s"],
                             capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
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


def render(*sets: str) -> str:
    return subprocess.run([helm(), "template", "sz", str(CHART), "--namespace", "x",
                           "--kube-version", "1.33.0", *[f"--set={s}" for s in sets]],
                          check=True, capture_output=True, text=True).stdout


def kinds(out: str) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for doc in yaml.safe_load_all(out):
        if doc:
            found.setdefault(doc["kind"], []).append(doc)
    return found


def test_chart_renders_deterministically(kubeconfig: str) -> None:
    out = render()
    assert "readOnlyRootFilesystem: true" in out and "runAsNonRoot: true" in out
    (deployment,) = kinds(out)["Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "localhost/schedulezero/operator:0.1.0", "the image we build"
    assert container["imagePullPolicy"] == "IfNotPresent" and "command" not in container
    assert "kind: ClusterRole" in out and "verbs: [get, patch]" in out
    crds = sorted(p.name for p in (CHART / "crds").iterdir())
    assert crds == ["handlers.yaml", "schedules.yaml"]


def test_chart_metrics_service_annotations_servicemonitor_and_dashboard(
        kubeconfig: str) -> None:
    docs = kinds(render())
    assert "ServiceMonitor" not in docs and "ConfigMap" not in docs, "both off by default"
    pod = docs["Deployment"][0]["spec"]["template"]
    assert pod["metadata"]["annotations"] == {"prometheus.io/scrape": "true",
                                              "prometheus.io/port": "9090",
                                              "prometheus.io/path": "/metrics"}
    container = pod["spec"]["containers"][0]
    assert {"--metrics-port=9090", "--metrics-bind=$(POD_IP)"} <= set(container["args"])
    assert {"name": "metrics", "containerPort": 9090} in container["ports"]
    (svc,) = docs["Service"]
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics",
                                     "protocol": "TCP"}]
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()

    docs = kinds(render("metrics.serviceMonitor.enabled=true", "metrics.dashboard.enabled=true",
                        "metrics.serviceMonitor.labels.release=kps",
                        "metrics.bindAddress=0.0.0.0", "metrics.perSchedule=true"))
    (monitor,) = docs["ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= \
        docs["Service"][0]["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    (dashboard,) = docs["ConfigMap"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["schedulezero.json"]) == json.loads(
        (CHART / "dashboards" / "schedulezero.json").read_text())
    args = docs["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert {"--metrics-bind=0.0.0.0", "--metrics-per-schedule"} <= set(args)

    docs = kinds(render("metrics.enabled=false"))
    assert "Service" not in docs
    pod = docs["Deployment"][0]["spec"]["template"]
    assert "--metrics-port=0" in pod["spec"]["containers"][0]["args"]
    assert not pod["metadata"].get("annotations")


def test_chart_legacy_registry_port(kubeconfig: str) -> None:
    docs = kinds(render())
    container = docs["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]
    assert not [a for a in container["args"] if a.startswith("--legacy-registry")], \
        "off by default"
    docs = kinds(render("legacyRegistry.enabled=true"))
    container = docs["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]
    assert {"--legacy-registry-port=4242", "--legacy-registry-bind=$(POD_IP)"} <= \
        set(container["args"])
    assert {"name": "registry", "containerPort": 4242} in container["ports"]
    svc = next(s for s in docs["Service"] if s["metadata"]["name"].endswith("-registry"))
    assert svc["spec"]["ports"] == [{"name": "registry", "port": 4242,
                                     "targetPort": "registry", "protocol": "TCP"}]


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
    from schedulezero_testcluster import imagestore

    (status,) = pod.status.container_statuses
    built = imagestore.lookup(status.image)
    assert built is not None and status.image_id == built.image_id, "runs the built image"
    # The host's view of the operator's process: the pod's uid, its own PID namespace,
    # the image's root.
    pid = operator_pid(pod.metadata.name)
    uid = next(line.split()[1] for line in Path(f"/proc/{pid}/status").read_text()
               .splitlines() if line.startswith("Uid:"))
    assert uid == "65532"
    assert os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
    assert Path(f"/proc/{pid}/root/opt/venv/bin/python").exists()
    # PodSecurity admission is on in that namespace: a privileged pod is refused.
    with pytest.raises(client.ApiException) as refused:
        core.create_namespaced_pod(chart_release, {"metadata": {"name": "priv"}, "spec": {
            "containers": [{"name": "c", "image": pod.spec.containers[0].image,
                            "securityContext": {"privileged": True}}]}})
    assert refused.value.status == 403 and "restricted" in refused.value.body
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
        # /metrics on the pod IP; the metrics Service selects the pod. (Its Endpoints stay
        # empty here: EndpointSlices refuse the node agent's loopback pod IPs.)
        svc = core.read_namespaced_service("sz-schedulezero-operator-metrics", chart_release)
        selector = ",".join(f"{k}={v}" for k, v in svc.spec.selector.items())
        selected = core.list_namespaced_pod(chart_release, label_selector=selector).items
        assert [p.metadata.name for p in selected] == [pod.metadata.name]
        assert svc.spec.ports[0].target_port == "metrics" and any(
            port.name == "metrics" and port.container_port == 9090
            for port in pod.spec.containers[0].ports)
        with urllib.request.urlopen(f"http://{pod.status.pod_ip}:9090/metrics",
                                    timeout=10) as resp:
            text = resp.read().decode()
        succeeded = next(float(line.split()[-1]) for line in text.splitlines()
                         if line.startswith('schedulezero_runs_total{outcome="Succeeded"}'))
        assert succeeded >= 2
    finally:
        handler.stop()
    # `helm test`: the chart's hook checks, from inside the cluster, that the CRDs are
    # served and the operator answers its health endpoint.
    result = subprocess.run([helm(), "--kubeconfig", kubeconfig, "test", "sz", "-n",
                             chart_release, "--timeout", "90s"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Phase:          Succeeded" in result.stdout


def operator_pid(pod_name: str) -> int:
    """The host pid of the process a pod runs, found by its environment (the node
    agent sets HOSTNAME to the pod name)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"HOSTNAME={pod_name}".encode() in environ and \
                b"KUBERNETES_SERVICE_HOST=127.0.0.1" in environ:
            return int(proc.name)
    raise AssertionError(f"no process of pod {pod_name}")
