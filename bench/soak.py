"""Soak: two operator replicas under steady load while handler pods and leaders die.

``make soak`` (not in CI): 200 Schedules every 2 s (100 fires/s) against a 3-pod
Deployment-backed Handler; a random handler pod is deleted every 30 s and the leader is
killed (SIGKILL) every 2 minutes, then restarted as the standby. Verdicts from the
handlers' own ledger (run ids they executed): duplicated and lost slots. Also: operator
RSS over time (start, end, slope per process), status object sizes, API writes per fire
from the API server's own counters. Prints a table, saves bench/results/soak.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from kubernetes import client

sys.path[:0] = [str(Path(__file__).resolve().parents[1]),
                str(Path(__file__).resolve().parents[1] / "hack")]
from bench.cluster import (  # noqa: E402
    REPO,
    api_requests,
    control_plane,
    delta,
    writes_by_resource,
)
from bench.firing import proc_cpu_rss  # noqa: E402
from tests.e2e.operator_harness import OperatorProcess, read_records, ts  # noqa: E402
from tests.e2e.test_handler_workloads import ready_pods, template  # noqa: E402

PREFIX = "sz-soak"


def slope_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (time s, RSS MiB) samples, in MiB per minute."""
    if len(samples) < 3:
        return float("nan")
    xs, ys = [t for t, _ in samples], [r for _, r in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 60 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den


def leader(coord: client.CoordinationV1Api, ns: str) -> str | None:
    try:
        return str(coord.read_namespaced_lease(f"{PREFIX}-bucket-0", ns).spec.holder_identity)
    except client.ApiException:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--schedules", type=int, default=200)
    parser.add_argument("--pod-kill-every", type=float, default=30)
    parser.add_argument("--leader-kill-every", type=float, default=120)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sz-soak-"))
    with control_plane(work) as api:
        soak(args, work, api)


def soak(args: argparse.Namespace, work: Path, api: client.ApiClient) -> None:
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    coord = client.CoordinationV1Api(api)
    ns = f"soak-{int(time.time())}"
    core.create_namespace({"metadata": {"name": ns}})
    record = work / "executions.jsonl"
    serial = iter(range(10_000))
    replicas: list[OperatorProcess] = []
    rss: dict[int, list[tuple[float, float]]] = {}

    def replica() -> OperatorProcess:
        op = OperatorProcess(work / f"operator-{next(serial)}.log", "--leader-elect",
                             "--lease-namespace", ns, "--lease-name", PREFIX)
        op.start()
        replicas.append(op)
        return op

    try:
        replica(), replica()
        custom.create_namespaced_custom_object("schedulezero.io", "v1alpha1", ns, "handlers", {
            "apiVersion": "schedulezero.io/v1alpha1", "kind": "Handler",
            "metadata": {"name": "pods"},
            "spec": {"protocol": "zmq", "concurrency": 512, "template": template(record),
                     "scaling": {"minReplicas": 3, "maxReplicas": 3}}})
        deadline = time.time() + 120
        while len(ready_pods(core, ns, "pods")) < 3:
            if time.time() > deadline:
                raise SystemExit("handler pods not Ready in 120 s")
            time.sleep(1)
        names = [f"s{i:04d}" for i in range(args.schedules)]
        for name in names:
            custom.create_namespaced_custom_object(
                "schedulezero.io", "v1alpha1", ns, "schedules", {
                    "apiVersion": "schedulezero.io/v1alpha1", "kind": "Schedule",
                    "metadata": {"name": name},
                    "spec": {"handler": "pods", "method": "heartbeat", "interval": "2s",
                             "timeoutSeconds": 5, "catchUp": {"policy": "All", "maxRuns": 60},
                             "retry": {"maxAttempts": 10,
                                       "backoff": {"initial": "200ms", "max": "2s"}}}})
        time.sleep(15)  # every Schedule armed and firing
        print(f"soak: {args.schedules} Schedules / 2 s, {args.minutes} min, pod kill every "
              f"{args.pod_kill_every:g} s, leader kill every {args.leader_kill_every:g} s",
              flush=True)
        rng = random.Random(11)
        start = time.time()
        requests_before = api_requests(api)
        next_pod, next_leader = start + args.pod_kill_every, start + args.leader_kill_every
        pod_kills = leader_kills = 0
        sizes: list[int] = []
        while (now := time.time()) < start + args.minutes * 60:
            for op in replicas:
                if op.proc is not None and op.proc.poll() is None:
                    rss.setdefault(op.proc.pid, []).append(
                        (now - start, proc_cpu_rss(op.proc.pid)[1]))
            sample = rng.sample(names, 5)
            sizes += [len(json.dumps(custom.get_namespaced_custom_object(
                "schedulezero.io", "v1alpha1", ns, "schedules", n))) for n in sample]
            if now >= next_pod:
                pods = [p for p in core.list_namespaced_pod(
                    ns, label_selector="schedulezero.io/handler=pods").items
                    if p.metadata.deletion_timestamp is None]
                if pods:
                    core.delete_namespaced_pod(rng.choice(pods).metadata.name, ns)
                    pod_kills += 1
                next_pod += args.pod_kill_every
            if now >= next_leader:
                holder = leader(coord, ns)
                victim = next((op for op in replicas if op.proc is not None and holder
                               and holder.endswith(f"-{op.proc.pid}")), None)
                if victim is not None:
                    victim.stop(signal.SIGKILL)
                    replicas.remove(victim)
                    replica()
                    leader_kills += 1
                next_leader += args.leader_kill_every
            print(f"  t={now - start:5.0f} s  runs {len(read_records(record, 'heartbeat')):>7}"
                  f"  pod kills {pod_kills}  leader kills {leader_kills}", flush=True)
            time.sleep(10)
        end = time.time()
        requests_after = api_requests(api)
        time.sleep(20)  # retries and catch-up of the last kills land
        rows = read_records(record, "heartbeat")
        counts = Counter(r["runId"] for r in rows)
        duplicated = sum(n - 1 for n in counts.values() if n > 1)
        lost = 0
        for name in names:
            slots = sorted({ts(r["scheduledTime"]) for r in rows
                            if r["schedule"].endswith(f"/{name}")
                            and start <= ts(r["scheduledTime"]) < end})
            if slots:
                lost += round((slots[-1] - slots[0]) / 2) + 1 - len(slots)
            else:
                lost += int((end - start) / 2)
        window = [r for r in rows if start <= ts(r["scheduledTime"]) < end]
        writes = delta(writes_by_resource(requests_after), writes_by_resource(requests_before))
        per_process = {str(pid): {"start_mib": s[0][1], "end_mib": s[-1][1],
                                  "minutes": (s[-1][0] - s[0][0]) / 60,
                                  "slope_mib_per_min": slope_per_min(s)}
                       for pid, s in rss.items()}
        longest = max(rss.values(), key=len)
        result: dict[str, Any] = {
            "minutes": args.minutes, "schedules": args.schedules,
            "fires_per_s": len(window) / (end - start), "runs": len(window),
            "duplicated": duplicated, "lost_slots": lost,
            "pod_kills": pod_kills, "leader_kills": leader_kills,
            "operator_rss_start_mib": longest[0][1], "operator_rss_end_mib": longest[-1][1],
            "operator_rss_slope_mib_per_min": slope_per_min(longest),
            "operator_processes": per_process,
            "status_bytes_p50": statistics.median(sizes), "status_bytes_max": max(sizes),
            "api_writes": writes, "api_writes_per_fire": sum(writes.values()) / max(1, len(window)),
            "cpus": os.cpu_count(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        for k, v in result.items():
            if not isinstance(v, dict):
                print(f"{k:>32}: {v:.2f}" if isinstance(v, float) else f"{k:>32}: {v}")
        print(f"{'api writes by resource':>32}: {writes}")
        out = REPO / "bench" / "results" / "soak.json"
        out.write_text(json.dumps(result, indent=2))
        print(f"saved {out.relative_to(REPO)}")
    finally:
        import subprocess

        subprocess.run(["kubectl", "delete", "namespace", ns, "--wait=false"],
                       capture_output=True)
        for op in replicas:
            op.stop()


if __name__ == "__main__":
    main()
