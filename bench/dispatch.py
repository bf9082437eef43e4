"""Dispatch benchmark: operator client <-> SDK server, ZMQ and HTTP, vs the raw ZMQ floor.

Prints a table and writes bench/results/dispatch.json. Not a test: nothing here
asserts; it measures. Each server runs in its own process (the client and the
server get a core each on a 2-core machine).

    python bench/dispatch.py [--requests 4000] [--concurrency 1 32] [--rounds 3]

Rounds: every configuration is measured ``--rounds`` times, interleaved (raw, SDK
ZMQ, SDK HTTP, then the next round), so background load on a shared machine hits
all alike; a row reports the median and the spread, and its ratio to raw is the
median of the per-round ratios. CPU per request is measured too (client: this
process; server: the server process, from /proc), which a busy machine disturbs
far less than throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
sys.path.insert(0, str(REPO / "hack"))

from schedulezero_testcluster.cluster import free_port  # noqa: E402

RAW_ROUTER = """
import sys, zmq
ctx = zmq.Context(); s = ctx.socket(zmq.ROUTER); s.bind(sys.argv[1])
while True:
    ident, body = s.recv_multipart(); s.send_multipart([ident, body])
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summarise(name: str, concurrency: int, latencies: list[float], elapsed: float,
              errors: int, client_cpu: float, server_cpu: float) -> dict[str, Any]:
    n = len(latencies)
    return {"name": name, "concurrency": concurrency, "requests": n,
            "errors": errors, "p50_ms": percentile(latencies, 0.5) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000,
            "mean_ms": statistics.fmean(latencies) * 1000,
            "throughput_rps": n / elapsed,
            "client_cpu_us_per_req": client_cpu / n * 1e6,
            "server_cpu_us_per_req": server_cpu / n * 1e6}


