"""Messages a person can act on, for what is wrong with an object or an API call."""

from __future__ import annotations

import json

from pydantic import ValidationError


class InvalidObject(ValueError):
    """The object cannot be used as stored (e.g. the decoder had to cut it)."""


def validation_message(e: Exception) -> str:
    """``spec.<field>: <what is wrong>`` for up to five problems; else the error's text."""
    if isinstance(e, ValidationError):
        parts = []
        for err in e.errors()[:5]:
            where = ".".join(str(x) for x in err["loc"])
            parts.append(f"spec.{where}: {err['msg'].removeprefix('Value error, ')}")
        return "invalid spec: " + "; ".join(parts)
    return str(e)


def api_error_text(e: Exception) -> str:
    """The API server's message, never a bare KeyError."""
    status, reason = getattr(e, "status", None), getattr(e, "reason", None)
    body = getattr(e, "body", None)
    if status is not None:
        detail = ""
        if isinstance(body, str | bytes):
            try:
                detail = str(json.loads(body).get("message") or "")
            except (ValueError, AttributeError):
                detail = ""
        return f"the API server answered {status} {reason or ''}: {detail}".strip(": ")
    return f"operator error ({type(e).__name__}); see the operator log"
