"""The coalescing status writer: at most one write in flight per object, newest state wins.

Anything that changes a Schedule's or Handler's status only marks it dirty; one
flusher task wakes, waits ``FLUSH_INTERVAL`` (so a run's start, finish and the
claim of the next slot land in one write when they are that close), and writes
each dirty object whose last write is at least its ``min_interval`` old, or at
once when the object says the write is *urgent* (a Schedule whose claim must be
extended before its next slot). The status is built at write time, so a write
always carries the newest state, and a write that would store what is already
stored is skipped.

All writes share a budget (``rate`` a second, ``burst`` at once), as client-go's QPS
and burst limit a controller: an API server that spends ~10 ms of CPU on each status
PATCH of a 5 KB object would otherwise be saturated by a thousand frequent Schedules,
and then everything waits on it. When more writes are due than the budget allows, the
urgent ones (claims about to run out) go first, then the longest unwritten; status lags
instead of firing. ``lag`` says how far behind the writer is, so claims are extended
early enough.

Schedule writes carry the resourceVersion as a precondition. On a conflict the
writer re-reads the object, hands it to the target (which checks for another
operator's claim) and tries again, a few times per flush.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel

from . import status
from .ports import Conflict, KubePort, NotFound
from .tasks import Tasks

log = logging.getLogger("schedulezero.writer")
# Coalescing window: changes within it land in one write.
FLUSH_INTERVAL = 0.2
# A Schedule's status is written at most this often unless its claim must be extended
# (status may lag a run by up to this much; the firing path never waits for it).
MIN_WRITE_INTERVAL = 1.0
CONFLICT_RETRIES = 5
# Status writes a second across all objects, and how many may go at once.
WRITE_RATE = 50.0
WRITE_BURST = 100
Key = tuple[str, str, str]  # plural, namespace, name


class Target(Protocol):
    """An object whose status the writer keeps up to date."""

    @property
    def plural(self) -> str: ...

    @property
    def namespace(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def min_interval(self) -> float:
        """Seconds between two writes of one object (unless urgent)."""
        ...

    def urgent(self) -> bool:
        """Write now, even within ``min_interval``."""
        ...

    def deferred(self) -> bool:
        """The change may wait a moment, even an urgent one: more is coming within a
        second or so that belongs in the same write."""
        ...

    def precondition(self) -> str | None:
        """The resourceVersion the write must match (None: unconditional)."""
        ...

    def status(self) -> BaseModel | None:
        """The status to store now (None: nothing to write)."""
        ...

    def written(self, model: BaseModel, resource_version: str | None) -> None:
        """``model`` is what the API server stores now (new resourceVersion, if written)."""
        ...

    def conflicted(self, fresh: dict[str, Any]) -> None:
        """The precondition failed; ``fresh`` is the object as stored now."""
        ...

    def gone(self) -> None:
        """The object was deleted."""
        ...


class Budget:
    """A token bucket: ``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst = max(rate, 0.01), max(burst, 1.0)
        self.tokens, self.at = self.burst, now

    def available(self, now: float) -> int:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        return int(self.tokens)

    def take(self, now: float) -> bool:
        if self.available(now) < 1:
            return False
        self.tokens -= 1
        return True


@dataclass
class _Entry:
    target: Target
    dirty: bool = False
    writing: bool = False
    last_write_at: float = -1e9
    # A digest of the status the API server has, as far as we know (see _digest): a
    # whole status dict per object was ~1.7 KB, and it is only ever compared.
    stored: bytes | None = None
    task: asyncio.Task[None] | None = None  # the write in flight


