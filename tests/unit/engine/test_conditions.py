"""What only the operator can check becomes a condition and a Warning Event, never a crash."""

from __future__ import annotations

import asyncio

import pytest
from schedulezero_operator.api.models import DECODE_PROBLEM

from ...fakes import FakeKube, until, virtual_time
from .harness import Operator, handler, schedule

RUN_NOW = "schedulezero.io/run-now"


def warned(kube: FakeKube, name: str, reason: str) -> bool:
    return any(e.name == name and e.reason == reason and e.type == "Warning"
               for e in kube.events)


@pytest.mark.parametrize(("spec", "needle"), [
    ({"schedule": "61 * * * *"}, "61"),
    ({"schedule": "* * * * *", "timeZone": "Mars/Olympus_Mons"}, "Mars/Olympus_Mons"),
    ({"interval": "1s", "method": "_private"}, "spec.method"),
    ({"interval": "1s", "jitter": "soon"}, "spec.jitter"),
])
@virtual_time
async def test_an_invalid_spec_is_reported_and_never_fires(spec: dict, needle: str) -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "bad", **spec)
    schedule(kube, "good", interval="1s")
    async with Operator(kube) as op:
        await asyncio.sleep(2.5)
    cond = kube.condition("bad", "Ready")
    assert (cond["status"], cond["reason"]) == ("False", "InvalidSchedule")
    assert needle in cond["message"]
    assert warned(kube, "bad", "InvalidSchedule")
    st = kube.status("bad")
    assert "claim" not in st and "nextRunTime" not in st
    assert {c.schedule for c in op.dispatcher.calls} == {"default/good"}, \
        "the valid Schedule keeps firing"


@virtual_time
async def test_params_nested_too_deep_are_refused_with_the_field_named() -> None:
    deep: dict = {}
    cur = deep
    for _ in range(40):
        cur["x"] = {}
        cur = cur["x"]
    kube = FakeKube()
    handler(kube)
    schedule(kube, "bad", interval="1s", params=deep)
    async with Operator(kube):
        await asyncio.sleep(0.5)
    message = kube.condition("bad", "Ready")["message"]
    assert message.startswith("invalid spec: spec.params: ") and "32 levels" in message


@virtual_time
async def test_an_object_the_decoder_had_to_cut_is_reported() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "cut", interval="1s")
    kube.obj("schedules", "cut")[DECODE_PROBLEM] = "spec.params nested deeper than 48 levels"
    async with Operator(kube) as op:
        await asyncio.sleep(2)
    cond = kube.condition("cut", "Ready")
    assert cond["reason"] == "InvalidSchedule" and "deeper than 48" in cond["message"]
    assert not op.dispatcher.calls


@virtual_time
async def test_fixing_the_spec_makes_it_ready_and_fire() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "s", schedule="61 * * * *")
    async with Operator(kube) as op:
        await asyncio.sleep(1)
        kube.update("schedules", "s", spec={"schedule": "* * * * * *"})
        await asyncio.sleep(2.5)
    cond = kube.condition("s", "Ready")
    assert (cond["status"], cond["reason"]) == ("True", "Scheduled")
    assert cond["observedGeneration"] == 2
    assert op.dispatcher.calls


@virtual_time
async def test_handler_not_found_then_created() -> None:
    kube = FakeKube()
    schedule(kube, "s", handler="ghost", interval="1h", suspend=True,
             startingDeadlineSeconds=5, annotations={RUN_NOW: "go"})
    async with Operator(kube) as op:
        await asyncio.sleep(1)
        cond = kube.condition("s", "HandlerReady")
        assert (cond["status"], cond["reason"]) == ("False", "HandlerNotFound")
        assert "'ghost' not found" in cond["message"]
        assert warned(kube, "s", "HandlerNotFound")
        await until("outcome", lambda: kube.status("s").get("lastResult"), timeout=10)
        run = kube.status("s")["recentRuns"][0]
        assert run["outcome"] == "Missed" and "handler ghost not found" in run["message"]
        handler(kube, "ghost")
        await until("ready", lambda: kube.condition("s", "HandlerReady").get("status")
                    == "True")
        assert kube.condition("s", "HandlerReady")["reason"] == "EndpointsReady"
        kube.update("schedules", "s", annotations={RUN_NOW: "again"})
        await until("a run", lambda: op.dispatcher.calls)
        kube.delete("handlers", "ghost")
        await until("gone again", lambda: kube.condition("s", "HandlerReady").get("reason")
                    == "HandlerNotFound")


