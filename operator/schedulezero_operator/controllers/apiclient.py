"""The operator's one path to the API server: JSON over aiohttp on kopf's event loop.

kopf owns the watches; every other call (status patches, Events, Leases, Secrets,
Deployments) goes through an :class:`ApiClient`. Each holds its own connection pool,
so the Lease elector's client never queues behind the engine's status writes (a
renewal stuck behind them would lapse exactly when the API is busy).

Errors become the engine's ports' exceptions: 409 :class:`~..engine.ports.Conflict`
(the resourceVersion precondition that makes slot claims and Lease renewals
exclusive), 404 :class:`~..engine.ports.NotFound`, anything else :class:`ApiError`
with the server's own message. A 401 fetches the token again (a rotated
ServiceAccount token, an expired exec credential) and retries once.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ..engine.ports import Conflict, NotFound
from . import safe_decode
from .credentials import Credentials


class ApiError(Exception):
    """The API server answered ``status`` (not 404/409); ``reason`` is its message."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status, self.reason = status, reason


class ApiClient:
    def __init__(self, credentials: Credentials, *, connections: int = 16,
                 timeout: float = 30.0) -> None:
        self.credentials = credentials
        self._connections, self._timeout = connections, timeout
        self._session: Any = None

    def _http(self) -> Any:
        if self._session is None:  # made on the loop that uses it
            import aiohttp

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.credentials.ssl_context(),
                                               limit=self._connections),
                timeout=aiohttp.ClientTimeout(total=self._timeout))
        return self._session

    async def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.credentials.needs_refresh():  # a file read or a plugin run: off the loop
            await asyncio.to_thread(self.credentials.refresh)
        if (token := self.credentials.token) is not None:
            headers["Authorization"] = f"Bearer {token}"
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def request(self, verb: str, path: str, body: Any = None,
                      content_type: str | None = None,
                      params: dict[str, str] | None = None) -> dict[str, Any]:
        """One call; the decoded JSON answer. ``body`` is JSON-encoded compactly."""
        data = json.dumps(body, separators=(",", ":")) if body is not None else None
        if data is not None and content_type is None:
            content_type = "application/json"
        for attempt in (1, 2):
            async with self._http().request(
                    verb, self.credentials.server + path, data=data, params=params,
                    headers=await self._headers(content_type)) as resp:
                payload = await resp.read()
                status = resp.status
            if status == 401 and attempt == 1 and (
                    self.credentials.token_file or self.credentials.exec_spec):
                self.credentials.expire()
                continue
            break
        if status == 409:
            raise Conflict(path)
        if status == 404:
            raise NotFound(path)
        if status >= 400:
            raise ApiError(status, _message(payload))
        return dict(safe_decode.loads(payload))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _message(payload: bytes) -> str:
    """The ``message`` of the server's Status object, else the start of the body."""
    try:
        status = json.loads(payload)
        if isinstance(status, dict) and status.get("message"):
            return str(status["message"])[:300]
    except ValueError:
        pass
    return payload[:300].decode("utf-8", "replace")
