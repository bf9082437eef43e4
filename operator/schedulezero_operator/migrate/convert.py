"""ScheduleZero handlers and schedules -> Handler and Schedule manifests (multi-doc YAML).

What is carried over, and why this way:
- a handler ``tcp://host:port`` becomes a Handler with ``endpoints: ["host:port"]``
  and ``protocol: zmq-legacy``: the operator calls unchanged ScheduleZero REP
  handlers, one job at a time (``concurrency: 1``, which the operator enforces for
  REP sockets anyway); the registry's ``methods`` become the ``methods`` allow-list,
  which is how the operator knows them (REP handlers cannot describe themselves);
- a schedule becomes a Schedule calling the same method with ``job_params`` as
  ``params``; its trigger is converted by ``triggers``;
- ScheduleZero's retry defaults (``src/schedule_zero/job_executor.py``,
  ``JobExecutor``: 3 attempts in total, base delay 1 s doubling, jitter factor 0.5)
  become ``retry``, and its 10 s RPC timeout (``app_configuration.py``
  ``RPC_TIMEOUT``) ``timeoutSeconds``;
- names are sanitised to DNS-1123 labels (lower case, dashes, at most 63
  characters, a short hash when that changed a name into one already taken), and
  every object carries the original id in an annotation.

Schedules whose trigger had to be widened are emitted with ``suspend: true`` and a
note, so nothing fires more often than before until someone has looked; ones that
cannot be converted are listed in the header and skipped. Every manifest is
checked with the operator's own ``ScheduleSpec`` / ``HandlerSpec`` before it is
printed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from ..api.models import GROUP, METHOD_PATTERN, VERSION, HandlerSpec, ScheduleSpec
from .source import Inventory, LegacyHandler, LegacySchedule
from .triggers import Unconvertible, convert

MIGRATED_FROM = f"{GROUP}/migrated-from"
MIGRATION_NOTE = f"{GROUP}/migration-note"
# JobExecutor defaults (src/schedule_zero/job_executor.py): max_retries=3 attempts in
# total, base_delay=1.0 s, backoff_factor=2.0, jitter_factor=0.5.
LEGACY_RETRY = {"maxAttempts": 3, "backoff": {"initial": "1s", "max": "5m", "multiplier": 2},
                "jitter": 0.5}
LEGACY_TIMEOUT_SECONDS = 10  # app_configuration.RPC_TIMEOUT
_METHOD = re.compile(METHOD_PATTERN)
_MAX_NAME = 63


@dataclass
class Options:
    namespace: str | None = None
    zone: str | None = None  # for triggers that used the server's local zone
    timeout_seconds: int = LEGACY_TIMEOUT_SECONDS
    skip_approximate: bool = False


@dataclass
class Document:
    comments: list[str]
    body: dict[str, Any]


@dataclass
class Result:
    documents: list[Document] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    handlers: int = 0
    schedules: int = 0
    suspended: int = 0
    legacy_handlers: int = 0  # distinct handler ids read (the same one may come twice)


class Names:
    """DNS-1123 label names, unique per kind, stable for the same input."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def __call__(self, original: str) -> str:
        name = re.sub(r"[^a-z0-9]+", "-", original.lower()).strip("-") or "unnamed"
        if len(name) > _MAX_NAME or name in self.used:
            digest = hashlib.sha256(original.encode()).hexdigest()[:8]
            name = f"{name[:_MAX_NAME - 9].rstrip('-')}-{digest}"
        while name in self.used:  # two ids differing only in case/punctuation *and* hash
            name = f"{name[:_MAX_NAME - 2]}-x"
        self.used.add(name)
        return name


def endpoint(address: str | None) -> tuple[str | None, list[str]]:
    """``tcp://host:port`` -> ``host:port``, with notes on addresses pods cannot reach."""
    notes: list[str] = []
    if not address:
        return None, ["no address registered"]
    text = address.strip()
    scheme, sep, rest = text.partition("://")
    if sep and scheme != "tcp":
        return None, [f"address {text!r}: only tcp:// handlers can be called by the operator"]
    hostport = rest if sep else text
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        return None, [f"address {text!r} is not tcp://host:port"]
    if host in ("*", "0.0.0.0", "[::]", "::"):
        notes.append(f"address {text!r} is a bind address; replace {host} with the handler's "
                     "reachable host name or IP")
    elif host in ("127.0.0.1", "localhost", "::1", "[::1]"):
        notes.append(f"address {text!r} is loopback: only an operator on that same machine "
                     "reaches it; use the host's address when the operator runs in a cluster")
    return hostport, notes


def _comment(text: str) -> str:
    return "# " + " ".join(str(text).split())


def handler_document(h: LegacyHandler, name: str, opts: Options, result: Result) -> None:
    hostport, notes = endpoint(h.address)
    label = f"handler {h.id!r}"
    if hostport is None:
        result.skipped.append(f"{label}: {'; '.join(notes)}")
        return
    methods = [m for m in h.methods if _METHOD.fullmatch(m)]
    for bad in sorted(set(h.methods) - set(methods)):
        notes.append(f"method {bad!r} cannot be called by the operator (names must match "
                     f"{METHOD_PATTERN}); left out of the allow-list")
    spec: dict[str, Any] = {"protocol": "zmq-legacy", "endpoints": [hostport],
                            "concurrency": 1}
    if methods:
        spec["methods"] = sorted(dict.fromkeys(methods))
    else:
        notes.append("no methods registered: no allow-list, so the operator cannot check "
                     "method names before calling")
    try:
        HandlerSpec.model_validate(spec)
    except ValidationError as e:
        result.skipped.append(f"{label}: {_first_error(e)}")
        return
    metadata: dict[str, Any] = {"name": name, "annotations": {MIGRATED_FROM: f"handler {h.id}"}}
    if opts.namespace:
        metadata["namespace"] = opts.namespace
    comments = [f"from ScheduleZero {label} at {h.address}"
                + (f" (status {h.status})" if h.status else "")]
    comments += [f"NOTE: {n}" for n in notes]
    result.warnings += [f"{label}: {n}" for n in notes]
    result.documents.append(Document(comments, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Handler", "metadata": metadata,
        "spec": spec}))
    result.handlers += 1


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()))
    return f"{where}: {err.get('msg')}" if where else str(err.get("msg"))


