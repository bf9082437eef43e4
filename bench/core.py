"""Firing-core benchmark: the operator's per-fire cost, without an API server.

The real ``Engine`` and ``Dispatcher`` in this process fire N Schedules, all due
at the same instant every period, over ZMQ at a real SDK handler process; the API
server is replaced by the in-memory fake of the unit tests (``tests/fakes.py``),
so what is measured is the firing core alone: how long a burst takes to leave
(slot -> dispatch call, from each job's deadline), how late it reaches the
handler (slot -> handler receipt), and the CPU per fire of this process (which
includes the fake API server's share, ~50 status writes/s). ``bench/firing.py``
measures the whole stack; this one isolates what the firing core can do, to
profile and optimise it (``--profile`` saves a cProfile of the firing window).

    python bench/core.py --schedules 500 --period 2s --seconds 20

Prints a table and writes bench/results/core-<N>.json. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "hack"), str(REPO / "operator"),
                str(REPO / "handler_sdk")]

from schedulezero_operator.dispatch import Dispatcher  # noqa: E402
from schedulezero_operator.engine.clock import SystemClock  # noqa: E402
from schedulezero_operator.engine.engine import DISPATCH_LEAD  # noqa: E402

from bench.cluster import pct  # noqa: E402
from tests.e2e.operator_harness import HandlerProcess, ts  # noqa: E402
from tests.fakes import FakeKube  # noqa: E402
from tests.unit.engine.harness import Operator  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def fire(args: argparse.Namespace, handler: HandlerProcess) -> dict[str, Any]:
    clock = SystemClock()
    kube = FakeKube(clock)  # type: ignore[arg-type]  # only now() is used
    kube.create("handlers", "h", {"protocol": "zmq", "endpoints": [handler.address],
                                  "concurrency": 1024})
    period = float(args.period.rstrip("s"))
    anchor = dt.datetime.fromtimestamp(int(time.time()), dt.UTC)
    for i in range(args.schedules):
        kube.create("schedules", f"s{i:05d}", {"handler": "h", "method": "heartbeat",
                                               "interval": args.period}, created=anchor)
    profile = cProfile.Profile() if args.profile else None
    async with Operator(kube, Dispatcher(), write_rate=50.0,
                        dispatch_lead=args.dispatch_lead) as op:
        # As the chart runs it: elected (one bucket, held), so firing never waits for
        # a claim write (see Engine.set_fence).
        op.engine.set_fence(lambda namespace, name: True)
        await asyncio.sleep(args.warmup)
        start, cpu0 = time.time(), time.process_time()
        handler_cpu0 = cpu_seconds(handler.proc.pid) if handler.proc else 0.0
        if profile:
            profile.enable()
        await asyncio.sleep(args.seconds)
        if profile:
            profile.disable()
        end, cpu1 = time.time(), time.process_time()
        handler_cpu1 = cpu_seconds(handler.proc.pid) if handler.proc else 0.0
        await asyncio.sleep(min(5.0, period + 1))  # late runs reach the handler
        del op
    rows = [r for r in handler.executions("heartbeat")
            if start <= ts(r["scheduledTime"]) < end]
    bursts: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        slot = ts(r["scheduledTime"])
        sent = (ts(r["deadline"]) - 60 - slot) * 1000
        bursts.setdefault(r["scheduledTime"], []).append((sent, (r["receivedAt"] - slot) * 1000))
    lateness = [late for v in bursts.values() for _, late in v]
    dispatched = [sent for v in bursts.values() for sent, _ in v]
    last_sent = [max(s for s, _ in v) for v in bursts.values()]
    fires = len(rows)
    per_burst = []
    for slot, v in sorted(bursts.items()):
        sent, got = sorted(x for x, _ in v), sorted(y for _, y in v)
        per_burst.append({"slot": slot, "runs": len(v), "first_dispatch_ms": sent[0],
                          "last_dispatch_ms": sent[-1], "receipt_p50_ms": pct(got, 0.5),
                          "receipt_max_ms": got[-1]})
    if profile:
        out = REPO / "bench" / "results" / f"core-{args.schedules}.prof"
        profile.dump_stats(out)
        print(f"profile saved to {out.relative_to(REPO)}")
    return {
        "schedules": args.schedules, "period_s": period, "window_s": args.seconds,
        "dispatch_lead_s": args.dispatch_lead, "bursts": len(bursts), "runs": fires,
        "runs_expected": int(args.seconds // period) * args.schedules,
        "lateness_p50_ms": pct(lateness, 0.5), "lateness_p99_ms": pct(lateness, 0.99),
        "lateness_max_ms": max(lateness, default=float("nan")),
        "dispatch_p50_ms": pct(dispatched, 0.5), "dispatch_p99_ms": pct(dispatched, 0.99),
        "burst_last_dispatch_median_ms": statistics.median(last_sent) if last_sent else None,
        "operator_cpu_us_per_fire": 1e6 * (cpu1 - cpu0) / max(1, fires),
        "handler_cpu_us_per_fire": 1e6 * (handler_cpu1 - handler_cpu0) / max(1, fires),
        "per_burst": per_burst,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=500)
    parser.add_argument("--period", default="2s")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--dispatch-lead", type=float, default=DISPATCH_LEAD,
                        help="seconds runs are sent ahead of their slot (0 = off)")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile the firing window (bench/results/core-<N>.prof)")
    parser.add_argument("--name", default=None, help="results file stem")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        handler = HandlerProcess(Path(tmp), concurrency=1024)
        handler.start()
        try:
            result = asyncio.run(fire(args, handler))
        finally:
            handler.stop()
    for b in result["per_burst"]:
        print(f"  burst {b['slot']}: {b['runs']} runs, dispatched {b['first_dispatch_ms']:.0f}"
              f"-{b['last_dispatch_ms']:.0f} ms, received p50 {b['receipt_p50_ms']:.0f} "
              f"max {b['receipt_max_ms']:.0f} ms")
    for k, v in result.items():
        if k == "per_burst":
            continue
        print(f"{k:>30}: {v:.2f}" if isinstance(v, float) else f"{k:>30}: {v}")
    out = REPO / "bench" / "results" / f"{args.name or f'core-{args.schedules}'}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"saved {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
