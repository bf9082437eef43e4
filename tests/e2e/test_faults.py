"""Fault injection (compact forms for CI; `make faults` runs them alone): the control
plane frozen under load, a handler frozen mid-load, an endpoint that never answers.

Every verdict comes from an independent ledger — the run ids the handlers executed —
checked against the nominal slots, not from the operator's own status: each slot
executed exactly once, nothing left ``active``, the operator never restarted.
Freezing (SIGSTOP) is how an API server or etcd stalls look from outside (a GC pause,
a throttled VM); the local control plane's processes are found from the kubeconfig.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from .conftest import FIGURES, Objects
from .kube import wait_for
from .operator_harness import HandlerProcess, OperatorProcess, ts

pytestmark = pytest.mark.cluster


def _pid_with(*needles: str) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if all(n in cmdline for n in needles):
            return int(entry.name)
    return None


def control_plane_pids(kubeconfig: str) -> tuple[int, int] | None:
    """(kube-apiserver, etcd) of the local control plane, or None on another cluster."""
    server = yaml.safe_load(Path(kubeconfig).read_text())["clusters"][0]["cluster"]["server"]
    port = urlparse(server).port
    apiserver = _pid_with("kube-apiserver", f"--secure-port={port}")
    if apiserver is None:
        return None
    cmdline = Path(f"/proc/{apiserver}/cmdline").read_bytes().decode().split("\0")
    etcd_url = next(a.split("=", 1)[1] for a in cmdline if a.startswith("--etcd-servers="))
    etcd = _pid_with("etcd", f"--listen-client-urls={etcd_url}")
    return (apiserver, etcd) if etcd else None


@contextmanager
def frozen(pid: int, seconds: float) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)
    yield


def check_ledger(rows: list[dict], names: list[str], until: float) -> int:
    """Every 1 s slot of every Schedule, up to ``until``, executed exactly once."""
    run_ids = [r["runId"] for r in rows]
    assert len(run_ids) == len(set(run_ids)), "a slot executed twice"
    total = 0
    for name in names:
        slots = sorted(ts(r["scheduledTime"]) for r in rows
                       if r["schedule"].endswith(f"/{name}") and ts(r["scheduledTime"]) < until)
        assert slots, f"{name} never ran"
        expected = [slots[0] + i for i in range(round(slots[-1] - slots[0]) + 1)]
        missing = sorted(set(expected) - set(slots))
        assert not missing, f"{name}: {len(missing)} slot(s) never executed: {missing[:5]}"
        total += len(slots)
    return total


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
        names = [f"s{i:02d}" for i in range(20)]
        for name in names:
            objects.schedule(name, handler="h", method="heartbeat", interval="1s",
                             catchUp={"policy": "All", "maxRuns": 60})
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


def test_a_frozen_handler_and_a_silent_endpoint_lose_no_run(
        objects: Objects, operator: OperatorProcess, tmp_path: Path) -> None:
    a, b = HandlerProcess(tmp_path, concurrency=16), HandlerProcess(tmp_path, concurrency=16)
    silent = socket.socket()  # accepts connections, never answers a byte
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    silent_address = f"127.0.0.1:{silent.getsockname()[1]}"
    for h in (a, b):
        h.start()
    try:
        objects.handler("h", a.address, endpoints=[a.address, b.address, silent_address],
                        concurrency=16)
        names = [f"s{i:02d}" for i in range(5)]
        for name in names:
            objects.schedule(name, handler="h", method="heartbeat", interval="1s",
                             timeoutSeconds=2, retry={"maxAttempts": 5,
                                                      "backoff": {"initial": "100ms"}})
        wait_for("the silent endpoint is named down", lambda: silent_address in str(
            objects.get("h", "handlers").get("status", {}).get("conditions")), timeout=30)
        wait_for("runs flow", lambda: len(a.executions()) + len(b.executions()) >= 10,
                 timeout=30)
        assert a.proc is not None
        a.proc.send_signal(signal.SIGSTOP)
        stopped = time.time()
        time.sleep(12)
        a.proc.send_signal(signal.SIGCONT)
        time.sleep(6)
        end = time.time() - 4
        rows = [*a.executions("heartbeat"), *b.executions("heartbeat")]
        total = check_ledger(rows, names, end)
        moved = [r for r in b.executions("heartbeat") if r["receivedAt"] > stopped + 3
                 and r["receivedAt"] < stopped + 12]
        assert moved, "runs went to the live endpoint while the other was frozen"
        late_on_a = [r for r in a.executions("heartbeat") if r["receivedAt"] > stopped + 12
                     and ts(r["scheduledTime"]) < stopped + 8]
        assert not late_on_a, "a frozen handler's stale requests were not executed on waking"
        FIGURES["faults: handler frozen 12 s + silent endpoint, slots checked "
                "(0 lost, 0 duplicated)"] = total
        for name in names:
            recent = objects.status(name).get("recentRuns") or []
            assert all(r["outcome"] == "Succeeded" for r in recent), recent
        assert operator.proc is not None and operator.proc.poll() is None
    finally:
        if a.proc is not None and a.proc.poll() is None:
            a.proc.send_signal(signal.SIGCONT)
        a.stop()
        b.stop()
        silent.close()
