"""Prometheus metrics: the engine's ``Observer`` over prometheus_client, and ``/metrics``.

Two kinds of figures:

- **events** the engine reports as they happen (``engine.observer``): fire lateness,
  dispatch round trips, retries, recorded runs; plus watch events, counted by the
  kopf adapters. Their children (one per label value) are bound once up front, so
  the firing path does a dictionary look-up and an ``observe``/``inc``, no label
  resolution.
- **levels** read from the engine and the bucket elector when scraped
  (:class:`EngineCollector`): jobs in flight and queued per Handler, armed timers,
  status writes and conflicts (the writer's own counters), buckets held. They cost
  the engine nothing between scrapes.

``/metrics`` is served by aiohttp on kopf's event loop (next to kopf's liveness
endpoint): the collector reads the engine's state on the loop that changes it, and
only the encoding runs in a worker thread.
Every metric is prefixed ``schedulezero_`` and in base units (seconds). No run id is
ever a label; the per-Schedule label on the lateness histogram is opt-in
(``--metrics-per-schedule``): it costs a series set per Schedule.
"""

from __future__ import annotations

import asyncio
import contextvars
import gzip as gzip_module
import logging
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.registry import Collector

from ..engine import Engine
from ..engine.status import Outcome

log = logging.getLogger("schedulezero.metrics")

# Nominal fire time -> first dispatch: 1 ms .. 60 s (later lands in +Inf).
LATENESS_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60)
# One attempt's round trip, which includes the job's own run time: 0.5 ms .. 1 h.
DISPATCH_BUCKETS = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10,
                    30, 60, 300, 900, 3600)
PROTOCOLS = ("zmq", "http", "zmq-legacy")
KINDS = ("schedules", "handlers")  # status writes
RESOURCES = ("schedules", "handlers", "pods")  # watch events


class Metrics:
    """The operator's metrics in their own registry; implements ``engine.Observer``."""

    def __init__(self, registry: CollectorRegistry | None = None, *,
                 per_schedule: bool = False, process: bool = False) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.per_schedule = per_schedule
        reg = self.registry
        self._lateness = Histogram(
            "schedulezero_fire_lateness_seconds",
            "Fire time of a run (nominal slot, plus deliberate jitter) to the dispatch of "
            "its first attempt.",
            ["schedule"] if per_schedule else [], buckets=LATENESS_BUCKETS, registry=reg)
        self._lateness_of: dict[tuple[str, str], Any] = {}  # per-Schedule children
        runs = Counter("schedulezero_runs", "Runs recorded, by outcome.", ["outcome"],
                       registry=reg)
        self._runs = {o.value: runs.labels(o.value) for o in Outcome}
        self._retries = Counter("schedulezero_retries",
                                "Failed attempts that are retried.", registry=reg)
        self._dispatch_family = Histogram(
            "schedulezero_dispatch_seconds",
            "One attempt's dispatch round trip (request sent to reply or timeout), by "
            "protocol.", ["protocol"], buckets=DISPATCH_BUCKETS, registry=reg)
        self._dispatch = {p: self._dispatch_family.labels(p) for p in PROTOCOLS}
        watch = Counter("schedulezero_watch_events", "Watch events received, by resource.",
                        ["resource"], registry=reg)
        self._watch = {r: watch.labels(r) for r in RESOURCES}
        self.collector = EngineCollector()
        reg.register(self.collector)
        if process:  # the process' own CPU, memory, file descriptors, GC and version
            from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

            ProcessCollector(registry=reg)
            PlatformCollector(registry=reg)
            GCCollector(registry=reg)

    def bind(self, engine: Engine | None, elector: Any = None) -> None:
        """Read levels from this engine (and bucket elector, if leader election is on)."""
        self.collector.engine, self.collector.elector = engine, elector

    # -- engine.Observer -------------------------------------------------------------
    def fired(self, namespace: str, name: str, lateness: float) -> None:
        if not self.per_schedule:
            self._lateness.observe(lateness)
            return
        child = self._lateness_of.get((namespace, name))
        if child is None:
            child = self._lateness_of[(namespace, name)] = self._lateness.labels(
                f"{namespace}/{name}")
        child.observe(lateness)

    def attempt(self, protocol: str, seconds: float) -> None:
        child = self._dispatch.get(protocol)
        if child is None:
            child = self._dispatch[protocol] = self._dispatch_family.labels(protocol)
        child.observe(seconds)

    def retried(self) -> None:
        self._retries.inc()

    def finished(self, outcome: str, count: int = 1) -> None:
        self._runs[outcome].inc(count)

    def forget_schedule(self, namespace: str, name: str) -> None:
        if self._lateness_of.pop((namespace, name), None) is not None:
            self._lateness.remove(f"{namespace}/{name}")

    # -- the kopf adapters -----------------------------------------------------------
    def watch_event(self, resource: str) -> None:
        self._watch[resource].inc()


