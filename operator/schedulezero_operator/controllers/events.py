"""Kubernetes Events that stay useful: one per (object, reason) per interval, with a count.

A Schedule failing every 2 s must not write an Event per run (``kubectl describe``
would show a wall of identical lines and etcd would fill with them). As client-go's
event recorder does, repeats of the same (object, type, reason) are folded into the
existing Event: its ``count`` goes up and ``lastTimestamp``/``message`` follow the
newest occurrence. The first occurrence is posted at once; later ones are flushed
at most once per interval with a PATCH, so a reason that stops recurring still
shows its final count.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..api.models import GROUP, VERSION

log = logging.getLogger("schedulezero.events")
COMPONENT = "schedulezero-operator"
# Folded Events whose object has been quiet this long are forgotten (memory bound).
FORGET_AFTER = 3600.0
# ... by a sweep at most this often: a sweep walks every series, and 1,000 Schedules
# warning at once must not cost 1,000 walks of 1,000 series.
SWEEP_EVERY = 60.0


class EventsPort(Protocol):
    """The two API calls the recorder needs; the real one is ``Kube``."""

    async def create_event(self, namespace: str, body: dict[str, Any]) -> str: ...

    async def patch_event(self, namespace: str, name: str, body: dict[str, Any]) -> bool: ...


@dataclass
class _Series:
    namespace: str
    name: str | None = None  # the Event object's name once created
    count: int = 0  # occurrences recorded on the Event
    pending: int = 0  # occurrences not yet written
    message: str = ""
    last_write: float = -1e18
    last_seen: float = 0.0
    flushing: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _stamp(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    def __init__(self, port: EventsPort, *, interval: float = 60.0,
                 monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.port = port
        self.interval = interval
        self._monotonic, self._wall, self._sleep = monotonic, wall, sleep
        self._series: dict[tuple[str, str, str], _Series] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_sweep = monotonic() + SWEEP_EVERY

    async def record(self, obj: dict[str, Any], kind: str, type_: str, reason: str,
                     message: str, *, interval: float | None = None) -> None:
        """One occurrence. Posts or patches now, or folds it into a later flush."""
        meta = obj["metadata"]
        key = (meta["uid"], type_, reason)
        now = self._monotonic()
        self._forget_quiet(now)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(meta["namespace"])
        series.pending += 1
        series.message = message[:1024]
        series.last_seen = now
        every = self.interval if interval is None else interval
        if now - series.last_write >= every:
            await self._write(series, obj, kind, type_, reason)
        elif not series.flushing:
            series.flushing = True
            task = asyncio.ensure_future(self._flush_later(
                series, obj, kind, type_, reason, series.last_write + every - now))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _flush_later(self, series: _Series, obj: dict[str, Any], kind: str, type_: str,
                           reason: str, delay: float) -> None:
        try:
            await self._sleep(max(delay, 0.0))
            await self._write(series, obj, kind, type_, reason)
        finally:
            series.flushing = False

    async def _write(self, series: _Series, obj: dict[str, Any], kind: str, type_: str,
                     reason: str) -> None:
        async with series.lock:
            if not series.pending:
                return
            # Set before the call: occurrences during it fold into the next flush.
            series.last_write = self._monotonic()
            count = series.count + series.pending
            stamp = _stamp(self._wall())
            try:
                if series.name is not None and await self.port.patch_event(
                        series.namespace, series.name,
                        {"count": count, "lastTimestamp": stamp, "message": series.message}):
                    series.count = count
                else:  # first occurrence, or the Event expired (TTL) or was deleted
                    series.name = await self.port.create_event(
                        series.namespace, self._body(obj, kind, type_, reason,
                                                     series.message, series.pending, stamp))
                    series.count = series.pending
                series.pending = 0
            except Exception as e:  # noqa: BLE001 - an Event is best effort, never fatal
                log.warning("could not record event %s on %s/%s: %s", reason,
                            series.namespace, obj["metadata"].get("name"), e)

    @staticmethod
    def _body(obj: dict[str, Any], kind: str, type_: str, reason: str, message: str,
              count: int, stamp: str) -> dict[str, Any]:
        meta = obj["metadata"]
        return {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind,
                               "name": meta["name"], "namespace": meta["namespace"],
                               "uid": meta["uid"]},
            "reason": reason, "message": message, "type": type_,
            "source": {"component": COMPONENT},
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": count,
            "reportingComponent": COMPONENT,
        }

    def _forget_quiet(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_EVERY
        for key, series in list(self._series.items()):
            if now - series.last_seen > FORGET_AFTER and not series.pending:
                del self._series[key]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
