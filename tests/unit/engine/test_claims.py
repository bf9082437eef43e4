"""Slot claims: the pure rules, and two operators on one Schedule."""

from __future__ import annotations

import asyncio
import datetime as dt

from schedulezero_operator.api.models import Claim
from schedulezero_operator.engine import claims
from schedulezero_operator.engine.times import iso, later, parse_iso
from schedulezero_operator.timing import parse_trigger

from ...fakes import T0, FakeKube, virtual_time
from .harness import Operator, handler, schedule

EVERY_SECOND = parse_trigger(interval="1s", anchor=T0)
ONCE = parse_trigger(at="2026-05-19T10:00:05Z")


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def claim(holder: str, first: float, last: float | None, expires: float) -> Claim:
    return Claim(holder=holder, run_id=f"r-{first}", scheduled_time=iso(at(first)),
                 until=iso(at(last)) if last is not None else None, expires=iso(at(expires)))


# -- pure rules -------------------------------------------------------------------------
EVERY_100S = parse_trigger(interval="100s", anchor=T0)
HOURLY = parse_trigger(schedule="0 * * * *")


def test_a_claim_covers_a_minute_or_four_slots_at_most_ten_minutes() -> None:
    assert claims.horizon_end(EVERY_SECOND, at(1)) == at(61)
    assert claims.horizon_end(ONCE, at(5)) == at(5), "no later slot: the slot itself"
    assert claims.horizon_end(EVERY_100S, at(100)) == at(500), "four slots"
    top = dt.datetime(2026, 5, 19, 11, tzinfo=dt.UTC)
    assert claims.horizon_end(HOURLY, top) == top, "ten minutes at most: its own slot"
    ours = claims.new_claim("me", "0123456789", at(1), EVERY_SECOND)
    assert (ours.holder, ours.run_id, ours.scheduled_time, ours.until, ours.expires) == (
        "me", "01234567-20260519T100001000Z", iso(at(1)), iso(at(61)), iso(at(91)))


def test_covers_asks_for_an_extension_half_a_horizon_ahead() -> None:
    ours = claim("me", 1, 61, 91)
    assert claims.covers(ours, "me", at(5), EVERY_SECOND)
    assert claims.covers(ours, "me", at(31), EVERY_SECOND), "30 s of 60 to spare"
    assert not claims.covers(ours, "me", at(32), EVERY_SECOND)
    assert not claims.covers(ours, "me", at(0), EVERY_SECOND), "before the claim"
    assert not claims.covers(ours, "other", at(5), EVERY_SECOND)
    assert not claims.covers(None, "me", at(5), EVERY_SECOND)
    last = claim("me", 5, 5, 35)
    assert claims.covers(last, "me", at(5), ONCE), "nothing after it to claim"


def test_covers_asks_a_slow_trigger_for_two_slots_to_spare() -> None:
    four = claim("me", 100, 500, 530)  # slots 100, 200, 300, 400, 500
    assert claims.covers(four, "me", at(300), EVERY_100S), "400 and 500 to spare"
    assert not claims.covers(four, "me", at(400), EVERY_100S), "only 500 left"
    top = dt.datetime(2026, 5, 19, 11, tzinfo=dt.UTC)
    own = Claim(holder="me", run_id="r", scheduled_time=iso(top), until=iso(top),
                expires=iso(top + claims.CLAIM_GRACE))
    assert claims.covers(own, "me", top, HOURLY), "an hourly slot needs only itself"
    assert not claims.covers(own, "me", top + dt.timedelta(hours=1), HOURLY)


def test_only_another_holders_unexpired_claim_blocks() -> None:
    theirs = claim("other", 1, 8, 20)
    assert claims.blocks(theirs, "me", at(5), now=at(4))
    assert not claims.blocks(theirs, "me", at(9), now=at(4)), "beyond its last slot"
    assert not claims.blocks(theirs, "me", at(5), now=at(20)), "expired"
    assert not claims.blocks(theirs, "other", at(5), now=at(4)), "ours"
    assert not claims.blocks(None, "me", at(5), now=at(4))
    legacy = claim("other", 5, None, 35)  # stored before claim.until existed
    assert claims.claim_until(legacy) == at(5)
    assert claims.blocks(legacy, "me", at(5), now=at(4))
    assert not claims.blocks(legacy, "me", at(6), now=at(4))


def test_times_parse_leniently_and_add_saturating() -> None:
    assert parse_iso("2026-05-19T10:00:01.250Z") == at(1.25)
    assert parse_iso("2026-05-19T10:00:01") == at(1), "no zone: UTC"
    assert parse_iso("yesterday") is None and parse_iso(None) is None
    assert iso(at(1.25)) == "2026-05-19T10:00:01.250Z" and iso(at(1)) == "2026-05-19T10:00:01Z"
    end = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
    assert later(end, dt.timedelta(days=1)) == dt.datetime.max.replace(tzinfo=dt.UTC)


