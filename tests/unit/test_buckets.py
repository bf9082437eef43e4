"""Bucketed leader election: fair shares, hand-over on join and loss, fencing."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from schedulezero_operator.controllers.buckets import BucketElector, bucket_of, target_share
from schedulezero_operator.engine.ports import Conflict, NotFound


class FakeCoord:
    """Many Leases in memory (the elector's LeaseApi), resourceVersion preconditions."""

    def __init__(self) -> None:
        self.leases: dict[str, dict[str, Any]] = {}
        self.rv = 0
        self.calls: list[tuple[str, str]] = []

    def _view(self, name: str) -> dict[str, Any]:
        """The Lease as the API server returns it (a copy: callers cannot alias it)."""
        return {"metadata": {"name": name, "namespace": "ns",
                             "resourceVersion": self.leases[name]["rv"]},
                "spec": dict(self.leases[name]["spec"])}

    async def read(self, namespace: str, name: str) -> dict[str, Any]:
        if name not in self.leases:
            raise NotFound(name)
        return self._view(name)

    async def list(self, namespace: str) -> list[dict[str, Any]]:
        self.calls.append(("list", namespace))
        return [self._view(n) for n in self.leases]

    async def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        if name in self.leases:
            raise Conflict(name)
        self.rv += 1
        self.leases[name] = {"spec": dict(body["spec"]), "rv": str(self.rv)}
        return self._view(name)

    async def patch(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("patch", name))
        if name not in self.leases:
            raise NotFound(name)
        want = (body.get("metadata") or {}).get("resourceVersion")
        if want is not None and want != self.leases[name]["rv"]:
            raise Conflict(name)
        self.rv += 1
        for key, value in body["spec"].items():  # a merge patch: null removes
            if value is None:
                self.leases[name]["spec"].pop(key, None)
            else:
                self.leases[name]["spec"][key] = value
        self.leases[name]["rv"] = str(self.rv)
        return self._view(name)

    async def delete(self, namespace: str, name: str) -> None:
        if self.leases.pop(name, None) is None:
            raise NotFound(name)

    def expire(self, holder: str) -> None:
        """``holder`` stopped renewing long ago (killed)."""
        for lease in self.leases.values():
            if lease["spec"].get("holderIdentity") == holder:
                lease["spec"]["renewTime"] = "2000-01-01T00:00:00.000000Z"


class Mono:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def make(coord: FakeCoord, identity: str, mono: Mono, buckets: int = 4) -> BucketElector:
    return BucketElector(coord, "ns", "sz", identity, buckets, monotonic=mono)


def holders(coord: FakeCoord) -> dict[str, str | None]:
    return {n: v["spec"].get("holderIdentity") for n, v in sorted(coord.leases.items())
            if "-bucket-" in n}


@pytest.mark.parametrize(("members", "held", "buckets", "shares"), [
    (["a"], {}, 4, {"a": 4}),
    (["a", "b"], {"a": 4}, 4, {"a": 2, "b": 2}),  # b joined: a gives two back
    (["a", "b", "c"], {"a": 2, "b": 2}, 4, {"a": 2, "b": 1, "c": 1}),  # c joined
    (["a", "b", "c"], {"a": 2, "b": 1}, 4, {"a": 2, "b": 1, "c": 1}),
    (["a", "b", "c"], {}, 4, {"a": 2, "b": 2, "c": 2}),  # all race for the extra; the
    # Lease preconditions decide, and the losers' next step sees the counts
    (["a", "b"], {"b": 1}, 1, {"a": 0, "b": 1}),  # the leader stays the leader
    (["a", "b"], {}, 1, {"a": 1, "b": 1}),  # nobody leads: both try, one Lease wins
])
def test_target_share_is_sticky(members: list[str], held: dict[str, int], buckets: int,
                                shares: dict[str, int]) -> None:
    assert {m: target_share(m, members, held, buckets) for m in members} == shares


def test_bucket_of_is_stable_and_spread() -> None:
    assert bucket_of("ns", "nightly", 8) == bucket_of("ns", "nightly", 8)
    counts = [0] * 8
    for i in range(8000):
        counts[bucket_of("ns", f"s{i}", 8)] += 1
    assert min(counts) > 800 and max(counts) < 1200


async def test_one_replica_takes_every_bucket() -> None:
    coord, mono = FakeCoord(), Mono()
    a = make(coord, "a", mono)
    assert await a.step() == {0, 1, 2, 3}
    assert a.owns("ns", "anything")


async def test_a_joining_replica_gets_its_share_without_overlap() -> None:
    coord, mono = FakeCoord(), Mono()
    a, b = make(coord, "a", mono), make(coord, "b", mono)
    await a.step()
    await b.step()  # b joins: no free bucket yet
    assert b.held == set()
    await a.step()  # a sees two members and gives back its top buckets
    assert a.held == {0, 1}
    await b.step()
    assert b.held == {2, 3}
    assert set(holders(coord).values()) == {"a", "b"}
    for i in range(100):  # every Schedule has exactly one owner
        assert a.owns("ns", f"s{i}") != b.owns("ns", f"s{i}")


async def test_buckets_of_a_killed_replica_move_once_its_leases_expire() -> None:
    coord, mono = FakeCoord(), Mono()
    a, b = make(coord, "a", mono), make(coord, "b", mono)
    for _ in range(2):
        await a.step()
        await b.step()
    assert a.held == {0, 1} and b.held == {2, 3}
    coord.expire("b")  # b was killed -9 and its Leases ran out
    assert await a.step() == {0, 1, 2, 3}


async def test_a_frozen_replica_is_fenced_by_its_monotonic_deadline() -> None:
    coord, mono = FakeCoord(), Mono()
    a = make(coord, "a", mono)
    await a.step()
    mono.t += 30  # SIGSTOP for 30 s: no renewal happened
    assert a.held == set() and not a.owns("ns", "x")


async def test_release_all_gives_back_only_what_we_hold() -> None:
    coord, mono = FakeCoord(), Mono()
    a, b = make(coord, "a", mono, buckets=2), make(coord, "b", mono, buckets=2)
    await a.step()
    coord.expire("a")
    await b.step()  # b takes both after a's Leases expired
    await a.release_all()  # the deposed a shuts down
    assert holders(coord) == {"sz-bucket-0": "b", "sz-bucket-1": "b"}


async def test_a_resumed_former_leader_does_not_take_leadership_back() -> None:
    coord, mono_a, mono_b = FakeCoord(), Mono(), Mono()
    a, b = make(coord, "a", mono_a, buckets=1), make(coord, "b", mono_b, buckets=1)
    await a.step()
    await b.step()
    assert a.held == {0} and b.held == set()
    coord.expire("a")  # a frozen (SIGSTOP) past its lease
    mono_a.t += 30
    assert await b.step() == {0}
    assert a.held == set(), "fenced on waking, before any API call"
    for _ in range(3):  # a is back, and so is its member Lease
        await a.step()
        await b.step()
    assert a.held == set() and b.held == {0}
    assert holders(coord) == {"sz-bucket-0": "b"}


async def test_a_resumed_former_leader_hands_its_schedules_over() -> None:
    """The engine is told (on_change) that the bucket is gone, so it drops the Schedules
    it can no longer act for, instead of keeping them armed and fenced forever."""
    coord, mono_a, mono_b = FakeCoord(), Mono(), Mono()
    changes: list[set[int]] = []
    a = BucketElector(coord, "ns", "sz", "a", 1, monotonic=mono_a,
                      on_change=changes.append)
    b = make(coord, "b", mono_b, buckets=1)
    await a.step()
    coord.expire("a")
    mono_a.t += 30
    await b.step()
    await a.step()
    assert changes == [{0}, set()]


async def test_a_lapse_that_ends_in_a_renewal_is_no_change() -> None:
    """A slow renewal let the fence lapse, nobody else took the Lease: the engine keeps
    its Schedules (what was due waited for the fence and goes out late)."""
    coord, mono = FakeCoord(), Mono()
    changes: list[set[int]] = []
    a = BucketElector(coord, "ns", "sz", "a", 1, monotonic=mono,
                      on_change=changes.append)
    await a.step()
    mono.t += 3.5  # past the fence (4 s lease - 1 s margin), not past the Lease
    assert not a.owns_bucket(0)
    await a.step()
    assert a.owns_bucket(0) and changes == [{0}]


async def test_a_held_bucket_is_renewed_before_anything_else_in_one_request() -> None:
    """The fence depends on the renewal; the LIST and the member Lease come after it."""
    coord, mono = FakeCoord(), Mono()
    a = make(coord, "a", mono, buckets=1)
    await a.step()
    coord.calls.clear()
    mono.t += 1  # the next round
    await a.step()
    assert coord.calls[0] == ("patch", "sz-bucket-0")
    assert [c for c, _ in coord.calls] == ["patch", "list"], coord.calls
    assert not any(name.startswith("sz-member-") for name in coord.leases), \
        "one bucket: plain leader election, one Lease write a round"


async def test_with_buckets_a_member_lease_is_renewed_after_the_buckets() -> None:
    coord, mono = FakeCoord(), Mono()
    a = make(coord, "a", mono, buckets=2)
    await a.step()
    coord.calls.clear()
    mono.t += 1
    await a.step()
    assert [c for c, _ in coord.calls] == ["patch", "patch", "list", "patch"], coord.calls
    assert coord.calls[-1] == ("patch", "sz-member-a")


# -- quiet Leases: long while nothing is due, never past the next slot + duration --------
def quiet(coord: FakeCoord, identity: str, mono: Mono, next_work: Any, buckets: int = 1,
          idle: float = 15.0) -> BucketElector:
    return BucketElector(coord, "ns", "sz", identity, buckets, monotonic=mono, idle=idle,
                         next_work=next_work)


@pytest.mark.parametrize(("until", "length", "bound"), [
    (None, 15, 15),  # nothing armed: the idle length
    (0.0, 4, 4),  # a run in progress (or a slot due now): plain
    (2.0, 4, 6),  # a slot within the plain lease: plain
    (4.0, 8, 8),  # ends 4 s (the plain duration) after the slot
    (10.0, 14, 14),
    (59.0, 15, 63),  # a minute-cron just fired: the idle length caps it
])
def test_lease_plan_ends_no_later_than_the_plain_duration_after_the_next_slot(
        until: float | None, length: float, bound: float) -> None:
    elector = quiet(FakeCoord(), "a", Mono(), lambda: until)
    assert elector.lease_plan() == (length, bound)


def test_without_a_source_of_next_work_or_with_a_short_idle_leases_are_plain() -> None:
    assert make(FakeCoord(), "a", Mono()).lease_plan() == (4.0, 4.0)
    assert quiet(FakeCoord(), "a", Mono(), lambda: None, idle=3).lease_plan() == (4.0, 4.0)


def minute_cron(mono: Mono) -> Any:
    """Seconds until the next whole minute of the fake monotonic clock, 0 for the second
    after it (the run in progress), as Engine.next_work_in answers for a minute-cron."""
    def until() -> float:
        into = mono.t % 60
        return 0.0 if into < 1 else 60 - into
    return until


def lease_end(coord: FakeCoord, mono: Mono, written_at: dict[str, float]) -> float:
    spec = coord.leases["sz-bucket-0"]["spec"]
    return written_at["t"] + float(spec["leaseDurationSeconds"])


async def test_a_quiet_leader_writes_its_lease_a_few_times_a_minute_and_always_holds_it(
        ) -> None:
    """A minute-cron's leader over 10 minutes of 1 s rounds: ~5 writes a minute instead
    of 60; it owns the bucket at every round, and every Lease it writes ends no later
    than the plain duration after the next slot (a successor would fire it by then)."""
    for next_work, most in ((None, 60 * 10), ("cron", 6 * 10)):
        coord, mono = FakeCoord(), Mono()
        mono.t = 600.5
        work = minute_cron(mono) if next_work else None
        a = quiet(coord, "a", mono, work) if work else make(coord, "a", mono, buckets=1)
        writes = 0
        for _ in range(600):
            before = coord.rv
            await a.step()
            assert a.owns_bucket(0), f"lost its own bucket at {mono.t}"
            if coord.rv != before:
                writes += 1
                length = coord.leases["sz-bucket-0"]["spec"]["leaseDurationSeconds"]
                next_slot = mono.t + (60 - mono.t % 60)
                if work is not None and mono.t % 60 >= 1:
                    assert mono.t + length <= next_slot + 4, (mono.t, length)
            mono.t += 1
        assert writes <= most, writes
        if work is not None:
            assert writes >= 40, "renewed before each lease ended, not once"


async def test_work_that_comes_closer_than_the_lease_allows_shortens_it() -> None:
    """A Schedule created (or a run started) while the Lease runs 15 s: the next round
    rewrites it to end within the plain duration after that work, not 15 s later."""
    coord, mono = FakeCoord(), Mono()
    work: dict[str, float | None] = {"until": None}
    a = quiet(coord, "a", mono, lambda: work["until"])
    await a.step()
    assert coord.leases["sz-bucket-0"]["spec"]["leaseDurationSeconds"] == 4  # just taken
    mono.t += 1
    await a.step()
    assert coord.leases["sz-bucket-0"]["spec"]["leaseDurationSeconds"] == 15
    for _ in range(3):  # quiet: nothing written
        before = coord.rv
        mono.t += 1
        await a.step()
        assert coord.rv == before
    work["until"] = 1.0  # a new Schedule's first slot, 1 s away
    mono.t += 1
    await a.step()
    assert coord.leases["sz-bucket-0"]["spec"]["leaseDurationSeconds"] == 4
    assert a.owns_bucket(0)


async def test_a_dead_quiet_leaders_bucket_moves_once_its_longer_lease_expires() -> None:
    coord, mono_a, mono_b = FakeCoord(), Mono(), Mono()
    a = quiet(coord, "a", mono_a, lambda: None)
    b = quiet(coord, "b", mono_b, lambda: None)
    await a.step()
    mono_a.t += 1
    await a.step()
    await b.step()
    assert b.held == set() and b._soonest_expiry is not None and b._soonest_expiry > 10, \
        "the standby knows when to look again: when the 15 s Lease runs out"
    coord.expire("a")  # killed, and its Lease ran out
    assert await b.step() == {0}


async def test_with_buckets_the_member_lease_is_as_quiet_as_the_buckets() -> None:
    """Written in the same rounds, with the same length: a dead replica's member Lease
    never outlives its bucket Leases (peers would count it and leave its buckets)."""
    coord, mono = FakeCoord(), Mono()
    a = quiet(coord, "a", mono, lambda: None, buckets=2)
    await a.step()
    mono.t += 1
    await a.step()
    specs = {n: v["spec"]["leaseDurationSeconds"] for n, v in coord.leases.items()}
    assert specs == {"sz-bucket-0": 15, "sz-bucket-1": 15, "sz-member-a": 15}
    coord.calls.clear()
    for _ in range(5):
        mono.t += 1
        await a.step()
    assert [c for c, _ in coord.calls] == ["list"] * 5, "quiet: only the LIST each round"
    mono.t += 6  # 11 s after the renewal: 4 s left, not yet
    await a.step()
    mono.t += 1  # 3 s left: due, all three together
    await a.step()
    assert [c for c, _ in coord.calls[5:]] == ["list", "patch", "patch", "list", "patch"]


def member_outlives_buckets(coord: FakeCoord) -> list[str]:
    """Members whose Lease ends after one of their bucket Leases (or, holding none,
    runs longer than a plain Lease): what a peer would count as alive too long."""
    def end(spec: dict[str, Any]) -> float:
        renewed = dt.datetime.fromisoformat(spec["renewTime"].replace("Z", "+00:00"))
        return renewed.timestamp() + spec["leaseDurationSeconds"]

    wrong = []
    for name, lease in coord.leases.items():
        if "-member-" not in name:
            continue
        who, spec = lease["spec"]["holderIdentity"], lease["spec"]
        buckets = [end(v["spec"]) for n, v in coord.leases.items()
                   if "-bucket-" in n and v["spec"].get("holderIdentity") == who]
        if buckets and end(spec) > min(buckets) + 0.5:
            wrong.append(f"{who}: member ends after its bucket")
        if not buckets and spec["leaseDurationSeconds"] > 4:
            wrong.append(f"{who}: holds nothing, member Lease {spec['leaseDurationSeconds']} s")
    return wrong


async def test_a_member_lease_never_outlives_the_buckets_of_its_replica() -> None:
    """Peers size their shares by the live members: a dead replica's member Lease that
    outlived its buckets left them unheld (the sharding e2e test: buckets moved after
    14 s, not 4). A quiet newcomer holds nothing, then takes buckets with plain Leases."""
    coord, mono_a, mono_b = FakeCoord(), Mono(), Mono()
    a = quiet(coord, "a", mono_a, lambda: None, buckets=4)
    b = quiet(coord, "b", mono_b, lambda: None, buckets=4)
    for _ in range(3):  # a alone, quiet: every Lease of it runs 15 s
        await a.step()
        mono_a.t += 1
    assert coord.leases["sz-member-a"]["spec"]["leaseDurationSeconds"] == 15
    for round_ in range(30):
        for elector, mono in ((b, mono_b), (a, mono_a)):
            await elector.step()
            assert member_outlives_buckets(coord) == [], (round_, elector.identity)
            mono.t += 1
    assert a.held and b.held and a.held | b.held == {0, 1, 2, 3}
