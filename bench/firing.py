"""Firing benchmark: N Schedules on the local control plane, any trigger mix.

Measures, from the handler's own receipts, fire lateness (scheduled time ->
handler receipt) p50/p99/max, missed and duplicated slots, the API load (writes
counted by the API server's own metrics, by resource) and the operator's CPU and RSS.

API writes are attributed. Before any operator starts, the control plane alone is
measured for ``--baseline`` seconds (its node agent's heartbeats, its own Leases);
that rate is taken off the window's writes, per resource, which leaves the
operator's. Of those, its Lease renewals are a fixed cost per second (one per held
Lease each ``leaseRenewSeconds``, however many Schedules fire) and are reported
apart, as writes per second; everything else (status, Events) is the cost per fire.
The whole stack is real: etcd, kube-apiserver, the operator process, an SDK
handler process. Mixes (``--mix``):

- ``interval``: every Schedule ``interval: <period>``;
- ``cron``: a third ``interval: 2s``, a third ``*/2 * * * * *`` (6-field cron),
  a third ``* * * * *`` — the last third all due at second 0 of each minute; half of
  each cron third has a DST ``timeZone`` (``CRON_ZONES``), so zoned next-fire math
  is on the path too (their offsets are whole half hours: same instants as UTC);
- ``burst``: every Schedule ``* * * * *``: N runs due at the same second; reports
  the spread between the first and the last receipt of each burst.

    python bench/firing.py --schedules 200 --period 2s --seconds 30
    python bench/firing.py --schedules 1000 --mix cron --seconds 70
    python bench/firing.py --schedules 100 --mix burst --seconds 60

Uses the cluster KUBECONFIG points at, else starts the local control plane.
Prints a table and writes bench/results/firing-<mix>-<N>.json. Not a test.
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
from tests.faults.ledger import control_plane_pids  # noqa: E402


def status_patches(counts: dict[tuple[str, str, str], int]) -> int:
    """Schedule status PATCHes in ``counts`` (from ``api_requests``)."""
    return sum(n for (verb, resource, sub), n in counts.items()
               if verb == "PATCH" and resource == "schedules" and sub == "status")


# What the operator writes (with RBAC to match); anything else in the window (nodes,
# endpoints) is the control plane's own.
OPERATOR_RESOURCES = ("schedules", "handlers", "events", "leases", "deployments")


def attribute_writes(window: dict[str, int], window_s: float, baseline: dict[str, int],
                     baseline_s: float, fires: int) -> dict[str, Any]:
    """The operator's share of the window's writes: its resources only, less the
    control plane's own rate on them (from the baseline: its Leases, its Events);
    Lease renewals are counted apart."""
    operator = {k: max(0.0, n - baseline.get(k, 0) * window_s / baseline_s)
                for k, n in window.items() if k.split("/")[0] in OPERATOR_RESOURCES}
    leases = operator.get("leases", 0.0)
    per_fire = sum(operator.values()) - leases
    return {
        "control_plane_writes_per_s": {k: n / baseline_s for k, n in baseline.items()},
        "operator_writes": {k: round(n, 1) for k, n in operator.items() if n >= 0.5},
        "operator_writes_per_fire": sum(operator.values()) / max(1, fires),
        "operator_writes_per_fire_without_leases": per_fire / max(1, fires),
        "operator_lease_writes_per_s": leases / window_s,
    }


# Zones with daylight saving time for the cron mix: Berlin shifts by an hour, Lord
# Howe by half an hour.
CRON_ZONES = ("Europe/Berlin", "Australia/Lord_Howe")


def spec_for(mix: str, i: int, period: str) -> dict[str, Any]:
    base: dict[str, Any] = {"handler": "h", "method": "heartbeat"}
    if mix == "burst":
        return {**base, "schedule": "* * * * *"}
    if mix == "cron" and i % 3:
        cron = {**base, "schedule": "* * * * *" if i % 3 == 2 else "*/2 * * * * *"}
        if (i // 3) % 2:
            cron["timeZone"] = CRON_ZONES[i % 3 - 1]
        return cron
    return {**base, "interval": period if mix == "interval" else "2s"}


def trigger_label(spec: dict[str, Any]) -> str:
    if "interval" in spec:
        return f"interval {spec['interval']}"
    zone = spec.get("timeZone")
    return f"{spec['schedule']} {zone}" if zone else str(spec["schedule"])


def expected_slots(spec: dict[str, Any], created: float, start: float, end: float) -> int:
    """Nominal slots in [start, end), by plain arithmetic (not the operator's timing code)."""
    if "interval" in spec:
        step, anchor = float(spec["interval"].rstrip("s")), created
    elif spec["schedule"] == "*/2 * * * * *":
        step, anchor = 2.0, 0.0
    else:
        step, anchor = 60.0, 0.0
    first = start + ((anchor - start) % step)
    return 0 if first >= end else int((end - first - 1e-9) // step) + 1


def proc_cpu_rss(pid: int) -> tuple[float, float]:
    """(CPU seconds, RSS MiB) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return cpu, rss


def machine_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat: the share the API
    server, etcd and the handler take beside the operator (2 cores here)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def process_roles(handler: HandlerProcess) -> dict[str, int]:
    """The processes besides the operator that share the cores: what the machine's CPU
    goes to when the operator is not the ceiling."""
    roles = {"handler": handler.proc.pid if handler.proc else 0, "bench": os.getpid()}
    kubeconfig = os.environ.get("KUBECONFIG")
    found = control_plane_pids(kubeconfig) if kubeconfig else None
    if found:
        roles["kube-apiserver"], roles["etcd"] = found
    return {role: pid for role, pid in roles.items() if pid}


def drain(handler: HandlerProcess, window_end: float, limit: float = 30.0) -> None:
    """Wait until the window's late runs have landed: the handler has received a run
    scheduled a second past the window, and a second more has passed (so a slow run
    counts as late, not missed). Reads only the record's tail."""
    deadline = time.time() + limit
    while time.time() < deadline:
        if handler.record.exists():
            with handler.record.open("rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 65536))
                lines = f.read().splitlines()[1:]
            times = [ts(json.loads(line)["scheduledTime"]) for line in lines
                     if b'"scheduledTime": "' in line]
            if times and max(times) >= window_end + 1:
                time.sleep(1)
                return
        time.sleep(0.25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=200)
    parser.add_argument("--period", default="2s")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds between creating the Schedules and the window (default "
                        "10 + N / 50: every new Schedule's first status write is done by "
                        "then at the operator's default 50 writes/s; counted in the window "
                        "they made a 1,000-burst look like 1.3 PATCH per run)")
    parser.add_argument("--mix", choices=["interval", "cron", "burst"], default="interval")
    parser.add_argument("--replicas", type=int, default=1,
                        help="operator replicas, elected as the chart runs them (>1: "
                        "sharded into 4 buckets per replica)")
    parser.add_argument("--baseline", type=float, default=20,
                        help="seconds the control plane is measured alone, before any "
                        "operator starts (its own writes are taken off the operator's)")
    parser.add_argument("--name", help="results file stem (default firing-<mix>-<N>)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sz-bench-"))
    with control_plane(work) as api:
        bench(args, work, api)


def bench(args: argparse.Namespace, work: Path, api: client.ApiClient) -> dict[str, Any]:
    handler = None
    operators: list[OperatorProcess] = []
    ns: str | None = None
    try:
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        ns = f"bench-{int(time.time())}"
        core.create_namespace({"metadata": {"name": ns}})
        handler = HandlerProcess(work, concurrency=1024)
        handler.argv += ["--log-level", "WARNING"]
        handler.start()
        baseline_s = getattr(args, "baseline", 20.0)
        baseline_before = writes_by_resource(api_requests(api))
        time.sleep(baseline_s)
        baseline = delta(writes_by_resource(api_requests(api)), baseline_before)
        replicas = getattr(args, "replicas", 1)
        for i in range(replicas):
            # Elected as the chart runs it (one bucket per replica; four each when
            # sharded, so buckets can move).
            extra = ["--leader-elect", "--buckets", str(4 * replicas if replicas > 1 else 1),
                     "--lease-namespace", ns, "--lease-name", "sz-bench"]
            operators.append(OperatorProcess(work / f"operator-{i}.log", *extra))
            operators[-1].start()
        custom.create_namespaced_custom_object("schedulezero.io", "v1alpha1", ns, "handlers", {
            "apiVersion": "schedulezero.io/v1alpha1", "kind": "Handler",
            "metadata": {"name": "h"},
            "spec": {"protocol": "zmq", "endpoints": [handler.address], "concurrency": 1024}})

        specs = {f"s{i:05d}": spec_for(args.mix, i, args.period) for i in range(args.schedules)}
        created: dict[str, float] = {}

        def create(name: str) -> None:
            obj = custom.create_namespaced_custom_object(
                "schedulezero.io", "v1alpha1", ns, "schedules", {
                    "apiVersion": "schedulezero.io/v1alpha1", "kind": "Schedule",
                    "metadata": {"name": name}, "spec": specs[name]})
            created[name] = ts(obj["metadata"]["creationTimestamp"])

        t0 = time.time()
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(create, specs))
        created_s = time.time() - t0
        time.sleep(args.warmup if args.warmup is not None else 10 + args.schedules / 50)
        pids = [op.proc.pid for op in operators if op.proc is not None]
        others = process_roles(handler)
        seconds = args.seconds
        if args.mix == "burst":
            # Whole minutes from second 30: each burst (second 0) and its status writes
            # (1,000 at the 50/s budget take 20 s) fall inside the window, and the writes
            # of the burst before it are done before it opens. Unaligned, a window could
            # hold two bursts and only the first one's writes, or one burst and the tail
            # of the previous one's (0.51 or 1.23 PATCH per run for the same operator).
            seconds = max(60.0, round(seconds / 60) * 60)
            time.sleep((30 - time.time()) % 60)
        window_start = time.time()
        counts_before = api_requests(api)  # one reading per edge for every write figure
        usage_before = [proc_cpu_rss(pid) for pid in pids]
        others_before = {role: proc_cpu_rss(pid)[0] for role, pid in others.items()}
        machine_before = machine_cpu()
        time.sleep(seconds)
        machine_after = machine_cpu()
        window_end = time.time()
        counts_after = api_requests(api)
        window_writes = delta(writes_by_resource(counts_after),
                              writes_by_resource(counts_before))
        writes = status_patches(counts_after) - status_patches(counts_before)
        all_writes = sum(window_writes.values())
        usage_after = [proc_cpu_rss(pid) for pid in pids]
        others_after = {role: proc_cpu_rss(pid)[0] for role, pid in others.items()}
        cpu_before = sum(c for c, _ in usage_before)
        cpu_after = sum(c for c, _ in usage_after)
        rss_before = sum(r for _, r in usage_before)
        rss_after = sum(r for _, r in usage_after)
        drain(handler, window_end)

        rows = handler.executions("heartbeat")
        in_window = [r for r in rows if window_start <= ts(r["scheduledTime"]) < window_end]
        lateness = [(r["receivedAt"] - ts(r["scheduledTime"])) * 1000 for r in in_window]
        # The operator's share: slot -> the start time it gave the job (its deadline
        # minus the default 60 s timeout, at millisecond precision): the dispatch time,
        # or the slot itself for a job sent ahead and held (--dispatch-lead).
        dispatched = [(ts(r["deadline"]) - 60 - ts(r["scheduledTime"])) * 1000
                      for r in in_window if r.get("deadline")]
        run_ids = [r["runId"] for r in rows]
        duplicates = len(run_ids) - len(set(run_ids))
        slots_expected = sum(expected_slots(specs[name], created[name], window_start,
                                            window_end) for name in specs)
        ran = {(r["schedule"], r["scheduledTime"]) for r in in_window}
        by_kind: dict[str, list[float]] = {}
        for r, late in zip(in_window, lateness, strict=True):
            spec = specs[r["schedule"].split("/", 1)[1]]
            by_kind.setdefault(trigger_label(spec), []).append(late)
        bursts: dict[str, list[float]] = {}
        for r in in_window:
            if specs[r["schedule"].split("/", 1)[1]].get("schedule") == "* * * * *":
                bursts.setdefault(r["scheduledTime"], []).append(r["receivedAt"])
        spreads = [(max(v) - min(v)) * 1000 for v in bursts.values()]
        result: dict[str, Any] = {
            "mix": args.mix, "schedules": args.schedules, "window_s": seconds,
            "fires_per_s": len(in_window) / seconds, "runs_in_window": len(in_window),
            "slots_expected": slots_expected,
            "missed": max(0, slots_expected - len(ran)),
            "duplicates": duplicates, "lateness_p50_ms": pct(lateness, 0.5),
            "lateness_p99_ms": pct(lateness, 0.99),
            "lateness_max_ms": max(lateness) if lateness else float("nan"),
            "dispatch_p50_ms": pct(dispatched, 0.5), "dispatch_p99_ms": pct(dispatched, 0.99),
            "by_trigger": {k: {"runs": len(v), "p50_ms": pct(v, 0.5), "p99_ms": pct(v, 0.99),
                               "max_ms": max(v)} for k, v in by_kind.items()},
            "minute_bursts": len(spreads),
            "burst_spread_max_ms": max(spreads) if spreads else None,
            "status_patches": writes, "patches_per_run": writes / max(1, len(in_window)),
            "api_writes": all_writes, "api_writes_per_fire": all_writes / max(1, len(in_window)),
            "writes_by_resource": window_writes,
            **attribute_writes(window_writes, window_end - window_start, baseline, baseline_s,
                               len(in_window)),
            "operator_cpu_percent": 100 * (cpu_after - cpu_before) / (window_end - window_start),
            "operator_rss_mib": rss_after, "operator_rss_start_mib": rss_before,
            "create_seconds": created_s, "cpus": os.cpu_count(), "replicas": len(operators),
            "machine_cpu_percent": 100 * (machine_after[0] - machine_before[0])
            / max(1, machine_after[1] - machine_before[1]),
            "process_cpu_percent": {
                role: 100 * (others_after[role] - others_before[role]) / (window_end - window_start)
                for role in others},
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        for k, v in result.items():
            if k == "process_cpu_percent":
                print(f"{k:>22}: " + ", ".join(f"{role} {c:.1f}" for role, c in v.items()))
                continue
            if k in ("writes_by_resource", "control_plane_writes_per_s", "operator_writes"):
                print(f"{k:>22}: " + ", ".join(
                    f"{resource} {n:.2f}" if isinstance(n, float) else f"{resource} {n}"
                    for resource, n in v.items()))
                continue
            if isinstance(v, dict):
                for kind, f in v.items():
                    print(f"{'':>18}  {kind:<22} runs {f['runs']:>6}  p50 {f['p50_ms']:8.1f} ms"
                          f"  p99 {f['p99_ms']:8.1f} ms  max {f['max_ms']:8.1f} ms")
                continue
            print(f"{k:>22}: {v:.2f}" if isinstance(v, float) else f"{k:>22}: {v}")
        result["lateness_cdf_ms"] = [pct(lateness, q / 200) for q in range(201)]
        name = getattr(args, "name", None) or (
            f"firing-{args.schedules}" if args.mix == "interval"
            else f"firing-{args.mix}-{args.schedules}")
        out = REPO / "bench" / "results" / f"{name}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        print(f"saved {out.relative_to(REPO)}")
        return result
    finally:
        if ns is not None:  # leave the cluster as found (an operator elsewhere would fire them)
            subprocess.run(["kubectl", "delete", "namespace", ns, "--wait=false"],
                           capture_output=True)
        for op in operators:
            op.stop()
        if handler:
            handler.stop()


if __name__ == "__main__":
    main()
