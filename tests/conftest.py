"""Session-wide access to a real Kubernetes API server.

Tests that need a cluster use the ``kubeconfig`` fixture: it uses the cluster
``KUBECONFIG`` points at, or starts the local control plane (real etcd,
kube-apiserver, controller-manager, scheduler + the test node agent) for the
session and stops it afterwards. Unit tests never request it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis.configuration import set_hypothesis_home_dir
from kubernetes import client

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack"))

# Hypothesis keeps its example database and caches next to the control-plane cache,
# never in the checkout (tests write nothing into the repository).
set_hypothesis_home_dir(str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                            / "schedulezero" / "hypothesis"))


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The local control plane this session started (a ``LocalCluster``), or None when
    ``KUBECONFIG`` points at a cluster: fault tests that restart etcd or the API server
    need the former and skip on the latter."""
    if os.environ.get("KUBECONFIG"):
        yield None
        return
    from schedulezero_testcluster import LocalCluster

    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in [str(REPO / "hack"), os.environ.get("PYTHONPATH", "")] if p
    )
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        print(f"\nlocal cluster: {cluster.timings}", file=sys.stderr)
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
        yield cluster
    finally:
        os.environ.pop("KUBECONFIG", None)
        cluster.stop()


@pytest.fixture(scope="session")
def kubeconfig(local_cluster: Any) -> str:
    """The cluster's kubeconfig: the one ``KUBECONFIG`` names, or the local one's."""
    return str(local_cluster.kubeconfig) if local_cluster is not None \
        else os.environ["KUBECONFIG"]


# -- what e2e and fault tests share (instantiated only when a test asks) -------------
from tests.e2e.kube import api_client, unique, wait_for  # noqa: E402
from tests.e2e.objects import FIGURES, LATENESS_MS, Objects  # noqa: E402
from tests.e2e.operator_harness import HandlerProcess, OperatorProcess  # noqa: E402


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
