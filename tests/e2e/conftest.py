from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from .kube import api_client, unique, wait_for


@pytest.fixture(scope="session")
def api(kubeconfig: str) -> client.ApiClient:
    return api_client(kubeconfig)


@pytest.fixture
def namespace(api: client.ApiClient) -> Iterator[str]:
    """A fresh namespace per test, deleted (and its deletion awaited) afterwards."""
    core = client.CoreV1Api(api)
    name = unique("e2e")
    core.create_namespace({"metadata": {"name": name}})
    wait_for("default service account", lambda: core.read_namespaced_service_account(
        "default", name))
    yield name
    core.delete_namespace(name)


# -- operator e2e fixtures -----------------------------------------------------------
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from .operator_harness import REPO, HandlerProcess, OperatorProcess  # noqa: E402

LATENESS_MS: list[float] = []
FIGURES: dict[str, float] = {}


@pytest.fixture(scope="session")
def crds(kubeconfig: str, api: client.ApiClient) -> None:
    subprocess.run(["kubectl", "--kubeconfig", kubeconfig, "apply", "-f", str(REPO / "crds")],
                   check=True, capture_output=True)
    ext = client.ApiextensionsV1Api(api)

    def established() -> bool:
        for name in ("schedules.schedulezero.io", "handlers.schedulezero.io"):
            crd = ext.read_custom_resource_definition(name)
            conds = {c.type: c.status for c in crd.status.conditions or []}
            if conds.get("Established") != "True":
                return False
        return True

    wait_for("CRDs established", established)


@pytest.fixture(scope="session")
def operator(crds: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    op = OperatorProcess(tmp_path_factory.mktemp("operator") / "operator.log")
    op.start()
    yield op
    op.stop()


@pytest.fixture
def handler_proc(tmp_path: Path) -> Iterator[HandlerProcess]:
    h = HandlerProcess(tmp_path)
    h.start()
    yield h
    h.stop()


class Objects:
    """Create/read Schedules and Handlers in one namespace."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.ns = namespace

    def create(self, kind: str, name: str, spec: dict[str, Any],
               annotations: dict[str, str] | None = None) -> dict[str, Any]:
        body = {"apiVersion": "schedulezero.io/v1alpha1", "kind": kind,
                "metadata": {"name": name, "annotations": annotations or {}}, "spec": spec}
        return dict(self.custom.create_namespaced_custom_object(
            "schedulezero.io", "v1alpha1", self.ns, kind.lower() + "s", body))

    def handler(self, name: str, address: str, **spec: Any) -> dict[str, Any]:
        return self.create("Handler", name, {"protocol": "zmq", "endpoints": [address], **spec})

    def schedule(self, name: str, **spec: Any) -> dict[str, Any]:
        return self.create("Schedule", name, spec)

    def get(self, name: str, plural: str = "schedules") -> dict[str, Any]:
        return dict(self.custom.get_namespaced_custom_object(
            "schedulezero.io", "v1alpha1", self.ns, plural, name))

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.get(name).get("status") or {})

    def patch(self, name: str, body: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            "schedulezero.io", "v1alpha1", self.ns, "schedules", name, body,
            _content_type="application/merge-patch+json")

    def condition(self, name: str, kind: str) -> dict[str, Any] | None:
        for c in self.status(name).get("conditions") or []:
            if c["type"] == kind:
                return dict(c)
        return None

    def events(self, name: str) -> list[Any]:
        return [e for e in self.core.list_namespaced_event(self.ns).items
                if e.involved_object.name == name]


@pytest.fixture
def objects(api: client.ApiClient, namespace: str, operator: OperatorProcess) -> Objects:
    return Objects(api, namespace)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for name, value in FIGURES.items():
        terminalreporter.write_line(f"{name}: {value}")
    if LATENESS_MS:
        xs = sorted(LATENESS_MS)
        p50, p99 = xs[len(xs) // 2], xs[min(len(xs) - 1, int(len(xs) * 0.99))]
        terminalreporter.write_line(
            f"fire lateness (scheduled time -> handler receipt) over {len(xs)} runs: "
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {xs[-1]:.1f} ms")
