"""What the cluster benchmarks share: a control plane to run on, and the API server's
own request counters (so API load is counted by the server, not by us)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kubernetes import client, config

REPO = Path(__file__).resolve().parents[1]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


@contextmanager
def control_plane(work: Path) -> Iterator[client.ApiClient]:
    """A client of the cluster KUBECONFIG points at, else of the local control plane
    started for the duration; our CRDs applied either way."""
    cluster = None
    if not os.environ.get("KUBECONFIG"):
        from schedulezero_testcluster import LocalCluster

        os.environ["PYTHONPATH"] = f"{REPO / 'hack'}:{REPO}"
        cluster = LocalCluster(work / "cluster")
        cluster.start()
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
    try:
        subprocess.run(["kubectl", "apply", "-f", str(REPO / "crds")], check=True,
                       capture_output=True)
        subprocess.run(["kubectl", "wait", "--for=condition=Established", "--timeout=60s",
                        "crd/schedules.schedulezero.io", "crd/handlers.schedulezero.io"],
                       check=True, capture_output=True)
        config.load_kube_config(config_file=os.environ["KUBECONFIG"])
        yield client.ApiClient()
    finally:
        if cluster is not None:
            cluster.stop()
            os.environ.pop("KUBECONFIG", None)


# Mutating verbs as apiserver_request_total labels them (APPLY: server-side apply).
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE", "APPLY"})


def api_requests(api: client.ApiClient) -> dict[tuple[str, str, str], int]:
    """``apiserver_request_total`` summed by (verb, resource, subresource)."""
    resp = api.call_api("GET", f"{api.configuration.host}/metrics")
    raw = (resp.read() if hasattr(resp, "read") else resp.data).decode()
    out: dict[tuple[str, str, str], int] = {}
    for line in raw.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(part.split("=", 1) for part in
                      line[line.index("{") + 1:line.index("}")].split(","))
        key = tuple(labels.get(k, '""').strip('"') for k in ("verb", "resource", "subresource"))
        out[key] = out.get(key, 0) + int(float(line.rsplit(" ", 1)[1]))  # type: ignore[index]
    return out


def writes_by_resource(counts: dict[tuple[str, str, str], int], *,
                       subresources: bool = True) -> dict[str, int]:
    """The mutating requests in ``counts`` (from ``api_requests``), by ``resource``, or
    by ``resource/subresource`` when ``subresources``."""
    out: dict[str, int] = {}
    for (verb, resource, sub), n in counts.items():
        if verb in WRITE_VERBS:
            key = f"{resource}/{sub}" if sub and subresources else resource
            out[key] = out.get(key, 0) + n
    return out


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    """Counters that moved between two readings, and by how much."""
    return {k: after.get(k, 0) - before.get(k, 0) for k in sorted(set(after) | set(before))
            if after.get(k, 0) != before.get(k, 0)}
