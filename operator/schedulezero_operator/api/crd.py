"""Generate the CRDs from the models: ``python -m schedulezero_operator.api.crd [--check]``.

Pydantic's JSON schema is turned into a Kubernetes *structural* schema: refs
inlined, ``Optional`` unwrapped (absent instead of null), free-form objects
marked ``x-kubernetes-preserve-unknown-fields``. Writes ``crds/`` and the Helm
chart's ``crds/``; ``--check`` exits 1 if either differs (used by a test).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from .models import GROUP, VERSION, HandlerSpec, HandlerStatus, ScheduleSpec, ScheduleStatus

REPO = Path(__file__).resolve().parents[3]
TARGETS = [REPO / "crds", REPO / "charts" / "schedulezero-operator" / "crds"]
_DROP = {"title", "default", "$defs"}


def structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        target = defs[schema["$ref"].split("/")[-1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return structural(merged, defs)
    if "anyOf" in schema:
        options = [o for o in schema["anyOf"] if o.get("type") != "null"]
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        if len(options) == 1:
            return structural({**options[0], **rest}, defs)
        raise ValueError(f"unsupported union in schema: {schema}")
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROP and not (key == "default" and isinstance(value, str | int | float | bool)):
            continue  # scalar defaults stay: the API server fills them, kubectl shows them
        if key == "properties":
            out["properties"] = {k: structural(v, defs) for k, v in value.items()}
        elif key == "items":
            out["items"] = structural(value, defs)
        elif key == "additionalProperties":
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            else:
                out["additionalProperties"] = structural(value, defs)
        elif key == "const":
            out["enum"] = [value]
        else:
            out[key] = value
    if out.get("type") == "object" and "properties" not in out and \
            "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def model_schema(model: type[Any]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True)
    return structural(raw, raw.get("$defs", {}))


def crd(kind: str, plural: str, short: list[str], spec: type[Any], status: type[Any],
        columns: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural,
                      "singular": kind.lower(), "shortNames": short,
                      "categories": ["schedulezero"]},
            "scope": "Namespaced",
            "versions": [{
                "name": VERSION, "served": True, "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": (spec.__doc__ or "").strip() or f"{kind} resource.",
                    "properties": {
                        "apiVersion": {"type": "string"}, "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": model_schema(spec),
                        "status": model_schema(status),
                    },
                    "required": ["spec"],
                }},
            }],
        },
    }


def col(name: str, path: str, kind: str = "string", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": kind, "jsonPath": path, **extra}


def all_crds() -> dict[str, dict[str, Any]]:
    ScheduleSpec.__doc__ = "When to call which method of which handler, and how."
    HandlerSpec.__doc__ = "A handler workload: its endpoints or Deployment, protocol, scaling."
    return {
        "schedules.yaml": crd("Schedule", "schedules", ["szs", "szschedule"], ScheduleSpec,
                              ScheduleStatus, [
            col("Handler", ".spec.handler"), col("Method", ".spec.method"),
            col("Schedule", ".status.trigger"),
            col("Suspend", ".spec.suspend", "boolean"),
            col("Last Run", ".status.lastScheduleTime", "date"),
            col("Result", ".status.lastResult"),
            # "string", not "date": kubectl renders future dates as <invalid>.
            col("Next Run", ".status.nextRunTime"),
            col("Age", ".metadata.creationTimestamp", "date"),
        ]),
        "handlers.yaml": crd("Handler", "handlers", ["szh", "szhandler"], HandlerSpec,
                             HandlerStatus, [
            col("Protocol", ".spec.protocol"), col("Ready", ".status.ready"),
            col("Desired", ".status.desiredReplicas", "integer"),
            col("In-Flight", ".status.inFlight", "integer"),
            col("Queued", ".status.queued", "integer"),
            col("Age", ".metadata.creationTimestamp", "date"),
        ]),
    }


def render(doc: dict[str, Any]) -> str:
    header = "# Generated from operator/schedulezero_operator/api/models.py; do not edit.\n"
    return header + yaml.safe_dump(doc, sort_keys=False, width=100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail on drift, write nothing")
    args = parser.parse_args()
    drift = []
    for name, doc in all_crds().items():
        text = render(doc)
        for target in TARGETS:
            path = target / name
            if args.check:
                if not path.exists() or path.read_text() != text:
                    drift.append(str(path.relative_to(REPO)))
            else:
                target.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    if drift:
        print("CRDs out of date (run `make crds`): " + ", ".join(drift), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
