"""Decode what the API server sends before kopf sees it, so no stored object can kill us.

Why here: the API server accepts JSON nested up to 10,000 levels and integers of
any length inside free-form fields (``spec.params``, a Handler's ``template``).
kopf decodes watch streams with ``json.loads``, which raises ``RecursionError``
(deep nesting) or ``ValueError`` (ints over 4,300 digits); the watcher task dies,
the operator exits, and on restart it lists the same object and dies again: one
object anywhere stops every Schedule in the cluster. Neither the CRD schema nor a
ValidatingAdmissionPolicy can bound the depth of a schemaless field (CEL has no
recursion, and preserve-unknown-fields subtrees have no structure to constrain),
so the defence must sit at the first byte the operator reads. It is:

1. **Fast path unchanged**: ``json.loads``; normal objects cost nothing extra but
   an iterative depth walk of ``spec`` (the only schemaless part of anything we
   watch: status is typed and pruned by our CRDs, metadata is validated by the API
   server) and dropping ``metadata.managedFields`` (which mirrors the object's
   shape, so it is as deep as the deepest field, and nothing here reads it).
2. **Fallback** when ``json.loads`` refuses: :func:`bounded_loads`, an iterative
   parser that never recurses, keeps containers up to :data:`MAX_DEPTH` levels and
   replaces deeper subtrees and unparseable numbers with a marker string.
3. Whatever was cut is named in the object under :data:`DECODE_PROBLEM`, so the
   engine reports it on the object itself (Ready=False + a Warning Event) while
   every other object keeps being served.

:func:`install` points kopf's two decode sites (the watch stream and ``api.get``
used for the initial list) at :func:`loads`; a unit test pins those sites so a
kopf upgrade that moves them fails loudly instead of silently reopening the hole.
"""

from __future__ import annotations

import json
import re
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any

from ..api.models import DECODE_PROBLEM

# Depth kept below `spec` (the engine refuses params deeper than its own, lower
# limit; this one only keeps everything downstream away from recursion limits).
MAX_DEPTH = 48
TOO_DEEP = f"<nested deeper than {MAX_DEPTH} levels: cut by the operator>"
BAD_NUMBER = "<number the operator cannot represent>"

_WS = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_LITERALS = {"true": True, "false": False, "null": None}


