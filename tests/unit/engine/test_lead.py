"""The dispatch lead: runs go out ``dispatch_lead`` ahead of their slot, held until it.

The fake dispatcher holds a job as an SDK handler does (until ``start_at`` by the
clock) and records when it began, so these scenarios check both sides: when the
operator sent the run, and when the job started.
"""

from __future__ import annotations

import asyncio

from ...fakes import FakeKube, fail, slow, virtual_time
from .harness import Operator, handler, schedule


@virtual_time
async def test_runs_are_sent_ahead_and_start_on_the_slot() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "beat", interval="1s")
    async with Operator(kube, dispatch_lead=0.5) as op:
        await asyncio.sleep(5.7)
    calls = op.dispatcher.runs("heartbeat")
    assert [round(c.at, 6) for c in calls] == [0.5, 1.5, 2.5, 3.5, 4.5, 5.5], "sent 0.5 s ahead"
    assert [round(c.began or -1, 6) for c in calls[:5]] == [1.0, 2.0, 3.0, 4.0, 5.0], \
        "started on the slot, not before"
    assert [c.start_at.isoformat() if c.start_at else None for c in calls[:2]] == [
        "2026-05-19T10:00:01+00:00", "2026-05-19T10:00:02+00:00"]
    st = kube.status("beat")
    assert st["counters"]["succeeded"] == 5
    newest = st["recentRuns"][0]
    assert newest["scheduledTime"] == "2026-05-19T10:00:05Z"
    assert newest["startTime"] == "2026-05-19T10:00:05Z", "a held run starts at its slot"
    assert newest["latencyMs"] == 0


@virtual_time
async def test_a_burst_is_delivered_before_its_second_and_starts_at_it() -> None:
    n = 300
    kube = FakeKube()
    handler(kube, concurrency=1000)
    for i in range(n):
        schedule(kube, f"s{i:03d}", schedule="*/10 * * * * *")
    async with Operator(kube, dispatch_lead=1.0) as op:
        await asyncio.sleep(10.5)
    calls = [c for c in op.dispatcher.runs() if c.scheduled_time == "2026-05-19T10:00:10Z"]
    assert len(calls) == n and len({c.run_id for c in calls}) == n
    assert max(c.at for c in calls) < 10.0, "all sent before the second"
    assert {round(c.began or -1, 6) for c in calls} == {10.0}, "all started at it"


@virtual_time
async def test_lead_off_sends_on_the_slot_without_a_start_time() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "beat", interval="1s")
    async with Operator(kube, dispatch_lead=0.0) as op:
        await asyncio.sleep(2.5)
    calls = op.dispatcher.runs("heartbeat")
    assert [round(c.at, 6) for c in calls] == [1.0, 2.0]
    assert all(c.start_at is None for c in calls)


@virtual_time
async def test_forbid_with_a_run_active_at_lead_time_decides_on_the_slot() -> None:
    """Whether the next slot may run depends on the active run finishing by then: it is
    not sent ahead, and the policy is applied at the slot as without a lead."""
    kube = FakeKube()
    handler(kube)
    schedule(kube, "slow", interval="1s", concurrencyPolicy="Forbid")
    op = Operator(kube, dispatch_lead=0.5)
    op.dispatcher.default = slow(2.5)
    async with op:
        await asyncio.sleep(6.8)
    calls = op.dispatcher.calls
    assert [round(c.at, 6) for c in calls] == [0.5, 4.0], \
        "first sent ahead; the one after the active run at its own slot"
    assert [round(c.began or -1, 6) for c in calls] == [1.0, 4.0]
    assert calls[1].start_at is None
    assert kube.status("slow")["counters"]["skipped"] == 4, "slots 2, 3, 5, 6 as without a lead"


@virtual_time
async def test_allow_sends_ahead_even_with_runs_active() -> None:
    kube = FakeKube()
    handler(kube, concurrency=10)
    schedule(kube, "par", interval="1s", concurrencyPolicy="Allow")
    op = Operator(kube, dispatch_lead=0.5)
    op.dispatcher.default = slow(2.5)
    async with op:
        await asyncio.sleep(3.7)
    calls = op.dispatcher.calls
    assert [round(c.at, 6) for c in calls] == [0.5, 1.5, 2.5, 3.5]
    assert [round(c.began or -1, 6) for c in calls[:3]] == [1.0, 2.0, 3.0]


