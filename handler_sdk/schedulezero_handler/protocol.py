"""Wire protocol between the operator and handlers, version 1.

Messages are JSON objects, UTF-8, one per ZMQ frame or HTTP body.

Requests (operator -> handler), all carry ``v`` (protocol version) and ``id``
(a request id unique per connection, echoed in the reply):

``execute``  runId, method, params (object), schedule ("ns/name"), scheduledTime
             (RFC 3339), attempt (1-based), deadline (RFC 3339: past it the result
             is no longer wanted)
``executeAt`` an execute sent ahead of its time: the same fields plus ``startAt``
             (required, RFC 3339 with an offset, e.g. "2026-11-30T17:15:14.250Z").
             The handler accepts it at once exactly as an execute (same checks,
             same slot, joinable and cancellable by runId), holds it, and starts
             the method when its clock reaches startAt (at once if that is past;
             never more than ``MAX_HOLD_SECONDS``, 10 s, after receipt). The reply
             is the one an execute would get. A type of its own rather than an
             optional field of execute: an SDK that predates it refuses it
             ("unknown request type", BadRequest) instead of running the job early,
             and the operator then holds the job itself and sends a plain execute.
``describe`` -> {"methods": [{"name", "doc", "params": [{"name", "type", "required"}]}],
             "sdkVersion", "concurrency", "protocols", "features": ["executeAt"]}
             (``features``: optional request types this SDK takes; informational)
``cancel``   runId -> {"cancelled": bool}
``health``   -> {"ready": bool, "inFlight": int, "concurrency": int}

Replies: ``{"v": 1, "id", "runId"?, "ok": true, "result": ...}`` or
``{"v": 1, "id", "runId"?, "ok": false, "error": {"type", "message", "retryable"}}``.
``id`` is null when the request was too broken to read one from. Types are strict
on both sides: ``v`` is the integer 1, ``ok``/``retryable``/``success`` are JSON
booleans (``"false"`` or ``0`` is a malformed message, never a truthiness test).

Size limits (configurable): a request larger than ``max_request_bytes`` (default
1 MiB) is answered with ``TooLarge`` without being parsed; a result that encodes
larger than ``max_result_bytes`` (default 256 KiB) is replaced by a
``ResultTooLarge`` error (the job ran; its result is not shipped).

Signing: when a shared secret is configured, a request carries a timestamp (unix
seconds) and ``v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>``; on ZMQ as
two extra frames after the body, on HTTP as the ``X-SZ-Timestamp`` and
``X-SZ-Signature`` headers. Requests unsigned, forged or more than
``max_skew_seconds`` (default 60) away from the handler's clock are rejected
with ``Unauthorized``.

ScheduleZero (legacy) requests ``{"method", "params"}`` get legacy replies
``{"success": bool, ...}`` so existing clients keep working.

Strict JSON (``loads``, used by the handler for requests and by the operator for
replies, so both sides accept exactly the same documents). Following I-JSON
(RFC 7493) where plain JSON leaves behaviour to the parser:

- the body must be UTF-8 (no BOM, no UTF-16/32 sniffing);
- nesting deeper than ``MAX_DEPTH`` (64) arrays/objects is refused: deeper input
  is never legitimate here and Python's parser would hit its recursion limit;
- integer literals longer than ``MAX_INT_DIGITS`` (1000) digits are refused,
  well below Python's 4300-digit limit and the quadratic cost of converting them;
- ``NaN``/``Infinity`` and numbers that overflow a double (``1e400``) are refused;
- duplicate object keys are refused: parsers disagree on which one wins, and a
  signature covers the bytes, so an ambiguous body must not be acted on;
- strings with unpaired surrogate escapes (``"\\ud800"``) are refused: they are
  not Unicode text and cannot be re-encoded as UTF-8.

How malformed input is answered (a handler never goes silent on a message it
can answer, and keeps serving afterwards):

- Any body that fails the rules above, is not an object, or has a missing or
  wrongly typed field: ``BadRequest`` (``TooLarge`` for size, ``UnsupportedVersion``
  for ``v``), echoing ``id`` when one could be read. A body recognisable as a
  ScheduleZero request (an object with ``method`` and neither ``v`` nor ``type``)
  gets the legacy shape ``{"success": false, "error": "..."}``; anything not
  recognisable (not JSON at all, too deep to read) gets the v1 shape.
- Method names starting with ``_`` are never exposed: ``UnknownMethod``.
- ZMQ framing: a message is exactly [body] or [body, timestamp, signature]
  (after the REQ delimiter, if any). Any other frame count, or frames 2-3 that
  are not a timestamp and a ``v1=<64 hex>`` signature, rejects the *whole*
  message with ``BadRequest`` (nothing runs): one request per message, so extra
  requests are never silently dropped behind a first one that runs. Signature
  frames are format-checked even when the handler has no secret.
- ZMQ messages larger than 4x ``max_request_bytes`` are dropped by libzmq
  (``ZMQ_MAXMSGSIZE``), which disconnects that peer: the only input not
  answered, so a single peer cannot make the handler buffer gigabytes.
  Between the limit and 4x it is ``TooLarge``.
- HTTP: a malformed request line, header, ``Content-Length`` or chunked body is
  answered ``400`` (unknown transfer codings ``501``, HTTP versions other than
  1.0/1.1 ``505``, header section over 16 KiB ``431``, body over the limit
  ``413``, a request not completed within 30 s ``408``), each with a v1
  ``BadRequest``/``TooLarge`` body, and the connection is closed. A peer that
  closes before sending a byte is just closed.
- A bug in the SDK itself while answering is logged with its traceback and still
  answered (``InternalError``, HTTP 500), so no peer is left waiting.
- Results: a method result that this decoder would refuse (NaN, too deep, an
  unpaired surrogate, keys colliding once stringified) is replaced by a
  non-retryable ``HandlerError`` saying so (the job ran).

The operator reads replies with the same ``loads`` and ``check_reply``; a reply
that fails them becomes ``ProtocolError`` (retryable: the handler may be sick or
something else answers on that port, and another endpoint may do better; the
same double-run caveat as ``Timeout`` applies).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

VERSION = 1
MAX_REQUEST_BYTES = 1 << 20
MAX_RESULT_BYTES = 256 << 10
MAX_SKEW_SECONDS = 60.0
MAX_DEPTH = 64
MAX_INT_DIGITS = 1000
# Error messages are echoed back to the peer; input quoted in them must not make a
# reply grow with the request.
MAX_ERROR_MESSAGE = 8192

REQUEST_TYPES = frozenset({"execute", "executeAt", "describe", "cancel", "health"})
# Optional request types this SDK takes, listed by ``describe`` (informational: the
# operator learns an SDK's support from the reply to an executeAt itself).
FEATURES = ("executeAt",)
# The request type a transport route stands for, when it is another's: an executeAt
# is an execute that starts later, so it goes where an execute goes (HTTP
# ``POST /v1/execute``).
_ROUTED_AS = {"executeAt": "execute"}
_EXECUTE_TYPES = frozenset({"execute", "executeAt"})


class ErrorType:
    BAD_REQUEST = "BadRequest"
    UNSUPPORTED_VERSION = "UnsupportedVersion"
    UNKNOWN_METHOD = "UnknownMethod"
    INVALID_PARAMS = "InvalidParams"
    TOO_LARGE = "TooLarge"
    RESULT_TOO_LARGE = "ResultTooLarge"
    UNAUTHORIZED = "Unauthorized"
    BUSY = "Busy"
    SHUTTING_DOWN = "ShuttingDown"
    CANCELLED = "Cancelled"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    HANDLER_ERROR = "HandlerError"
    # A bug in the handler SDK itself (logged with a traceback there); answered so a
    # peer is never left waiting, retryable because another replica may be fine.
    INTERNAL = "InternalError"
    # Client-side classifications (never sent by a handler).
    TIMEOUT = "Timeout"
    CONNECTION = "ConnectionError"
    PROTOCOL = "ProtocolError"


# Whether the operator should try again (on this or another replica).
RETRYABLE = {
    ErrorType.BUSY: True,
    ErrorType.SHUTTING_DOWN: True,
    ErrorType.DEADLINE_EXCEEDED: True,
    ErrorType.HANDLER_ERROR: True,
    ErrorType.INTERNAL: True,
    ErrorType.TIMEOUT: True,
    ErrorType.CONNECTION: True,
    ErrorType.CANCELLED: False,
    ErrorType.BAD_REQUEST: False,
    ErrorType.UNSUPPORTED_VERSION: False,
    ErrorType.UNKNOWN_METHOD: False,
    ErrorType.INVALID_PARAMS: False,
    ErrorType.TOO_LARGE: False,
    ErrorType.RESULT_TOO_LARGE: False,
    ErrorType.UNAUTHORIZED: False,
    ErrorType.PROTOCOL: True,
}


class ProtocolError(ValueError):
    """A message that cannot be accepted; carries the error type to answer with.

    ``legacy`` marks a request recognised as ScheduleZero-shaped, so the error is
    answered in the legacy ``{"success": false, "error"}`` shape its client reads.
    """

    def __init__(self, error_type: str, message: str, request_id: str | None = None,
                 *, legacy: bool = False) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.request_id = request_id
        self.legacy = legacy


# -- strict JSON ----------------------------------------------------------------
class WireFormatError(ValueError):
    """A body that is not acceptable JSON (see the module docstring for the rules).

    Transport-neutral: the handler answers it as ``BadRequest``/``TooLarge``, the
    operator classifies it as ``ProtocolError``.
    """

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise WireFormatError(f"Invalid JSON: duplicate key {_clip(key, 60)!r}")
            seen.add(key)
    return obj


def _int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS:
        raise WireFormatError(f"Invalid JSON: integer of {len(text)} digits (the limit is "
                              f"{MAX_INT_DIGITS})")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise WireFormatError(f"Invalid JSON: number {_clip(text, 40)} is out of range")
    return value


def _constant(name: str) -> Any:
    raise WireFormatError(f"Invalid JSON: {name} is not a JSON value")


# A lone surrogate can only come from a \uD800-\uDFFF escape (strict UTF-8 decoding
# refuses encoded ones), so bodies without such an escape skip the string walk.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")


def _check_tree(value: Any, max_depth: int, check_strings: bool) -> None:
    """Depth and string checks without recursion (the tree may be ~1000 deep)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > max_depth:
                raise WireFormatError(f"Invalid JSON: nested deeper than {max_depth} levels")
            for key, child in item.items():
                if check_strings:
                    _check_text(key)
                if isinstance(child, dict | list) or (check_strings and isinstance(child, str)):
                    stack.append((child, depth + 1))
        elif isinstance(item, list):
            if depth > max_depth:
                raise WireFormatError(f"Invalid JSON: nested deeper than {max_depth} levels")
            stack.extend((child, depth + 1) for child in item
                         if isinstance(child, dict | list)
                         or (check_strings and isinstance(child, str)))
        elif isinstance(item, str):
            _check_text(item)