async def closed_loop(call: Any, requests: int, concurrency: int, server_pid: int
                      ) -> tuple[list[float], float, int, float, float]:
    """``concurrency`` workers, each sending its next request when the last returns.

    Returns latencies, elapsed seconds, errors, and the CPU seconds the client (this
    process) and the server spent over the measured part.
    """
    latencies: list[float] = []
    errors = 0
    remaining = requests

    async def worker() -> None:
        nonlocal remaining, errors
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            ok = await call()
            latencies.append(time.perf_counter() - t0)
            errors += 0 if ok else 1

    for _ in range(min(200, requests // 10)):  # warm-up
        await call()
    server_cpu = cpu_seconds(server_pid)
    client_cpu = time.process_time()
    start = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    elapsed = time.perf_counter() - start
    return (latencies, elapsed, errors, time.process_time() - client_cpu,
            cpu_seconds(server_pid) - server_cpu)


async def bench_raw(port: int, requests: int, concurrency: int,
                    server_pid: int) -> dict[str, Any]:
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(f"tcp://127.0.0.1:{port}")
    pending: dict[bytes, asyncio.Future[bytes]] = {}
    counter = iter(range(10**9))

    async def reader() -> None:
        while True:
            (body,) = await sock.recv_multipart()
            fut = pending.pop(body[:12], None)
            if fut is not None:
                fut.set_result(body)

    task = asyncio.ensure_future(reader())

    async def call() -> bool:
        key = f"{next(counter):012d}".encode()
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        pending[key] = fut
        await sock.send_multipart([key + b'{"v":1,"type":"execute","method":"noop"}'])
        await fut
        return True

    measured = await closed_loop(call, requests, concurrency, server_pid)
    task.cancel()
    sock.close(0)
    ctx.destroy(0)
    return summarise("raw pyzmq DEALER/ROUTER", concurrency, *measured)


async def bench_sdk(protocol: str, port: int, requests: int, concurrency: int,
                    server_pid: int) -> dict[str, Any]:
    from schedulezero_operator.dispatch import Dispatcher, Endpoint

    d = Dispatcher()
    ep = Endpoint("127.0.0.1", port, protocol)
    counter = iter(range(10**9))

    async def call() -> bool:
        r = await d.execute(ep, run_id=f"r{next(counter)}", method="noop", params={},
                            timeout=10)
        return r.ok

    measured = await closed_loop(call, requests, concurrency, server_pid)
    await d.close()
    return summarise(f"SDK {protocol} + operator client", concurrency, *measured)


def start_handler(protocol: str, port: int, concurrency: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "schedulezero_handler", "examples.handlers.echo:Echo",
         "--protocol", protocol, "--bind", "127.0.0.1", "--port", str(port),
         "--concurrency", str(concurrency), "--log-level", "WARNING"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def wait_ready_zmq(port: int, timeout: float = 10.0) -> float:
    """Seconds until the handler answers a health request."""
    ctx = zmq.Context()
    start = time.perf_counter()
    try:
        while time.perf_counter() - start < timeout:
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(f"tcp://127.0.0.1:{port}")
            s.send(b'{"v":1,"type":"health","id":"h"}')
            if s.poll(50):
                s.recv()
                s.close()
                return time.perf_counter() - start
            s.close()
        raise TimeoutError("handler not ready")
    finally:
        ctx.destroy(0)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def sdk_footprint() -> dict[str, Any]:
    port = free_port()
    t0 = time.perf_counter()
    proc = start_handler("zmq", port, 4)
    try:
        ready = wait_ready_zmq(port) + 0.0
        startup = time.perf_counter() - t0
        time.sleep(1.0)
        return {"startup_to_ready_s": startup, "first_health_after_spawn_s": ready,
                "idle_rss_mib_zmq": rss_mib(proc.pid)}
    finally:
        proc.terminate()
        proc.wait(10)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    runs: list[list[dict[str, Any]]] = []
    raw_port = free_port()
    raw = subprocess.Popen(  # noqa: ASYNC220 - set-up, before anything is measured
        [sys.executable, "-c", RAW_ROUTER, f"tcp://127.0.0.1:{raw_port}"])
    handlers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    try:
        for protocol in ("zmq", "http"):
            port = free_port()
            handlers[protocol] = (start_handler(protocol, port, max(args.concurrency)), port)
        await asyncio.sleep(1.0)
        for _ in range(args.rounds):
            rows: list[dict[str, Any]] = []
            for c in args.concurrency:
                rows.append(await bench_raw(raw_port, args.requests, c, raw.pid))
                for protocol in ("zmq", "http"):
                    proc, port = handlers[protocol]
                    rows.append(await bench_sdk(protocol, port, args.requests, c, proc.pid))
            floor = {r["concurrency"]: r["throughput_rps"] for r in rows
                     if r["name"].startswith("raw")}
            for r in rows:
                r["vs_raw_throughput"] = r["throughput_rps"] / floor[r["concurrency"]]
            runs.append(rows)
    finally:
        raw.terminate()
        for proc, _ in handlers.values():
            proc.terminate()
    return {"rows": [combine([run[i] for run in runs]) for i in range(len(runs[0]))],
            "rounds": args.rounds}


def combine(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from its rounds: medians, plus every round's throughput and ratio."""
    row = dict(rounds[0])
    for key in ("p50_ms", "p99_ms", "mean_ms", "throughput_rps", "vs_raw_throughput",
                "client_cpu_us_per_req", "server_cpu_us_per_req"):
        row[key] = statistics.median(r[key] for r in rounds)
    row["errors"] = sum(r["errors"] for r in rounds)
    row["throughput_rps_rounds"] = [r["throughput_rps"] for r in rounds]
    row["vs_raw_rounds"] = [r["vs_raw_throughput"] for r in rounds]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    result = asyncio.run(main_async(args))
    result["footprint"] = sdk_footprint()
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                         "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version()}
    result["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    print(f"medians of {args.rounds} interleaved rounds; [min-max] over the rounds")
    print(f"{'transport':34} {'conc':>4} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>7} "
          f"{'[min-max]':>13} {'vs raw':>6} {'[min-max]':>11} {'cli µs':>6} {'srv µs':>6} "
          f"{'errors':>6}")
    for r in result["rows"]:
        tp, ratio = r["throughput_rps_rounds"], r["vs_raw_rounds"]
        print(f"{r['name']:34} {r['concurrency']:>4} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} "
              f"{r['throughput_rps']:>7.0f} {f'[{min(tp):.0f}-{max(tp):.0f}]':>13} "
              f"{r['vs_raw_throughput']:>6.0%} "
              f"{f'[{min(ratio):.0%}-{max(ratio):.0%}]':>11} "
              f"{r['client_cpu_us_per_req']:>6.0f} {r['server_cpu_us_per_req']:>6.0f} "
              f"{r['errors']:>6}")
    f = result["footprint"]
    print(f"SDK (ZMQ): start-up to ready {f['startup_to_ready_s']:.3f} s, "
          f"idle RSS {f['idle_rss_mib_zmq']:.1f} MiB")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "dispatch.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"saved {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
