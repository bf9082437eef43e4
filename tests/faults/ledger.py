"""What every fault scenario shares: an independent ledger check, and the means to
find, freeze and restart the local control plane's processes.

The verdicts come from the run ids handlers executed (their JSON-lines records), never
from the operator's own status: that is what a fault could corrupt.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from tests.e2e.operator_harness import ts


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


def check_ledger(rows: list[dict[str, Any]], names: list[str], until: float,
                 period: float = 1.0) -> int:
    """Every ``period`` slot of every Schedule, up to ``until``, executed exactly once.

    ``rows`` are one handler method's records (the start of each execution); returns how
    many slots were checked.
    """
    twice = [rid for rid, n in Counter(r["runId"] for r in rows).items() if n > 1]
    assert not twice, f"{len(twice)} run id(s) executed twice: {twice[:5]}"
    total = 0
    for name in names:
        slots = sorted(ts(r["scheduledTime"]) for r in rows
                       if r["schedule"].endswith(f"/{name}") and ts(r["scheduledTime"]) < until)
        assert slots, f"{name} never ran"
        steps = round((slots[-1] - slots[0]) / period)
        expected = {round(slots[0] + i * period, 3) for i in range(steps + 1)}
        missing = sorted(expected - {round(t, 3) for t in slots})
        assert not missing, f"{name}: {len(missing)} slot(s) never executed: {missing[:5]}"
        total += len(slots)
    return total


def missed_that_ran(statuses: dict[str, dict[str, Any]],
                    rows: list[dict[str, Any]]) -> list[str]:
    """Runs a Schedule's status records ``Missed`` although the ledger shows they ran."""
    ran = {(r["schedule"].split("/")[-1], round(ts(r["scheduledTime"]), 3)) for r in rows}
    return [f"{name}@{run['scheduledTime']}" for name, status in statuses.items()
            for run in status.get("recentRuns") or []
            if run.get("outcome") == "Missed"
            and (name, round(ts(run["scheduledTime"]), 3)) in ran]


def heartbeats(objects: Any, handler: str, count: int, **spec: Any) -> list[str]:
    """``count`` Schedules named s00.. calling ``handler``'s heartbeat every second."""
    names = [f"s{i:02d}" for i in range(count)]
    for name in names:
        objects.schedule(name, handler=handler, method="heartbeat", interval="1s", **spec)
    return names


# Runs against a flaky endpoint: a short attempt timeout, quick retries elsewhere.
QUICK_RETRIES: dict[str, Any] = {"timeoutSeconds": 2, "retry": {
    "maxAttempts": 5, "backoff": {"initial": "100ms"}}}


def lease_holder(coord: Any, namespace: str, lease: str) -> str | None:
    """The holder of an unexpired Lease, or None (missing, free or run out)."""
    from kubernetes import client

    try:
        spec = coord.read_namespaced_lease(lease, namespace).spec
    except client.ApiException:
        return None
    renewed = spec.renew_time
    if not spec.holder_identity or renewed is None \
            or time.time() - renewed.timestamp() > (spec.lease_duration_seconds or 0):
        return None
    return str(spec.holder_identity)