def _check_text(text: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise WireFormatError("Invalid JSON: string with an unpaired surrogate escape "
                                  "(not Unicode text)") from None


# One decoder and one encoder for the process: ``json.loads``/``json.dumps`` with
# options build a new JSONDecoder/JSONEncoder on every call, a measurable share of a
# request's cost. Both are stateless between calls, so sharing them is safe.
_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_int=_int, parse_float=_float,
                            parse_constant=_constant)
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str, allow_nan=False)


def loads(raw: bytes, *, max_bytes: int, max_depth: int = MAX_DEPTH,
          what: str = "message") -> Any:
    """Parse one wire body under the protocol's rules; raise only ``WireFormatError``.

    Both sides use this, so what a handler accepts and what the operator accepts
    are the same documents. ``json.loads`` alone raises ``RecursionError`` (not a
    ValueError) for deep input and a plain ``ValueError`` for huge integers; both
    are caught here precisely and turned into ``WireFormatError``.
    """
    if len(raw) > max_bytes:
        raise WireFormatError(f"{what} of {len(raw)} bytes exceeds the limit of {max_bytes}",
                              too_large=True)
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as e:
        raise WireFormatError(f"Invalid JSON: body is not UTF-8 ({e.reason} at byte "
                              f"{e.start})") from None
    try:
        if text.startswith("\ufeff"):  # what json.loads says; JSONDecoder.decode would not
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        value = _DECODER.decode(text)
    except WireFormatError:
        raise
    except RecursionError:
        raise WireFormatError(f"Invalid JSON: nested deeper than {max_depth} levels") from None
    except ValueError as e:  # JSONDecodeError, and int()'s own digit limit
        raise WireFormatError(f"Invalid JSON: {_clip(str(e), 200)}") from None
    _check_tree(value, max_depth, _SURROGATE_ESCAPE.search(text) is not None)
    return value


