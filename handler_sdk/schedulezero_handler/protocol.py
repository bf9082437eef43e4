"""Wire protocol between the operator and handlers, version 1.

Messages are JSON objects, UTF-8, one per ZMQ frame or HTTP body.

Requests (operator -> handler), all carry ``v`` (protocol version) and ``id``
(a request id unique per connection, echoed in the reply):

``execute``  runId, method, params (object), schedule ("ns/name"), scheduledTime
             (RFC 3339), attempt (1-based), deadline (RFC 3339: past it the result
             is no longer wanted)
``describe`` -> {"methods": [{"name", "doc", "params": [{"name", "type", "required"}]}],
             "sdkVersion", "concurrency", "protocols"}
``cancel``   runId -> {"cancelled": bool}
``health``   -> {"ready": bool, "inFlight": int, "concurrency": int}

Replies: ``{"v": 1, "id", "runId"?, "ok": true, "result": ...}`` or
``{"v": 1, "id", "runId"?, "ok": false, "error": {"type", "message", "retryable"}}``.

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
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

VERSION = 1
MAX_REQUEST_BYTES = 1 << 20
MAX_RESULT_BYTES = 256 << 10
MAX_SKEW_SECONDS = 60.0

REQUEST_TYPES = frozenset({"execute", "describe", "cancel", "health"})


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
    """A message that cannot be accepted; carries the error type to answer with."""

    def __init__(self, error_type: str, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.request_id = request_id


@dataclass(frozen=True)
class Request:
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

    def to_wire(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"v": VERSION, "type": self.type, "id": self.id}
        if self.type == "execute":
            msg.update(runId=self.run_id, method=self.method, params=self.params or {},
                       schedule=self.schedule, scheduledTime=self.scheduled_time,
                       attempt=self.attempt, deadline=self.deadline)
        elif self.type == "cancel":
            msg["runId"] = self.run_id
        return msg


def _field(msg: dict[str, Any], name: str, kind: type | tuple[type, ...], rid: str | None,
           required: bool = True) -> Any:
    value = msg.get(name)
    if value is None:
        if required:
            raise ProtocolError(ErrorType.BAD_REQUEST, f"missing field {name!r}", rid)
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ProtocolError(ErrorType.BAD_REQUEST,
                            f"field {name!r} must be {names}, got {type(value).__name__}", rid)
    return value


def decode_request(raw: bytes, max_bytes: int = MAX_REQUEST_BYTES) -> Request:
    """Parse and validate one request. Raises ProtocolError with a clear message."""
    if len(raw) > max_bytes:
        raise ProtocolError(ErrorType.TOO_LARGE,
                            f"request of {len(raw)} bytes exceeds the limit of {max_bytes}")
    try:
        msg = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolError(ErrorType.BAD_REQUEST, f"Invalid JSON: {e}") from None
    if not isinstance(msg, dict):
        raise ProtocolError(ErrorType.BAD_REQUEST,
                            f"request must be a JSON object, got {type(msg).__name__}")
    if "v" not in msg and "type" not in msg and "method" in msg:
        method = msg["method"]
        params = msg.get("params") or {}
        if not isinstance(method, str) or not isinstance(params, dict):
            raise ProtocolError(ErrorType.BAD_REQUEST,
                                "legacy request needs a string 'method' and an object 'params'")
        return Request(type="execute", id="legacy", run_id=None, method=method, params=params,
                       legacy=True)
    rid = msg.get("id") if isinstance(msg.get("id"), str) else None
    version = msg.get("v")
    if version != VERSION:
        raise ProtocolError(ErrorType.UNSUPPORTED_VERSION,
                            f"protocol version {version!r} not supported (this handler speaks "
                            f"v{VERSION})", rid)
    rid = _field(msg, "id", str, rid)
    kind = _field(msg, "type", str, rid)
    if kind not in REQUEST_TYPES:
        raise ProtocolError(ErrorType.BAD_REQUEST,
                            f"unknown request type {kind!r}; expected one of "
                            f"{sorted(REQUEST_TYPES)}", rid)
    if kind == "execute":
        attempt = _field(msg, "attempt", int, rid, required=False) or 1
        return Request(
            type=kind, id=rid,
            run_id=_field(msg, "runId", str, rid),
            method=_field(msg, "method", str, rid),
            params=_field(msg, "params", dict, rid, required=False) or {},
            schedule=_field(msg, "schedule", str, rid, required=False),
            scheduled_time=_field(msg, "scheduledTime", str, rid, required=False),
            attempt=attempt,
            deadline=_field(msg, "deadline", str, rid, required=False),
        )
    if kind == "cancel":
        return Request(type=kind, id=rid, run_id=_field(msg, "runId", str, rid))
    return Request(type=kind, id=rid)


def ok_reply(request_id: str, result: Any, run_id: str | None = None) -> dict[str, Any]:
    reply: dict[str, Any] = {"v": VERSION, "id": request_id, "ok": True, "result": result}
    if run_id is not None:
        reply["runId"] = run_id
    return reply


def error_reply(request_id: str | None, error_type: str, message: str,
                run_id: str | None = None, retryable: bool | None = None) -> dict[str, Any]:
    reply: dict[str, Any] = {
        "v": VERSION, "id": request_id, "ok": False,
        "error": {"type": error_type, "message": message,
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


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), default=str).encode()


# -- signing ------------------------------------------------------------------
def sign(secret: bytes, body: bytes, timestamp: float) -> tuple[str, str]:
    ts = f"{timestamp:.3f}"
    digest = hmac.new(secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return ts, f"v1={digest}"


def verify(secret: bytes, body: bytes, timestamp: str | None, signature: str | None,
           now: float, max_skew: float = MAX_SKEW_SECONDS) -> None:
    """Raise ProtocolError(Unauthorized) unless the signature is valid and fresh."""
    if not timestamp or not signature:
        raise ProtocolError(ErrorType.UNAUTHORIZED, "request is not signed")
    try:
        ts = float(timestamp)
    except ValueError:
        raise ProtocolError(ErrorType.UNAUTHORIZED, "malformed signature timestamp") from None
    if abs(now - ts) > max_skew:
        raise ProtocolError(ErrorType.UNAUTHORIZED,
                            f"stale request: timestamp is {now - ts:.0f}s away from now")
    expected = "v1=" + hmac.new(secret, timestamp.encode() + b"." + body,
                                hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise ProtocolError(ErrorType.UNAUTHORIZED, "bad request signature")