class EchoFilter:
    """Watch events that only echo this process's own status writes, answered before
    kopf handles them (its per-event work was a third of the operator's CPU at high
    fire rates). ``absorb(object) -> bool`` is the engine's; an absorbed event reaches
    kopf as a BOOKMARK, which keeps the stream's resourceVersion moving and which kopf
    does not dispatch to handlers."""

    def __init__(self) -> None:
        self.absorb: Any = None  # Callable[[dict], bool] once the engine runs
        self.absorbed = 0

    def __call__(self, doc: Any) -> Any:
        if self.absorb is None or not isinstance(doc, dict) or doc.get("type") != "MODIFIED":
            return doc
        obj = doc.get("object")
        if not isinstance(obj, dict) or obj.get("kind") != "Schedule" or not self.absorb(obj):
            return doc
        self.absorbed += 1
        return {"type": "BOOKMARK", "object": {
            "apiVersion": obj.get("apiVersion"), "kind": "Schedule",
            "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}}}


ECHOES = EchoFilter()


def loads(text: str | bytes) -> Any:
    """``json.loads`` that never raises RecursionError and bounds what it returns."""
    fallback = False
    try:
        doc = json.loads(text)
    except (RecursionError, ValueError) as e:
        if isinstance(e, json.JSONDecodeError):
            raise  # malformed JSON stays an error, as before
        doc = bounded_loads(text.decode("utf-8") if isinstance(text, bytes) else text)
        fallback = True
    _sanitize(doc, fallback)
    return doc


def bounded_loads(text: str, max_depth: int = MAX_DEPTH + 8) -> Any:
    """Parse JSON iteratively; containers deeper than ``max_depth`` become :data:`TOO_DEEP`.

    Raises ``json.JSONDecodeError`` for malformed input, like ``json.loads``.
    Numbers Python cannot hold (over 4,300 digits) become :data:`BAD_NUMBER`.
    A subtree past ``max_depth`` is parsed but not kept, so memory stays bounded
    by what is kept.
    """
    # One frame per open container: [container (None when discarded), is_object, key].
    stack: list[list[Any]] = []
    n = len(text)
    pos = _skip(text, 0)
    while True:
        if pos >= n:
            raise json.JSONDecodeError("Expecting value", text, pos)
        ch = text[pos]
        if ch in "{[":
            keep = len(stack) < max_depth and (not stack or stack[-1][0] is not None)
            is_obj = ch == "{"
            frame: list[Any] = [({} if is_obj else []) if keep else None, is_obj, None]
            pos = _skip(text, pos + 1)
            if pos < n and text[pos] == ("}" if is_obj else "]"):
                pos += 1
                value: Any = frame[0] if keep else TOO_DEEP
            else:
                stack.append(frame)
                if is_obj:
                    pos = _key(text, pos, frame)
                continue  # parse the first member
        else:
            value, pos = _scalar(text, pos)
        # Hand the value to its container; close containers as long as they end here.
        while True:
            pos = _skip(text, pos)
            if not stack:
                if pos != n:
                    raise json.JSONDecodeError("Extra data", text, pos)
                return value
            frame = stack[-1]
            if frame[0] is not None:
                if frame[1]:
                    frame[0][frame[2]] = value
                else:
                    frame[0].append(value)
            ch = text[pos] if pos < n else ""
            if ch == ",":
                pos = _skip(text, pos + 1)
                if frame[1]:
                    pos = _key(text, pos, frame)
                break  # parse the next member
            if ch == ("}" if frame[1] else "]"):
                stack.pop()
                pos += 1
                value = frame[0] if frame[0] is not None else TOO_DEEP
                continue
            raise json.JSONDecodeError("Expecting ',' delimiter", text, pos)


def _skip(text: str, pos: int) -> int:
    return _WS.match(text, pos).end()  # type: ignore[union-attr]


def _key(text: str, pos: int, frame: list[Any]) -> int:
    if pos >= len(text) or text[pos] != '"':
        raise json.JSONDecodeError("Expecting property name enclosed in double quotes",
                                   text, pos)
    frame[2], pos = scanstring(text, pos + 1)
    pos = _skip(text, pos)
    if pos >= len(text) or text[pos] != ":":
        raise json.JSONDecodeError("Expecting ':' delimiter", text, pos)
    return _skip(text, pos + 1)


def _scalar(text: str, pos: int) -> tuple[Any, int]:
    ch = text[pos]
    if ch == '"':
        return scanstring(text, pos + 1)
    for word, value in _LITERALS.items():
        if text.startswith(word, pos):
            return value, pos + len(word)
    m = _NUMBER.match(text, pos)
    if not m:
        raise json.JSONDecodeError("Expecting value", text, pos)
    literal = m.group(0)
    try:
        number: Any = float(literal) if (m.group(1) or m.group(2)) else int(literal)
    except ValueError:  # over Python's int-digit limit
        number = BAD_NUMBER
    return number, m.end()


def _sanitize(doc: Any, fallback: bool) -> None:
    """Bound every object in a watch event, a list response or a single object."""
    if not isinstance(doc, dict):
        return
    objects = [doc["object"]] if isinstance(doc.get("object"), dict) else []
    items = doc.get("items")
    if isinstance(items, list):
        objects.extend(item for item in items if isinstance(item, dict))
    if "metadata" in doc and "spec" in doc:
        objects.append(doc)
    for obj in objects:
        _bound_object(obj, fallback)


def _bound_object(obj: dict[str, Any], fallback: bool) -> None:
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    problems = []
    spec = obj.get("spec")
    if isinstance(spec, dict | list) and cut_deeper_than(spec, MAX_DEPTH):
        problems.append(f"nests deeper than {MAX_DEPTH} levels")
    if fallback:  # only the fallback parser leaves markers: look for them
        if _contains(obj, TOO_DEEP):
            problems.append(f"nests deeper than {MAX_DEPTH} levels")
        if _contains(obj, BAD_NUMBER):
            problems.append("holds a number of more than 4,300 digits")
    if problems:
        obj[DECODE_PROBLEM] = "spec " + " and ".join(dict.fromkeys(problems))


def _contains(value: Any, marker: str) -> bool:
    todo = [value]
    while todo:
        v = todo.pop()
        if v == marker:
            return True
        if isinstance(v, dict):
            todo.extend(v.values())
        elif isinstance(v, list):
            todo.extend(v)
    return False


def cut_deeper_than(value: dict[str, Any] | list[Any], limit: int) -> bool:
    """Replace containers nested deeper than ``limit`` by :data:`TOO_DEEP` (iteratively).

    Returns whether anything was cut.
    """
    cut = False
    todo: list[tuple[Any, int]] = [(value, 1)]
    while todo:
        container, depth = todo.pop()
        items = container.items() if isinstance(container, dict) else enumerate(container)
        for k, v in list(items):
            if isinstance(v, dict | list) and v:
                if depth >= limit:
                    container[k] = TOO_DEEP
                    cut = True
                else:
                    todo.append((v, depth + 1))
    return cut


def install() -> None:
    """Point kopf's decode sites (watch stream, ``api.get``) at :func:`loads`."""
    from kopf._cogs.clients import api as kopf_api

    if getattr(kopf_api, "_schedulezero_safe_decode", False):
        return

    class _Json:
        """Stands in for the ``json`` module inside kopf's api module (its watch stream
        decodes each event line with ``json.loads``)."""

        @staticmethod
        def loads(text: str | bytes) -> Any:
            return ECHOES(loads(text))

        dumps = staticmethod(json.dumps)
        JSONDecodeError = json.JSONDecodeError

    async def get(url: str, *, settings: Any, payload: object | None = None,
                  headers: dict[str, str] | None = None, timeout: Any = None,
                  logger: Any) -> Any:
        response = await kopf_api.request(method="get", url=url, payload=payload,
                                          headers=headers, timeout=timeout,
                                          settings=settings, logger=logger)
        async with response:
            return loads(await response.read())

    kopf_api.json = _Json  # type: ignore[assignment]
    kopf_api.get = get
    kopf_api._schedulezero_safe_decode = True  # type: ignore[attr-defined]
