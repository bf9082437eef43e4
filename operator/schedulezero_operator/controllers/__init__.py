"""Thin kopf adapters: watch events in, the engine decides and acts.

``on.event`` (not on.create/on.update) on purpose: reconcile is level-triggered
on the whole object, kopf writes no progress annotations or finalizers onto the
users' resources, and our own status writes (which come back as events) cost
one dictionary comparison.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from ..api.models import GROUP, VERSION
from ..engine import Engine, SystemClock
from ..scaling.scaler import Scaler
from . import safe_decode
from .kube import AppsKube, Kube

log = logging.getLogger("schedulezero.controllers")
_state: dict[str, Any] = {}
# Set by the entry point before kopf starts.
OPTIONS: dict[str, Any] = {"leader_elect": False, "lease_namespace": "default",
                           "lease_name": "schedulezero-operator"}


def engine() -> Engine:
    eng: Engine = _state["engine"]
    return eng


@kopf.on.startup()
async def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    safe_decode.install()  # before any watch starts: no stored object can crash us
    settings.peering.standalone = True  # leader election is ours (a Lease), not peering
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.posting.level = logging.WARNING
    kube = Kube()
    eng = Engine(kube, SystemClock())
    if OPTIONS.get("leader_elect"):
        from .leader import LeaderElector

        elector = LeaderElector(kube.api, OPTIONS["lease_namespace"], OPTIONS["lease_name"],
                                eng.identity)
        # Blocks start-up (so: no watches, no firing) until this replica leads.
        await elector.acquire()
        _state["elector"] = elector
    eng.apps = AppsKube(kube)
    _state["engine"] = eng
    _state["task"] = asyncio.get_running_loop().create_task(eng.run())
    _state["scaler"] = asyncio.get_running_loop().create_task(Scaler(eng).run())
    log.info("engine started as %s", eng.identity)


@kopf.on.cleanup()
async def _cleanup(**_: Any) -> None:
    eng = _state.pop("engine", None)
    for name in ("task", "scaler"):
        task = _state.pop(name, None)
        if task is not None:
            task.cancel()
    if eng is not None:
        await eng.close()
    elector = _state.pop("elector", None)
    if elector is not None:
        await elector.release()


@kopf.on.event(GROUP, VERSION, "schedules")
async def _schedule_event(event: kopf.RawEvent, **_: Any) -> None:
    obj = event["object"]
    meta = obj["metadata"]
    if event["type"] == "DELETED":
        engine().delete_schedule((meta["namespace"], meta["name"]))
    else:
        engine().upsert_schedule(dict(obj))


@kopf.on.event(GROUP, VERSION, "handlers")
async def _handler_event(event: kopf.RawEvent, **_: Any) -> None:
    obj = event["object"]
    meta = obj["metadata"]
    if event["type"] == "DELETED":
        engine().delete_handler(meta["namespace"], meta["name"])
    else:
        engine().upsert_handler(dict(obj))


@kopf.on.event("", "v1", "pods")
async def _pod_event(event: kopf.RawEvent, **_: Any) -> None:
    """Ready pods of Deployment-backed handlers become dispatch endpoints."""
    obj = event["object"]
    engine().on_pod(event["type"] or "ADDED", dict(obj))
