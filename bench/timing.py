"""Trigger-math benchmark: next-fire computations per second, new vs croniter vs old.

For each trigger, on one core: the compiled code (``timing.next_fire``), croniter
constructed per call (what the old code did), croniter with one reused iterator,
and the old walker (croniter from 3 h back + Vixie DST mapping, copied below).
Two loops: *chained* (``t = next_fire(trigger, t)``, restarted from the row's
start instants every ``chain`` calls) and *random* (``after`` spread uniformly
over 2026). Also the cold cost: parse + first next_fire with every cache empty
(for a zone: finding its offset changes for the year).

Prints a table and writes bench/results/timing.json. Not a test: nothing here
asserts; it measures.

    python bench/timing.py [--seconds 0.5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
sys.path[:0] = [str(REPO / "operator"), str(REPO)]

from croniter import croniter  # noqa: E402
from schedulezero_operator.timing import (  # noqa: E402
    Trigger,
    compile_cron,
    cron_schedule,
    next_fire,
    parse_trigger,
)
from schedulezero_operator.timing.zones import timeline  # noqa: E402

from tests.oracles import old_next_fire  # noqa: E402

UTC = dt.UTC


# -- the old implementation (triggers.py before the compiled cron), verbatim ----------
# -- rows -----------------------------------------------------------------------------
def T(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(UTC)


@dataclass
class Row:
    name: str
    kwargs: dict[str, Any]
    starts: list[dt.datetime]
    chain: int  # chained calls per start before restarting

    @property
    def cron(self) -> bool:
        return "schedule" in self.kwargs


ANCHOR = T("2026-01-01T00:00:00+00:00")
ROWS = [
    Row("*/2 * * * * * UTC", {"schedule": "*/2 * * * * *"}, [T("2026-05-19T10:00:00+00:00")],
        10_000),
    Row("* * * * * UTC", {"schedule": "* * * * *"}, [T("2026-05-19T10:00:00+00:00")], 10_000),
    Row("0 * * * * UTC", {"schedule": "0 * * * *"}, [T("2026-05-19T10:00:00+00:00")], 5_000),
    Row("30 2 * * * New York, DST days", {"schedule": "30 2 * * *",
                                           "time_zone": "America/New_York"},
        [T("2026-03-08T06:59:59+00:00"), T("2026-11-01T05:59:59+00:00")], 4),
    Row("0 9 * * 1-5 Berlin", {"schedule": "0 9 * * 1-5", "time_zone": "Europe/Berlin"},
        [ANCHOR], 250),
    Row("0 0 29 2 * UTC", {"schedule": "0 0 29 2 *"}, [ANCHOR], 100),
    Row("interval 2s", {"interval": "2s", "anchor": ANCHOR}, [ANCHOR], 10_000),
    Row("interval 1h30m", {"interval": "1h30m", "anchor": ANCHOR}, [ANCHOR], 5_000),
    Row("at", {"at": "2026-12-31T00:00:00Z"}, [ANCHOR], 1),
]


# -- measurement ----------------------------------------------------------------------
def rate(step: Callable[[int], int], seconds: float) -> float:
    """Calls per second of ``step(n)`` (which makes n calls and returns how many)."""
    step(1)  # warm caches
    done, n, t0 = 0, 1, time.perf_counter()
    while True:
        done += step(n)
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return done / elapsed
        n = min(n * 2, 200_000)


def chained(fn: Callable[[dt.datetime], dt.datetime | None], row: Row) -> Callable[[int], int]:
    state = {"run": 0}

    def step(n: int) -> int:
        done = 0
        while done < n:
            t: dt.datetime | None = row.starts[state["run"] % len(row.starts)]
            state["run"] += 1
            for _ in range(min(row.chain, n - done)):
                t = fn(t)  # type: ignore[arg-type]
                done += 1
                if t is None:
                    break
        return done
    return step


def randomly(fn: Callable[[dt.datetime], dt.datetime | None],
             afters: list[dt.datetime]) -> Callable[[int], int]:
    state = {"i": 0}

    def step(n: int) -> int:
        i = state["i"]
        for k in range(n):
            fn(afters[(i + k) % len(afters)])
        state["i"] = i + n
        return n
    return step


def croniter_per_call(row: Row, trigger: Trigger) -> Callable[[dt.datetime], dt.datetime]:
    zone, expr = trigger.zone, trigger.cron

    def fn(after: dt.datetime) -> dt.datetime:
        value: dt.datetime = croniter(expr, after.astimezone(zone),
                                      second_at_beginning=trigger.seconds_field
                                      ).get_next(dt.datetime)
        return value
    return fn


def croniter_reused(trigger: Trigger, chained_mode: bool) -> Callable[[dt.datetime],
                                                                         dt.datetime]:
    it = croniter(trigger.cron, ANCHOR.astimezone(trigger.zone),
                  second_at_beginning=trigger.seconds_field)
    zone = trigger.zone

    def fn(after: dt.datetime) -> dt.datetime:
        if not chained_mode or fn.last != after:  # type: ignore[attr-defined]
            it.set_current(after.astimezone(zone), force=True)
        value: dt.datetime = it.get_next(dt.datetime)
        fn.last = value  # type: ignore[attr-defined]
        return value
    fn.last = None  # type: ignore[attr-defined]
    return fn


def cold_us(row: Row) -> float:
    """parse_trigger + the first next_fire with every cache empty, in microseconds."""
    compile_cron.cache_clear()
    cron_schedule.cache_clear()
    timeline.cache_clear()
    t0 = time.perf_counter()
    next_fire(parse_trigger(**row.kwargs), row.starts[0])
    return (time.perf_counter() - t0) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5,
                        help="minimum measuring time per cell")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    rng = random.Random(2026)
    year = int((T("2027-01-01T00:00:00+00:00") - ANCHOR).total_seconds())
    afters = [ANCHOR + dt.timedelta(seconds=rng.randrange(year),
                                    microseconds=rng.choice([0, rng.randrange(10**6)]))
              for _ in range(100_000)]
    rows: list[dict[str, Any]] = []
    for row in ROWS:
        trigger = parse_trigger(**row.kwargs)
        new = lambda t, trigger=trigger: next_fire(trigger, t)  # noqa: E731
        old = lambda t, trigger=trigger: old_next_fire(trigger, t)  # noqa: E731
        result: dict[str, Any] = {"name": row.name, "trigger": {
            k: (v.isoformat() if isinstance(v, dt.datetime) else v)
            for k, v in row.kwargs.items()}, "cold_us": cold_us(row)}
        for mode in ("chained", "random"):
            def loop(fn: Callable[[dt.datetime], Any], mode: str = mode,
                     row: Row = row) -> Callable[[int], int]:
                return chained(fn, row) if mode == "chained" else randomly(fn, afters)
            result[f"{mode}_new"] = rate(loop(new), args.seconds)
            result[f"{mode}_old"] = rate(loop(old), args.seconds)
            if row.cron:
                result[f"{mode}_croniter_per_call"] = rate(
                    loop(croniter_per_call(row, trigger)), args.seconds)
                result[f"{mode}_croniter_reused"] = rate(
                    loop(croniter_reused(trigger, mode == "chained")), args.seconds)
            result[f"{mode}_speedup_vs_old"] = result[f"{mode}_new"] / result[f"{mode}_old"]
        rows.append(result)
        print(f"  measured {row.name}", file=sys.stderr)

    def cell(r: dict[str, Any], key: str) -> str:
        v = r.get(key)
        return f"{v:>10,.0f}" if v is not None else f"{'-':>10}"

    for mode in ("chained", "random"):
        how = "t = next_fire(trigger, t)" if mode == "chained" else "after uniform over 2026"
        print(f"\nnext-fire/s, {mode} ({how}):")
        print(f"{'trigger':32} {'new':>10} {'croniter':>10} {'croniter':>10} {'old':>10} "
              f"{'new/old':>8}")
        print(f"{'':32} {'':>10} {'per call':>10} {'reused':>10} {'walker':>10} {'':>8}")
        for r in rows:
            print(f"{r['name']:32} {cell(r, f'{mode}_new')} "
                  f"{cell(r, f'{mode}_croniter_per_call')} {cell(r, f'{mode}_croniter_reused')} "
                  f"{cell(r, f'{mode}_old')} {r[f'{mode}_speedup_vs_old']:>7,.0f}x")
    print("\ncold parse + first next_fire (empty caches), µs:")
    for r in rows:
        print(f"{r['name']:32} {r['cold_us']:>10,.0f}")
    out = {"rows": rows, "target_per_s": 100_000,
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                       "platform": platform.platform(), "croniter": version("croniter"),
                       "pinned_to_one_core": hasattr(os, "sched_setaffinity")},
           "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "timing.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"saved {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