def plainly_decodable(value: Any, body: bytes) -> bool:
    """True if ``loads`` is sure to accept ``body``, the ``encode``d reply carrying ``value``.

    A shortcut for the common scalar result, so the handler can skip decoding its
    own reply. Only exact JSON scalar types qualify (subclasses take the strict
    path), and only when the body cannot hold what ``loads`` refuses: no container
    in ``value`` (depth, duplicate keys), no integer literal over ``MAX_INT_DIGITS``
    (a body that short has none), no ``\\uD800``-``\\uDFFF`` escape (surrogates);
    NaN and infinities never reach here (``encode`` refuses them). The reply's
    other fields come from a request ``loads`` accepted, or are the protocol's own.
    """
    kind = type(value)
    if value is None or kind is bool or kind is float:
        return True
    return ((kind is str or kind is int) and len(body) <= MAX_INT_DIGITS
            and _SURROGATE_ESCAPE_BYTES.search(body) is None)


# -- requests -------------------------------------------------------------------
class Request(NamedTuple):
    """One parsed request (a NamedTuple: the SDK does not import ``dataclasses``)."""

    type: str
    id: str
    run_id: str | None = None
    method: str | None = None
    params: dict[str, Any] | None = None
    schedule: str | None = None
    scheduled_time: str | None = None
    attempt: int = 1
    deadline: str | None = None
    legacy: bool = False
    # executeAt only: when the method is to start (RFC 3339, as on the wire).
    start_at: str | None = None

    def to_wire(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"v": VERSION, "type": self.type, "id": self.id}
        if self.type in _EXECUTE_TYPES:
            msg.update(runId=self.run_id, method=self.method, params=self.params or {},
                       schedule=self.schedule, scheduledTime=self.scheduled_time,
                       attempt=self.attempt, deadline=self.deadline)
            if self.type == "executeAt":
                msg["startAt"] = self.start_at
        elif self.type == "cancel":
            msg["runId"] = self.run_id
        return msg


