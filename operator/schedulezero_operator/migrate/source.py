"""What a ScheduleZero deployment has: its handler registry and its schedules.

Read from a running server (plain GET of its API, ``urllib``) or from exported
files, in every shape ScheduleZero (esotericbyte/ScheduleZero, v0.2.0) produces:

handlers
- ``GET /api/handlers`` -> ``{"handlers": [{"id", "address", "methods", "status"}]}``
  (``src/schedule_zero/api/handler_list_api.py``, ``ListHandlersHandler``);
- the registry file ``handler_registry.yaml`` -> ``{handler_id: {"address",
  "methods", "registered_at", "last_updated", "status"}}``
  (``src/schedule_zero/handler_registry.py``, ``RegistryManager.save``).

schedules
- ``GET /api/schedules`` -> ``{"schedules": [{"id", "next_fire_time", "trigger":
  str(trigger), "args": [handler_id, job_method, job_params, job_id]}], "count"}``
  (``src/schedule_zero/api/job_scheduling_api.py``, ``ListSchedulesHandler``; the
  args are ``JobExecutor.__call__``'s, ``src/schedule_zero/job_executor.py``);
- the body of ``POST /api/schedule`` as scripts keep them: ``{"handler_id",
  "job_method", "job_params", "trigger": {"type", ...}, "job_id"}``
  (``ScheduleJobHandler.post``);
- the older ``{"handler_id", "method", "args": {...}, "trigger_type",
  "trigger_args"}`` (``tests/schedule_aling_tests.py``).

An export file is JSON (or YAML) holding ``{"handlers": ..., "schedules": ...}``
with any of those values (the API bodies as they are, or their lists), a bare
registry mapping, or a bare list of schedules. Why so lenient: people export by
``curl``-ing the two endpoints into one file, or copy their registry file; the
tool should take what they have.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HANDLERS_PATH = "/api/handlers"
SCHEDULES_PATH = "/api/schedules"


class SourceError(Exception):
    """The source could not be read or is not a ScheduleZero export (message says which)."""


@dataclass
class LegacyHandler:
    id: str
    address: str | None
    methods: list[str]
    status: str | None = None


@dataclass
class LegacySchedule:
    id: str
    handler_id: str | None
    method: str | None
    params: Any
    trigger: Any
    next_fire_time: str | None = None


@dataclass
class Inventory:
    """Everything read, and from where (for the YAML header)."""

    handlers: list[LegacyHandler] = field(default_factory=list)
    schedules: list[LegacySchedule] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # records that could not be read


# -- records ---------------------------------------------------------------------------
def handler_from(record: Any, handler_id: str | None = None) -> LegacyHandler:
    if not isinstance(record, dict):
        raise ValueError(f"handler record is {type(record).__name__}, not an object")
    hid = handler_id if handler_id is not None else record.get("id") or \
        record.get("handler_id")
    if not hid:
        raise ValueError("handler record without an id")
    methods = record.get("methods") or []
    if not isinstance(methods, list):
        raise ValueError(f"handler {hid!r}: methods is not a list")
    address = record.get("address")
    return LegacyHandler(str(hid), str(address) if address else None,
                         [str(m) for m in methods], record.get("status"))


def schedule_from(record: Any) -> LegacySchedule:
    """One schedule record in any of the three shapes (see the module docstring)."""
    if not isinstance(record, dict):
        raise ValueError(f"schedule record is {type(record).__name__}, not an object")
    args = record.get("args")
    raw_kwargs = record.get("kwargs")
    kwargs: dict[str, Any] = raw_kwargs if isinstance(raw_kwargs, dict) else {}
    if isinstance(args, list) and len(args) >= 3:
        # GET /api/schedules: args of JobExecutor.__call__(handler_id, method_name,
        # job_params, job_id).
        handler_id, method, params = args[0], args[1], args[2]
        sid = record.get("id") or (args[3] if len(args) > 3 else None)
    else:
        handler_id = record.get("handler_id", kwargs.get("handler_id"))
        method = record.get("job_method", record.get("method", kwargs.get("method_name")))
        params = record.get("job_params", kwargs.get("job_params"))
        if params is None:
            params = args if args is not None else record.get("params", {})
        sid = record.get("id") or record.get("job_id") or kwargs.get("job_id") or \
            record.get("name")
    trigger = record.get("trigger")
    if trigger is None and record.get("trigger_type"):
        trigger = {"type": record["trigger_type"], **(record.get("trigger_args") or {})}
    if not sid:
        # ScheduleZero's own default id (ScheduleJobHandler.post) minus the timestamp.
        sid = f"{handler_id}_{method}"
    return LegacySchedule(str(sid), str(handler_id) if handler_id else None,
                          str(method) if method else None, params if params is not None else {},
                          trigger, record.get("next_fire_time"))


# -- documents ---------------------------------------------------------------------------
def _handler_records(value: Any) -> list[tuple[str | None, Any]]:
    if isinstance(value, dict) and "handlers" in value:
        value = value["handlers"]
    if isinstance(value, list):
        return [(None, r) for r in value]
    if isinstance(value, dict):  # the registry file: {handler_id: {...}}
        return [(str(k), v) for k, v in value.items()]
    raise ValueError(f"handlers is {type(value).__name__}, not a list or a registry mapping")


def _schedule_records(value: Any) -> list[Any]:
    if isinstance(value, dict) and "schedules" in value:
        value = value["schedules"]
    if isinstance(value, dict):  # {schedule_id: record}
        return [{"id": k, **v} if isinstance(v, dict) else v for k, v in value.items()]
    if isinstance(value, list):
        return value
    raise ValueError(f"schedules is {type(value).__name__}, not a list")


def _looks_like_registry(doc: dict[str, Any]) -> bool:
    return bool(doc) and all(isinstance(v, dict) and "address" in v for v in doc.values())


def add_document(inv: Inventory, doc: Any, where: str) -> None:
    """Add what one parsed document holds; unreadable records become ``problems``."""
    handler_part: Any = None
    schedule_part: Any = None
    if isinstance(doc, dict) and ("handlers" in doc or "schedules" in doc):
        handler_part, schedule_part = doc.get("handlers"), doc.get("schedules")
    elif isinstance(doc, dict) and _looks_like_registry(doc):
        handler_part = doc
    elif isinstance(doc, list):
        schedule_part = doc
    else:
        raise SourceError(f"{where}: not a ScheduleZero export (expected handlers and/or "
                          "schedules, a handler registry, or a list of schedules)")
    try:
        handler_records = _handler_records(handler_part) if handler_part is not None else []
        schedule_records = _schedule_records(schedule_part) if schedule_part is not None else []
    except ValueError as e:
        raise SourceError(f"{where}: {e}") from None
    for hid, record in handler_records:
        try:
            inv.handlers.append(handler_from(record, hid))
        except ValueError as e:
            inv.problems.append(f"{where}: {e}")
    for record in schedule_records:
        try:
            inv.schedules.append(schedule_from(record))
        except ValueError as e:
            inv.problems.append(f"{where}: {e}")


def read_file(inv: Inventory, path: str) -> None:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise SourceError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        doc = json.loads(text)
    except ValueError:
        try:
            doc = yaml.safe_load(text)  # the registry file is YAML
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise SourceError(f"{path}: neither JSON nor YAML: {problem}") from None
    add_document(inv, doc, path)
    inv.sources.append(f"file {path}")


def _get_json(url: str, timeout: float) -> Any:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        raise SourceError(f"GET {url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise SourceError(f"GET {url}: {reason}") from None
    except ValueError as e:
        raise SourceError(f"GET {url}: not JSON: {e}") from None


def read_server(inv: Inventory, server: str, timeout: float = 10.0) -> None:
    """GET the two listing endpoints of a running ScheduleZero server."""
    base = server.rstrip("/")
    if "://" not in base:
        base = "http://" + base
    handlers = _get_json(base + HANDLERS_PATH, timeout)
    schedules = _get_json(base + SCHEDULES_PATH, timeout)
    add_document(inv, {"handlers": handlers, "schedules": schedules}, base)
    inv.sources.append(f"server {base} (GET {HANDLERS_PATH}, GET {SCHEDULES_PATH})")
