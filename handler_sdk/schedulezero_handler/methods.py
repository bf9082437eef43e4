"""Which methods of a handler class are callable, and how their params are checked.

A handler is a plain class. Only methods marked with ``@method`` (or listed in a
class attribute ``__schedulezero_methods__``) are exposed, so helpers never leak
as remotely callable; names starting with ``_`` can never be exposed at all.
Parameters are checked against the method's signature and type hints before the
call, so a wrong call fails with a message that names the parameter instead of a
TypeError from deep inside the handler.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__schedulezero_method__"


def is_private(name: str) -> bool:
    """Names starting with ``_`` (``__init__``, ``_helper``) are never remotely callable."""
    return name.startswith("_")


def method(fn: F | None = None, *, name: str | None = None) -> Any:
    """Expose a handler method: ``@method`` or ``@method(name="other_name")``.

    Refuses private names at class setup (a TypeError while the class body runs)
    instead of silently not exposing them: ``_``-names are never callable over the
    wire, because dunders and helpers reached by name are how a request would get
    at the object's internals.
    """
    if name is not None and (not isinstance(name, str) or not name or is_private(name)):
        raise TypeError(f"@method(name={name!r}): an exposed name must be a non-empty string "
                        "not starting with '_' (private names are never callable remotely)")

    def mark(f: F) -> F:
        own = getattr(f, "__name__", "")
        if is_private(own):
            raise TypeError(f"@method cannot expose {own!r}: names starting with '_' are never "
                            "callable remotely; rename the method (e.g. without the "
                            "underscore)")
        setattr(f, _MARK, name or own)
        return f

    return mark(fn) if fn is not None else mark


# The records here are NamedTuples, not dataclasses: immutable all the same, and the
# SDK does not import ``dataclasses`` (~0.35 MiB of an idle handler with its
# generated methods; see ``make bench-sdk-rss``).
class JobContext(NamedTuple):
    """Injected into methods that declare a parameter annotated ``JobContext``."""

    run_id: str | None
    attempt: int
    schedule: str | None
    scheduled_time: str | None
    deadline: str | None
    cancelled: Any = None  # threading.Event set when the run is cancelled


class InvalidParams(ValueError):
    pass


class Param(NamedTuple):
    name: str
    annotation: Any
    required: bool
    kind: inspect._ParameterKind

    def type_name(self) -> str:
        if self.annotation is inspect.Parameter.empty:
            return "any"
        return getattr(self.annotation, "__name__", None) or str(self.annotation).replace(
            "typing.", "")


class MethodSpec(NamedTuple):
    name: str
    func: Callable[..., Any]
    params: tuple[Param, ...]
    is_async: bool
    accepts_extra: bool
    context_param: str | None
    legacy_dict: bool  # ScheduleZero style: one `params: dict` argument
    doc: str

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "doc": self.doc,
            "async": self.is_async,
            "params": [{"name": p.name, "type": p.type_name(), "required": p.required}
                       for p in self.params],
        }


def discover(instance: object) -> dict[str, MethodSpec]:
    cls = type(instance)
    explicit = getattr(cls, "__schedulezero_methods__", None)
    specs: dict[str, MethodSpec] = {}
    for attr in dir(cls):
        if attr.startswith("_"):
            continue
        raw = getattr(cls, attr, None)
        exposed = getattr(raw, _MARK, None)
        if exposed is None and explicit is not None and attr in explicit:
            exposed = attr
        if exposed is None or not callable(raw):
            continue
        if not isinstance(exposed, str) or is_private(exposed):  # a hand-set mark
            raise TypeError(f"{cls.__name__}.{attr} is exposed as {exposed!r}: an exposed name "
                            "must be a string not starting with '_'")
        specs[exposed] = _spec(exposed, getattr(instance, attr))
    if explicit:
        private = [a for a in explicit if not isinstance(a, str) or is_private(a)]
        if private:
            raise TypeError(f"__schedulezero_methods__ lists private names {private}: names "
                            "starting with '_' are never callable remotely")
        unknown = set(explicit) - {a for a in dir(cls) if callable(getattr(cls, a, None))}
        if unknown:
            raise TypeError(f"__schedulezero_methods__ names missing methods: {sorted(unknown)}")
    return specs


def _spec(name: str, bound: Callable[..., Any]) -> MethodSpec:
    sig = inspect.signature(bound)
    try:
        hints = typing.get_type_hints(bound)
    except Exception:  # noqa: BLE001 - unresolved forward refs: fall back to raw annotations
        hints = {}
    params: list[Param] = []
    accepts_extra = False
    context_param = None
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            accepts_extra = True
            continue
        if p.kind is p.VAR_POSITIONAL:
            continue
        annotation = hints.get(p.name, p.annotation)
        if annotation is JobContext or JobContext in typing.get_args(annotation):
            context_param = p.name
            continue
        params.append(Param(p.name, annotation, p.default is p.empty, p.kind))
    legacy = (len(params) == 1 and params[0].name == "params"
              and params[0].annotation in (dict, dict[str, Any], typing.Dict)  # noqa: UP006
              and not accepts_extra)
    doc = inspect.getdoc(bound) or ""
    return MethodSpec(name, bound, tuple(params), inspect.iscoroutinefunction(bound),
                      accepts_extra, context_param, legacy, doc.split("\n\n")[0])


def bind(spec: MethodSpec, params: dict[str, Any]) -> dict[str, Any]:
    """Check ``params`` against the method; return the keyword arguments to call with."""
    if spec.legacy_dict:
        return {"params": params}
    known = {p.name: p for p in spec.params}
    extra = sorted(set(params) - set(known))
    if extra and not spec.accepts_extra:
        raise InvalidParams(
            f"{spec.name}() got unexpected parameter(s) {', '.join(extra)}; "
            f"it takes: {', '.join(known) or 'no parameters'}")
    missing = [p.name for p in spec.params if p.required and p.name not in params]
    if missing:
        raise InvalidParams(f"{spec.name}() is missing required parameter(s) "
                            f"{', '.join(missing)}")
    for name, value in params.items():
        if name in known and not _matches(value, known[name].annotation):
            raise InvalidParams(
                f"{spec.name}(): parameter {name!r} must be {known[name].type_name()}, "
                f"got {type(value).__name__} {_short(value)}")
    return dict(params)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _matches(value: Any, annotation: Any) -> bool:
    """A JSON value against a type hint; unknown hints accept anything."""
    if annotation in (inspect.Parameter.empty, Any, object):
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation in (str, bool):
        return isinstance(value, annotation)
    base = origin or annotation
    if base in (list, tuple, typing.Sequence):
        args = typing.get_args(annotation)
        return isinstance(value, list) and (not args or all(_matches(v, args[0]) for v in value))
    if base in (dict, typing.Mapping):
        args = typing.get_args(annotation)
        return isinstance(value, dict) and (
            len(args) < 2 or all(_matches(v, args[1]) for v in value.values()))
    return True