def _type_name(kind: type | tuple[type, ...]) -> str:
    return kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)


def _field(msg: dict[str, Any], name: str, kind: type | tuple[type, ...], rid: str | None,
           required: bool = True, error_type: str = ErrorType.BAD_REQUEST) -> Any:
    """A field of the expected JSON type (``bool`` is never an ``int`` here)."""
    value = msg.get(name)
    if value is None:
        if required:
            raise ProtocolError(error_type, f"missing field {name!r}", rid)
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in kinds):
        raise ProtocolError(error_type, f"field {name!r} must be {_type_name(kind)}, got "
                                        f"{type(value).__name__}", rid)
    return value


def is_legacy(msg: Any) -> bool:
    """A ScheduleZero request: an object with ``method`` and neither ``v`` nor ``type``."""
    return isinstance(msg, dict) and "v" not in msg and "type" not in msg and "method" in msg


# RFC 3339 section 5.6 date-time, offset required. ``datetime.fromisoformat`` alone
# also takes a date alone, ISO 8601's basic format and times without an offset; the
# last is read in the handler's local zone, a different instant on each host. ASCII:
# ``\d`` would also match other scripts' digits.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?"
                      r"(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII)


def parse_time(value: str, name: str, request_id: str | None = None) -> float:
    """An RFC 3339 time as unix seconds; ``BadRequest`` naming the field if it is not one.

    ``datetime`` is imported on the first time parsed: an idle handler never needs it.
    """
    if _RFC3339.fullmatch(value) is not None:
        import datetime as dt

        try:
            return dt.datetime.fromisoformat(value.upper().replace("Z", "+00:00")).timestamp()
        except (ValueError, OverflowError):  # out of range (month 13), or unplaceable
            pass
    raise ProtocolError(ErrorType.BAD_REQUEST,
                        f"field {name!r} must be an RFC 3339 time with an offset, such as "
                        f"'2026-11-30T17:15:14.250Z'; got {_clip(value, 60)!r}", request_id)


