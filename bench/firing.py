"""Firing benchmark: N Schedules every P seconds on the local control plane.

Measures, from the handler's own receipts, fire lateness (scheduled time ->
handler receipt) p50/p99/max, missed and duplicated slots, and the API load
(status PATCHes counted by the API server's own metrics). The whole stack is
real: etcd, kube-apiserver, the operator process, an SDK handler process.

    python bench/firing.py --schedules 200 --period 2s --seconds 30

Uses the cluster KUBECONFIG points at, else starts the local control plane.
Prints a table and writes bench/results/firing-<N>.json. Not a test.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "hack")]

from kubernetes import client, config  # noqa: E402

from tests.e2e.operator_harness import HandlerProcess, OperatorProcess, ts  # noqa: E402


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def status_patches(api: client.ApiClient) -> int:
    resp = api.call_api("GET", f"{api.configuration.host}/metrics")
    raw = (resp.read() if hasattr(resp, "read") else resp.data).decode()
    total = 0
    for line in raw.splitlines():
        if line.startswith("apiserver_request_total{") and 'resource="schedules"' in line \
                and 'subresource="status"' in line and 'verb="PATCH"' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=200)
    parser.add_argument("--period", default="2s")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--warmup", type=float, default=10)
    args = parser.parse_args()
    period = float(re.sub("s$", "", args.period))
    work = Path(tempfile.mkdtemp(prefix="sz-bench-"))
    cluster = None
    if not os.environ.get("KUBECONFIG"):
        from schedulezero_testcluster import LocalCluster

        os.environ["PYTHONPATH"] = f"{REPO / 'hack'}:{REPO}"
        cluster = LocalCluster(work / "cluster")
        cluster.start()
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
    handler = operator = None
    try:
        subprocess.run(["kubectl", "apply", "-f", str(REPO / "crds")], check=True,
                       capture_output=True)
        time.sleep(2)
        config.load_kube_config(config_file=os.environ["KUBECONFIG"])
        api = client.ApiClient()
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        ns = f"bench-{int(time.time())}"
        core.create_namespace({"metadata": {"name": ns}})
        handler = HandlerProcess(work, concurrency=1024)
        handler.argv += ["--log-level", "WARNING"]
        handler.start()
        operator = OperatorProcess(work / "operator.log")
        operator.start()
        custom.create_namespaced_custom_object("schedulezero.io", "v1alpha1", ns, "handlers", {
            "apiVersion": "schedulezero.io/v1alpha1", "kind": "Handler",
            "metadata": {"name": "h"},
            "spec": {"protocol": "zmq", "endpoints": [handler.address], "concurrency": 1024}})

        def create(i: int) -> None:
            custom.create_namespaced_custom_object("schedulezero.io", "v1alpha1", ns,
                                                   "schedules", {
                "apiVersion": "schedulezero.io/v1alpha1", "kind": "Schedule",
                "metadata": {"name": f"s{i:05d}"},
                "spec": {"handler": "h", "method": "heartbeat", "interval": args.period}})

        t0 = time.time()
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(create, range(args.schedules)))
        created_s = time.time() - t0
        time.sleep(args.warmup)
        window_start = time.time()
        writes_before = status_patches(api)
        time.sleep(args.seconds)
        window_end = time.time()
        writes = status_patches(api) - writes_before
        time.sleep(2)  # let in-window runs land

        rows = handler.executions("heartbeat")
        in_window = [r for r in rows if window_start <= ts(r["scheduledTime"]) < window_end]
        lateness = [(r["receivedAt"] - ts(r["scheduledTime"])) * 1000 for r in in_window]
        run_ids = [r["runId"] for r in rows]
        duplicates = len(run_ids) - len(set(run_ids))
        slots_expected = 0
        # Interval slots are anchored at each Schedule's creation second.
        for r in {r["runId"].split("-")[0]: r for r in rows}.values():
            anchor = ts(r["scheduledTime"]) % period
            first = window_start + ((anchor - window_start) % period)
            slots_expected += int((window_end - first - 1e-9) // period) + 1
        result: dict[str, Any] = {
            "schedules": args.schedules, "period_s": period, "window_s": args.seconds,
            "fires_per_s": args.schedules / period, "runs_in_window": len(in_window),
            "slots_expected": slots_expected,
            "missed": max(0, slots_expected - len({r["runId"] for r in in_window})),
            "duplicates": duplicates, "lateness_p50_ms": pct(lateness, 0.5),
            "lateness_p99_ms": pct(lateness, 0.99),
            "lateness_max_ms": max(lateness) if lateness else float("nan"),
            "status_patches": writes, "patches_per_run": writes / max(1, len(in_window)),
            "create_seconds": created_s, "cpus": os.cpu_count(),
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        for k, v in result.items():
            print(f"{k:>18}: {v:.2f}" if isinstance(v, float) else f"{k:>18}: {v}")
        out = REPO / "bench" / "results" / f"firing-{args.schedules}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        print(f"saved {out.relative_to(REPO)}")
    finally:
        if operator:
            operator.stop()
        if handler:
            handler.stop()
        if cluster:
            cluster.stop()


if __name__ == "__main__":
    main()
