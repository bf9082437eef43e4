"""A large, mostly idle fleet: N Schedules already stored when the operator starts.

Measures what a restart or failover costs at scale: time from operator start until every
Schedule is armed (its own ``schedulezero_schedules_armed`` gauge), RSS once armed, and
idle CPU over a quiet window (hourly intervals: nothing fires during it). Twice: on a
fleet just created (no status yet), then again after a restart, when every Schedule
has the status the first operator wrote (``restart_*``).

    python bench/fleet.py --schedules 10000

Uses the cluster KUBECONFIG points at, else starts the local control plane. Prints and
writes bench/results/fleet-<N>.json. Not a test.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "hack")]

from kubernetes import client  # noqa: E402
from schedulezero_testcluster.cluster import free_port  # noqa: E402

from bench.cluster import control_plane  # noqa: E402
from bench.firing import proc_cpu_rss  # noqa: E402
from tests.e2e.operator_harness import HandlerProcess, OperatorProcess  # noqa: E402


def metric(port: int, prefix: str) -> float | None:
    """The first sample of the operator's own /metrics that starts with ``prefix``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith(prefix):
                    return float(line.rsplit(" ", 1)[1])
    except OSError:
        return None
    return None


def armed(port: int) -> float | None:
    return metric(port, "schedulezero_schedules_armed ")


def measure(work: Path, ns: str, args: argparse.Namespace) -> dict[str, Any]:
    """Start an operator on the stored fleet: until all armed, until its first writes
    settle, then RSS and CPU over the idle window. The operator is left running (in the
    result, under "operator") for the caller to stop."""
    port = free_port()
    operator = OperatorProcess(work / "operator.log", "-n", ns, "--metrics-port", str(port))
    started = time.time()
    operator.start()
    try:
        return {**watch(operator, port, started, args), "operator": operator}
    except BaseException:
        operator.stop()
        raise


def watch(operator: OperatorProcess, port: int, started: float,
          args: argparse.Namespace) -> dict[str, Any]:
    assert operator.proc is not None
    while (armed(port) or 0) < args.schedules:
        if time.time() - started > 600:
            raise RuntimeError(f"not all armed after 600 s: {armed(port)}")
        time.sleep(0.25)
    armed_s = time.time() - started
    # Idle means after the first claim write of every Schedule has landed (and its
    # watch echo was processed): until the write counter stops moving for 5 s.
    writes = 'schedulezero_status_writes_total{kind="schedules"}'
    last, still_since = metric(port, writes), time.time()
    while time.time() - still_since < 5:
        time.sleep(1)
        now_writes = metric(port, writes)
        if now_writes != last:
            last, still_since = now_writes, time.time()
    settled_s = time.time() - started
    cpu0, _ = proc_cpu_rss(operator.proc.pid)
    time.sleep(args.idle_seconds)
    cpu1, rss = proc_cpu_rss(operator.proc.pid)
    return {"all_armed_seconds": round(armed_s, 1),
            "first_claims_written_seconds": round(settled_s, 1),
            "status_writes": last, "rss_mib": round(rss, 1),
            "idle_cpu_percent": round(100 * (cpu1 - cpu0) / args.idle_seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=10000)
    parser.add_argument("--idle-seconds", type=float, default=30)
    parser.add_argument("--no-restart", dest="restart", action="store_false",
                        help="skip the second start (every Schedule with a stored status)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sz-fleet-"))
    with control_plane(work) as api:
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        ns = f"fleet-{int(time.time())}"
        core.create_namespace({"metadata": {"name": ns}})
        handler = HandlerProcess(work)
        handler.start()
        operator: OperatorProcess | None = None
        try:
            custom.create_namespaced_custom_object("schedulezero.io", "v1alpha1", ns,
                                                   "handlers", {
                "apiVersion": "schedulezero.io/v1alpha1", "kind": "Handler",
                "metadata": {"name": "h"}, "spec": {"endpoints": [handler.address]}})

            def create(i: int) -> None:
                custom.create_namespaced_custom_object("schedulezero.io", "v1alpha1", ns,
                                                       "schedules", {
                    "apiVersion": "schedulezero.io/v1alpha1", "kind": "Schedule",
                    "metadata": {"name": f"s{i:05d}"},
                    "spec": {"handler": "h", "method": "heartbeat", "interval": "1h"}})

            t0 = time.time()
            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                list(pool.map(create, range(args.schedules)))
            created_s = time.time() - t0
            first = measure(work, ns, args)
            operator = first.pop("operator")
            operator.stop()
            operator = None
            # A restart (or failover) is the common way an operator meets 10,000
            # Schedules: each has a stored status by then (claim, conditions, history).
            again = measure(work, ns, args) if args.restart else None
            if again is not None:
                operator = again.pop("operator")
            result = {
                "schedules": args.schedules, "create_seconds": round(created_s, 1),
                **first,
                **({f"restart_{k}": v for k, v in again.items()} if again else {}),
                "cpus": os.cpu_count(),
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        finally:
            if operator:
                operator.stop()
            handler.stop()
            subprocess.run(["kubectl", "delete", "namespace", ns, "--wait=false"],
                           capture_output=True)
    for k, v in result.items():
        print(f"{k:>18}: {v}")
    out = REPO / "bench" / "results" / f"fleet-{args.schedules}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"saved {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