def decode_request(raw: bytes, max_bytes: int = MAX_REQUEST_BYTES,
                   default_type: str | None = None) -> Request:
    """Parse and validate one request. Raises only ProtocolError, with a clear message.

    ``default_type`` is the request type a transport already knows (the HTTP path):
    it fills in a missing ``type`` and must agree with a present one (an
    ``executeAt`` agrees with ``execute``: it is one that starts later).
    """
    try:
        msg = loads(raw, max_bytes=max_bytes, what="request")
    except WireFormatError as e:
        raise ProtocolError(ErrorType.TOO_LARGE if e.too_large else ErrorType.BAD_REQUEST,
                            str(e)) from None
    if not isinstance(msg, dict):
        raise ProtocolError(ErrorType.BAD_REQUEST,
                            f"request must be a JSON object, got {type(msg).__name__}")
    if is_legacy(msg):
        method = msg["method"]
        params = msg.get("params")
        if params is None:
            params = {}
        if not isinstance(method, str) or not isinstance(params, dict):
            raise ProtocolError(ErrorType.BAD_REQUEST,
                                "legacy request needs a string 'method' and an object 'params'",
                                legacy=True)
        return Request(type="execute", id="legacy", run_id=None, method=method, params=params,
                       legacy=True)
    rid = msg.get("id") if isinstance(msg.get("id"), str) else None
    version = msg.get("v")
    if type(version) is not int or version != VERSION:
        raise ProtocolError(ErrorType.UNSUPPORTED_VERSION,
                            f"protocol version {_clip(repr(version), 40)} not supported (this "
                            f"handler speaks v{VERSION})", rid)
    rid = _field(msg, "id", str, rid)
    if default_type is not None and "type" not in msg:
        kind = default_type
    else:
        kind = _field(msg, "type", str, rid)
    if kind not in REQUEST_TYPES:
        raise ProtocolError(ErrorType.BAD_REQUEST,
                            f"unknown request type {_clip(kind, 60)!r}; expected one of "
                            f"{sorted(REQUEST_TYPES)}", rid)
    if default_type is not None and _ROUTED_AS.get(kind, kind) != default_type:
        raise ProtocolError(ErrorType.BAD_REQUEST,
                            f"a {kind!r} request sent where a {default_type!r} one belongs", rid)
    if kind in _EXECUTE_TYPES:
        attempt = _field(msg, "attempt", int, rid, required=False)
        if attempt is not None and attempt < 1:
            raise ProtocolError(ErrorType.BAD_REQUEST, f"field 'attempt' must be >= 1, got "
                                                       f"{_clip(str(attempt), 40)}", rid)
        start_at: str | None = None
        if kind == "executeAt":
            start_at = _field(msg, "startAt", str, rid)
            parse_time(start_at, "startAt", rid)  # refused here, before anything runs
        return Request(
            type=kind, id=rid,
            run_id=_field(msg, "runId", str, rid),
            method=_field(msg, "method", str, rid),
            params=_field(msg, "params", dict, rid, required=False) or {},
            schedule=_field(msg, "schedule", str, rid, required=False),
            scheduled_time=_field(msg, "scheduledTime", str, rid, required=False),
            attempt=attempt or 1,
            deadline=_field(msg, "deadline", str, rid, required=False),
            start_at=start_at,
        )
    if kind == "cancel":
        return Request(type=kind, id=rid, run_id=_field(msg, "runId", str, rid))
    return Request(type=kind, id=rid)


