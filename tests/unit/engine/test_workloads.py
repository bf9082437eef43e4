"""Deployment-backed handlers on fakes: Deployments, pods as endpoints, scaling."""

from __future__ import annotations

import asyncio

import pytest
from schedulezero_operator.dispatch import Endpoint
from schedulezero_operator.engine.endpoints import EndpointQueue
from schedulezero_operator.scaling.scaler import Scaler

from ...fakes import FakeKube, slow, until, virtual_time
from .harness import Operator, handler, schedule

RUN_NOW = "schedulezero.io/run-now"
LABELS = {"schedulezero.io/handler": "w"}
TEMPLATE = {"metadata": {"labels": {"app": "w"}},
            "spec": {"containers": [{"name": "h", "image": "img", "command": ["python"]}]}}


def templated(kube: FakeKube, **spec: object) -> None:
    handler(kube, "w", template=TEMPLATE, **spec)


@virtual_time
async def test_a_templated_handler_gets_a_deployment_and_its_ready_pods_take_jobs() -> None:
    kube = FakeKube()
    templated(kube, scaling={"minReplicas": 2, "maxReplicas": 2})
    schedule(kube, "s", handler="w", interval="1s")
    async with Operator(kube) as op:
        await until("Deployment", lambda: kube.deployments.get(("default", "w")))
        dep = kube.deployments[("default", "w")]
        assert dep["spec"]["replicas"] == 2
        assert dep["metadata"]["ownerReferences"][0]["name"] == "w"
        kube.pod("w-1", "10.1.0.1", LABELS)
        kube.pod("w-2", "10.1.0.2", LABELS, ready=False)
        kube.pod("other", "10.1.0.9", {"app": "else"})
        await asyncio.sleep(3)
        assert {str(c.endpoint) for c in op.dispatcher.calls} == {"w-1"}, \
            "only Ready pods of the handler"
        kube.pod("w-2", "10.1.0.2", LABELS, event="MODIFIED")  # now Ready
        await until("status", lambda: kube.status("w", "handlers").get("readyReplicas") == 2)
    st = kube.status("w", "handlers")
    assert st["readyEndpoints"] == ["w-1", "w-2"] and st["replicas"] == 2
    assert st["ready"] == "2/2" and st["methods"] == ["fail", "heartbeat", "sleep"]
    conds = {c["type"]: c["reason"] for c in st["conditions"]}
    assert conds == {"Available": "PodsReady", "Progressing": "Stable", "Degraded": "Healthy"}
    assert kube.status("s")["recentRuns"][0]["endpoint"] in {"w-1", "w-2"}


@virtual_time
async def test_a_job_on_a_deleted_pod_is_retried_on_another_pod() -> None:
    kube = FakeKube()
    templated(kube, scaling={"minReplicas": 2, "maxReplicas": 2})
    schedule(kube, "long", handler="w", interval="1h", suspend=True,
             annotations={RUN_NOW: "go"},
             retry={"maxAttempts": 3, "backoff": {"initial": "200ms"}})
    op = Operator(kube)
    op.dispatcher.on("*", slow(5))
    async with op:
        await until("Deployment", lambda: kube.deployments.get(("default", "w")))
        kube.pod("w-1", "10.1.0.1", LABELS)
        kube.pod("w-2", "10.1.0.2", LABELS)
        await until("job started", lambda: op.dispatcher.calls)
        victim = str(op.dispatcher.calls[0].endpoint)
        kube.pod(victim, "10.1.0.1" if victim == "w-1" else "10.1.0.2", LABELS,
                 event="DELETED")
        await until("outcome", lambda: kube.status("long").get("lastResult"))
    run = kube.status("long")["recentRuns"][0]
    assert run["outcome"] == "Succeeded" and run["attempts"] == 2
    assert run["endpoint"] != victim and victim in op.dispatcher.forgotten