@virtual_time
async def test_a_lapsed_fence_at_lead_time_leaves_the_slot_to_its_instant() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "beat", interval="2s")
    fenced_in = [False]
    async with Operator(kube, dispatch_lead=1.0) as op:
        op.engine.set_fence(lambda namespace, name: fenced_in[0],
                            holds=lambda namespace, name: True)
        await asyncio.sleep(1.5)  # the lead time of slot 2 passed while fenced out
        fenced_in[0] = True
        await asyncio.sleep(1.0)
    calls = op.dispatcher.runs("heartbeat")
    assert [round(c.at, 6) for c in calls] == [2.0], "not sent ahead; sent at the slot"
    assert calls[0].start_at is None


@virtual_time
async def test_deleting_the_schedule_cancels_a_held_run() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "beat", interval="10s")
    async with Operator(kube, dispatch_lead=1.0) as op:
        await asyncio.sleep(9.5)  # sent at 9.0, held until 10.0
        (call,) = op.dispatcher.runs("heartbeat")
        kube.delete("schedules", "beat")
        await asyncio.sleep(1.5)
    assert call.began is None, "the held job never started"
    assert (str(call.endpoint), call.run_id) in op.dispatcher.cancelled


@virtual_time
async def test_without_leases_a_slot_is_sent_ahead_only_under_our_claim() -> None:
    """Unelected operators arbitrate by claims: a slot past our written claim is not
    sent ahead (it waits at its instant for the claim, as without a lead)."""
    kube = FakeKube()
    handler(kube)
    schedule(kube, "beat", interval="1s")
    op = Operator(kube, dispatch_lead=0.5)
    kube.latency = 0.8  # the first claim lands at 0.8 s, after slot 1's lead time
    async with op:
        await asyncio.sleep(3.7)
    calls = op.dispatcher.runs("heartbeat")
    assert calls[0].start_at is None and round(calls[0].at, 6) == 1.0
    assert [round(c.began or -1, 6) for c in calls[:3]] == [1.0, 2.0, 3.0]
    assert [round(c.at, 6) for c in calls[1:]] == [1.5, 2.5, 3.5], "claimed ahead: sent ahead"


@virtual_time
async def test_a_hand_over_leaves_a_held_run_to_the_new_holder() -> None:
    """Losing the bucket is not deleting the Schedule: the held job stays on the
    handler, where the new holder's resend of the same run id joins it."""
    kube = FakeKube()
    handler(kube)
    schedule(kube, "beat", interval="10s")
    held = [True]
    async with Operator(kube, dispatch_lead=1.0) as op:
        op.engine.set_fence(lambda namespace, name: held[0],
                            holds=lambda namespace, name: held[0])
        await asyncio.sleep(9.5)
        (call,) = op.dispatcher.runs("heartbeat")
        held[0] = False
        op.engine.rebalance()
        await asyncio.sleep(1.0)
    assert op.dispatcher.cancelled == []
    assert call.start_at is not None


@virtual_time
async def test_suspending_withdraws_a_run_sent_ahead_of_its_slot() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "beat", interval="10s")
    async with Operator(kube, dispatch_lead=1.0) as op:
        await asyncio.sleep(9.5)  # slot 10 sent at 9.0
        (call,) = op.dispatcher.runs("heartbeat")
        kube.update("schedules", "beat", spec={"suspend": True})
        await asyncio.sleep(12)
    assert call.began is None, "suspended before its slot: never started"
    assert (str(call.endpoint), call.run_id) in op.dispatcher.cancelled
    assert len(op.dispatcher.runs("heartbeat")) == 1, "nothing fires while suspended"
    st = kube.status("beat")
    assert st["counters"]["runs"] == 0 and not st.get("active"), "withdrawn, not recorded"
    assert "lastScheduleTime" not in st or st["lastScheduleTime"] is None


