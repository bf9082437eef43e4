"""What the engine keeps per Schedule, since at 10,000 Schedules every kilobyte is
10 MB of RSS (``make bench-fleet``): one copy of each object, without its status
(the record has that), the stored status's derived parts dropped after first sight,
and a hand-over that keeps what the next holder (or we, getting it back) start from.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt

from schedulezero_operator.api.models import ScheduleSpec
from schedulezero_operator.engine import status
from schedulezero_operator.engine.compact import compact

from ...fakes import T0, FakeKube, virtual_time
from .harness import Operator, handler, schedule


def stamp(seconds: float) -> str:
    return (T0 + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


@virtual_time
async def test_a_schedule_with_a_runner_is_kept_once_and_without_its_status() -> None:
    kube = FakeKube()
    handler(kube)
    for i in range(3):
        schedule(kube, f"s{i}")
    async with Operator(kube) as op:
        await asyncio.sleep(3.5)  # runs recorded, their echoes watched
        assert kube.status("s0")["lastScheduleTime"]
        assert op.engine._bodies == {}, "no second copy of a Schedule that has a runner"
        for runner in op.engine.schedules.values():
            assert "status" not in runner.s.body


@virtual_time
async def test_first_sight_keeps_only_what_a_write_does_not_rebuild() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "s", status={
        "lastScheduleTime": "2026-01-01T00:00:00Z",
        "conditions": [{"type": "Ready", "status": "True", "reason": "Scheduled",
                        "message": "old", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        "trigger": "every 1s", "observedGeneration": 1,
        "recentRuns": [{"runId": "r0", "scheduledTime": "2026-01-01T00:00:00Z",
                        "outcome": "Succeeded"}]})
    async with Operator(kube) as op:
        await asyncio.sleep(0)
        record = op.engine.schedules[("default", "s")].s.record
        assert record.conditions == [] and record.active == [] and record.claim is None
        assert record.trigger is None and record.observed_generation is None
        assert record.last_schedule_time is not None
        assert "r0" in [r.run_id for r in record.recent_runs], "history is kept"
        await asyncio.sleep(1.5)
    written = kube.status("s")
    assert written["trigger"] and written["observedGeneration"] == 1
    assert {c["type"] for c in written["conditions"]} >= {"Ready"}


@virtual_time
async def test_a_bucket_handed_over_and_back_resumes_from_the_status_we_had() -> None:
    """Given back before any newer watch event, the Schedule restarts from the status
    its old runner would have written: its last run is not fired again."""
    kube = FakeKube()
    handler(kube)
    schedule(kube, "beat", interval="10s")
    held = [True]
    async with Operator(kube) as op:
        op.engine.set_fence(lambda namespace, name: held[0],
                            holds=lambda namespace, name: held[0])
        await asyncio.sleep(10.5)
        assert [c.scheduled_time for c in op.dispatcher.runs("heartbeat")] == [
            stamp(10)]
        held[0] = False
        op.engine.rebalance()
        assert op.engine.schedules == {}
        kept = op.engine._bodies[("default", "beat")]
        assert kept["status"]["lastScheduleTime"] == stamp(10)
        held[0] = True
        op.engine.rebalance()
        assert op.engine._bodies == {}
        await asyncio.sleep(10)
    assert [c.scheduled_time for c in op.dispatcher.runs("heartbeat")] == [
        stamp(10), stamp(20)], "slot 10 not again; slot 20 on time"


def test_compact_models_share_one_fields_set_per_class_and_behave_the_same() -> None:
    raw = {"handler": "h", "method": "m", "interval": "1s", "retry": {"maxAttempts": 3},
           "catchUp": {"policy": "All", "maxRuns": 2}}
    plain, one, two = (ScheduleSpec.model_validate(raw) for _ in range(3))
    compact(one)
    compact(two)
    assert one.__pydantic_fields_set__ is two.__pydantic_fields_set__
    assert one.retry.__pydantic_fields_set__ is two.retry.__pydantic_fields_set__
    assert one == plain and status.document(one) == status.document(plain)
    shared = set(one.__pydantic_fields_set__)
    one.suspend = True  # assignment adds the name to the set: already there
    copy = two.model_copy(update={"suspend": True})
    assert one.__pydantic_fields_set__ == shared == two.__pydantic_fields_set__
    assert copy.__pydantic_fields_set__ is not shared and two.suspend is False


@virtual_time
async def test_what_a_runner_keeps_is_compact() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "a")
    schedule(kube, "b")
    async with Operator(kube) as op:
        await asyncio.sleep(2.5)
        a, b = (op.engine.schedules[("default", n)].s for n in "ab")
        assert a.spec is not None and b.spec is not None
        assert a.spec.__pydantic_fields_set__ is b.spec.__pydantic_fields_set__
        assert a.record.__pydantic_fields_set__ is b.record.__pydantic_fields_set__
        assert a.claim is not None and b.claim is not None
        assert a.claim.__pydantic_fields_set__ is b.claim.__pydantic_fields_set__
        assert a.conditions["Ready"].__pydantic_fields_set__ is \
            b.conditions["Ready"].__pydantic_fields_set__
        runs = a.record.recent_runs + b.record.recent_runs
        assert len(runs) >= 2
        assert len({id(r.__pydantic_fields_set__) for r in runs}) == 1


MANAGED = [{"manager": "kubectl-client-side-apply", "operation": "Update",
            "apiVersion": "schedulezero.io/v1alpha1", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {".": {}, "f:handler": {}, "f:interval": {}}}},
           {"manager": "kopf", "operation": "Update", "subresource": "status",
            "fieldsV1": {"f:status": {".": {}, "f:claim": {".": {}, "f:holder": {}}}}}]


@virtual_time
async def test_api_bookkeeping_is_not_kept_held_or_not() -> None:
    """managedFields and kubectl's last-applied copy are dropped from what the engine
    keeps (they cost more than the rest of a stored Schedule); other annotations stay."""
    kube = FakeKube()
    handler(kube)
    for name in ("mine", "theirs"):
        schedule(kube, name, annotations={
            "kubectl.kubernetes.io/last-applied-configuration": '{"spec": "..."}' * 20,
            "team": "ops"})
        kube.obj("schedules", name)["metadata"]["managedFields"] = MANAGED
    async with Operator(kube) as op:
        op.engine.set_fence(lambda namespace, name: name == "mine",
                            holds=lambda namespace, name: name == "mine")
        op.engine.rebalance()
        await asyncio.sleep(1.5)
        for name in ("mine", "theirs"):  # a watch event after the fence was set
            op.engine.upsert_schedule(copy.deepcopy(kube.obj("schedules", name)))
        kept = [op.engine.schedules[("default", "mine")].s.body,
                op.engine._bodies[("default", "theirs")]]
        for body in kept:
            assert "managedFields" not in body["metadata"]
            assert body["metadata"]["annotations"] == {"team": "ops"}
            assert body["spec"]["handler"] == "h"
        assert "status" not in kept[0] and kept[1]["metadata"]["uid"]
    # The stored object itself is untouched (kept bodies are shallow copies).
    assert kube.obj("schedules", "mine")["metadata"]["managedFields"] == MANAGED