@virtual_time
async def test_a_missing_deployment_ref_is_a_workload_error() -> None:
    kube = FakeKube()
    handler(kube, "ref", deploymentRef={"name": "nope"})
    async with Operator(kube):
        await asyncio.sleep(1)
    conds = {c["type"]: c for c in kube.status("ref", "handlers")["conditions"]}
    assert (conds["Degraded"]["status"], conds["Degraded"]["reason"]) == (
        "True", "WorkloadError")
    assert "'nope' (spec.deploymentRef) not found" in conds["Degraded"]["message"]
    assert "DeploymentNotFound" in kube.reasons("ref")


@virtual_time
async def test_an_existing_deployment_is_used_through_its_selector() -> None:
    kube = FakeKube()
    kube.deployments[("default", "existing")] = {
        "metadata": {"name": "existing", "namespace": "default"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "existing"}}}}
    handler(kube, "ref", deploymentRef={"name": "existing"})
    schedule(kube, "s", handler="ref", interval="1s")
    async with Operator(kube) as op:
        await asyncio.sleep(0.5)
        kube.pod("existing-1", "10.2.0.1", {"app": "existing"})
        await asyncio.sleep(2)
    assert {str(c.endpoint) for c in op.dispatcher.calls} == {"existing-1"}
    assert kube.status("ref", "handlers")["desiredReplicas"] == 1


@virtual_time
async def test_an_api_error_managing_the_deployment_is_reported() -> None:
    kube = FakeKube()

    async def refuse(body: dict) -> dict:
        raise RuntimeError("admission webhook denied the request")

    kube.apply_deployment = refuse  # type: ignore[method-assign]
    templated(kube)
    async with Operator(kube):
        await asyncio.sleep(1)
    conds = {c["type"]: c for c in kube.status("w", "handlers")["conditions"]}
    assert conds["Degraded"]["reason"] == "WorkloadError"
    assert "cannot manage the Deployment: operator error (RuntimeError)" in \
        conds["Degraded"]["message"]
    assert "WorkloadError" in kube.reasons("w")


@virtual_time
async def test_the_scaler_follows_demand_up_and_down_with_events() -> None:
    kube = FakeKube()
    templated(kube, concurrency=1, scaling={"minReplicas": 1, "maxReplicas": 3,
                                            "scaleDownDelaySeconds": 3})
    schedule(kube, "work", handler="w", interval="1s", concurrencyPolicy="Allow")
    op = Operator(kube)
    op.dispatcher.default = slow(3)
    async with op:
        scaler = asyncio.ensure_future(Scaler(op.engine).run())
        await until("Deployment", lambda: kube.deployments.get(("default", "w")))
        for i in (1, 2, 3):  # the pods are there (the Deployment controller is not)
            kube.pod(f"w-{i}", f"10.1.0.{i}", LABELS)
        await until("scaled to 3", lambda: ("default", "w", 3) in kube.scaled, timeout=10)
        kube.update("schedules", "work", spec={"suspend": True})
        await until("back to 1", lambda: kube.scaled[-1] == ("default", "w", 1), timeout=20)
        scaler.cancel()
    reasons = [e.reason for e in kube.events if e.name == "w"]
    assert "ScaledUp" in reasons and reasons.count("ScaledDown") == 1
    assert max(r for _, _, r in kube.scaled) == 3, "never above maxReplicas"
    st = kube.status("w", "handlers")
    assert st["desiredReplicas"] == 1 and "lastScaleTime" in st


@virtual_time
async def test_a_scaled_to_zero_handler_is_prewarmed_before_a_due_run() -> None:
    kube = FakeKube()
    templated(kube, scaling={"minReplicas": 0, "maxReplicas": 1, "prewarmSeconds": 8,
                             "scaleDownDelaySeconds": 2})
    schedule(kube, "due", handler="w", at="2026-05-19T10:00:20Z")
    async with Operator(kube) as op:
        scaler = asyncio.ensure_future(Scaler(op.engine).run())
        await until("scaled up", lambda: kube.scaled, timeout=30)
        assert kube.scaled[0] == ("default", "w", 1)
        assert 11.5 <= asyncio.get_running_loop().time() <= 12.6, "8 s ahead of the run"
        scaler.cancel()


