"""In-memory stand-ins for the engine's ports, and virtual time, for cluster-free tests.

- ``VirtualTimeLoop`` / ``virtual_time``: an asyncio loop whose clock jumps to the
  next timer whenever nothing is ready, so every ``asyncio.sleep``, timeout and
  ``TimerQueue`` wait of the engine takes no real time. ``FakeClock`` follows it.
- ``FakeKube``: objects, resourceVersions and status with the API server's
  semantics that matter here (JSON merge patch, 409 on a stale resourceVersion,
  pruning to the CRD schema), plus a watch that feeds the engine; it can inject
  conflicts, latency and failures, and counts writes.
- ``FakeDispatcher``: scripted replies per call and per endpoint, latency,
  timeouts, endpoints that are down (no answer to describe, ping or jobs), and a
  record of every call with its (virtual and real) time.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import functools
import itertools
import selectors
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from schedulezero_operator.dispatch import DispatchResult, Endpoint
from schedulezero_operator.engine.ports import Conflict, NotFound

from .schema import prune, status_schema

T = TypeVar("T")
T0 = dt.datetime(2026, 5, 19, 10, 0, 0, tzinfo=dt.UTC)


# -- virtual time --------------------------------------------------------------------
class _VirtualSelector(selectors.DefaultSelector):
    loop: VirtualTimeLoop

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = super().select(0)
        if ready or timeout == 0:
            return list(ready)
        if timeout is None:
            raise RuntimeError("deadlock: nothing is scheduled and nothing can happen")
        self.loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """When idle, time jumps to the next scheduled callback instead of waiting for it."""

    def __init__(self, limit: float = 30 * 86400) -> None:
        selector = _VirtualSelector()
        super().__init__(selector)
        selector.loop = self
        self._now = 0.0
        self.limit = limit  # a test that runs away in virtual time fails instead of spinning

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds
        if self._now > self.limit:
            raise RuntimeError(f"virtual time passed {self.limit}s: a test that never ends")


def run_virtual(main: Coroutine[Any, Any, T]) -> T:
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main)
    finally:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def virtual_time(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on virtual time (a plain test function to pytest)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        run_virtual(fn(*args, **kwargs))

    return wrapper


class FakeClock:
    """Wall time that follows the running loop's (virtual) time from ``start``."""

    def __init__(self, start: dt.datetime = T0) -> None:
        self.start = start
        self.offset = 0.0  # a jump of the wall clock alone

    def now(self) -> dt.datetime:
        loop_time = asyncio.get_running_loop().time()
        return self.start + dt.timedelta(seconds=loop_time + self.offset)

    def jump(self, seconds: float) -> None:
        self.offset += seconds


