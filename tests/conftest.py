"""Session-wide access to a real Kubernetes API server.

Tests that need a cluster use the ``kubeconfig`` fixture: it uses the cluster
``KUBECONFIG`` points at, or starts the local control plane (real etcd,
kube-apiserver, controller-manager, scheduler + the test node agent) for the
session and stops it afterwards. Unit tests never request it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis.configuration import set_hypothesis_home_dir

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack"))

# Hypothesis keeps its example database and caches next to the control-plane cache,
# never in the checkout (tests write nothing into the repository).
set_hypothesis_home_dir(str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                            / "schedulezero" / "hypothesis"))


@pytest.fixture(scope="session")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    given = os.environ.get("KUBECONFIG")
    if given:
        yield given
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
        yield str(cluster.kubeconfig)
    finally:
        os.environ.pop("KUBECONFIG", None)
        cluster.stop()