@virtual_time
async def test_a_run_waits_for_a_handler_that_appears_in_time() -> None:
    kube = FakeKube()
    schedule(kube, "s", handler="late", interval="1h", suspend=True,
             annotations={RUN_NOW: "go"})
    async with Operator(kube) as op:
        await asyncio.sleep(30)
        handler(kube, "late")
        await until("the run", lambda: op.dispatcher.calls)
    assert op.dispatcher.calls[0].at >= 30


@virtual_time
async def test_a_method_outside_the_allow_list_or_not_offered_is_reported() -> None:
    kube = FakeKube()
    handler(kube, "strict", methods=["heartbeat"])
    handler(kube, "h")
    schedule(kube, "a", handler="strict", method="rm_everything", interval="1h")
    schedule(kube, "b", handler="h", method="nope", interval="1h")
    async with Operator(kube):
        await asyncio.sleep(1)
    cond = kube.condition("a", "HandlerReady")
    assert cond["reason"] == "UnknownMethod" and "allow-list" in cond["message"]
    cond = kube.condition("b", "HandlerReady")
    assert cond["reason"] == "UnknownMethod" and "does not offer method 'nope'" in \
        cond["message"]
    assert warned(kube, "a", "UnknownMethod") and warned(kube, "b", "UnknownMethod")


@virtual_time
async def test_no_ready_endpoint_then_the_run_is_missed_after_the_deadline() -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "s", interval="1h", suspend=True, startingDeadlineSeconds=2,
             annotations={RUN_NOW: "go"})
    op = Operator(kube)
    op.dispatcher.down.add("10.0.0.1:4244")
    async with op:
        await until("outcome", lambda: kube.status("s").get("lastResult"), timeout=5)
    cond = kube.condition("s", "HandlerReady")
    assert cond["reason"] == "NoReadyEndpoint" and "wait up to 2s" in cond["message"]
    run = kube.status("s")["recentRuns"][0]
    assert run["outcome"] == "Missed"
    assert run["message"] == ("no Ready endpoint of handler h within 2s "
                              "(10.0.0.1:4244: ConnectionError: refused)")
    assert warned(kube, "s", "RunMissed")
    hs = kube.status("h", "handlers")
    assert {c["type"]: c["reason"] for c in hs["conditions"]}["Available"] == "NoEndpoints"


@virtual_time
async def test_an_invalid_handler_is_reported_on_the_handler() -> None:
    kube = FakeKube()
    handler(kube, "bad")
    kube.obj("handlers", "bad")[DECODE_PROBLEM] = "spec.template nested deeper than 48 levels"
    schedule(kube, "s", handler="bad", interval="1h")
    async with Operator(kube):
        await asyncio.sleep(1)
    st = kube.status("bad", "handlers")
    conds = {c["type"]: (c["status"], c["reason"]) for c in st["conditions"]}
    assert conds == {"Available": ("False", "InvalidHandler"),
                     "Degraded": ("True", "InvalidHandler")}
    assert st["ready"] == "0/0" and "deeper than 48" in st["conditions"][0]["message"]
    assert warned(kube, "bad", "InvalidHandler")
    assert kube.condition("s", "HandlerReady")["reason"] == "NoReadyEndpoint"


@pytest.mark.parametrize(("at", "reason"), [("9999-12-31T23:59:59Z", "Scheduled"),
                                            ("0001-01-01T00:00:00Z", "NoMoreRuns")])
@virtual_time
async def test_odd_but_legal_times_are_ready(at: str, reason: str) -> None:
    kube = FakeKube()
    handler(kube)
    schedule(kube, "odd", at=at)
    async with Operator(kube) as op:
        await asyncio.sleep(1)
    cond = kube.condition("odd", "Ready")
    assert (cond["status"], cond["reason"]) == ("True", reason)
    assert not op.dispatcher.calls
    assert kube.status("odd").get("nextRunTime", at) == at
