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
