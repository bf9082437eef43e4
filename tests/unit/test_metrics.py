"""Metrics wiring: scripted engine scenarios on the fakes leave the expected samples in a
fresh registry (never the global one); ``/metrics`` serves it."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import socket
import threading
import urllib.request
from typing import Any

import kopf
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from schedulezero_operator import __main__ as entry
from schedulezero_operator import controllers
from schedulezero_operator.controllers.metrics import LATENESS_BUCKETS, Metrics, MetricsServer
from schedulezero_operator.engine import Engine
from schedulezero_operator.engine.status import Outcome

from ..fakes import HANG, T0, FakeClock, FakeDispatcher, FakeKube, fail, until, virtual_time
from .engine.harness import Operator, handler, schedule


def sample(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def new_metrics(**kwargs: Any) -> Metrics:
    return Metrics(CollectorRegistry(), **kwargs)


@virtual_time
async def test_runs_retries_lateness_dispatch_and_writes_are_counted() -> None:
    kube = FakeKube()
    handler(kube, "h", endpoints=["10.0.0.1:4244"])
    handler(kube, "broken", endpoints=["10.0.0.2:4244"])
    schedule(kube, "ok", handler="h", interval="1s")
    schedule(kube, "bad", handler="broken", interval="2s",
             retry={"maxAttempts": 2, "backoff": {"initial": "100ms"}})
    kube.interfere("schedules", "ok", {"lastRunNow": "someone else's write"})
    m = new_metrics()
    op = Operator(kube, observer=m)
    op.dispatcher.on("10.0.0.2:4244", *[fail()] * 10)
    m.bind(op.engine)
    async with op:
        await asyncio.sleep(4.5)
    calls = op.dispatcher.calls
    assert len([c for c in calls if str(c.endpoint) == "10.0.0.1:4244"]) == 4
    assert sample(m, "schedulezero_runs_total", outcome="Succeeded") == 4
    assert sample(m, "schedulezero_runs_total", outcome="Failed") == 2, "slots 2 s and 4 s"
    assert sample(m, "schedulezero_runs_total", outcome="Missed") == 0, "pre-bound at 0"
    assert sample(m, "schedulezero_retries_total") == 2, "one retry per failed run"
    # lateness: one observation per run's first attempt; on the slot in virtual time
    assert sample(m, "schedulezero_fire_lateness_seconds_count") == 6
    assert sample(m, "schedulezero_fire_lateness_seconds_bucket", le="0.001") == 6
    assert sample(m, "schedulezero_fire_lateness_seconds_sum") == 0
    # dispatch: one observation per attempt, by protocol
    assert sample(m, "schedulezero_dispatch_seconds_count", protocol="zmq") == len(calls) == 8
    assert sample(m, "schedulezero_dispatch_seconds_count", protocol="http") == 0
    # status writes and conflicts: the writer's own counters, by kind
    writes = {p: sum(n for (plural, _), n in kube.writes.items() if plural == p)
              for p in ("schedules", "handlers")}
    assert writes["schedules"] > 0 and writes["handlers"] > 0
    for kind, n in writes.items():
        assert sample(m, "schedulezero_status_writes_total", kind=kind) == n
    assert sample(m, "schedulezero_status_conflicts_total", kind="schedules") == 1
    assert sample(m, "schedulezero_status_conflicts_total", kind="handlers") == 0


@virtual_time
async def test_skipped_and_missed_runs_count_every_slot() -> None:
    """Forbid skips a slot while a run hangs; a catch-up counts all missed slots, not
    only the three kept in history."""
    kube = FakeKube()
    handler(kube)
    kube.create("schedules", "late", {"handler": "h", "method": "heartbeat", "interval": "1s",
                                      "catchUp": {"policy": "Skip"}},
                status={"lastScheduleTime": "2026-05-19T09:59:50Z"},
                created=T0 - dt.timedelta(hours=1))
    schedule(kube, "stuck", interval="1s", concurrencyPolicy="Forbid", timeoutSeconds=60)
    m = new_metrics()
    op = Operator(kube, observer=m)
    op.dispatcher.default = HANG
    async with op:
        await asyncio.sleep(3.5)
    assert sample(m, "schedulezero_runs_total", outcome="Missed") == 10, "not only 3"
    assert kube.status("late")["counters"]["missed"] == 10
    skipped = sum(kube.status(n)["counters"]["skipped"] for n in ("late", "stuck"))
    assert skipped >= 2 and sample(m, "schedulezero_runs_total", outcome="Skipped") == skipped


@virtual_time
async def test_levels_in_flight_queued_armed_and_buckets_are_read_when_scraped() -> None:
    kube = FakeKube()
    handler(kube, concurrency=1)
    schedule(kube, "a", interval="1s", concurrencyPolicy="Allow", timeoutSeconds=60)
    schedule(kube, "b", interval="1s", concurrencyPolicy="Allow", timeoutSeconds=60,
             priority="high")
    schedule(kube, "idle", interval="1h", suspend=True)
    m = new_metrics()
    # Before the engine exists: counters at 0, no levels.
    assert sample(m, "schedulezero_status_writes_total", kind="schedules") == 0
    assert sample(m, "schedulezero_leading") is None
    op = Operator(kube, observer=m)
    op.dispatcher.default = HANG
    m.bind(op.engine)
    async with op:
        h = op.engine.handlers.ensure("default", "h")
        await until("runs waiting", lambda: h.queued >= 2)
        assert sample(m, "schedulezero_inflight", handler="default/h") == 1
        queued = {p: sample(m, "schedulezero_queued", handler="default/h", priority=p) or 0
                  for p in ("high", "normal", "low")}
        assert sum(queued.values()) == h.queued
        assert queued["high"] and queued["normal"] and queued["low"] == 0
        assert sample(m, "schedulezero_schedules_armed") == 2, "the suspended one is not"
        assert sample(m, "schedulezero_status_write_lag_seconds") == 0.0, "within budget"
        assert sample(m, "schedulezero_status_writes_deferred_total") == 0
        assert sample(m, "schedulezero_bucket_owned", bucket="0") == 1
        assert sample(m, "schedulezero_leading") == 1

        class Elector:
            buckets = 3

            def owns_bucket(self, b: int) -> bool:
                return b == 1

        m.bind(op.engine, Elector())
        assert [sample(m, "schedulezero_bucket_owned", bucket=str(b)) for b in range(3)] == \
            [0, 1, 0]
        assert sample(m, "schedulezero_leading") == 1
        Elector.owns_bucket = lambda self, b: False  # type: ignore[method-assign]
        assert sample(m, "schedulezero_leading") == 0


@virtual_time
async def test_per_schedule_lateness_is_opt_in_and_dropped_with_the_schedule() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "one", interval="1s")
    schedule(kube, "two", interval="2s")
    m = new_metrics(per_schedule=True)
    async with Operator(kube, observer=m):
        await asyncio.sleep(2.5)
        assert sample(m, "schedulezero_fire_lateness_seconds_count", schedule="default/one") == 2
        assert sample(m, "schedulezero_fire_lateness_seconds_count", schedule="default/two") == 1
        kube.delete("schedules", "two")
        await asyncio.sleep(0.1)
    assert sample(m, "schedulezero_fire_lateness_seconds_count", schedule="default/two") is None
    plain = new_metrics()
    assert plain.registry.get_sample_value("schedulezero_fire_lateness_seconds_count") == 0
    buckets = [s.labels["le"] for s in next(iter(plain._lateness.collect())).samples
               if s.name.endswith("_bucket")]
    assert buckets == [str(float(b)) for b in LATENESS_BUCKETS] + ["+Inf"]


def test_every_outcome_and_protocol_is_prebound() -> None:
    m = new_metrics()
    for outcome in Outcome:
        assert sample(m, "schedulezero_runs_total", outcome=outcome.value) == 0
    for protocol in ("zmq", "http", "zmq-legacy"):
        assert sample(m, "schedulezero_dispatch_seconds_count", protocol=protocol) == 0
    m.attempt("other", 0.5)  # a protocol added later still gets a series
    assert sample(m, "schedulezero_dispatch_seconds_count", protocol="other") == 1


async def test_watch_events_are_counted_by_resource() -> None:
    class Quiet:
        def __getattr__(self, name: str) -> Any:
            return lambda *args, **kwargs: None

    m = new_metrics()
    memo = kopf.Memo(runtime=controllers.Runtime(engine=Quiet(), metrics=m))  # type: ignore[arg-type]

    def event(kind: str) -> Any:
        return {"type": kind, "object": {"metadata": {"namespace": "ns", "name": "x"}}}

    await controllers._schedule_event(event=event("ADDED"), memo=memo)
    await controllers._schedule_event(event=event("MODIFIED"), memo=memo)
    await controllers._handler_event(event=event("ADDED"), memo=memo)
    await controllers._pod_event(event=event("ADDED"), memo=memo)
    assert [sample(m, "schedulezero_watch_events_total", resource=r)
            for r in ("schedules", "handlers", "pods")] == [2, 1, 1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_metrics_are_served_as_text_and_openmetrics(
        monkeypatch: pytest.MonkeyPatch) -> None:
    m = new_metrics(process=True)
    m.finished("Succeeded", 3)
    eng = Engine(FakeKube(), FakeClock(), FakeDispatcher(), identity="t")
    eng.handlers.ensure("ns", "h").body = {"metadata": {"namespace": "ns", "name": "h"}}
    m.bind(eng)
    readers: list[str] = []
    read = m.collector.read

    def reading() -> Any:
        readers.append(threading.current_thread().name)
        return read()

    monkeypatch.setattr(m.collector, "read", reading)
    server = MetricsServer(m, "127.0.0.1", free_port())
    assert await server.start()
    try:
        def get(accept: str | None, encoding: str = "identity") -> tuple[str, str]:
            req = urllib.request.Request(f"http://127.0.0.1:{server.port}/metrics",
                                         headers={"Accept-Encoding": encoding})
            if accept:
                req.add_header("Accept", accept)
            with urllib.request.urlopen(req, timeout=5) as resp:
                body = resp.read()
                if resp.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                return resp.headers["Content-Type"], body.decode()

        ctype, text = await asyncio.to_thread(get, None)
        assert ctype.startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(text)}
        runs = families["schedulezero_runs"]
        assert runs.type == "counter"
        assert {s.labels["outcome"]: s.value for s in runs.samples
                if s.name == "schedulezero_runs_total"}["Succeeded"] == 3
        assert "process_cpu_seconds" in families or "python_info" in families
        assert 'schedulezero_inflight{handler="ns/h"} 0.0' in text
        assert "schedulezero_leading 1.0" in text
        assert readers == [threading.current_thread().name], \
            "the engine's levels are read on its loop, not in the encoding thread"
        _, zipped = await asyncio.to_thread(get, None, "gzip")
        assert "schedulezero_runs_total" in zipped
        ctype, text = await asyncio.to_thread(
            get, "application/openmetrics-text;version=1.0.0,text/plain;q=0.5")
        assert ctype.startswith("application/openmetrics-text") and text.endswith("# EOF\n")
    finally:
        await server.stop()


async def test_a_port_in_use_is_logged_and_the_operator_runs_on(
        caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = MetricsServer(new_metrics(), "127.0.0.1", taken.getsockname()[1])
        assert not await server.start()
    assert "cannot listen" in caplog.text
    await server.stop()


def test_the_entry_point_passes_the_metrics_options(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(kopf, "run", lambda **kwargs: seen.update(kwargs))
    monkeypatch.setattr(kopf, "configure", lambda **kwargs: None)
    monkeypatch.setattr(controllers.safe_decode, "install", lambda: None)
    entry.main([])
    opts = seen["memo"]["runtime"].options
    assert (opts.metrics_port, opts.metrics_bind, opts.metrics_per_schedule) == \
        (9090, "127.0.0.1", False)
    entry.main(["--metrics-port", "0", "--metrics-bind", "0.0.0.0", "--metrics-per-schedule"])
    opts = seen["memo"]["runtime"].options
    assert (opts.metrics_port, opts.metrics_bind, opts.metrics_per_schedule) == \
        (0, "0.0.0.0", True)
