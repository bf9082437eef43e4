"""Fault injection (compact forms for CI; `make faults` runs them alone): the control
plane frozen under load, a handler frozen mid-load, an endpoint that never answers.

Every verdict comes from an independent ledger — the run ids the handlers executed —
checked against the nominal slots, not from the operator's own status: each slot
executed exactly once, nothing left ``active``, the operator never restarted.
Freezing (SIGSTOP) is how an API server or etcd stalls look from outside (a GC pause,
a throttled VM); the local control plane's processes are found from the kubeconfig.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.e2e.kube import wait_for
from tests.e2e.objects import FIGURES, Objects
from tests.e2e.operator_harness import HandlerProcess, OperatorProcess, ts

from .ledger import check_ledger, control_plane_pids, frozen, heartbeats

pytestmark = pytest.mark.cluster


def test_api_server_then_etcd_frozen_for_10s_under_load(
        objects: Objects, operator: OperatorProcess, kubeconfig: str, tmp_path: Path) -> None:
    pids = control_plane_pids(kubeconfig)
    if pids is None:
        pytest.skip("the control plane is not a local one this test can freeze")
    apiserver, etcd = pids
    handler = HandlerProcess(tmp_path, concurrency=64)
    handler.start()
    try:
        objects.handler("h", handler.address, concurrency=64)
        names = heartbeats(objects, "h", 20, catchUp={"policy": "All", "maxRuns": 60})
        wait_for("every Schedule fires", lambda: {
            r["schedule"].split("/")[1] for r in handler.executions("heartbeat")}
            >= set(names), timeout=45)
        before = len(handler.executions("heartbeat"))
        with frozen(apiserver, 10):
            pass
        during_api = len(handler.executions("heartbeat")) - before
        time.sleep(5)
        with frozen(etcd, 10):
            pass
        time.sleep(8)  # reconnect, catch up, record
        end = time.time() - 4
        assert operator.proc is not None and operator.proc.poll() is None, operator.tail()
        total = check_ledger(handler.executions("heartbeat"), names, end)
        FIGURES["faults: runs executed while the API server was frozen 10 s (20 x 1 s)"] = \
            during_api
        FIGURES["faults: apiserver+etcd frozen, slots checked (0 lost, 0 duplicated)"] = total
        wait_for("nothing left active from the outage", lambda: all(
            ts(run["scheduledTime"]) > end for n in names
            for run in objects.status(n).get("active") or []), timeout=30)
    finally:
        handler.stop()


def test_api_server_then_etcd_restarted_under_load(
        objects: Objects, operator: OperatorProcess, local_cluster: Any,
        api: client.ApiClient, tmp_path: Path) -> None:
    """Stopped, not frozen: connections reset, watches end, the API server is gone for
    10 s plus its start-up, then etcd for 10 s. The operator keeps firing what it has
    claimed, reconnects, never restarts, and catches up the rest (``catchUp: All``)."""
    if local_cluster is None:
        pytest.skip("needs the local control plane this session started (KUBECONFIG is set)")
    handler = HandlerProcess(tmp_path, concurrency=64)
    handler.start()
    version = client.VersionApi(api)
    try:
        objects.handler("h", handler.address, concurrency=64)
        names = heartbeats(objects, "h", 20, catchUp={"policy": "All", "maxRuns": 120})
        wait_for("every Schedule fires", lambda: {
            r["schedule"].split("/")[1] for r in handler.executions("heartbeat")}
            >= set(names), timeout=45)
        pid = operator.proc.pid if operator.proc else None
        for component in ("kube-apiserver", "etcd"):
            before = len(handler.executions("heartbeat"))
            stopped = time.time()
            local_cluster.restart(component, down_for=10)
            down = len(handler.executions("heartbeat")) - before
            wait_for(f"{component} serves again", version.get_code, timeout=60)
            FIGURES[f"faults: {component} restarted (10 s down): back after (s)"] = round(
                time.time() - stopped, 1)
            FIGURES[f"faults: {component} restarted: runs executed while it was down"] = down
            time.sleep(5)
        time.sleep(10)  # watches reconnected, catch-up run, status recorded
        end = time.time() - 5
        assert operator.proc is not None and operator.proc.poll() is None, operator.tail()
        assert operator.proc.pid == pid, "the operator never restarted"
        total = check_ledger(handler.executions("heartbeat"), names, end)
        FIGURES["faults: apiserver then etcd restarted, slots checked (0 lost, 0 duplicated)"] = \
            total
        wait_for("nothing left active from the outage", lambda: all(
            ts(run["scheduledTime"]) > end for n in names
            for run in objects.status(n).get("active") or []), timeout=30)
        last = {n: objects.status(n).get("lastScheduleTime") for n in names}
        assert all(t and ts(t) > end for t in last.values()), f"status recorded again: {last}"
    finally:
        handler.stop()
