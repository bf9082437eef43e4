"""Bucketed leader election: Schedules sharded across operator replicas.

As Knative's ``pkg/leaderelection`` does for sharded controllers: every Schedule
falls into one of ``B`` buckets (a stable hash of ``namespace/name`` mod B) and each
bucket is held by one replica through its own ``coordination.k8s.io`` Lease
(``<prefix>-bucket-<i>``). Every replica watches everything but arms only the
Schedules of the buckets it holds.

How replicas share: each replica also keeps a *member* Lease
(``<prefix>-member-<identity>``) renewed like the buckets; the live members are
the unexpired member Leases. With ``base, extra = divmod(B, members)`` a replica
gives back buckets above ``base + 1`` (or above ``base`` when ``extra`` is 0: a peer
joined), and takes free or expired buckets up to ``base``, or ``base + 1`` while
fewer than ``extra`` peers already hold that many (:func:`target_share`). Shares are
sticky — a holder keeps what is within its share — so buckets move only when
membership changes, never back and forth (with ``B = 1`` the leader stays the leader
when a frozen former leader comes back). With ``B = 1`` this is plain leader election.

Quiet Leases: a Lease need only outlive the work its holder knows of by the failover
time. ``next_work()`` (the engine: seconds until its first armed slot, 0 while a run is
in progress) lets the holder write a longer ``leaseDurationSeconds`` while nothing is
due: up to ``idle`` seconds, and never past the next known slot + ``duration`` (a
holder that dies just before that slot is replaced by then: the slot is at most
``duration`` late, as with a plain Lease). Renewals come ``duration - renew / 2``
seconds before a Lease ends, so 100 minute-crons cost ~5 Lease writes a minute with a
15 s ``idle`` instead of 60. The price: work the holder could not know of (a Schedule
created, a run-now asked for, after it died) waits up to ``idle`` for a successor.
With ``idle <= duration`` the Leases are renewed every round, as before.

Safety does not rest on this: a bucket's Lease can be briefly held by two replicas'
beliefs (a frozen holder), so each bucket is *fenced* by a monotonic deadline
(:meth:`BucketElector.owns` — renewal sent + duration - margin, as
:class:`~.leader.LeaderElector`), and every slot is still claimed in the Schedule's
status with a resourceVersion precondition, which decides any overlap once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import zlib
from collections.abc import Callable
from typing import Any, Protocol

from ..engine.ports import Conflict, NotFound
from .apiclient import ApiClient

log = logging.getLogger("schedulezero.buckets")


def bucket_of(namespace: str, name: str, buckets: int) -> int:
    """A Schedule's bucket: CRC-32 of ``namespace/name`` (stable across processes)."""
    return zlib.crc32(f"{namespace}/{name}".encode()) % buckets


def target_share(identity: str, members: list[str], held: dict[str, int],
                 buckets: int) -> int:
    """How many buckets ``identity`` should hold, given the live ``members`` and how
    many each holds now (``held``): sticky, so whoever already holds ``base + 1`` keeps it."""
    n = len(set(members) | {identity})
    base, extra = divmod(buckets, n)
    if not extra:
        return base
    topped = sorted(m for m, count in held.items() if m != identity and m in members
                    and count >= base + 1)
    if held.get(identity, 0) >= base + 1:
        # Keep the extra one unless `extra` peers ahead of us (identity order) keep theirs.
        return base + 1 if sum(1 for m in topped if m < identity) < extra else base
    return base + 1 if len(topped) < extra else base


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _fmt(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: Any) -> dt.datetime | None:
    """A Lease's MicroTime (``...T12:00:00.123456Z``) as an aware datetime."""
    if not value:
        return None
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))


class LeaseApi(Protocol):
    """The five Lease calls the elector makes (``coordination.k8s.io/v1``), on Lease
    objects as plain dicts; Conflict on a failed precondition, NotFound when gone."""

    async def list(self, namespace: str) -> list[dict[str, Any]]: ...
    async def read(self, namespace: str, name: str) -> dict[str, Any]: ...
    async def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...
    async def patch(self, namespace: str, name: str,
                    body: dict[str, Any]) -> dict[str, Any]: ...
    async def delete(self, namespace: str, name: str) -> None: ...