def schedule_document(s: LegacySchedule, name: str, handler_name: str | None,
                      handler: LegacyHandler | None, opts: Options, now: dt.datetime,
                      result: Result) -> None:
    label = f"schedule {s.id!r}"
    if not s.handler_id or not s.method:
        result.skipped.append(f"{label}: no handler or method")
        return
    try:
        trig = convert(s.trigger, zone=opts.zone, now=now)
    except Unconvertible as e:
        result.skipped.append(f"{label}: {e}")
        return
    notes = list(trig.notes)
    if trig.approximate and opts.skip_approximate:
        result.skipped.append(f"{label}: no exact equivalent (--skip-approximate): "
                              + "; ".join(notes))
        return
    params = s.params
    if not isinstance(params, dict):
        notes.append(f"job_params is {type(params).__name__}, not an object; passed as "
                     "params.args")
        params = {"args": params}
    if handler is None:
        notes.append(f"handler {s.handler_id!r} is not in the registry; no Handler was "
                     "generated for it (the Schedule reports HandlerNotFound until one exists)")
    elif handler.methods and s.method not in handler.methods:
        notes.append(f"method {s.method!r} is not among handler {s.handler_id!r}'s registered "
                     "methods")
    spec: dict[str, Any] = {"handler": handler_name, "method": s.method}
    if params:
        spec["params"] = params
    spec.update(trig.fields)
    if trig.approximate:
        spec["suspend"] = True
    spec["retry"] = LEGACY_RETRY
    spec["timeoutSeconds"] = opts.timeout_seconds
    try:
        ScheduleSpec.model_validate(spec)
    except ValidationError as e:
        result.skipped.append(f"{label}: {_first_error(e)}")
        return
    annotations = {MIGRATED_FROM: f"schedule {s.id}"}
    if trig.approximate:
        annotations[MIGRATION_NOTE] = ("suspended: the trigger has no exact equivalent and was "
                                       "widened; check it, then set spec.suspend to false")
    metadata: dict[str, Any] = {"name": name, "annotations": annotations}
    if opts.namespace:
        metadata["namespace"] = opts.namespace
    comments = [f"from ScheduleZero {label}: {trig.original}"]
    if s.next_fire_time:
        comments.append(f"its next fire time there was {s.next_fire_time}")
    comments += [f"NOTE: {n}" for n in notes]
    if trig.approximate:
        comments.append("SUSPENDED for review: resume after checking the trigger")
        result.suspended += 1
    result.warnings += [f"{label}: {n}" for n in notes]
    result.documents.append(Document(comments, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Schedule", "metadata": metadata,
        "spec": spec}))
    result.schedules += 1


def migrate(inv: Inventory, opts: Options, now: dt.datetime) -> Result:
    """Convert an inventory; Handlers first (sorted by name), then Schedules."""
    result = Result()
    result.skipped += inv.problems
    handler_names, schedule_names = Names(), Names()
    by_id: dict[str, LegacyHandler] = {}
    for h in inv.handlers:
        by_id.setdefault(h.id, h)  # the same handler from two sources: the first wins
    result.legacy_handlers = len(by_id)
    names = {hid: handler_names(hid) for hid in sorted(by_id)}
    for hid in sorted(by_id, key=lambda i: names[i]):
        handler_document(by_id[hid], names[hid], opts, result)
    for s in sorted(inv.schedules, key=lambda x: x.id):
        if s.handler_id and s.handler_id not in names:
            names[s.handler_id] = handler_names(s.handler_id)
        schedule_document(s, schedule_names(s.id), names.get(s.handler_id or ""),
                          by_id.get(s.handler_id or ""), opts, now, result)
    return result


def header(inv: Inventory, result: Result, now: dt.datetime) -> list[str]:
    lines = [
        "ScheduleZero -> ScheduleZero operator: generated by schedulezero-migrate "
        f"at {now.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%SZ}",
        *[f"source: {s}" for s in inv.sources],
        f"converted: {result.legacy_handlers} handler(s) -> {result.handlers} Handler(s), "
        f"{len(inv.schedules)} schedule(s) -> {result.schedules} Schedule(s) "
        f"({result.suspended} suspended for review), {len(result.skipped)} skipped",
        "Handlers use protocol zmq-legacy: ScheduleZero handlers run unchanged, one job at a "
        "time, with at-least-once delivery and no run id (a retried job can run twice).",
        "Retries as ScheduleZero's JobExecutor: 3 attempts, 1s backoff doubling, jitter 0.5; "
        "timeoutSeconds as its 10s RPC timeout. See docs/MIGRATING.md.",
    ]
    lines += [f"SKIPPED {s}" for s in result.skipped]
    return lines


def render(inv: Inventory, result: Result, now: dt.datetime) -> str:
    """Multi-document YAML: the header, then one document per object with its comments."""
    out = [_comment(line) for line in header(inv, result, now)]
    for doc in result.documents:
        out.append("---")
        out += [_comment(c) for c in doc.comments]
        out.append(yaml.safe_dump(doc.body, sort_keys=False, default_flow_style=False,
                                  allow_unicode=True, width=4096).rstrip("\n"))
    return "\n".join(out) + "\n"