# -- scenarios --------------------------------------------------------------------------
def foreign(first: float, last: float, expires: float) -> dict[str, object]:
    return {"claim": claim("op-b", first, last, expires).model_dump(by_alias=True)}


@virtual_time
async def test_a_live_operators_claim_is_respected_until_its_last_slot() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "s", interval="1s")
    async with Operator(kube) as op:
        await asyncio.sleep(3.5)
        # op-b claims slots 5..8 just before our next write: that write conflicts.
        kube.interfere("schedules", "s", foreign(5, 8, 38))
        await asyncio.sleep(4.0)
        assert kube.status("s")["claim"]["holder"] == "op-b", "its claim is left in place"
        await asyncio.sleep(4.0)
    fired = [int(c.scheduled_time[-3:-1]) for c in op.dispatcher.calls]
    assert fired == [1, 2, 3, 4, 9, 10, 11], "slots 5..8 are op-b's"
    assert kube.conflicts >= 1
    assert kube.status("s")["claim"]["holder"] == "op-a", "taken over after its last slot"


@virtual_time
async def test_an_expired_claim_is_taken_over() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "s", interval="1s")
    async with Operator(kube) as op:
        await asyncio.sleep(3.5)
        kube.interfere("schedules", "s", foreign(5, 30, 7))  # covers a lot, expires at 7
        await asyncio.sleep(6)
    fired = [int(c.scheduled_time[-3:-1]) for c in op.dispatcher.calls]
    assert fired == [1, 2, 3, 4, 8, 9]


@virtual_time
async def test_a_predecessors_claim_found_at_start_is_taken_over_at_once() -> None:
    """Restart or failover: the claim in status is from an operator that is gone (the
    Lease says so), so waiting for it to expire would only delay the runs."""
    kube = FakeKube()
    handler(kube)
    schedule(kube, "s", interval="1s", status={
        "lastScheduleTime": iso(T0), **foreign(1, 11, 41)})
    async with Operator(kube) as op:
        kube.interfere("schedules", "s", {"lastRunNow": None})  # the first write conflicts
        await asyncio.sleep(2.5)
    assert [round(c.at, 6) for c in op.dispatcher.calls] == [1.0, 2.0]
    assert kube.status("s")["claim"]["holder"] == "op-a"


@virtual_time
async def test_two_operators_without_a_lease_never_fire_a_slot_twice() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "s", interval="1s")
    a, b = Operator(kube, identity="op-a"), Operator(kube, identity="op-b")
    await a.start()
    await b.start()
    await asyncio.sleep(10.5)
    await a.crash()  # op-a dies; its claim holds op-b off until its last slot
    await asyncio.sleep(claims.CLAIM_HORIZON.total_seconds() + 10)
    await b.stop()
    run_ids = [c.run_id for c in a.dispatcher.calls + b.dispatcher.calls]
    assert len(run_ids) == len(set(run_ids)), "no slot ran twice"
    assert [round(c.at, 6) for c in a.dispatcher.calls] == [float(i) for i in range(1, 11)]
    assert b.dispatcher.calls, "op-b took over"
    assert b.dispatcher.calls[0].at <= 10 + claims.CLAIM_HORIZON.total_seconds() + 1


@virtual_time
async def test_with_leases_another_operators_claim_never_holds_our_slots() -> None:
    """Ownership by Lease: a claim by another operator on a Schedule we hold is stale
    (its holder lost or gave up the bucket, and its fence stops it). A replica joining
    once waited out such claims — a minute of slots — when the old holder had extended
    them just before handing the bucket over."""
    kube = FakeKube()
    handler(kube)
    schedule(kube, "s", interval="1s")
    op = Operator(kube)
    op.engine.set_fence(lambda namespace, name: True)  # our bucket, by Lease
    async with op:
        await asyncio.sleep(3.5)
        kube.interfere("schedules", "s", foreign(5, 60, 90))  # the old holder's late write
        await asyncio.sleep(8.0)
    fired = [int(c.scheduled_time[-3:-1]) for c in op.dispatcher.calls]
    assert fired == list(range(1, 12)), "no slot left to the old holder's claim"
    assert kube.conflicts >= 1
    assert kube.status("s")["claim"]["holder"] == "op-a"


@virtual_time
async def test_with_leases_firing_never_waits_for_our_claim_write() -> None:
    """Status writes take 20 s each (an overloaded API server, or a large fleet's first
    claims queued on the write budget): with a Lease the fence already rules out any
    other operator, so the slots fire on time; without, they wait for the claim."""
    for leased in (True, False):
        kube = FakeKube()
        handler(kube)
        schedule(kube, "s", interval="1s")
        kube.latency = 20.0
        op = Operator(kube)
        if leased:
            op.engine.set_fence(lambda namespace, name: True)
        async with op:
            await asyncio.sleep(5.5)
            on_time = [c for c in op.dispatcher.calls if abs(c.at - round(c.at)) < 1e-6]
        assert (len(on_time) == 5) is leased, (leased, len(on_time))