@virtual_time
async def test_a_spec_change_before_the_slot_resends_it_under_the_new_spec() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "beat", interval="10s", params={"v": 1})
    async with Operator(kube, dispatch_lead=1.0) as op:
        await asyncio.sleep(9.5)
        kube.update("schedules", "beat", spec={"params": {"v": 2}})
        await asyncio.sleep(1.0)
    first, second = op.dispatcher.runs("heartbeat")
    assert first.params == {"v": 1} and first.began is None, "withdrawn"
    assert second.params == {"v": 2} and second.run_id == first.run_id
    assert round(second.began or -1, 6) == 10.0, "the slot still starts on time"
    assert kube.status("beat")["counters"]["succeeded"] == 1


@virtual_time
async def test_a_held_run_is_written_once_with_its_record() -> None:
    """Its start (1 s before the slot) waits for its record (just after): one status
    write a run, as for a run dispatched at its slot, not two."""
    kube = FakeKube()
    handler(kube)
    schedule(kube, "minutely", schedule="* * * * *")
    async with Operator(kube, dispatch_lead=1.0) as op:
        op.engine.set_fence(lambda namespace, name: True)
        await asyncio.sleep(61)  # past the first claims and the first run
        before = kube.writes[("schedules", "minutely")]
        await asyncio.sleep(180)  # three more runs
        after = kube.writes[("schedules", "minutely")]
    assert len(op.dispatcher.runs("heartbeat")) == 4
    assert after - before == 3, "one write per run"
    st = kube.status("minutely")
    assert st["counters"]["succeeded"] == 4 and st["recentRuns"][0]["startTime"] == \
        "2026-05-19T10:04:00Z"


@virtual_time
async def test_a_schedule_held_every_second_is_still_written() -> None:
    """Each held run defers its write to just after its start; the next one, sent a
    second ahead, must not push that further, or a frequent Schedule is never written."""
    kube = FakeKube()
    handler(kube)
    schedule(kube, "beat", interval="1s")
    async with Operator(kube, dispatch_lead=1.0) as op:
        op.engine.set_fence(lambda namespace, name: True)
        await asyncio.sleep(10.5)
    st = kube.status("beat")
    assert st["counters"]["succeeded"] >= 7, st["counters"]
    assert kube.writes[("schedules", "beat")] >= 4


@virtual_time
async def test_pausing_after_failures_withdraws_the_run_sent_ahead() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "broken", interval="1s", pauseAfterFailures=2,
             retry={"maxAttempts": 1})
    op = Operator(kube, dispatch_lead=1.0)
    op.dispatcher.default = fail(delay=0.1)
    async with op:
        op.engine.set_fence(lambda namespace, name: True)
        await asyncio.sleep(6)
    calls = op.dispatcher.runs("heartbeat")
    started = [c for c in calls if c.began is not None]
    assert len(started) == 2, "the third, sent ahead, was withdrawn by the pause"
    st = kube.status("broken")
    assert st["counters"]["failed"] == 2 and st["counters"]["runs"] == 2
    assert (str(calls[-1].endpoint), calls[-1].run_id) in op.dispatcher.cancelled


@virtual_time
async def test_only_a_burst_is_sent_ahead() -> None:
    """A few Schedules due together go out at their slot as without a lead (holding them
    gains nothing and widens the window a partitioned handler can run a job twice); a
    batch of lead_min_batch or more is sent ahead."""
    kube = FakeKube()
    handler(kube, concurrency=100)
    for i in range(3):
        schedule(kube, f"few{i}", schedule="*/10 * * * * *")
    for i in range(40):
        schedule(kube, f"many{i:02d}", schedule="5,15,25,35,45,55 * * * * *")
    async with Operator(kube, dispatch_lead=1.0, lead_min_batch=32) as op:
        await asyncio.sleep(10.5)
    few = [c for c in op.dispatcher.runs() if c.scheduled_time.endswith(":10Z")]
    many = [c for c in op.dispatcher.runs() if c.scheduled_time.endswith(":05Z")]
    assert len(few) == 3 and {round(c.at, 6) for c in few} == {10.0}
    assert all(c.start_at is None for c in few)
    assert len(many) == 40 and {round(c.at, 6) for c in many} == {4.0}
    assert {round(c.began or -1, 6) for c in many} == {5.0}
