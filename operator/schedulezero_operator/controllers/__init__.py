"""Thin kopf adapters: watch events in, the engine decides and acts.

``on.event`` (not on.create/on.update) on purpose: reconcile is level-triggered
on the whole object, kopf writes no progress annotations or finalizers onto the
users' resources, and our own status writes (which come back as events) cost
one dictionary comparison.

State lives in one ``Runtime`` object in kopf's ``memo`` (no module globals):
kopf gives each object handler a shallow copy of the operator's memo, so they all
share the one Runtime that the start-up handler fills in.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import kopf

from ..api.models import GROUP, VERSION
from ..dispatch.registration import RegistrationServer
from ..engine import Engine, SystemClock
from ..scaling.scaler import Scaler
from . import credentials, heap, safe_decode
from .apiclient import ApiClient
from .kube import Kube
from .metrics import Metrics, MetricsServer

log = logging.getLogger("schedulezero.controllers")

LIST_CHUNK = 500  # objects per page of a watch's initial LIST


@dataclass
class Options:
    leader_elect: bool = False
    lease_namespace: str = "default"
    lease_name: str = "schedulezero-operator"  # prefix of the bucket and member Leases
    buckets: int = 1
    lease_duration: float = 4.0
    lease_renew: float = 1.0
    lease_idle: float = 15.0  # longest Lease while no known work is due (quiet Leases)
    metrics_port: int = 9090  # 0: no /metrics
    metrics_bind: str = "127.0.0.1"
    metrics_per_schedule: bool = False  # a `schedule` label on the lateness histogram
    probe_interval: float = 10.0  # seconds between probes of external endpoints
    status_write_rate: float = 50.0  # status writes a second, all objects together
    status_write_burst: int = 100
    dispatch_lead: float = 1.0  # seconds runs go out ahead of their slot, held until it
    legacy_registry_port: int = 0  # 0: no ScheduleZero registration server
    legacy_registry_bind: str = "0.0.0.0"


@dataclass
class Runtime:
    """The operator's running parts; set by ``kopf.run(memo=kopf.Memo(runtime=...))``."""

    options: Options = field(default_factory=Options)
    engine: Engine | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    elector: Any = None
    metrics: Metrics | None = None  # None: metrics off (or not started yet)
    metrics_server: MetricsServer | None = None
    registry_server: RegistrationServer | None = None
    credentials: credentials.Credentials | None = None  # kopf's and ours: one login
    lease_client: ApiClient | None = None


def runtime(memo: Any) -> Runtime:
    rt = memo.get("runtime")
    if rt is None:  # started as `kopf run` without our entry point: defaults
        rt = memo["runtime"] = Runtime()
    assert isinstance(rt, Runtime)
    return rt


def engine(memo: Any) -> Engine:
    eng = runtime(memo).engine
    assert eng is not None, "the start-up handler has not run"
    return eng


def _count(memo: Any, resource: str) -> None:
    metrics = runtime(memo).metrics
    if metrics is not None:
        metrics.watch_event(resource)


def _credentials(rt: Runtime) -> credentials.Credentials:
    if rt.credentials is None:
        rt.credentials = credentials.load()
    return rt.credentials


@kopf.on.login()
async def _login(memo: kopf.Memo, **_: Any) -> Any:
    """kopf's watches use the credentials our API client uses (one loader, one
    login; see :mod:`.credentials`). kopf calls this again on a 401 or when an exec
    token expires, so the token is fetched again first."""
    creds = _credentials(runtime(memo))
    creds.expire()
    return await asyncio.to_thread(creds.connection_info)