def _dns_safe(identity: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-." else "-" for c in identity.lower())
    return safe.strip("-.")[:200] or "member"


class BucketElector:
    def __init__(self, leases: LeaseApi, namespace: str, prefix: str,
                 identity: str, buckets: int, *, duration: float = 4.0, renew: float = 1.0,
                 idle: float = 0.0, next_work: Callable[[], float | None] | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 on_change: Callable[[set[int]], None] | None = None) -> None:
        self.leases = leases
        self.namespace, self.prefix, self.identity = namespace, prefix, identity
        self.buckets, self.duration, self.renew = buckets, duration, renew
        # Quiet Leases (module docstring): only with a source of next work to bound them.
        self.idle = max(idle, duration) if next_work is not None else duration
        self._next_work = next_work
        self._monotonic = monotonic
        self._margin = min(renew, duration / 4)
        self._valid_until: dict[int, float] = {}  # bucket -> monotonic fence
        self._member_end: float | None = None  # monotonic end of our member Lease
        self._written: dict[int, dict[str, Any]] = {}  # bucket -> our Lease, as last written
        self._soonest_expiry: float | None = None  # s until a peer's bucket Lease runs out
        self.on_change = on_change
        self._task: asyncio.Task[None] | None = None

    # -- what the engine asks ----------------------------------------------------------
    def owns_bucket(self, bucket: int) -> bool:
        return self._monotonic() < self._valid_until.get(bucket, float("-inf"))

    def owns(self, namespace: str, name: str) -> bool:
        """Fire this Schedule? (no API call: a frozen-and-resumed replica answers no)."""
        return self.owns_bucket(bucket_of(namespace, name, self.buckets))

    def holds(self, namespace: str, name: str) -> bool:
        """Is this Schedule in a bucket we hold, even if its fence lapsed for a moment
        (a renewal that was slow, not lost)? Which Schedules have a runner here."""
        return bucket_of(namespace, name, self.buckets) in self._valid_until

    @property
    def held(self) -> set[int]:
        return {b for b in self._valid_until if self.owns_bucket(b)}

    def lease_name(self, bucket: int) -> str:
        return f"{self.prefix}-bucket-{bucket}"

    @property
    def member_lease(self) -> str:
        return f"{self.prefix}-member-{_dns_safe(self.identity)}"

    # -- one round -----------------------------------------------------------------------
    async def step(self) -> set[int]:
        """Renew our member Lease and buckets, take or give back to reach the fair share.

        Buckets we hold are renewed first, each by a single PATCH conditioned on the
        resourceVersion our last write returned: the fences depend on these and nothing
        queues in front of them. Then one LIST feeds the rest (members, holders, the
        resourceVersions of Leases to take). A round costs 2 + held-buckets requests;
        that is what makes a 1 s renewal (and so a ~4 s failover) cheap. A round in
        which no Lease of ours is due (quiet Leases, see the module docstring) only
        LISTs; when one is, all the buckets are written, with the same length, and the
        member Lease after them (:meth:`_write_member`). With one bucket there is nothing to
        share: no member Lease (every replica's share is the one bucket, taken only
        when its Lease expires), so a leader writes one Lease a round at most, not two.
        """
        before = set(self._valid_until)
        length, bound = self.lease_plan()
        due = self._renewal_due(bound)
        renewed = {b for b, lease in list(self._written.items())
                   if due and await self._renew_bucket(b, lease, length)}
        leases = await self._list()
        members = [str(_spec(lease)["holderIdentity"]) for name, lease in leases.items()
                   if name.startswith(f"{self.prefix}-member-")
                   and _spec(lease).get("holderIdentity") and not self._expired(lease)]
        if self.identity not in members:
            members.append(self.identity)
        buckets = {b: leases.get(self.lease_name(b)) for b in range(self.buckets)}
        self._soonest_expiry = min((self._expires_in(lease) for lease in buckets.values()
                                    if lease is not None and self._holder(lease) is not None
                                    and self._holder(lease) != self.identity), default=None)
        counts: dict[str, int] = {}
        for lease in buckets.values():
            if (who := self._holder(lease)) is not None:
                counts[who] = counts.get(who, 0) + 1
        share = target_share(self.identity, members, counts, self.buckets)
        mine = [b for b in range(self.buckets) if self._holder(buckets[b]) == self.identity]
        for b in mine[share:][::-1]:  # give back the highest buckets above our share
            await self._release(b, buckets[b])
            mine.remove(b)
        for b in mine:
            if b not in renewed and (due or b not in self._written):
                await self._renew_bucket(b, buckets[b], length)
        free = [b for b in range(self.buckets) if b not in mine and self._free(buckets[b])]
        for b in free[:max(0, share - len(mine))]:
            # Plain length: the Schedules of a bucket just taken are not armed yet, so
            # their slots are not in next_work; the next renewal knows them.
            await self._renew_bucket(b, buckets[b], self.duration)
        for b in set(self._valid_until) - set(mine) - set(free):
            del self._valid_until[b]  # someone else holds it now (we were frozen or slow)
            self._written.pop(b, None)
        if self.buckets > 1:
            await self._write_member(leases.get(self.member_lease), length, due)
        # Held = renewed this round. A fence that lapsed and came back (a slow renewal,
        # nobody else took the Lease) is no change: what waited for it goes out late.
        after = set(self._valid_until)
        if after != before:
            log.info("buckets held by %s: %s", self.identity, sorted(after))
            if self.on_change is not None:
                self.on_change(after)
        return after

    async def _write_member(self, lease: Any, length: float, due: bool) -> None:
        """Our member Lease, after the buckets: never ending later than a bucket Lease
        we hold, and plain while we hold none. Peers count a member until its Lease
        ends and size their shares by the count, so a dead replica's member Lease that
        outlived its buckets (a quiet one written while it held nothing, then buckets
        taken with plain Leases) left those buckets unheld until it ended: 14 s instead
        of 4 in the sharding e2e test."""
        now = self._monotonic()
        ends = self._bucket_ends()
        cap = min(ends) - now if ends else self.duration
        want = max(1, int(min(length, cap)))
        if not (due or self._member_end is None or self._member_end - now > cap + 0.5):
            return
        written = await self._upsert(self.member_lease, lease, want)
        self._member_end = now + want if written is not None else None

    def lease_plan(self) -> tuple[float, float]:
        """(the ``leaseDurationSeconds`` to write now, how far from now our Leases may
        end at most): plain ``duration`` while work is due within it; up to ``idle``,
        ending no later than ``duration`` after the next known slot, while none is."""
        if self.idle <= self.duration or self._next_work is None:
            return self.duration, self.duration
        until = self._next_work()
        if until is None:
            return self.idle, self.idle
        bound = max(0.0, until) + self.duration
        if until < self.duration:
            return self.duration, bound
        return min(self.idle, bound), bound

    def _bucket_ends(self) -> list[float]:
        """When the bucket Leases we hold end (monotonic): each fence + the margin."""
        return [until + self._margin for until in self._valid_until.values()]

    def _renewal_due(self, bound: float) -> bool:
        """Renew this round? When a Lease of ours ends within ``duration - renew / 2``
        (every round for a plain Lease, as before), or one ends later than ``bound``
        allows (work came closer than our Leases assumed: a new Schedule, a run)."""
        now = self._monotonic()
        ends = self._bucket_ends()
        if self.buckets > 1 and self._member_end is not None:
            ends.append(self._member_end)
        if not ends:
            return True
        return (min(ends) - now < self.duration - self.renew / 2
                or max(ends) - now > bound + self.renew)

    async def run(self) -> None:
        while True:
            started = self._monotonic()
            try:
                await self.step()
            except Exception as e:  # noqa: BLE001 - fences expire on their own if this persists
                log.warning("bucket election: %s", e)
            # Paced from the round's start: a slow round does not stretch the next gap.
            # A peer's Lease about to run out (a dead peer stops renewing; a live one
            # moves its expiry on every renewal) is looked at the moment it does, not up
            # to a renewal period later: that is failover time.
            wait = self.renew - (self._monotonic() - started)
            if self._soonest_expiry is not None:
                wait = min(wait, self._soonest_expiry + 0.05)
            await asyncio.sleep(max(0.05, wait))

    async def release_all(self) -> None:
        """On clean shutdown: give back our buckets (only those we still hold)."""
        for b in list(self._valid_until):
            await self._release(b)
        if self.buckets == 1:
            return  # no member Lease (see step)
        try:  # peers see one member fewer at once, not after the member Lease expires
            await self.leases.delete(self.namespace, self.member_lease)
        except NotFound:
            pass
        except Exception as e:  # noqa: BLE001 - it expires on its own
            log.warning("could not delete member Lease %s: %s", self.member_lease, e)

    # -- Lease plumbing ------------------------------------------------------------------
    def _expires_in(self, lease: dict[str, Any]) -> float:
        """Seconds until a Lease runs out (negative: it has)."""
        spec = _spec(lease)
        renewed = _parse_time(spec.get("renewTime"))
        if renewed is None:
            return float("-inf")
        return (renewed + dt.timedelta(seconds=spec.get("leaseDurationSeconds") or 0)
                - _now()).total_seconds()

    def _expired(self, lease: Any) -> bool:
        return self._expires_in(lease) < 0

    def _holder(self, lease: dict[str, Any] | None) -> str | None:
        if lease is None or self._expired(lease):
            return None
        holder = _spec(lease).get("holderIdentity")
        return str(holder) if holder else None

    def _free(self, lease: Any) -> bool:
        return self._holder(lease) is None

    async def _list(self) -> dict[str, Any]:
        """Our Leases (members and buckets) by name, from one LIST."""
        leases = await self.leases.list(self.namespace)
        return {lease["metadata"]["name"]: lease for lease in leases
                if lease["metadata"]["name"].startswith(f"{self.prefix}-")}

    async def _renew_bucket(self, bucket: int, lease: Any, length: float) -> bool:
        sent = self._monotonic()
        written = await self._upsert(self.lease_name(bucket), lease, length)
        if written is not None:
            self._valid_until[bucket] = sent + int(length) - self._margin
            self._written[bucket] = written
            return True
        self._valid_until.pop(bucket, None)
        self._written.pop(bucket, None)
        return False

    async def _upsert(self, name: str, lease: Any, length: float) -> Any:
        """Create, renew or take over (if expired) a Lease as last seen, valid ``length``
        seconds (whole: the field is an integer, and the fence counts the same); the
        Lease as written, or None if someone else holds it or wrote it since (the
        resourceVersion precondition)."""
        now = _now()
        spec: dict[str, Any] = {"holderIdentity": self.identity,
                                "leaseDurationSeconds": max(1, int(length)),
                                "renewTime": _fmt(now)}
        if lease is None:
            body = {"metadata": {"name": name, "namespace": self.namespace},
                    "spec": {**spec, "acquireTime": _fmt(now), "leaseTransitions": 0}}
            try:
                return await self.leases.create(self.namespace, body)
            except Conflict:
                return None
        holder = _spec(lease).get("holderIdentity")
        if holder != self.identity and not self._free(lease):
            return None
        if holder != self.identity:
            spec["acquireTime"] = _fmt(now)
            spec["leaseTransitions"] = (_spec(lease).get("leaseTransitions") or 0) + 1
        try:
            return await self.leases.patch(
                self.namespace, name,
                {"metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]},
                 "spec": spec})
        except (Conflict, NotFound):
            return None

    async def _release(self, bucket: int, lease: Any = None) -> None:
        """Give a bucket back, only if we still hold its Lease (never a successor's)."""
        self._valid_until.pop(bucket, None)
        self._written.pop(bucket, None)
        name = self.lease_name(bucket)
        try:
            if lease is None:
                lease = await self.leases.read(self.namespace, name)
            if _spec(lease).get("holderIdentity") != self.identity:
                return
            await self.leases.patch(
                self.namespace, name,
                {"metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]},
                 "spec": {"holderIdentity": None,
                          "renewTime": _fmt(_now() - dt.timedelta(seconds=self.duration * 2))}})
        except (Conflict, NotFound):
            pass  # a successor wrote it since, or it is gone: not ours to give back
        except Exception as e:  # noqa: BLE001 - it expires on its own
            log.warning("could not release bucket %d: %s", bucket, e)


def _spec(lease: dict[str, Any]) -> dict[str, Any]:
    return lease.get("spec") or {}


class Leases:
    """:class:`LeaseApi` over the API client (``coordination.k8s.io/v1``)."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api

    @staticmethod
    def _path(namespace: str, name: str = "") -> str:
        base = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        return f"{base}/{name}" if name else base

    async def list(self, namespace: str) -> list[dict[str, Any]]:
        return list((await self.api.request("GET", self._path(namespace))).get("items") or [])

    async def read(self, namespace: str, name: str) -> dict[str, Any]:
        return dict(await self.api.request("GET", self._path(namespace, name)))

    async def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(await self.api.request("POST", self._path(namespace), body))

    async def patch(self, namespace: str, name: str,
                    body: dict[str, Any]) -> dict[str, Any]:
        return dict(await self.api.request("PATCH", self._path(namespace, name), body,
                                           "application/merge-patch+json"))

    async def delete(self, namespace: str, name: str) -> None:
        await self.api.request("DELETE", self._path(namespace, name))
