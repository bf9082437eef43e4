"""SDK held-burst benchmark: how long a handler takes to start a burst of held jobs.

N ``executeAt`` requests with one ``startAt`` (and one deadline, as the operator sends
a burst) are handed to an in-process ``Executor`` in one loop iteration, as one ZMQ
drain hands them over; each method notes the wall clock and the thread's CPU clock
when it starts. Printed per round: how late the first, median, p99 and last method
started after ``startAt``, and the loop's CPU per job between the first and the last
start (machine load inflates the wall figures, not that one). No sockets and no
operator: this isolates the SDK's share of a burst's lateness in ``bench/firing.py``.

Methods: ``trivial`` (appends to a list: the SDK's own cost) and ``ledger`` (the test
handler's ``heartbeat``, which the firing benchmarks read receipts from).

    python bench/sdk_burst.py --jobs 1000 --rounds 5

Writes bench/results/sdk-burst-<N>.json. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
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
sys.path[:0] = [str(REPO), str(REPO / "handler_sdk")]

from schedulezero_handler import Executor, JobContext, method  # noqa: E402

from bench.cluster import pct  # noqa: E402


class Starts:
    """When each method started: wall clock and this thread's CPU clock."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def note(self) -> None:
        self.wall.append(time.time())
        self.cpu.append(time.thread_time())


class Trivial:
    def __init__(self) -> None:
        self.starts = Starts()

    @method
    async def heartbeat(self, ctx: JobContext) -> dict[str, Any]:
        self.starts.note()
        return {"ok": 1}


def ledger_handler() -> Any:
    from examples.handlers.testing import TestHandler

    class Ledger(TestHandler):
        def __init__(self) -> None:
            super().__init__()
            self.starts = Starts()

        @method
        async def heartbeat(self, ctx: JobContext) -> dict[str, Any]:
            self.starts.note()
            return self._record("heartbeat", ctx)

    return Ledger()


def rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds")[:23] + "Z"


async def burst(ex: Executor, starts: Starts, jobs: int, round_no: int,
                lead: float) -> dict[str, float]:
    starts.wall.clear()
    starts.cpu.clear()
    start_at = time.time() + lead
    when, deadline = rfc3339(start_at), rfc3339(start_at + 60)
    start_at = dt.datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp()
    replies: list[bytes] = []
    all_replied = asyncio.Event()

    def deliver(reply: bytes) -> None:
        replies.append(reply)
        if len(replies) == jobs:
            all_replied.set()

    for i in range(jobs):
        body = json.dumps({
            "v": 1, "id": f"r{round_no}-{i}", "type": "executeAt",
            "runId": f"run-{round_no}-{i}", "method": "heartbeat", "params": {},
            "schedule": f"bench/s{i:05d}", "scheduledTime": when, "attempt": 1,
            "deadline": deadline, "startAt": when}).encode()
        ex.submit(body, None, None, deliver)
    await all_replied.wait()
    late = sorted((t - start_at) * 1000 for t in starts.wall)
    return {"first_ms": late[0], "p50_ms": pct(late, 0.5), "p99_ms": pct(late, 0.99),
            "last_ms": late[-1],
            "cpu_us_per_job": (starts.cpu[-1] - starts.cpu[0]) * 1e6 / max(1, jobs - 1)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"jobs": args.jobs, "rounds": args.rounds}
    for kind in ("trivial", "ledger"):
        handler = Trivial() if kind == "trivial" else ledger_handler()
        ex = Executor(handler, concurrency=args.jobs)
        rounds = []
        for r in range(args.rounds):
            rounds.append(await burst(ex, handler.starts, args.jobs, r, args.lead))
            row = rounds[-1]
            print(f"{kind:>8} round {r}: first {row['first_ms']:.1f} ms, p50 "
                  f"{row['p50_ms']:.1f}, p99 {row['p99_ms']:.1f}, last {row['last_ms']:.1f} "
                  f"ms; loop CPU {row['cpu_us_per_job']:.1f} us/job")
        result[kind] = {
            "rounds": rounds,
            **{f"median_{k}": statistics.median(x[k] for x in rounds) for k in rounds[0]},
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--lead", type=float, default=0.5,
                        help="seconds between the burst's arrival and its startAt")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SZ_TEST_RECORD"] = str(Path(tmp) / "ledger.jsonl")
        result = asyncio.run(run(args))
    result["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result["load_average"] = os.getloadavg()[0]
    for kind in ("trivial", "ledger"):
        medians = {k: round(v, 2) for k, v in result[kind].items() if k.startswith("median")}
        print(f"{kind:>8} medians: {medians}")
    out = REPO / "bench" / "results" / f"sdk-burst-{args.jobs}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"saved {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