@virtual_time
async def test_priority_decides_who_gets_a_freed_slot() -> None:
    order: list[str] = []
    queue = EndpointQueue()
    ep = Endpoint("10.0.0.1", 1, "zmq")
    queue.set_ready([ep], capacity=1)
    held = await queue.acquire("normal", 1)
    assert held == ep

    async def want(priority: str) -> None:
        got = await queue.acquire(priority, 10)
        order.append(priority)
        assert got is not None
        queue.release(got)

    tasks = [asyncio.ensure_future(want(p)) for p in ("low", "normal", "high")]
    await asyncio.sleep(0)
    assert queue.queued == 3
    queue.release(ep)
    await asyncio.gather(*tasks)
    assert order == ["high", "normal", "low"]
    assert await queue.acquire("normal", 0.5) == ep
    assert await queue.acquire("normal", 0.5) is None, "the wait runs out"


@pytest.mark.parametrize("protocol", ["zmq-legacy"])
@virtual_time
async def test_legacy_rep_handlers_take_one_job_at_a_time(protocol: str) -> None:
    kube = FakeKube()
    handler(kube, protocol=protocol, concurrency=8)
    schedule(kube, "s", interval="1s", concurrencyPolicy="Allow")
    op = Operator(kube)
    op.dispatcher.default = slow(1.5)
    async with op:
        await asyncio.sleep(4.2)
    starts = [round(c.at, 6) for c in op.dispatcher.calls]
    assert starts == [1.0, 2.5, 4.0], "one in flight: the next waits for the slot"


@virtual_time
async def test_a_handler_secret_signs_its_endpoints() -> None:
    kube = FakeKube()
    kube.secrets[("default", "sig")] = {"secret": b"s3cr3t"}
    handler(kube, auth={"secretRef": {"name": "sig"}})
    async with Operator(kube) as op:
        await until("probed", lambda: op.dispatcher.describes)
        await asyncio.sleep(0.1)
    assert set(op.dispatcher.signed) == {("10.0.0.1:4244", "describe", b"s3cr3t")}


@virtual_time
async def test_handlers_sharing_an_endpoint_each_sign_with_their_own_secret() -> None:
    """Two Handlers (two namespaces, two tenants) name one external endpoint. Keyed by
    endpoint, the dispatcher signed both Handlers' requests with whichever Secret was
    read last: one tenant's jobs went out under the other's key."""
    kube = FakeKube()
    kube.secrets[("team-a", "sig")] = {"secret": b"key-of-a"}
    kube.secrets[("team-b", "sig")] = {"secret": b"key-of-b"}
    for ns in ("team-a", "team-b", "team-c"):
        auth = {"auth": {"secretRef": {"name": "sig"}}} if ns != "team-c" else {}
        kube.create("handlers", "h", {"protocol": "zmq", "endpoints": ["10.0.0.9:4244"],
                                      **auth}, namespace=ns)
        kube.create("schedules", "s", {"handler": "h", "method": "heartbeat",
                                       "interval": "1s"}, namespace=ns)
    async with Operator(kube) as op:
        await asyncio.sleep(3.5)
    by_ns = {}
    for call in op.dispatcher.calls:
        by_ns.setdefault(call.schedule.split("/")[0] if call.schedule else "", set()).add(
            call.secret)
    assert by_ns == {"team-a": {b"key-of-a"}, "team-b": {b"key-of-b"}, "team-c": {None}}
    assert {secret for _, _, secret in op.dispatcher.signed} == {
        b"key-of-a", b"key-of-b", None}


@virtual_time
async def test_the_handlers_own_status_writes_do_not_reapply_its_deployment() -> None:
    """Each write of the Handler's status comes back as a watch event; re-applying the
    Deployment on each was a GET and a PATCH per event (the soak counted 239 in 10 min)."""
    kube = FakeKube()
    templated(kube, scaling={"minReplicas": 1, "maxReplicas": 1})
    async with Operator(kube):
        await until("Deployment", lambda: kube.deployments.get(("default", "w")))
        kube.pod("w-1", "10.1.0.1", LABELS)
        await until("status", lambda: kube.status("w", "handlers").get("readyReplicas") == 1)
        await asyncio.sleep(20)
    assert kube.deployment_applies == 1