async def until(what: str, probe: Callable[[], Any], timeout: float = 60.0,
                step: float = 0.01) -> Any:
    """Poll ``probe`` in virtual time until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = probe()
        if value:
            return value
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout}s (virtual) waiting for {what}")
        await asyncio.sleep(step)


# -- the API server --------------------------------------------------------------------
def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


@dataclass
class Event:
    kind: str
    name: str
    type: str
    reason: str
    message: str


Watcher = Callable[[str, str, dict[str, Any]], None]


class FakeKube:
    """The ``KubePort`` over an in-memory store with the API server's status semantics."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._rv = itertools.count(1)
        self._uid = itertools.count(1)
        self.schemas = {p: status_schema(p) for p in ("schedules", "handlers")}
        self.writes: Counter[tuple[str, str]] = Counter()  # (plural, name) -> status writes
        self.patches: list[tuple[str, str, str | None, dict[str, Any]]] = []
        self.conflicts = 0
        self.gets = 0
        self.deployment_applies = 0
        self.events: list[Event] = []
        self.secrets: dict[tuple[str, str], dict[str, bytes]] = {}
        self.deployments: dict[tuple[str, str], dict[str, Any]] = {}
        self.scaled: list[tuple[str, str, int]] = []
        self.latency = 0.0  # seconds each status patch takes
        self.failures: list[Exception] = []  # raised by the next status patches, in order
        self._interfere: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        self._watchers: list[Watcher] = []

    # -- the test's side -------------------------------------------------------------
    def _next_rv(self) -> str:
        return str(next(self._rv))

    def _notify(self, kind: str, plural: str, obj: dict[str, Any]) -> None:
        for watcher in list(self._watchers):
            asyncio.get_running_loop().call_soon(watcher, kind, plural, copy.deepcopy(obj))

    def watch(self, watcher: Watcher) -> None:
        """Deliver every change from now on, after the objects that exist (a list)."""
        self._watchers.append(watcher)
        for plural in ("handlers", "schedules", "pods"):
            for (p, _, _), obj in self.objects.items():
                if p == plural:
                    asyncio.get_running_loop().call_soon(watcher, "ADDED", p,
                                                         copy.deepcopy(obj))

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers.remove(watcher)

    def create(self, plural: str, name: str, spec: dict[str, Any], *,
               namespace: str = "default", status: dict[str, Any] | None = None,
               annotations: dict[str, str] | None = None, uid: str | None = None,
               created: dt.datetime | None = None) -> dict[str, Any]:
        when = created or self.clock.now()
        obj: dict[str, Any] = {
            "apiVersion": "schedulezero.io/v1alpha1",
            "kind": {"schedules": "Schedule", "handlers": "Handler"}.get(plural, "Pod"),
            "metadata": {"name": name, "namespace": namespace,
                         "uid": uid or f"{next(self._uid):08d}-uid-{name}",
                         "resourceVersion": self._next_rv(), "generation": 1,
                         "creationTimestamp": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                         "annotations": dict(annotations or {})},
            "spec": copy.deepcopy(spec),
        }
        if status is not None:
            obj["status"] = self._prune(plural, status)
        self.objects[(plural, namespace, name)] = obj
        self._notify("ADDED", plural, obj)
        return copy.deepcopy(obj)

    def obj(self, plural: str, name: str, namespace: str = "default") -> dict[str, Any]:
        return self.objects[(plural, namespace, name)]

    def status(self, name: str, plural: str = "schedules",
               namespace: str = "default") -> dict[str, Any]:
        return copy.deepcopy(self.objects[(plural, namespace, name)].get("status") or {})

    def condition(self, name: str, kind: str, plural: str = "schedules") -> dict[str, Any]:
        for c in self.status(name, plural).get("conditions") or []:
            if c["type"] == kind:
                return dict(c)
        return {}

    def update(self, plural: str, name: str, *, spec: dict[str, Any] | None = None,
               annotations: dict[str, str] | None = None, namespace: str = "default") -> None:
        """A user's edit: a spec change bumps the generation."""
        obj = self.objects[(plural, namespace, name)]
        if spec is not None:
            obj["spec"] = merge_patch(obj["spec"], spec)
            obj["metadata"]["generation"] += 1
        if annotations is not None:
            obj["metadata"]["annotations"].update(annotations)
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self._notify("MODIFIED", plural, obj)

    def delete(self, plural: str, name: str, namespace: str = "default") -> None:
        obj = self.objects.pop((plural, namespace, name))
        self._notify("DELETED", plural, obj)

    def write_status(self, plural: str, name: str, patch: dict[str, Any],
                     namespace: str = "default") -> None:
        """Another writer (another operator) patches the status now."""
        obj = self.objects[(plural, namespace, name)]
        obj["status"] = self._prune(plural, merge_patch(obj.get("status") or {}, patch))
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self._notify("MODIFIED", plural, obj)

    def interfere(self, plural: str, name: str, patch: dict[str, Any], *, times: int = 1,
                  namespace: str = "default") -> None:
        """Another writer patches the status just before each of our next ``times``
        writes (which therefore conflict)."""
        self._interfere.setdefault((plural, namespace, name), []).extend([patch] * times)

    def _prune(self, plural: str, status: dict[str, Any]) -> dict[str, Any]:
        schema = self.schemas.get(plural)
        return prune(status, schema) if schema else status

    def pod(self, name: str, ip: str, labels: dict[str, str], *, ready: bool = True,
            namespace: str = "default", event: str = "ADDED") -> dict[str, Any]:
        """A pod as the watch reports it (Running, Ready unless told otherwise)."""
        obj = {"metadata": {"name": name, "namespace": namespace, "labels": labels,
                            "uid": f"pod-{name}"},
               "status": {"phase": "Running", "podIP": ip, "conditions": [
                   {"type": "Ready", "status": "True" if ready else "False"}]}}
        if event == "DELETED":
            self.objects.pop(("pods", namespace, name), None)
        else:
            self.objects[("pods", namespace, name)] = obj
        self._notify(event, "pods", obj)
        return obj

    # -- KubePort --------------------------------------------------------------------
    async def patch_status(self, plural: str, namespace: str, name: str,
                           resource_version: str | None, status: dict[str, Any]) -> str:
        if self.latency:
            await asyncio.sleep(self.latency)
        key = (plural, namespace, name)
        if self._interfere.get(key):
            self.write_status(plural, name, self._interfere[key].pop(0), namespace)
        if self.failures:
            raise self.failures.pop(0)
        obj = self.objects.get(key)
        if obj is None:
            raise NotFound(name)
        if resource_version is not None and resource_version != obj["metadata"][
                "resourceVersion"]:
            self.conflicts += 1
            raise Conflict(name)
        self.patches.append((plural, name, resource_version, copy.deepcopy(status)))
        self.writes[(plural, name)] += 1
        obj["status"] = self._prune(plural, merge_patch(obj.get("status") or {}, status))
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self._notify("MODIFIED", plural, obj)
        return str(obj["metadata"]["resourceVersion"])

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        self.gets += 1
        obj = self.objects.get((plural, namespace, name))
        if obj is None:
            raise NotFound(name)
        return copy.deepcopy(obj)

    async def event(self, obj: dict[str, Any], kind: str, type_: str, reason: str,
                    message: str, *, every: float = 60.0) -> None:
        self.events.append(Event(kind, obj["metadata"]["name"], type_, reason, message))

    def reasons(self, name: str) -> set[str]:
        return {e.reason for e in self.events if e.name == name}

    async def read_secret_key(self, namespace: str, name: str, key: str) -> bytes | None:
        return self.secrets.get((namespace, name), {}).get(key)

    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        dep = self.deployments.get((namespace, name))
        return copy.deepcopy(dep) if dep is not None else None

    async def apply_deployment(self, body: dict[str, Any]) -> dict[str, Any]:
        self.deployment_applies += 1
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        current = self.deployments.get(key)
        if current is not None:
            body = {**body, "spec": {**body["spec"], "replicas": current["spec"]["replicas"]}}
        self.deployments[key] = copy.deepcopy(body)
        return copy.deepcopy(body)

    async def scale(self, namespace: str, name: str, replicas: int) -> None:
        self.scaled.append((namespace, name, replicas))
        self.deployments[(namespace, name)]["spec"]["replicas"] = replicas

    async def close(self) -> None:
        pass


