"""Leader election: fencing by a monotonic deadline, and release only of our own Lease."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

from kubernetes.client.rest import ApiException
from schedulezero_operator.controllers.leader import LeaderElector


class FakeCoord:
    """coordination.k8s.io Leases in memory, with resourceVersion preconditions."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.rv = 0

    def _view(self) -> Any:
        assert self.lease is not None
        spec = self.lease["spec"]
        renew = spec.get("renewTime")
        return SimpleNamespace(
            metadata=SimpleNamespace(resource_version=str(self.rv)),
            spec=SimpleNamespace(
                holder_identity=spec.get("holderIdentity"),
                renew_time=dt.datetime.strptime(renew, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                    tzinfo=dt.UTC) if renew else None,
                lease_duration_seconds=spec.get("leaseDurationSeconds"),
                lease_transitions=spec.get("leaseTransitions")))

    def read_namespaced_lease(self, name: str, namespace: str) -> Any:
        if self.lease is None:
            raise ApiException(status=404)
        return self._view()

    def create_namespaced_lease(self, namespace: str, body: dict[str, Any]) -> None:
        if self.lease is not None:
            raise ApiException(status=409)
        self.lease, self.rv = {"spec": dict(body["spec"])}, self.rv + 1

    def patch_namespaced_lease(self, name: str, namespace: str, body: dict[str, Any]) -> None:
        assert self.lease is not None
        want = (body.get("metadata") or {}).get("resourceVersion")
        if want is not None and want != str(self.rv):
            raise ApiException(status=409)
        self.lease["spec"].update(body["spec"])
        self.rv += 1


class Mono:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def elector(coord: FakeCoord, identity: str, mono: Mono) -> LeaderElector:
    return LeaderElector(None, "ns", "lease", identity, duration=10, renew=2, coord=coord,
                         monotonic=mono)


async def test_leading_ends_by_the_monotonic_clock_without_asking_the_api() -> None:
    coord, mono = FakeCoord(), Mono()
    a = elector(coord, "a", mono)
    assert not a.leading()
    assert await a._try()
    assert a.leading()
    mono.t += 7.9  # renewal sent at 100 + duration 10 - margin 2
    assert a.leading()
    mono.t += 0.2
    assert not a.leading(), "a frozen leader knows it lost the lease on waking"


async def test_a_failed_renewal_ends_leadership_at_once() -> None:
    coord, mono = FakeCoord(), Mono()
    a = elector(coord, "a", mono)
    assert await a._try()
    coord.lease["spec"]["holderIdentity"] = "b"  # type: ignore[index]
    assert not await a._try()
    assert not a.leading()


async def test_release_frees_our_own_lease() -> None:
    coord, mono = FakeCoord(), Mono()
    a = elector(coord, "a", mono)
    assert await a._try()
    await a.release()
    assert coord.lease["spec"]["holderIdentity"] is None  # type: ignore[index]
    assert not a.leading()


async def test_release_never_frees_a_successors_lease() -> None:
    coord, mono = FakeCoord(), Mono()
    a, b = elector(coord, "a", mono), elector(coord, "b", mono)
    assert await a._try()
    # a freezes past its lease; b takes over.
    coord.lease["spec"]["renewTime"] = "2000-01-01T00:00:00.000000Z"  # type: ignore[index]
    assert await b._try()
    await a.release()  # a wakes up and shuts down
    assert coord.lease["spec"]["holderIdentity"] == "b"  # type: ignore[index]


async def test_standby_cannot_take_an_unexpired_lease() -> None:
    coord, mono = FakeCoord(), Mono()
    a, b = elector(coord, "a", mono), elector(coord, "b", mono)
    assert await a._try()
    assert not await b._try()
    assert not b.leading()
