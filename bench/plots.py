"""Plots of the saved benchmark results (matplotlib, PNG under bench/results/).

- ``lateness-cdf.png``: lateness CDFs of the firing benchmarks (1,000 interval
  Schedules / 2 s, the cron mix, same-second bursts) and of the CronJob comparison;
- ``growth.png``: p50/p99 lateness against the number of Schedules at a fixed fire rate,
  and against load with 1 and 2 operator replicas.

Reads only what bench/*.py saved; a missing result is left out of its plot.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

RESULTS = Path(__file__).resolve().parent / "results"


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def cdf(ax: Any, values: list[float], label: str, **style: Any) -> None:
    xs = sorted(v for v in values if v == v)
    if xs:
        ax.plot([max(x, 0.1) for x in xs], [i / max(1, len(xs) - 1) for i in range(len(xs))],
                label=label, **style)


def save(fig: Any, axes: tuple[Any, ...], name: str) -> Path:
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    out = RESULTS / name
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


def lateness_cdfs() -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, label in (("firing-1000", "1,000 interval / 2 s (500 fires/s)"),
                        ("firing-cron-1000", "cron mix, 1,000"),
                        ("firing-burst-100", "100 due at one second"),
                        ("firing-burst-1000", "1,000 due at one second")):
        result = load(name)
        if result and "lateness_cdf_ms" in result:
            cdf(left, result["lateness_cdf_ms"], label)
    left.set(xscale="log", xlabel="lateness, scheduled time -> handler receipt (ms)",
             ylabel="fraction of runs", title="Schedules (one operator, 2 cores)")
    left.axvline(50, color="grey", linestyle=":", label="50 ms target")
    versus = load("vs-cronjob")
    for row in (versus or {}).get("results", []):
        for side, style in (("schedulezero", "-"), ("cronjob", "--")):
            if "lateness_ms" in row[side]:
                cdf(right, row[side]["lateness_ms"], f"{side}, N = {row['n']}",
                    linestyle=style)
    right.set(xscale="log", xlabel="lateness (ms; CronJob: Job creationTimestamp, 1 s steps)",
              title="N minute-crons due at one second: Schedule vs CronJob")
    return save(fig, (left, right), "lateness-cdf.png")


def growth() -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    data = load("growth")
    if data:
        rows = data["rows"]
        n = [r["schedules"] for r in rows]
        left.plot(n, [r["lateness_p50_ms"] for r in rows], "o-", label="p50")
        left.plot(n, [r["lateness_p99_ms"] for r in rows], "o-", label="p99")
        left.set(xscale="log", yscale="log", xlabel="Schedules (total rate fixed)",
                 ylabel="lateness (ms)", title=f"Growth at {data['rate']:g} fires/s")
    data = load("replicas")
    if data:
        for replicas, style in ((1, "o-"), (2, "s--")):
            rows = [r for r in data["rows"] if r["replicas"] == replicas]
            right.plot([r["fires_per_s"] for r in rows], [r["lateness_p99_ms"] for r in rows],
                       style, label=f"p99, {replicas} replica(s)")
        right.set(yscale="log", xlabel="fires/s", ylabel="lateness (ms)",
                  title="Scale-out on 2 cores (API server and etcd on the same cores)")
    return save(fig, (left, right), "growth.png")


def main() -> None:
    for out in (lateness_cdfs(), growth()):
        print(f"saved {out}")


if __name__ == "__main__":
    main()