class EngineCollector(Collector):
    """Levels read from the engine and the elector at scrape time."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.elector: Any = None  # a controllers.buckets.BucketElector, or None

    def describe(self) -> Iterable[Metric]:
        return _Levels().all()

    def collect(self) -> Iterable[Metric]:
        frozen = _FROZEN.get()
        return frozen if frozen is not None else self.read()

    def read(self) -> list[Metric]:
        """The levels now (on the engine's loop: they are its data structures)."""
        f = _Levels()
        eng, elector = self.engine, self.elector
        for kind in KINDS:
            f.writes.add_metric([kind], eng.ctx.writer.writes_by[kind] if eng else 0)
            f.conflicts.add_metric([kind], eng.ctx.writer.conflicts_by[kind] if eng else 0)
        if eng is not None:
            for h in eng.handlers:
                if h.body is None and not h.in_flight and not h.queued:
                    continue  # not (or no longer) a Handler, and idle
                ref = f"{h.namespace}/{h.name}"
                f.inflight.add_metric([ref], h.in_flight)
                for priority, n in h.queue.queued_by_priority().items():
                    f.queued.add_metric([ref, priority], n)
            f.armed.add_metric([], len(eng.ctx.timers))
            f.write_lag.add_metric([], eng.ctx.writer.lag)
            f.deferred.add_metric([], eng.ctx.writer.deferred)
        if elector is not None:
            held = [elector.owns_bucket(b) for b in range(elector.buckets)]
            for b, mine in enumerate(held):
                f.owned.add_metric([str(b)], 1 if mine else 0)
            f.leading.add_metric([], 1 if any(held) else 0)
        elif eng is not None:  # no election: one bucket, always ours
            f.owned.add_metric(["0"], 1)
            f.leading.add_metric([], 1)
        return f.all()


class _Levels:
    """The families :class:`EngineCollector` fills on each scrape."""

    def __init__(self) -> None:
        self.inflight = GaugeMetricFamily(
            "schedulezero_inflight", "Jobs in flight, per Handler (namespace/name).",
            labels=["handler"])
        self.queued = GaugeMetricFamily(
            "schedulezero_queued", "Runs waiting for a free endpoint slot, per Handler "
            "and priority.", labels=["handler", "priority"])
        self.armed = GaugeMetricFamily(
            "schedulezero_schedules_armed", "Schedules with a timer set for their next slot.")
        self.writes = CounterMetricFamily(
            "schedulezero_status_writes", "Status writes made, by kind "
            "(schedules | handlers).", labels=["kind"])
        self.conflicts = CounterMetricFamily(
            "schedulezero_status_conflicts", "Status writes refused for a stale "
            "resourceVersion (409), by kind.", labels=["kind"])
        self.write_lag = GaugeMetricFamily(
            "schedulezero_status_write_lag_seconds", "How far the status writer is behind "
            "its budget (--status-write-rate): status is that much older than runs.")
        self.deferred = CounterMetricFamily(
            "schedulezero_status_writes_deferred", "Times a due status write waited for "
            "the write budget (per flush of 0.2 s).")
        self.owned = GaugeMetricFamily(
            "schedulezero_bucket_owned", "1 if this replica holds the bucket (its Lease, "
            "fenced), else 0.", labels=["bucket"])
        self.leading = GaugeMetricFamily(
            "schedulezero_leading", "1 if this replica acts for any Schedules: holds a "
            "bucket, or runs without election.")

    def all(self) -> list[Metric]:
        return [self.inflight, self.queued, self.armed, self.writes, self.conflicts,
                self.write_lag, self.deferred, self.owned, self.leading]


class MetricsServer:
    """``/metrics`` over aiohttp on the running loop (the one kopf runs on)."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self.metrics, self.host, self.port = metrics, host, port
        self._runner: Any = None

    async def start(self) -> bool:
        """Serve; False (logged) if the address cannot be bound: firing goes on."""
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/", _index)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except OSError as e:
            await runner.cleanup()
            log.error("metrics: cannot listen on %s:%d (%s); the operator runs on without "
                      "/metrics", self.host, self.port, e.strerror or e)
            return False
        self._runner = runner
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)
        return True

    async def _metrics(self, request: Any) -> Any:
        """The registry in the format the scraper asks for (OpenMetrics or text).

        The engine's levels are read here, on the loop; the encoding (which grows with
        the series: ~1 ms by default, far more with ``--metrics-per-schedule``) runs in
        a thread, so a scrape never holds up a timer for long. The thread sees the
        levels read here through a context variable (``to_thread`` copies the context);
        the counters and histograms are prometheus_client's own, thread-safe.
        """
        from aiohttp import web

        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        gzip = gzip_accepted(request.headers.get("Accept-Encoding", ""))
        _FROZEN.set(self.metrics.collector.read())
        body = await asyncio.to_thread(_encode, encoder, self.metrics.registry, gzip)
        headers = {"Content-Type": content_type}
        if gzip:
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, headers=headers)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


_FROZEN: contextvars.ContextVar[list[Metric] | None] = contextvars.ContextVar(
    "schedulezero_levels", default=None)


def _encode(encoder: Callable[[CollectorRegistry], bytes], registry: CollectorRegistry,
            gzip: bool) -> bytes:
    body = encoder(registry)
    return gzip_module.compress(body, compresslevel=1) if gzip else body


async def _index(request: Any) -> Any:
    from aiohttp import web

    return web.Response(text="schedulezero-operator: see /metrics\n")