# -- the handlers ------------------------------------------------------------------------
@dataclass(frozen=True)
class Reply:
    """The scripted outcome of one ``execute`` call."""

    ok: bool = True
    result: Any = None
    error_type: str | None = None
    message: str = ""
    retryable: bool = False
    delay: float = 0.0  # seconds the handler takes; more than the timeout is a Timeout


OK = Reply(result={"done": True})


def fail(error_type: str = "HandlerError", message: str = "boom", retryable: bool = True,
         delay: float = 0.0) -> Reply:
    return Reply(ok=False, error_type=error_type, message=message, retryable=retryable,
                 delay=delay)


def slow(seconds: float) -> Reply:
    return Reply(result={"slept": seconds}, delay=seconds)


HANG = Reply(delay=float("inf"))


@dataclass
class Call:
    at: float  # loop (virtual) time
    real: float  # time.perf_counter()
    endpoint: Endpoint
    run_id: str
    attempt: int
    method: str
    params: dict[str, Any]
    schedule: str | None
    scheduled_time: str | None
    start_at: dt.datetime | None = None  # a held job: starts then (not before)
    began: float | None = None  # loop time the fake handler started it
    secret: bytes | None = None  # what the request was signed with


@dataclass
class FakeDispatcher:
    """The ``DispatcherPort``: replies from ``script`` (per endpoint name, or "*"),
    else ``default``; every call recorded."""

    default: Reply = OK
    methods: list[str] = field(default_factory=lambda: ["heartbeat", "sleep", "fail"])
    script: dict[str, list[Reply]] = field(default_factory=dict)
    # Endpoints that are gone: describe is refused, ping and jobs time out (as a REQ or
    # DEALER socket waits for a peer that is not there).
    down: set[str] = field(default_factory=set)
    calls: list[Call] = field(default_factory=list)
    cancelled: list[tuple[str, str]] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)
    # (endpoint, what it was asked, the secret that signed it) for every describe,
    # ping and cancel; jobs keep theirs in Call.secret.
    signed: list[tuple[str, str, bytes | None]] = field(default_factory=list)
    describes: int = 0
    pings: list[tuple[float, str]] = field(default_factory=list)  # (loop time, endpoint)
    # The wall clock a held job (start_at) waits for, as an SDK handler's; set by the
    # engine harness to the fake clock.
    clock: Any = None
    _gone: dict[str, asyncio.Event] = field(default_factory=dict)

    def on(self, endpoint: str, *replies: Reply) -> None:
        """Reply to the next calls on ``endpoint`` ("*": any endpoint) with ``replies``."""
        self.script.setdefault(endpoint, []).extend(replies)

    def _next(self, endpoint: Endpoint) -> Reply:
        for name in (str(endpoint), "*"):
            if self.script.get(name):
                return self.script[name].pop(0)
        return self.default

    async def execute(self, endpoint: Endpoint, *, run_id: str, method: str,
                      params: dict[str, Any], timeout: float, schedule: str | None = None,
                      scheduled_time: str | None = None, attempt: int = 1,
                      deadline: str | None = None, start_at: dt.datetime | None = None,
                      secret: bytes | None = None) -> DispatchResult:
        call = Call(asyncio.get_running_loop().time(), time.perf_counter(), endpoint, run_id,
                    attempt, method, params, schedule, scheduled_time, start_at,
                    secret=secret)
        self.calls.append(call)
        if start_at is not None and self.clock is not None:
            hold = (start_at - self.clock.now()).total_seconds()
            if hold > 0:
                await asyncio.sleep(hold)
        call.began = asyncio.get_running_loop().time()
        if str(endpoint) in self.down:
            await asyncio.sleep(timeout)
            return DispatchResult(False, endpoint, error_type="Timeout",
                                  message=f"no reply within {timeout:g}s", retryable=True)
        reply = self._next(endpoint)
        gone = self._gone.setdefault(endpoint.key, asyncio.Event())
        if reply.delay:
            try:
                await asyncio.wait_for(gone.wait(), min(reply.delay, timeout))
            except TimeoutError:
                pass
            else:  # the connection was closed under the job (the pod went away)
                return DispatchResult(False, endpoint, error_type="ConnectionError",
                                      message="connection closed", retryable=True)
        if reply.delay > timeout:
            return DispatchResult(False, endpoint, error_type="Timeout",
                                  message=f"no reply within {timeout:g}s", retryable=True)
        return DispatchResult(reply.ok, endpoint, result=reply.result,
                              error_type=reply.error_type, message=reply.message,
                              retryable=reply.retryable)

    async def describe(self, endpoint: Endpoint, timeout: float = 5.0,
                       secret: bytes | None = None) -> DispatchResult:
        self.describes += 1
        self.signed.append((str(endpoint), "describe", secret))
        if str(endpoint) in self.down:
            return DispatchResult(False, endpoint, error_type="ConnectionError",
                                  message="refused", retryable=True)
        return DispatchResult(True, endpoint, result={
            "methods": [{"name": m} for m in self.methods]})

    async def ping(self, endpoint: Endpoint, timeout: float = 2.0,
                   secret: bytes | None = None) -> DispatchResult:
        self.pings.append((asyncio.get_running_loop().time(), str(endpoint)))
        self.signed.append((str(endpoint), "ping", secret))
        if str(endpoint) in self.down:
            await asyncio.sleep(timeout)
            return DispatchResult(False, endpoint, error_type="Timeout",
                                  message=f"no reply to ping within {timeout:g}s",
                                  retryable=True)
        return DispatchResult(True, endpoint, result={"success": True, "message": "pong"})

    async def cancel(self, endpoint: Endpoint, run_id: str, timeout: float = 2.0,
                     secret: bytes | None = None) -> bool:
        self.cancelled.append((str(endpoint), run_id))
        self.signed.append((str(endpoint), "cancel", secret))
        return True

    async def forget(self, endpoint: Endpoint) -> None:
        """Close the connection: jobs in flight on it fail (retryable)."""
        self.forgotten.append(str(endpoint))
        self._gone.pop(endpoint.key, asyncio.Event()).set()

    async def close(self) -> None:
        pass

    def runs(self, method: str | None = None) -> list[Call]:
        return [c for c in self.calls if method is None or c.method == method]
