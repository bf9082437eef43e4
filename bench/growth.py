"""Growth and scale-out: lateness as the number of Schedules grows at a fixed fire rate,
and one operator replica against two at rising load.

- ``--kind growth`` (default): 100 -> 1,000 -> 10,000 interval Schedules, each set
  firing ``--rate`` times per second in total (periods N / rate: 1 s, 10 s, 100 s), so
  only the number of objects changes. Target: p99 grows <= 2x from 100 to 10,000.
- ``--kind replicas``: 200, 500, 1,000 Schedules every 2 s (100, 250, 500 fires/s) with
  1 replica, then with 2 (``--leader-elect``, 8 buckets). On 2 cores the API server,
  etcd, the handler and the operators share the machine: the machine CPU is reported.

Each point is bench/firing.py's measurement (handler receipts, API server counters);
prints a table and writes bench/results/growth.json or replicas.json (plots:
bench/plots.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "hack")]

from bench.cluster import control_plane  # noqa: E402
from bench.firing import bench  # noqa: E402

KEEP = ("schedules", "replicas", "fires_per_s", "runs_in_window", "missed", "duplicates",
        "lateness_p50_ms", "lateness_p99_ms", "lateness_max_ms", "patches_per_run",
        "operator_cpu_percent", "operator_rss_mib", "machine_cpu_percent", "lateness_cdf_ms")


def points(kind: str, rate: float) -> list[dict[str, Any]]:
    if kind == "growth":
        return [{"schedules": n, "period": f"{n / rate:g}s", "replicas": 1,
                 "seconds": max(30.0, 2 * n / rate), "warmup": 15 + n / 500,
                 "name": f"growth-{n}"} for n in (100, 1000, 10_000)]
    return [{"schedules": n, "period": "2s", "replicas": r, "seconds": 30.0,
             "warmup": 15.0, "name": f"replicas-{r}-{n}"}
            for r in (1, 2) for n in (200, 500, 1000)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=["growth", "replicas"], default="growth")
    parser.add_argument("--rate", type=float, default=100.0, help="fires/s (growth)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix=f"sz-{args.kind}-"))
    rows = []
    with control_plane(work) as api:
        for p in points(args.kind, args.rate):
            print(f"\n== {p['name']}: {p['schedules']} Schedules every {p['period']}, "
                  f"{p['replicas']} replica(s)", flush=True)
            ns = argparse.Namespace(mix="interval", **p)
            result = bench(ns, work, api)
            rows.append({k: result[k] for k in KEEP if k in result} | {"period": p["period"]})
    print(f"\n{'N':>6} {'rep':>3} {'fires/s':>8} {'p50 ms':>8} {'p99 ms':>9} {'max ms':>9} "
          f"{'missed':>6} {'dup':>4} {'op CPU%':>8} {'box CPU%':>8} {'RSS MiB':>8}")
    for r in rows:
        print(f"{r['schedules']:>6} {r['replicas']:>3} {r['fires_per_s']:>8.1f} "
              f"{r['lateness_p50_ms']:>8.1f} {r['lateness_p99_ms']:>9.1f} "
              f"{r['lateness_max_ms']:>9.1f} {r['missed']:>6} {r['duplicates']:>4} "
              f"{r['operator_cpu_percent']:>8.1f} {r['machine_cpu_percent']:>8.1f} "
              f"{r['operator_rss_mib']:>8.1f}")
    if args.kind == "growth":
        ratio = rows[-1]["lateness_p99_ms"] / rows[0]["lateness_p99_ms"]
        print(f"p99 growth 100 -> 10,000: {ratio:.2f}x (target <= 2x)")
    out = REPO / "bench" / "results" / f"{args.kind}.json"
    out.write_text(json.dumps({"rate": args.rate, "rows": rows}, indent=2))
    print(f"saved {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