class StatusWriter:
    def __init__(self, kube: KubePort, tasks: Tasks,
                 fence: Callable[[str, str], bool] = lambda namespace, name: True,
                 rate: float = WRITE_RATE, burst: int = WRITE_BURST,
                 quiet: Callable[[], Awaitable[None]] | None = None) -> None:
        self.kube = kube
        self.quiet = quiet  # wait for it before writing (no writes amid a firing burst)
        self.tasks = tasks
        self.fence = fence
        self.rate, self.burst = rate, burst
        self._horizon_for: tuple[int, dt.timedelta] | None = None  # (objects, least)
        self._horizon = dt.timedelta(0)
        self.lag = 0.0  # seconds until the writes due now are all made (0: keeping up)
        self.deferred = 0  # writes due that waited for the budget (a metric)
        self.fenced = 0  # writes not made because this process may no longer act
        self._entries: dict[Key, _Entry] = {}
        self._wake = asyncio.Event()
        self.writes = 0
        self.conflicts = 0
        # per plural (schedules | handlers), read by the metrics when scraped
        self.writes_by: Counter[str] = Counter()
        self.conflicts_by: Counter[str] = Counter()

    def full_pass_seconds(self) -> float:
        """Seconds the budget needs to write every tracked object once."""
        return len(self._entries) / max(self.rate, 0.01)

    def claim_horizon(self, least: dt.timedelta) -> dt.timedelta:
        """How far a claim should reach: at least ``least``, and long enough that
        renewing every tracked object's claim once per half horizon takes at most half
        the write budget (4 x objects / rate), so claims never run out under it.

        Asked for every dirty Schedule on every flush; it changes only with the number
        of objects, so it is recomputed only then.
        """
        n = len(self._entries)
        if self._horizon_for != (n, least):
            self._horizon_for = (n, least)
            self._horizon = max(least, dt.timedelta(
                seconds=round(4 * n / max(self.rate, 0.01))))
        return self._horizon

    def track(self, target: Target, stored: dict[str, Any] | None = None) -> None:
        """Keep ``target``'s status up to date; ``stored`` is its status as last seen."""
        key = (target.plural, target.namespace, target.name)
        entry = self._entries.get(key)
        if entry is None or entry.target is not target:
            self._entries[key] = _Entry(target, stored=_digest(stored))
        elif stored is not None:
            entry.stored = _digest(stored)

    def forget(self, target: Target) -> None:
        key = (target.plural, target.namespace, target.name)
        if key in self._entries and self._entries[key].target is target:
            del self._entries[key]

    def mark(self, target: Target) -> None:
        """``target``'s status changed: write it soon."""
        entry = self._entries.get((target.plural, target.namespace, target.name))
        if entry is not None and entry.target is target:
            entry.dirty = True
            self._wake.set()

    async def flush(self) -> None:
        """Write every pending change now and wait for the writes (on shutdown, so the
        next operator finds the runs still active and the slots already run)."""
        for entry in list(self._entries.values()):
            if entry.dirty and not entry.writing:
                self._start(entry)
        await asyncio.gather(*[e.task for e in self._entries.values()
                               if e.writing and e.task is not None], return_exceptions=True)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        budget = Budget(self.rate, self.burst, loop.time())  # on the running loop's clock
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(FLUSH_INTERVAL)  # coalesce what changes meanwhile
            if self.quiet is not None:
                await self.quiet()
            now = loop.time()
            waiting = False
            due: list[tuple[bool, float, _Entry]] = []
            for entry in list(self._entries.values()):
                if not entry.dirty or entry.writing:
                    continue
                if entry.target.deferred():
                    waiting = True
                    continue
                urgent = entry.target.urgent()
                if now - entry.last_write_at < entry.target.min_interval and not urgent:
                    waiting = True
                    continue
                due.append((not urgent, entry.last_write_at, entry))
            if len(due) > budget.available(now):
                due.sort(key=lambda d: (d[0], d[1]))  # urgent first, then the oldest
            started = 0
            for _, _, entry in due:
                if not budget.take(now):
                    break
                self._start(entry)
                started += 1
            left = len(due) - started
            self.deferred += left
            self.lag = left / budget.rate
            if waiting or left:
                self._wake.set()

    def _start(self, entry: _Entry) -> None:
        entry.writing = True
        entry.task = self.tasks.spawn(self._write(entry))

    async def _write(self, entry: _Entry) -> None:
        t = entry.target
        try:
            for _ in range(CONFLICT_RETRIES):
                entry.dirty = False
                if not self.fence(t.namespace, t.name):
                    # Deposed (or frozen past the lease): the holder owns this status
                    # now; writing ours over it would undo what it recorded.
                    self.fenced += 1
                    return
                model = t.status()
                if model is None:
                    return
                doc = status.document(model)
                digest = _digest(doc)
                if digest == entry.stored:
                    t.written(model, None)
                    return
                try:
                    rv = await self.kube.patch_status(
                        t.plural, t.namespace, t.name, t.precondition(),
                        status.merge_patch(doc, type(model)))
                except Conflict:
                    self.conflicts += 1
                    self.conflicts_by[t.plural] += 1
                    fresh = await self.kube.get(t.plural, t.namespace, t.name)
                    entry.stored = _digest(status.normalise(type(model), fresh.get("status")))
                    t.conflicted(fresh)
                    entry.dirty = True
                    continue
                self.writes += 1
                self.writes_by[t.plural] += 1
                entry.stored = digest
                entry.last_write_at = asyncio.get_running_loop().time()
                t.written(model, rv)
                return
            log.warning("%s %s/%s: status write kept conflicting; will retry", t.plural,
                        t.namespace, t.name)
        except NotFound:
            t.gone()
        except Exception:
            log.exception("%s %s/%s: status write failed", t.plural, t.namespace, t.name)
            entry.dirty = True
            await asyncio.sleep(1)
        finally:
            entry.writing = False
            entry.task = None  # a done task keeps its coroutine and context (~1 KB)
            if entry.dirty:
                self._wake.set()


def _digest(doc: dict[str, Any] | None) -> bytes | None:
    """Equal for equal status documents (keys sorted; documents come from ``document``)."""
    if doc is None:
        return None
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).digest()
