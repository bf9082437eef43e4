"""The local control plane is a real cluster: Deployments become processes,
scaling starts and stops them, namespaces delete, RBAC denies."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from .kube import wait_for

pytestmark = pytest.mark.cluster


def http_server_deployment(name: str, replicas: int) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{
                        "name": "web",
                        "image": "python:3.11-slim",
                        "command": ["python", "-m", "http.server", "8080", "--bind", "$(POD_IP)"],
                        "env": [
                            {"name": "POD_IP", "valueFrom": {"fieldRef": {
                                "fieldPath": "status.podIP"}}},
                            {"name": "POD_NAME", "valueFrom": {"fieldRef": {
                                "fieldPath": "metadata.name"}}},
                        ],
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/", "port": "http"},
                                           "periodSeconds": 1},
                    }],
                },
            },
        },
    }


def ready_pod_ips(core: client.CoreV1Api, namespace: str, app: str) -> list[str]:
    pods = core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
    return sorted(
        p.status.pod_ip for p in pods
        if p.status.phase == "Running" and p.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    )


def answers(ip: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{ip}:8080/", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def test_deployment_pods_run_as_processes_and_scale(api: client.ApiClient, namespace: str) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    apps.create_namespaced_deployment(namespace, http_server_deployment("web", 2))

    ips = wait_for("2 Ready pods", lambda: (
        ips if len(ips := ready_pod_ips(core, namespace, "web")) == 2 else None))
    assert len(set(ips)) == 2, "each pod gets its own loopback address"
    assert all(ip.startswith("127.") for ip in ips)
    assert all(answers(ip) for ip in ips), "every pod IP is served by its own process"

    apps.patch_namespaced_deployment_scale(namespace=namespace, name="web",
                                           body={"spec": {"replicas": 3}})
    ips3 = wait_for("3 Ready pods", lambda: (
        ips if len(ips := ready_pod_ips(core, namespace, "web")) == 3 else None))
    assert set(ips) <= set(ips3)
    wait_for("3 processes answering", lambda: all(answers(ip) for ip in ips3))

    apps.patch_namespaced_deployment_scale(namespace=namespace, name="web",
                                           body={"spec": {"replicas": 0}})
    wait_for("pods gone", lambda: not core.list_namespaced_pod(
        namespace, label_selector="app=web").items)
    # The processes themselves are gone: nothing listens on the old pod IPs.
    assert not any(answers(ip) for ip in ips3)


def test_namespace_deletion_completes(api: client.ApiClient) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    name = "e2e-delete-ns"
    core.create_namespace({"metadata": {"name": name}})
    wait_for("default service account", lambda: core.read_namespaced_service_account(
        "default", name))
    core.create_namespaced_config_map(name, {"metadata": {"name": "cm"}, "data": {"a": "b"}})
    apps.create_namespaced_deployment(name, http_server_deployment("web", 1))
    ip = wait_for("1 Ready pod", lambda: ready_pod_ips(core, name, "web"))[0]
    assert answers(ip)

    core.delete_namespace(name)

    def gone() -> bool:
        try:
            core.read_namespace(name)
        except ApiException as e:
            return e.status == 404
        return False

    wait_for("namespace deleted", gone, timeout=90)
    assert not answers(ip), "the pod's process was stopped by the namespace deletion"


def test_rbac_denies_serviceaccount_without_bindings(
    api: client.ApiClient, namespace: str, kubeconfig: str
) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "nobody"}})
    token = json.loads(core.create_namespaced_service_account_token(
        "nobody", namespace, {"spec": {"audiences": [], "expirationSeconds": 600}},
        _preload_content=False).data)["status"]["token"]

    cfg = client.Configuration()
    cfg.host = api.configuration.host
    cfg.ssl_ca_cert = api.configuration.ssl_ca_cert
    cfg.api_key = {"authorization": f"Bearer {token}"}
    as_nobody = client.CoreV1Api(client.ApiClient(cfg))
    with pytest.raises(ApiException) as denied:
        as_nobody.list_namespaced_pod(namespace)
    assert denied.value.status == 403

    can_i = subprocess.run(
        ["kubectl", "--kubeconfig", kubeconfig, "auth", "can-i", "list", "pods", "-n", namespace,
         f"--as=system:serviceaccount:{namespace}:nobody"],
        capture_output=True, text=True,
    )
    assert can_i.stdout.strip() == "no"
    assert can_i.returncode == 1
