"""What the API server does with a status, from the generated CRD schema: check and prune.

``violations`` walks an object and its ``openAPIV3Schema`` together and names every
field the API server would drop (unknown, not under
``x-kubernetes-preserve-unknown-fields``; nulls of non-nullable fields) or
reject (wrong type, missing required field, value outside an enum).
``prune`` returns what the API server would store.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from schedulezero_operator.api.crd import all_crds

_FILES = {"schedules": "schedules.yaml", "handlers": "handlers.yaml"}


def status_schema(plural: str) -> dict[str, Any]:
    version = all_crds()[_FILES[plural]]["spec"]["versions"][0]
    return dict(version["schema"]["openAPIV3Schema"]["properties"]["status"])


def _type_ok(value: Any, kind: str | None) -> bool:
    if kind is None:
        return True
    return {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
    }[kind](value)


def violations(obj: Any, schema: dict[str, Any], path: str = "status") -> list[str]:
    found: list[str] = []
    if obj is None:
        if not schema.get("nullable"):
            found.append(f"{path}: null (the API server drops it)")
        return found
    if not _type_ok(obj, schema.get("type")):
        return [f"{path}: {type(obj).__name__} where the schema says {schema.get('type')}"]
    if "enum" in schema and obj not in schema["enum"]:
        found.append(f"{path}: {obj!r} not in {schema['enum']}")
    if schema.get("format") == "date-time" and isinstance(obj, str):
        try:
            dt.datetime.fromisoformat(obj.replace("Z", "+00:00"))
        except ValueError:
            found.append(f"{path}: {obj!r} is not a date-time")
    if isinstance(obj, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, value in obj.items():
            if key in props:
                found += violations(value, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += violations(value, extra, f"{path}.{key}")
            elif not schema.get("x-kubernetes-preserve-unknown-fields"):
                found.append(f"{path}.{key}: not in the schema (the API server prunes it)")
        for key in schema.get("required") or []:
            if key not in obj:
                found.append(f"{path}.{key}: required but missing")
    if isinstance(obj, list):
        items = schema.get("items") or {}
        for i, value in enumerate(obj):
            found += violations(value, items, f"{path}[{i}]")
    return found


def prune(obj: Any, schema: dict[str, Any]) -> Any:
    """``obj`` as the API server stores it: unknown fields and nulls dropped."""
    if isinstance(obj, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        keep = schema.get("x-kubernetes-preserve-unknown-fields")
        out = {}
        for key, value in obj.items():
            if value is None:
                continue
            if key in props:
                out[key] = prune(value, props[key])
            elif isinstance(extra, dict):
                out[key] = prune(value, extra)
            elif keep:
                out[key] = value
        return out
    if isinstance(obj, list):
        return [prune(v, schema.get("items") or {}) for v in obj]
    return obj
