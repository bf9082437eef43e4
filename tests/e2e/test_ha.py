"""Two operator replicas with leader election: one acts; on a crash the standby takes
over within the lease duration, and no run id reaches the handler twice."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest
from kubernetes import client

from .kube import wait_for
from .objects import FIGURES, Objects
from .operator_harness import HandlerProcess, OperatorProcess

pytestmark = pytest.mark.cluster


def test_failover_after_a_leader_crash(objects: Objects, operator: OperatorProcess,
                                       handler_proc: HandlerProcess, api: client.ApiClient,
                                       tmp_path: Path) -> None:
    operator.stop()
    replicas = []
    for name in ("a", "b"):
        op = OperatorProcess(tmp_path / f"operator-{name}.log")
        op.argv = [sys.executable, "-m", "schedulezero_operator", "--leader-elect",
                   "--lease-namespace", objects.ns, "--lease-name", "sz-ha-test",
                   "--metrics-port", "0"]
        op.start()
        replicas.append(op)
    try:
        objects.handler("h", handler_proc.address)
        objects.schedule("beat", handler="h", method="heartbeat", interval="1s")
        wait_for("3 runs", lambda: len(handler_proc.executions()) >= 3, timeout=45)
        coord = client.CoordinationV1Api(api)
        holder = coord.read_namespaced_lease("sz-ha-test-bucket-0",
                                             objects.ns).spec.holder_identity
        leader = next(op for op in replicas if op.proc and holder.endswith(f"-{op.proc.pid}"))
        standby = next(op for op in replicas if op is not leader)

        leader.stop(signal.SIGKILL)
        killed = time.time()
        before = len(handler_proc.executions())
        wait_for("runs resume under the standby",
                 lambda: len(handler_proc.executions()) >= before + 2, timeout=40)
        resumed = min(r["receivedAt"] for r in handler_proc.executions()[before:])
        FIGURES["HA failover: leader SIGKILL -> next run (s)"] = round(resumed - killed, 2)
        new_holder = coord.read_namespaced_lease("sz-ha-test-bucket-0",
                                                 objects.ns).spec.holder_identity
        assert standby.proc is not None and new_holder.endswith(f"-{standby.proc.pid}")
        run_ids = [r["runId"] for r in handler_proc.executions()]
        assert len(run_ids) == len(set(run_ids)), "no slot ran twice across the failover"
    finally:
        for op in replicas:
            op.stop()
        operator.start()
