"""The operator's API client against a small HTTP server on loopback: headers,
bodies, the error mapping the engine relies on, and the 401 token refresh."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from schedulezero_operator.controllers.apiclient import ApiClient, ApiError
from schedulezero_operator.controllers.buckets import Leases
from schedulezero_operator.controllers.credentials import Credentials
from schedulezero_operator.controllers.kube import Kube
from schedulezero_operator.engine.ports import Conflict, NotFound


class Server:
    """Answers from a table of (method, path) -> (status, body); records requests."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], list[tuple[int, Any]]] = {}
        self.seen: list[dict[str, Any]] = []

    def on(self, method: str, path: str, *answers: tuple[int, Any]) -> None:
        self.answers[(method, path)] = list(answers)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append({"method": request.method, "path": request.path,
                          "query": dict(request.query),
                          "auth": request.headers.get("Authorization"),
                          "type": request.headers.get("Content-Type"),
                          "body": json.loads(body) if body else None})
        queue = self.answers.get((request.method, request.path)) or [(404, {})]
        status, answer = queue.pop(0) if len(queue) > 1 else queue[0]
        return web.json_response(answer, status=status)


@pytest.fixture
async def server() -> AsyncIterator[tuple[Server, str]]:
    srv = Server()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", srv.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield srv, f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_status_patch_is_a_merge_patch_with_the_precondition(
        server: tuple[Server, str]) -> None:
    srv, url = server
    srv.on("PATCH", "/apis/schedulezero.io/v1alpha1/namespaces/ns/schedules/s/status",
           (200, {"metadata": {"resourceVersion": "8"}}), (409, {"reason": "Conflict"}))
    kube = Kube(ApiClient(Credentials(server=url, token="tok")))
    try:
        assert await kube.patch_status("schedules", "ns", "s", "7", {"a": 1}) == "8"
        with pytest.raises(Conflict):
            await kube.patch_status("schedules", "ns", "s", "7", {"a": 1})
    finally:
        await kube.close()
    first = srv.seen[0]
    assert first["auth"] == "Bearer tok"
    assert first["type"] == "application/merge-patch+json"
    assert first["body"] == {"status": {"a": 1}, "metadata": {"resourceVersion": "7"}}


async def test_errors_carry_the_servers_message(server: tuple[Server, str]) -> None:
    srv, url = server
    srv.on("POST", "/api/v1/namespaces/ns/events",
           (403, {"kind": "Status", "message": 'events is forbidden: User "x"'}))
    api = ApiClient(Credentials(server=url))
    try:
        with pytest.raises(ApiError) as err:
            await api.request("POST", "/api/v1/namespaces/ns/events", {"x": 1})
        assert err.value.status == 403 and err.value.reason.startswith("events is forbidden")
        with pytest.raises(NotFound):
            await api.request("GET", "/api/v1/namespaces/ns/secrets/gone")
    finally:
        await api.close()
    assert srv.seen[0]["auth"] is None  # no token configured: none sent
    assert srv.seen[0]["type"] == "application/json"


async def test_a_401_reads_the_token_again_and_retries_once(
        server: tuple[Server, str], tmp_path: Path) -> None:
    srv, url = server
    token = tmp_path / "token"
    token.write_text("old")
    creds = Credentials(server=url, token_file=str(token))
    creds.refresh()
    token.write_text("new")  # rotated; the cached one is refused
    srv.on("GET", "/api/v1/namespaces/ns/secrets/s",
           (401, {"message": "Unauthorized"}), (200, {"data": {"k": "aGk="}}))
    kube = Kube(ApiClient(creds))
    try:
        assert await kube.read_secret_key("ns", "s", "k") == b"hi"
    finally:
        await kube.close()
    assert [s["auth"] for s in srv.seen] == ["Bearer old", "Bearer new"]


async def test_deployments_create_then_strategic_patch_and_scale(
        server: tuple[Server, str]) -> None:
    srv, url = server
    path = "/apis/apps/v1/namespaces/ns/deployments/h"
    body = {"metadata": {"namespace": "ns", "name": "h", "labels": {"a": "b"},
                         "annotations": {}, "ownerReferences": []},
            "spec": {"replicas": 3, "template": {"spec": {"containers": []}}}}
    srv.on("GET", path, (404, {}), (200, body))
    srv.on("POST", "/apis/apps/v1/namespaces/ns/deployments", (201, body))
    srv.on("PATCH", path, (200, body))
    srv.on("PATCH", path + "/scale", (200, {}))
    kube = Kube(ApiClient(Credentials(server=url)))
    try:
        assert await kube.apply_deployment(body) == body  # created
        assert await kube.apply_deployment(body) == body  # updated
        await kube.scale("ns", "h", 5)
    finally:
        await kube.close()
    calls = [(s["method"], s["path"], s["type"]) for s in srv.seen]
    strategic = "application/strategic-merge-patch+json"
    assert calls == [("GET", path, None),
                     ("POST", "/apis/apps/v1/namespaces/ns/deployments", "application/json"),
                     ("GET", path, None), ("PATCH", path, strategic),
                     ("PATCH", path + "/scale", strategic)]
    assert "replicas" not in srv.seen[3]["body"]["spec"]  # the scaler owns replicas
    assert srv.seen[4]["body"] == {"spec": {"replicas": 5}}


async def test_leases_over_http(server: tuple[Server, str]) -> None:
    srv, url = server
    base = "/apis/coordination.k8s.io/v1/namespaces/ns/leases"
    lease = {"metadata": {"name": "sz-bucket-0", "resourceVersion": "3"},
             "spec": {"holderIdentity": "a"}}
    srv.on("GET", base, (200, {"items": [lease]}))
    srv.on("PATCH", base + "/sz-bucket-0", (409, {}))
    srv.on("DELETE", base + "/sz-member-a", (200, {}))
    api = ApiClient(Credentials(server=url))
    leases = Leases(api)
    try:
        assert await leases.list("ns") == [lease]
        with pytest.raises(Conflict):
            await leases.patch("ns", "sz-bucket-0", {"spec": {"holderIdentity": "b"}})
        await leases.delete("ns", "sz-member-a")
    finally:
        await api.close()
    assert srv.seen[1]["type"] == "application/merge-patch+json"