_TIMESTAMP_FRAME = re.compile(rb"\d{1,12}(\.\d{1,9})?")
_SIGNATURE_FRAME = re.compile(rb"v1=[0-9a-f]{64}")


def split_frames(frames: Sequence[bytes]) -> tuple[bytes, bytes | None, bytes | None]:
    """ZMQ request frames (after any REQ delimiter) -> (body, timestamp, signature).

    Exactly [body] or [body, timestamp, signature]; anything else is refused as a
    whole (the body's ``id`` is echoed by the caller when it can be read), so a
    second request riding in a frame is never silently dropped or half-run.
    """
    if len(frames) == 1:
        return frames[0], None, None
    if len(frames) == 3:
        if (_TIMESTAMP_FRAME.fullmatch(frames[1]) is None
                or _SIGNATURE_FRAME.fullmatch(frames[2]) is None):
            raise ProtocolError(ErrorType.BAD_REQUEST,
                                "frames 2 and 3 must be a signature timestamp and a "
                                "'v1=<64 hex>' signature; one request per message")
        return frames[0], frames[1], frames[2]
    raise ProtocolError(ErrorType.BAD_REQUEST,
                        f"expected 1 to 3 frames (the body alone, or body, timestamp and "
                        f"signature), got {len(frames)}")


# -- replies ----------------------------------------------------------------------
def ok_reply(request_id: str, result: Any, run_id: str | None = None) -> dict[str, Any]:
    reply: dict[str, Any] = {"v": VERSION, "id": request_id, "ok": True, "result": result}
    if run_id is not None:
        reply["runId"] = run_id
    return reply


def error_reply(request_id: str | None, error_type: str, message: str,
                run_id: str | None = None, retryable: bool | None = None) -> dict[str, Any]:
    reply: dict[str, Any] = {
        "v": VERSION, "id": request_id, "ok": False,
        "error": {"type": error_type, "message": _clip(message, MAX_ERROR_MESSAGE),
                  "retryable": RETRYABLE.get(error_type, False) if retryable is None
                  else retryable},
    }
    if run_id is not None:
        reply["runId"] = run_id
    return reply


def legacy_reply(reply: dict[str, Any]) -> dict[str, Any]:
    """ScheduleZero's reply shape for a v1 reply."""
    if reply.get("ok"):
        result = reply.get("result")
        if isinstance(result, dict):
            return {"success": True, **result} if "success" not in result else dict(result)
        return {"success": True, "result": result}
    return {"success": False, "error": reply["error"]["message"]}


