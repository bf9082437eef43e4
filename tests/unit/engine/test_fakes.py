"""The fakes behave like the real thing where the engine depends on it."""

from __future__ import annotations

import asyncio

import pytest
from schedulezero_operator.dispatch import Endpoint
from schedulezero_operator.engine.ports import Conflict, NotFound

from ...fakes import (
    HANG,
    FakeDispatcher,
    FakeKube,
    fail,
    merge_patch,
    run_virtual,
    virtual_time,
)


def test_merge_patch_is_rfc_7386() -> None:
    assert merge_patch({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]},
                       {"a": None, "b": {"c": None, "x": 1}, "e": [2]}) == {
        "b": {"d": 3, "x": 1}, "e": [2]}


@virtual_time
async def test_status_patches_need_the_current_resource_version() -> None:
    kube = FakeKube()
    obj = kube.create("schedules", "s", {"handler": "h"})
    rv = obj["metadata"]["resourceVersion"]
    new_rv = await kube.patch_status("schedules", "default", "s", rv, {
        "lastResult": "Succeeded", "claim": {"holder": "a", "runId": "r", "scheduledTime": "t",
                                             "until": "u", "expires": "e", "bogus": 1}})
    assert int(new_rv) > int(rv)
    assert kube.status("s")["claim"] == {"holder": "a", "runId": "r", "scheduledTime": "t",
                                         "until": "u", "expires": "e"}, "pruned to the CRD"
    with pytest.raises(Conflict):
        await kube.patch_status("schedules", "default", "s", rv, {"lastResult": None})
    await kube.patch_status("schedules", "default", "s", None, {"lastResult": None})
    assert "lastResult" not in kube.status("s")
    with pytest.raises(NotFound):
        await kube.patch_status("schedules", "default", "gone", None, {})
    with pytest.raises(NotFound):
        await kube.get("schedules", "default", "gone")
    assert kube.writes[("schedules", "s")] == 2 and kube.conflicts == 1


def test_virtual_time_passes_without_real_time() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(3600)
        return loop.time()

    assert run_virtual(main()) == 3600


@virtual_time
async def test_the_dispatcher_times_out_fails_and_drops_connections() -> None:
    d = FakeDispatcher()
    ep = Endpoint("10.0.0.1", 1, "zmq")
    d.on("*", HANG, fail("Boom", "no", retryable=False))
    r = await d.execute(ep, run_id="r", method="m", params={}, timeout=2)
    assert (r.ok, r.error_type, r.retryable) == (False, "Timeout", True)
    r = await d.execute(ep, run_id="r", method="m", params={}, timeout=2)
    assert (r.ok, r.error_type, r.retryable) == (False, "Boom", False)
    d.default = HANG
    pending = asyncio.ensure_future(d.execute(ep, run_id="r", method="m", params={},
                                              timeout=60))
    await asyncio.sleep(1)
    await d.forget(ep)
    r = await pending
    assert (r.error_type, r.retryable) == ("ConnectionError", True)
    assert [round(c.at, 6) for c in d.calls] == [0.0, 2.0, 2.0]
