"""N minute-crons due at the same second: Kubernetes CronJobs vs ScheduleZero Schedules.

Both run in one go on the same local control plane (real etcd, kube-apiserver,
kube-controller-manager with its CronJob controller, our operator and an SDK handler):

- CronJob lateness = the Job's ``creationTimestamp`` - its scheduled time (annotation
  ``batch.kubernetes.io/cronjob-scheduled-timestamp``); the Jobs' pods may stay Pending —
  the controller's part is creating the Job. Second resolution (what the API stores).
- Schedule lateness = the handler's receipt - the slot (the handler's own clock).
- API writes per fire, from the API server's ``apiserver_request_total`` (mutating verbs)
  for CronJob's resources (cronjobs, jobs, pods, events) and for ours (schedules,
  handlers, events) — before and after the burst.

    python bench/vs_cronjob.py --n 10 100

Uses the cluster KUBECONFIG points at, else starts the local control plane. Prints a
table and writes bench/results/vs-cronjob.json. Not a test.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "hack")]

from kubernetes import client  # noqa: E402

from bench.cluster import (  # noqa: E402
    api_requests,
    control_plane,
    delta,
    pct,
    writes_by_resource,
)
from tests.e2e.operator_harness import HandlerProcess, OperatorProcess, ts  # noqa: E402

CRONJOB_SIDE = ("cronjobs", "jobs", "pods", "events")
OUR_SIDE = ("schedules", "handlers", "events")


def next_minute_in(min_lead: float) -> float:
    """The next minute boundary at least ``min_lead`` seconds away (unix time)."""
    now = time.time()
    boundary = (int(now) // 60 + 1) * 60
    return boundary if boundary - now >= min_lead else boundary + 60


def run(n: int, api: client.ApiClient, work: Path) -> dict[str, Any]:
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    batch = client.BatchV1Api(api)
    stamp = int(time.time())
    ns_cj, ns_sz = f"vs-cronjob-{n}-{stamp}", f"vs-sz-{n}-{stamp}"
    for ns in (ns_cj, ns_sz):
        core.create_namespace({"metadata": {"name": ns}})
    handler = HandlerProcess(work, concurrency=max(64, n))
    handler.argv += ["--log-level", "WARNING"]
    handler.start()
    operator = OperatorProcess(work / f"operator-{n}.log", "-n", ns_sz)
    operator.start()
    try:
        custom.create_namespaced_custom_object("schedulezero.io", "v1alpha1", ns_sz, "handlers", {
            "apiVersion": "schedulezero.io/v1alpha1", "kind": "Handler",
            "metadata": {"name": "h"},
            "spec": {"protocol": "zmq", "endpoints": [handler.address], "concurrency": n}})

        def create(i: int) -> None:
            batch.create_namespaced_cron_job(ns_cj, {
                "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": f"c{i:04d}"},
                "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {
                    "spec": {"restartPolicy": "Never", "containers": [{
                        "name": "job", "image": "busybox", "command": ["true"]}]}}}}}})
            custom.create_namespaced_custom_object("schedulezero.io", "v1alpha1", ns_sz,
                                                   "schedules", {
                "apiVersion": "schedulezero.io/v1alpha1", "kind": "Schedule",
                "metadata": {"name": f"s{i:04d}"},
                "spec": {"handler": "h", "method": "heartbeat", "schedule": "* * * * *"}})

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(create, range(n)))
        boundary = next_minute_in(15)
        time.sleep(max(0.0, boundary - time.time() - 5))
        before = writes_by_resource(api_requests(api), subresources=False)
        time.sleep(max(0.0, boundary + 40 - time.time()))
        after = writes_by_resource(api_requests(api), subresources=False)
        slot = dt.datetime.fromtimestamp(boundary, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        cj_late = []
        for job in batch.list_namespaced_job(ns_cj).items:
            scheduled = (job.metadata.annotations or {}).get(
                "batch.kubernetes.io/cronjob-scheduled-timestamp")
            if scheduled and ts(scheduled) == boundary:
                cj_late.append((job.metadata.creation_timestamp.timestamp() - boundary) * 1000)
        sz_late = [(r["receivedAt"] - boundary) * 1000 for r in handler.executions("heartbeat")
                   if r["scheduledTime"].startswith(slot[:-1])]
        moved = delta(after, before)
        cj_writes = sum(moved.get(k, 0) for k in CRONJOB_SIDE if k != "events")
        sz_writes = sum(moved.get(k, 0) for k in OUR_SIDE if k != "events")
        return {
            "n": n, "slot": slot,
            "cronjob": {"fired": len(cj_late), "p50_ms": pct(cj_late, 0.5),
                        "p99_ms": pct(cj_late, 0.99), "max_ms": max(cj_late, default=None),
                        "writes_per_fire": cj_writes / max(1, len(cj_late)),
                        "lateness_ms": sorted(cj_late)},
            "schedulezero": {"fired": len(sz_late), "p50_ms": pct(sz_late, 0.5),
                             "p99_ms": pct(sz_late, 0.99), "max_ms": max(sz_late, default=None),
                             "writes_per_fire": sz_writes / max(1, len(sz_late)),
                             "lateness_ms": sorted(sz_late)},
            "writes_by_resource": moved,
            "events_note": "Events are written by both sides and counted apart from the figures",
        }
    finally:
        operator.stop()
        handler.stop()
        for ns in (ns_cj, ns_sz):
            subprocess.run(["kubectl", "delete", "namespace", ns, "--wait=false"],
                           capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10, 100])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sz-vs-cronjob-"))
    with control_plane(work) as api:
        results = [run(n, api, work) for n in args.n]
    print(f"{'N':>5} {'side':<13} {'fired':>6} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9} "
          f"{'writes/fire':>12}")
    for r in results:
        for side in ("cronjob", "schedulezero"):
            f = r[side]
            worst = f["max_ms"] if f["max_ms"] is not None else float("nan")
            print(f"{r['n']:>5} {side:<13} {f['fired']:>6} {f['p50_ms']:>9.1f} "
                  f"{f['p99_ms']:>9.1f} {worst:>9.1f} "
                  f"{f['writes_per_fire']:>12.2f}")
        ratio = r["cronjob"]["p99_ms"] / max(r["schedulezero"]["p99_ms"], 1e-9)
        r["p99_ratio_cronjob_over_schedulezero"] = ratio
        # CronJob's side has one-second resolution (creationTimestamp): a 0 there means
        # "within the same second", not faster.
        print(f"{r['n']:>5} p99 CronJob / ScheduleZero: {ratio:.1f}x")
    out = REPO / "bench" / "results" / "vs-cronjob.json"
    out.write_text(json.dumps({"results": results, "cpus": os.cpu_count(),
                               "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                              indent=2))
    print(f"saved {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
