"""Handlers as workloads: Deployments from Handlers, pod discovery, scaling, pre-warm."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from .kube import wait_for
from .objects import FIGURES, LATENESS_MS, Objects
from .operator_harness import REPO, HandlerProcess, ts

pytestmark = pytest.mark.cluster


def template(record: Path, grace: int = 5) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": "testing"}}, "spec": {
        "terminationGracePeriodSeconds": grace,
        "containers": [{
            "name": "handler", "image": "schedulezero/testing:dev",
            "command": ["python", "-m", "schedulezero_handler",
                        "examples.handlers.testing:TestHandler", "--grace", "1"],
            "env": [{"name": "SZ_TEST_RECORD", "value": str(record)}]}]}}


def executions(record: Path, method: str | None = None) -> list[dict[str, Any]]:
    if not record.exists():
        return []
    rows = [json.loads(x) for x in record.read_text().splitlines() if x]
    return [r for r in rows if method is None or r["method"] == method]


def ready_pods(core: client.CoreV1Api, ns: str, handler: str) -> list[Any]:
    pods = core.list_namespaced_pod(ns, label_selector=f"schedulezero.io/handler={handler}")
    return [p for p in pods.items if p.metadata.deletion_timestamp is None and any(
        c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]


def handler_status(objects: Objects, name: str) -> dict[str, Any]:
    return dict(objects.get(name, "handlers").get("status") or {})


def test_templated_handler_runs_on_its_pods_and_goes_with_the_handler(
        objects: Objects, api: client.ApiClient, tmp_path: Path) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    record = tmp_path / "executions.jsonl"
    objects.create("Handler", "tmpl", {"protocol": "zmq", "template": template(record)})
    dep = wait_for("Deployment", lambda: apps.read_namespaced_deployment("tmpl", objects.ns))
    owner = dep.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.controller) == ("Handler", "tmpl", True)
    assert dep.spec.selector.match_labels == {"schedulezero.io/handler": "tmpl"}
    pods = wait_for("a Ready pod", lambda: ready_pods(core, objects.ns, "tmpl"), timeout=60)

    objects.schedule("beat", handler="tmpl", method="heartbeat", interval="1s")
    status = wait_for("2 runs", lambda: (
        s if (s := objects.status("beat")).get("counters", {}).get("succeeded", 0) >= 2
        else None), timeout=30)
    assert status["recentRuns"][0]["endpoint"] == pods[0].metadata.name, "status names the pod"
    rows = executions(record, "heartbeat")
    assert {r["pod"] for r in rows} == {pods[0].metadata.name}
    warm = [(r["receivedAt"] - ts(r["scheduledTime"])) * 1000 for r in rows[1:]]
    LATENESS_MS.extend(warm)
    FIGURES["running-handler run lateness, max (ms)"] = round(max(warm), 1)
    hs = wait_for("handler status", lambda: (
        h if (h := handler_status(objects, "tmpl")).get("readyReplicas") == 1 else None))
    assert hs["ready"] == "1/1" and "heartbeat" in hs["methods"]

    objects.custom.delete_namespaced_custom_object("schedulezero.io", "v1alpha1", objects.ns,
                                                   "handlers", "tmpl")

    def deployment_gone() -> bool:
        try:
            apps.read_namespaced_deployment("tmpl", objects.ns)
        except ApiException as e:
            return e.status == 404
        return False

    wait_for("garbage collection of the Deployment", deployment_gone, timeout=60)
    wait_for("pods gone", lambda: not core.list_namespaced_pod(
        objects.ns, label_selector="schedulezero.io/handler=tmpl").items, timeout=60)


def test_pod_deleted_mid_job_is_retried_on_another_pod(
        objects: Objects, api: client.ApiClient, tmp_path: Path) -> None:
    core = client.CoreV1Api(api)
    record = tmp_path / "executions.jsonl"
    objects.create("Handler", "pair", {
        "protocol": "zmq", "template": template(record),
        "scaling": {"minReplicas": 2, "maxReplicas": 2}})
    wait_for("2 Ready pods", lambda: len(ready_pods(core, objects.ns, "pair")) == 2, timeout=60)
    objects.create("Schedule", "long", {
        "handler": "pair", "method": "sleep", "params": {"seconds": 5}, "interval": "1h",
        "suspend": True, "retry": {"maxAttempts": 3, "backoff": {"initial": "200ms"}}},
        annotations={"schedulezero.io/run-now": "go"})
    started = wait_for("job started", lambda: executions(record, "sleep.start"), timeout=30)
    victim = started[0]["pod"]
    core.delete_namespaced_pod(victim, objects.ns)
    status = wait_for("outcome recorded", lambda: (
        s if (s := objects.status("long")).get("lastResult") else None), timeout=60)
    run = status["recentRuns"][0]
    assert run["outcome"] == "Succeeded", run
    assert run["attempts"] == 2 and run["endpoint"] != victim
    finished = executions(record, "sleep")
    assert [r["pod"] for r in finished] == [run["endpoint"]], "finished once, elsewhere"


def test_burst_scales_up_within_max_and_back_down(
        objects: Objects, api: client.ApiClient, tmp_path: Path) -> None:
    apps = client.AppsV1Api(api)
    record = tmp_path / "executions.jsonl"
    objects.create("Handler", "burst", {
        "protocol": "zmq", "concurrency": 1, "template": template(record),
        "scaling": {"minReplicas": 1, "maxReplicas": 3, "scaleDownDelaySeconds": 3}})
    wait_for("1 replica", lambda: (handler_status(objects, "burst").get("readyReplicas") == 1),
             timeout=60)
    objects.schedule("work", handler="burst", method="sleep", params={"seconds": 3},
                     interval="1s", concurrencyPolicy="Allow")
    seen: list[int] = []

    def at_max() -> bool:
        replicas = apps.read_namespaced_deployment("burst", objects.ns).spec.replicas
        seen.append(replicas)
        return handler_status(objects, "burst").get("readyReplicas") == 3

    wait_for("3 Ready replicas", at_max, timeout=60)
    objects.patch("work", {"spec": {"suspend": True}})
    wait_for("back to 1 after the delay", lambda: (
        seen.append(r := apps.read_namespaced_deployment("burst", objects.ns).spec.replicas)
        or r == 1), timeout=60)
    assert max(seen) == 3, "never above maxReplicas"
    events = [e for e in objects.events("burst") if e.reason in ("ScaledUp", "ScaledDown")]
    FIGURES["scale changes in the burst test"] = len(events)
    downs = [e for e in events if e.reason == "ScaledDown"]
    assert len(downs) == 1, [e.message for e in events]
    assert len(events) <= 3, [e.message for e in events]
    pods_used = {r["pod"] for r in executions(record, "sleep")}
    assert len(pods_used) >= 2, "the burst was spread over the added pods"


def test_scale_to_zero_handler_is_prewarmed_for_a_due_run(
        objects: Objects, api: client.ApiClient, tmp_path: Path) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    record = tmp_path / "executions.jsonl"
    objects.create("Handler", "cold", {
        "protocol": "zmq", "template": template(record),
        "scaling": {"minReplicas": 0, "maxReplicas": 1, "prewarmSeconds": 8,
                    "scaleDownDelaySeconds": 2}})
    wait_for("Deployment at 0", lambda: apps.read_namespaced_deployment(
        "cold", objects.ns).spec.replicas == 0)
    time.sleep(1)
    assert not ready_pods(core, objects.ns, "cold"), "scaled to zero while idle"
    due = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=14)
    objects.schedule("due", handler="cold", method="heartbeat",
                     at=due.strftime("%Y-%m-%dT%H:%M:%SZ"))
    wait_for("pre-warm scale-up", lambda: apps.read_namespaced_deployment(
        "cold", objects.ns).spec.replicas == 1, timeout=20, interval=0.05)
    scaled = time.monotonic()
    wait_for("a Ready pod", lambda: ready_pods(core, objects.ns, "cold"), interval=0.05)
    FIGURES["scale-up decision -> first Ready pod (s)"] = round(time.monotonic() - scaled, 2)
    assert time.time() < due.timestamp(), "the pod was Ready before the run was due"
    wait_for("the run", lambda: executions(record, "heartbeat"), timeout=40)
    row = executions(record, "heartbeat")[0]
    lateness_ms = (row["receivedAt"] - due.timestamp()) * 1000
    FIGURES["pre-warmed run lateness (ms)"] = round(lateness_ms, 1)
    wait_for("back to zero", lambda: apps.read_namespaced_deployment(
        "cold", objects.ns).spec.replicas == 0, timeout=30)


def test_deployment_ref_scaling_changes_only_replicas(
        objects: Objects, api: client.ApiClient, tmp_path: Path) -> None:
    apps = client.AppsV1Api(api)
    record = tmp_path / "executions.jsonl"
    tpl = template(record)
    tpl["metadata"]["labels"] = {"app": "existing"}
    tpl["spec"]["containers"][0]["env"] += [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    tpl["spec"]["containers"][0]["readinessProbe"] = {"tcpSocket": {"port": 4244},
                                                      "periodSeconds": 1}
    apps.create_namespaced_deployment(objects.ns, {
        "metadata": {"name": "existing", "labels": {"owner": "gitops"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "existing"}},
                 "template": tpl}})
    before = apps.read_namespaced_deployment("existing", objects.ns).to_dict()
    objects.create("Handler", "ref", {"protocol": "zmq", "deploymentRef": {"name": "existing"},
                                      "scaling": {"minReplicas": 2, "maxReplicas": 2}})
    wait_for("scaled to 2", lambda: apps.read_namespaced_deployment(
        "existing", objects.ns).spec.replicas == 2)
    after = apps.read_namespaced_deployment("existing", objects.ns).to_dict()
    assert after["spec"]["template"] == before["spec"]["template"]
    assert after["spec"]["selector"] == before["spec"]["selector"]
    assert after["metadata"]["labels"] == before["metadata"]["labels"]
    assert not after["metadata"].get("owner_references"), "adopted, not owned"
    assert {k: v for k, v in after["spec"].items() if k != "replicas"} == {
        k: v for k, v in before["spec"].items() if k != "replicas"}
    objects.create("Schedule", "ping", {"handler": "ref", "method": "heartbeat",
                                        "interval": "1h", "suspend": True},
                   annotations={"schedulezero.io/run-now": "1"})
    wait_for("run on the existing Deployment's pod", lambda: executions(record, "heartbeat"),
             timeout=30)


def test_examples_apply_and_run(objects: Objects, api: client.ApiClient, kubeconfig: str,
                                tmp_path: Path) -> None:
    """Every example manifest applies; the external-endpoints one runs against a process."""
    ext = HandlerProcess(tmp_path, target="examples.handlers.echo:Echo")
    ext.port = 4250
    ext.argv[ext.argv.index("--port") + 1] = "4250"
    ext.argv[ext.argv.index("--http-port") + 1] = "4250"
    ext.start()
    try:
        for path in sorted((REPO / "examples").glob("*/*.yaml")):
            r = subprocess.run(["kubectl", "--kubeconfig", kubeconfig, "apply", "-n",
                                objects.ns, "-f", str(path)], capture_output=True, text=True)
            assert r.returncode == 0, f"{path}: {r.stderr}"
        wait_for("external endpoint example ran", lambda: (
            objects.status("external-echo-hello").get("counters", {}).get("succeeded", 0) >= 1),
            timeout=30)
        wait_for("deploymentRef example ran", lambda: (
            objects.status("echo-hello").get("counters", {}).get("succeeded", 0) >= 1),
            timeout=60)
    finally:
        ext.stop()


def test_template_changes_roll_out(objects: Objects, api: client.ApiClient,
                                   tmp_path: Path) -> None:
    core = client.CoreV1Api(api)
    record = tmp_path / "executions.jsonl"
    objects.create("Handler", "roll", {"protocol": "zmq", "template": template(record)})
    first = wait_for("a Ready pod", lambda: ready_pods(core, objects.ns, "roll"), timeout=60)
    tpl = template(record)
    tpl["spec"]["containers"][0]["env"].append({"name": "VERSION", "value": "2"})
    objects.custom.patch_namespaced_custom_object(
        "schedulezero.io", "v1alpha1", objects.ns, "handlers", "roll",
        {"spec": {"template": tpl}}, _content_type="application/merge-patch+json")

    def rolled() -> list[Any]:
        pods = ready_pods(core, objects.ns, "roll")
        return [p for p in pods if p.metadata.name != first[0].metadata.name and any(
            e.name == "VERSION" and e.value == "2" for e in p.spec.containers[0].env or [])]

    wait_for("a new pod with the new template", rolled, timeout=60)