@kopf.on.startup()
async def _startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    safe_decode.install()  # before any watch starts: no stored object can crash us
    settings.peering.standalone = True  # leader election is ours (a Lease), not peering
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # The initial LIST in pages: kopf otherwise lists every object at once, and at
    # 10,000 stored Schedules that one response (and its decoded dicts) is a peak of
    # tens of MiB that the process keeps as RSS after it is freed (fragmentation).
    settings.watching.chunk_size = LIST_CHUNK
    settings.posting.level = logging.WARNING
    rt = runtime(memo)
    opts = rt.options
    if opts.metrics_port and rt.metrics is None:
        import prometheus_client

        # No `<counter>_created` series next to every counter and histogram: the
        # process' start time is in process_start_time_seconds once.
        prometheus_client.disable_created_metrics()
        rt.metrics = Metrics(per_schedule=opts.metrics_per_schedule, process=True)
    kube = Kube(ApiClient(_credentials(rt)))
    eng = Engine(kube, SystemClock(), observer=rt.metrics, probe_every=opts.probe_interval,
                 write_rate=opts.status_write_rate, write_burst=opts.status_write_burst,
                 dispatch_lead=opts.dispatch_lead)
    loop = asyncio.get_running_loop()
    rt.tasks = []
    if rt.options.leader_elect:
        from .buckets import BucketElector, Leases

        # Every replica watches everything (a standby is warm: failover needs no
        # re-list) but acts only for the Schedules of the buckets it holds. With one
        # bucket this is plain leader election.
        # Leases have a client (connection pool) of their own: a renewal never
        # queues behind the engine's status writes.
        rt.lease_client = ApiClient(_credentials(rt), connections=2)
        elector = BucketElector(Leases(rt.lease_client), rt.options.lease_namespace,
                                rt.options.lease_name, eng.identity, rt.options.buckets,
                                duration=rt.options.lease_duration,
                                renew=rt.options.lease_renew,
                                idle=rt.options.lease_idle, next_work=eng.next_work_in,
                                on_change=lambda held: eng.rebalance())
        eng.set_fence(elector.owns, elector.holds)
        await elector.step()
        rt.elector = elector
        rt.tasks.append(loop.create_task(elector.run()))
    rt.engine = eng
    safe_decode.ECHOES.absorb = eng.absorb_echo  # our own status echoes skip kopf
    if rt.metrics is not None:
        rt.metrics.bind(eng, rt.elector)
        if rt.metrics_server is None:
            server = MetricsServer(rt.metrics, opts.metrics_bind, opts.metrics_port)
            if await server.start():
                rt.metrics_server = server
    if opts.legacy_registry_port:
        registry = RegistrationServer(eng.registrations, opts.legacy_registry_bind,
                                      opts.legacy_registry_port)
        if registry.start():
            rt.registry_server = registry
    rt.tasks += [loop.create_task(eng.run()), loop.create_task(Scaler(eng).run()),
                 loop.create_task(heap.keep_heap_frozen())]
    log.info("engine started as %s", eng.identity)


@kopf.on.cleanup()
async def _cleanup(memo: kopf.Memo, **_: Any) -> None:
    rt = runtime(memo)
    eng, rt.engine = rt.engine, None
    safe_decode.ECHOES.absorb = None
    if rt.registry_server is not None:
        await rt.registry_server.stop()
        rt.registry_server = None
    for task in rt.tasks:
        task.cancel()
    rt.tasks = []
    if eng is not None:
        await eng.close()
    if rt.elector is not None:
        await rt.elector.release_all()
        rt.elector = None
    if rt.lease_client is not None:
        await rt.lease_client.close()
        rt.lease_client = None
    if rt.metrics_server is not None:
        await rt.metrics_server.stop()
        rt.metrics_server = None


@kopf.on.event(GROUP, VERSION, "schedules")
async def _schedule_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _count(memo, "schedules")
    obj = event["object"]
    meta = obj["metadata"]
    if event["type"] == "DELETED":
        engine(memo).delete_schedule((meta["namespace"], meta["name"]))
    else:
        engine(memo).upsert_schedule(dict(obj))


@kopf.on.event(GROUP, VERSION, "handlers")
async def _handler_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _count(memo, "handlers")
    obj = event["object"]
    meta = obj["metadata"]
    if event["type"] == "DELETED":
        engine(memo).delete_handler(meta["namespace"], meta["name"])
    else:
        engine(memo).upsert_handler(dict(obj))


@kopf.on.event("", "v1", "pods")
async def _pod_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Ready pods of Deployment-backed handlers become dispatch endpoints."""
    _count(memo, "pods")
    engine(memo).on_pod(event["type"] or "ADDED", dict(event["object"]))