def check_reply(reply: Any) -> dict[str, Any]:
    """Validate a decoded v1 reply's shape; raise ProtocolError(ProtocolError) if wrong.

    Strict types, so ``"ok": "false"`` or ``"retryable": 1`` are malformed rather
    than read by truthiness.
    """
    def bad(message: str) -> ProtocolError:
        return ProtocolError(ErrorType.PROTOCOL, f"malformed reply: {message}")

    if not isinstance(reply, dict):
        raise bad(f"expected a JSON object, got {type(reply).__name__}")
    version = reply.get("v")
    if type(version) is not int or version != VERSION:
        raise bad(f"'v' must be {VERSION}, got {_clip(repr(version), 40)}")
    for name in ("id", "runId"):
        if reply.get(name) is not None and not isinstance(reply[name], str):
            raise bad(f"{name!r} must be a string, got {type(reply[name]).__name__}")
    duration = reply.get("durationMs")
    if duration is not None and (isinstance(duration, bool)
                                 or not isinstance(duration, int | float)):
        raise bad(f"'durationMs' must be a number, got {type(duration).__name__}")
    ok = reply.get("ok")
    if not isinstance(ok, bool):
        raise bad(f"'ok' must be a boolean, got {_clip(repr(ok), 40)}")
    if not ok:
        err = reply.get("error")
        if not isinstance(err, dict):
            raise bad(f"'error' must be an object, got {type(err).__name__}")
        for name, kind in (("type", str), ("message", str), ("retryable", bool)):
            if not isinstance(err.get(name), kind):
                raise bad(f"'error.{name}' must be a {kind.__name__}, got "
                          f"{_clip(repr(err.get(name)), 40)}")
        if not err["type"]:
            raise bad("'error.type' is empty")
    return reply


def check_legacy_reply(reply: Any) -> dict[str, Any]:
    """Validate a ScheduleZero reply: an object with a boolean ``success``.

    ``error`` may be any JSON value: ScheduleZero passes a method's dict through,
    so ``{"success": false, "error": {...}}`` exists in the wild.
    """
    if not isinstance(reply, dict):
        raise ProtocolError(ErrorType.PROTOCOL, f"not a ScheduleZero reply: expected a JSON "
                                                f"object, got {type(reply).__name__}")
    success = reply.get("success")
    if not isinstance(success, bool):
        raise ProtocolError(ErrorType.PROTOCOL, f"not a ScheduleZero reply: 'success' must be "
                                                f"a boolean, got {_clip(repr(success), 40)}")
    return reply


def encode(message: Any) -> bytes:
    """Compact ASCII JSON. Refuses NaN/Infinity (ValueError) rather than emit non-JSON."""
    return _ENCODER.encode(message).encode()


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


# -- signing ------------------------------------------------------------------
# hmac/hashlib are imported on first use: they load OpenSSL's libcrypto (~3.5 MiB of
# resident memory), which a handler without a secret never needs.
def sign(secret: bytes, body: bytes, timestamp: float) -> tuple[str, str]:
    import hashlib
    import hmac

    ts = f"{timestamp:.3f}"
    digest = hmac.new(secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return ts, f"v1={digest}"


def verify(secret: bytes, body: bytes, timestamp: str | None, signature: str | None,
           now: float, max_skew: float = MAX_SKEW_SECONDS) -> None:
    """Raise ProtocolError(Unauthorized) unless the signature is valid and fresh."""
    import hashlib
    import hmac

    if not timestamp or not signature:
        raise ProtocolError(ErrorType.UNAUTHORIZED, "request is not signed")
    try:
        ts = float(timestamp)
    except ValueError:
        raise ProtocolError(ErrorType.UNAUTHORIZED, "malformed signature timestamp") from None
    if not math.isfinite(ts) or abs(now - ts) > max_skew:
        raise ProtocolError(ErrorType.UNAUTHORIZED,
                            f"stale request: timestamp is {now - ts:.0f}s away from now")
    expected = "v1=" + hmac.new(secret, timestamp.encode() + b"." + body,
                                hashlib.sha256).hexdigest()
    # Bytes: compare_digest raises TypeError on non-ASCII str (a header can hold any).
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        raise ProtocolError(ErrorType.UNAUTHORIZED, "bad request signature")
