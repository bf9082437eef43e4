"""Split leadership: the leader frozen (SIGSTOP) past its lease, the standby takes over,
then the old leader is resumed (SIGCONT).

Checked against an independent ledger (the run ids the handler executed), not the
operators' own view: the resumed process must know it lost the Lease before it fires
anything (its fence is a monotonic deadline), must not free the Lease its successor
holds, and status never records Missed for a slot that ran; every slot runs once.
"""

from __future__ import annotations

import signal
import time
import urllib.request
from pathlib import Path

import pytest
from kubernetes import client
from schedulezero_testcluster.cluster import free_port

from tests.e2e.kube import wait_for
from tests.e2e.objects import FIGURES, Objects
from tests.e2e.operator_harness import HandlerProcess, OperatorProcess, ts

from .ledger import lease_holder

pytestmark = pytest.mark.cluster
PREFIX = "sz-split-test"


def holder(coord: client.CoordinationV1Api, namespace: str) -> str | None:
    return lease_holder(coord, namespace, f"{PREFIX}-bucket-0")


def runs_started(port: int) -> float:
    """The process's own count of first attempts dispatched (its lateness histogram)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("schedulezero_fire_lateness_seconds_count"):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no lateness histogram in /metrics")


def test_a_leader_frozen_past_its_lease_fires_nothing_when_resumed(
        objects: Objects, operator: OperatorProcess, handler_proc: HandlerProcess,
        api: client.ApiClient, tmp_path: Path) -> None:
    operator.stop()
    replicas, ports = [], {}
    for name in ("a", "b"):
        port = free_port()
        op = OperatorProcess(tmp_path / f"operator-{name}.log", "--leader-elect",
                             "--lease-namespace", objects.ns, "--lease-name", PREFIX,
                             "--metrics-port", str(port))
        op.start()
        replicas.append(op)
        ports[id(op)] = port
    coord = client.CoordinationV1Api(api)
    try:
        objects.handler("h", handler_proc.address)
        objects.schedule("beat", handler="h", method="heartbeat", interval="1s",
                         catchUp={"policy": "All", "maxRuns": 60})
        wait_for("3 runs", lambda: len(handler_proc.executions("heartbeat")) >= 3, timeout=45)
        first = wait_for("a leader", lambda: holder(coord, objects.ns))
        leader = next(op for op in replicas if op.proc and first.endswith(f"-{op.proc.pid}"))
        standby = next(op for op in replicas if op is not leader)
        assert leader.proc is not None and standby.proc is not None

        started_before = runs_started(ports[id(leader)])
        leader.proc.send_signal(signal.SIGSTOP)
        frozen = time.time()
        successor = wait_for("the standby takes the Lease", lambda: (
            h if (h := holder(coord, objects.ns)) and h != first else None), timeout=40)
        FIGURES["split leadership: SIGSTOP -> standby holds the Lease (s)"] = round(
            time.time() - frozen, 2)
        assert successor.endswith(f"-{standby.proc.pid}")
        time.sleep(3)  # the successor fires (and catches up the frozen gap)
        leader.proc.send_signal(signal.SIGCONT)
        resumed = time.time()
        time.sleep(6)  # what would a deposed leader do now?
        assert runs_started(ports[id(leader)]) == started_before, \
            "the resumed leader dispatched nothing (it knew it had lost the Lease)"

        assert holder(coord, objects.ns) == successor, "the deposed leader left the Lease alone"
        rows = handler_proc.executions("heartbeat")
        run_ids = [r["runId"] for r in rows]
        assert len(run_ids) == len(set(run_ids)), "no slot ran twice"
        slots = sorted(ts(r["scheduledTime"]) for r in rows if ts(r["scheduledTime"])
                       < time.time() - 2)
        assert slots == [slots[0] + i for i in range(round(slots[-1] - slots[0]) + 1)], \
            "every 1 s slot ran, the frozen gap late (catch-up All)"
        status = objects.status("beat")
        assert status["counters"]["missed"] == 0, "nothing recorded Missed"
        assert not [r for r in status["recentRuns"] if r["outcome"] == "Missed"]
        log = leader.tail(200_000)
        assert "Traceback" not in log, log[-3000:]
        stale = [r for r in rows if r["receivedAt"] > resumed
                 and ts(r["scheduledTime"]) < frozen]
        assert not stale, f"slots from before the freeze dispatched after SIGCONT: {stale}"
        assert leader.proc.poll() is None, "the deposed leader stays up as a standby"
    finally:
        for op in replicas:
            if op.proc is not None and op.proc.poll() is None:
                op.proc.send_signal(signal.SIGCONT)
            op.stop()
        operator.start()
