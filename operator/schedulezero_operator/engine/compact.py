"""Pydantic models as the engine keeps them: one fields-set per class, shared.

Why: pydantic gives every instance its own ``__pydantic_fields_set__``, a Python set of
the field names given at construction; with five names or more that is a ~730-byte
table. A Schedule's parsed spec, its status record, its claim and each history entry
are a dozen such models: at 10,000 Schedules, tens of MB of sets. Nothing here reads
them (documents are dumped with ``exclude_none``, never ``exclude_unset``, and model
equality ignores them), so the models the engine keeps share one set per class, of
all its field names. A set that holds every name is never changed by pydantic:
assigning a field adds its name (already there), and ``model_copy`` copies the set.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)
_ALL_FIELDS: dict[type[BaseModel], set[str]] = {}


def compact(model: M) -> M:
    """``model`` and the models inside it (fields, lists, dict values), each with its
    class's shared fields-set. Returns ``model``."""
    cls = type(model)
    shared = _ALL_FIELDS.get(cls)
    if shared is None:
        shared = _ALL_FIELDS[cls] = set(cls.model_fields)
    object.__setattr__(model, "__pydantic_fields_set__", shared)
    for value in model.__dict__.values():
        if isinstance(value, BaseModel):
            compact(value)
        elif isinstance(value, list | tuple):
            for item in value:
                if isinstance(item, BaseModel):
                    compact(item)
        elif isinstance(value, dict):
            for item in value.values():
                if isinstance(item, BaseModel):
                    compact(item)
    return model
