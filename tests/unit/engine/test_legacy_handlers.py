"""ScheduleZero (zmq-legacy) handlers as first-class citizens, on virtual time.

- their endpoints are probed with ``ping``: a dead one leaves the Ready set, is
  named on the Handler and the Schedules, and rejoins when it answers again;
- the ``methods`` allow-list is enforced at dispatch for every protocol;
- errors a retry cannot fix are not retried;
- what handlers register with the registration port shows on the Handler.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from schedulezero_operator.engine.handlers import HEARTBEAT_WRITE_EVERY, PROBE_EVERY

from ...fakes import HANG, FakeKube, fail, slow, until, virtual_time
from .harness import Operator, handler, schedule

RUN_NOW = "schedulezero.io/run-now"
A, B = "10.0.0.1:4244", "10.0.0.2:4244"


def conditions(kube: FakeKube, name: str = "h") -> dict[str, tuple[str, str, str]]:
    return {c["type"]: (c["status"], c["reason"], c["message"])
            for c in kube.status(name, "handlers").get("conditions") or []}


def events(kube: FakeKube, reason: str, name: str = "h") -> list[str]:
    return [e.message for e in kube.events if e.name == name and e.reason == reason]


# -- probing with ping ------------------------------------------------------------------
@virtual_time
async def test_legacy_endpoints_are_pinged_not_described() -> None:
    kube = FakeKube()
    handler(kube, protocol="zmq-legacy", endpoints=[A, B])
    async with Operator(kube) as op:
        await asyncio.sleep(PROBE_EVERY * 2 + 1)
    assert op.dispatcher.describes == 0
    pinged = [e for _, e in op.dispatcher.pings]
    assert pinged.count(A) == pinged.count(B) == 3, "at start, then every probe interval"
    st = kube.status("h", "handlers")
    assert st["ready"] == "2/2"
    assert conditions(kube)["Available"] == ("True", "EndpointsReady",
                                             "2/2 endpoint(s) answer ping")
    assert conditions(kube)["Degraded"][:2] == ("False", "AllReady")


@virtual_time
async def test_a_dead_endpoint_leaves_at_the_next_probe_and_rejoins_when_it_answers() -> None:
    kube = FakeKube()
    handler(kube, protocol="zmq-legacy", endpoints=[A, B])
    async with Operator(kube) as op:
        await until("both ready", lambda: kube.status("h", "handlers").get("ready") == "2/2")
        op.dispatcher.down.add(A)
        await until("A out", lambda: kube.status("h", "handlers").get("ready") == "1/2",
                    timeout=PROBE_EVERY + 3)
        st = kube.status("h", "handlers")
        assert st["readyEndpoints"] == [B]
        available, degraded = conditions(kube)["Available"], conditions(kube)["Degraded"]
        assert available[:2] == ("True", "EndpointsReady")
        assert degraded == ("True", "EndpointsDown", "1 endpoint(s) not answering ping: "
                            f"{A}: Timeout: no reply to ping within 2s")
        [down] = events(kube, "EndpointDown")
        assert A in down and B not in down and "no reply to ping" in down
        assert [e.type for e in kube.events if e.reason == "EndpointDown"] == ["Warning"]
        op.dispatcher.down.clear()
        await until("A back", lambda: kube.status("h", "handlers").get("ready") == "2/2",
                    timeout=PROBE_EVERY + 1)
        assert conditions(kube)["Degraded"][:2] == ("False", "AllReady")
        assert events(kube, "EndpointReady") == [f"endpoint(s) answer ping again: {A}"]


@virtual_time
async def test_with_every_endpoint_down_runs_wait_visibly_then_resume() -> None:
    kube = FakeKube()
    handler(kube, protocol="zmq-legacy", endpoints=[A])
    schedule(kube, "s", interval="1s", timeoutSeconds=2)
    async with Operator(kube) as op:
        await until("a run", lambda: op.dispatcher.calls)
        op.dispatcher.down.add(A)
        killed = asyncio.get_running_loop().time()
        # The next job times out (2 s), the endpoint is out at once and pinged.
        await until("HandlerReady=False", lambda: kube.condition("s", "HandlerReady").get(
            "reason") == "NoReadyEndpoint", timeout=10)
        noticed = asyncio.get_running_loop().time() - killed
        assert noticed < PROBE_EVERY, "a failed attempt is enough; no need to wait a probe"
        cond = kube.condition("s", "HandlerReady")
        assert A in cond["message"] and "no reply" in cond["message"]
        available = conditions(kube)["Available"]
        assert available[:2] == ("False", "NoEndpoints") and A in available[2]
        calls = len(op.dispatcher.calls)
        await asyncio.sleep(5)
        assert len(op.dispatcher.calls) == calls, "no job is sent to a dead endpoint"
        assert kube.status("s")["active"], "the runs wait (active), they are not lost"
        op.dispatcher.down.clear()
        await until("runs resume", lambda: len(op.dispatcher.calls) > calls + 3,
                    timeout=PROBE_EVERY + 5)
        await until("HandlerReady=True", lambda: kube.condition("s", "HandlerReady").get(
            "status") == "True")
    assert all(c.endpoint.address == A for c in op.dispatcher.calls)


@virtual_time
async def test_a_timed_out_attempt_takes_the_endpoint_out_and_the_retry_goes_elsewhere() -> None:
    kube = FakeKube()
    handler(kube, protocol="zmq-legacy", endpoints=[A, B])
    schedule(kube, "s", interval="1h", suspend=True, timeoutSeconds=3,
             annotations={RUN_NOW: "go"}, retry={"maxAttempts": 3,
                                                 "backoff": {"initial": "100ms"}})
    op = Operator(kube)
    op.dispatcher.on(A, HANG)
    op.dispatcher.on(B, HANG)
    async with op:
        await until("first attempt", lambda: op.dispatcher.calls)
        first = op.dispatcher.calls[0].endpoint.address
        other = B if first == A else A
        op.dispatcher.down.add(first)
        op.dispatcher.script.clear()
        await until("outcome", lambda: kube.status("s").get("lastResult"), timeout=10)
        run = kube.status("s")["recentRuns"][0]
    assert run["outcome"] == "Succeeded" and run["attempts"] == 2
    assert [c.endpoint.address for c in op.dispatcher.calls] == [first, other]
    assert kube.status("h", "handlers")["readyEndpoints"] == [other]


@virtual_time
async def test_a_busy_endpoint_is_not_pinged_and_stays_ready() -> None:
    kube = FakeKube()
    handler(kube, protocol="zmq-legacy", endpoints=[A])
    schedule(kube, "s", interval="1h", suspend=True, timeoutSeconds=120,
             annotations={RUN_NOW: "go"})
    op = Operator(kube)
    op.dispatcher.default = slow(3 * PROBE_EVERY)
    async with op:
        await until("the job", lambda: op.dispatcher.calls)
        started = op.dispatcher.calls[0].at
        await asyncio.sleep(2 * PROBE_EVERY)
        assert not [t for t, _ in op.dispatcher.pings if t > started], \
            "a REP socket would queue the ping behind the job"
        assert kube.status("h", "handlers")["ready"] == "1/1"
        await until("done", lambda: kube.status("s").get("lastResult"), timeout=60)
    assert kube.status("s")["lastResult"] == "Succeeded"


# -- the allow-list -------------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["zmq", "http", "zmq-legacy"])
@virtual_time
async def test_a_method_outside_the_allow_list_is_recorded_not_sent(protocol: str) -> None:
    kube = FakeKube()
    handler(kube, protocol=protocol, methods=["heartbeat"])
    schedule(kube, "s", method="rm_everything", interval="1h", suspend=True,
             annotations={RUN_NOW: "go"})
    async with Operator(kube) as op:
        await until("outcome", lambda: kube.status("s").get("lastResult"), timeout=5)
        await asyncio.sleep(5)
    assert not op.dispatcher.calls
    st = kube.status("s")
    [run] = st["recentRuns"]
    assert run["outcome"] == "Failed" and run["attempts"] == 0
    assert run["message"] == ("method 'rm_everything' is not in Handler h's allow-list "
                              "(spec.methods: heartbeat); not sent")
    assert st["counters"]["retried"] == 0 and "startTime" not in run
    assert kube.condition("s", "HandlerReady")["reason"] == "UnknownMethod"


@virtual_time
async def test_the_allow_list_is_checked_again_when_the_run_gets_its_endpoint() -> None:
    kube = FakeKube()
    handler(kube, protocol="zmq-legacy", endpoints=[A])
    schedule(kube, "s", method="wipe", interval="1h", suspend=True,
             annotations={RUN_NOW: "go"})
    op = Operator(kube)
    op.dispatcher.down.add(A)
    async with op:
        await until("waiting", lambda: kube.condition("s", "HandlerReady").get("reason")
                    == "NoReadyEndpoint", timeout=5)
        kube.update("handlers", "h", spec={"methods": ["heartbeat"]})
        op.dispatcher.down.clear()
        await until("outcome", lambda: kube.status("s").get("lastResult"), timeout=20)
    assert not op.dispatcher.calls
    run = kube.status("s")["recentRuns"][0]
    assert run["outcome"] == "Failed" and "allow-list" in run["message"]


@virtual_time
async def test_an_allowed_method_is_sent() -> None:
    kube = FakeKube()
    handler(kube, protocol="zmq-legacy", methods=["heartbeat", "other"])
    schedule(kube, "s", interval="1h", suspend=True, annotations={RUN_NOW: "go"})
    async with Operator(kube) as op:
        await until("outcome", lambda: kube.status("s").get("lastResult"), timeout=5)
    assert kube.status("s")["lastResult"] == "Succeeded" and len(op.dispatcher.calls) == 1


# -- errors a retry cannot fix ---------------------------------------------------------
@pytest.mark.parametrize("error_type", ["UnknownMethod", "InvalidParams"])
@virtual_time
async def test_non_retryable_legacy_errors_are_sent_once(error_type: str) -> None:
    kube = FakeKube()
    handler(kube, protocol="zmq-legacy")
    schedule(kube, "s", interval="1h", suspend=True, annotations={RUN_NOW: "go"},
             retry={"maxAttempts": 5, "backoff": {"initial": "100ms"}})
    op = Operator(kube)
    op.dispatcher.on("*", fail(error_type, "Unknown method: heartbeat", retryable=False))
    async with op:
        await until("outcome", lambda: kube.status("s").get("lastResult"), timeout=10)
    assert len(op.dispatcher.calls) == 1
    run = kube.status("s")["recentRuns"][0]
    assert run["outcome"] == "Failed" and run["attempts"] == 1
    assert run["message"] == f"{error_type}: Unknown method: heartbeat"


@virtual_time
async def test_other_legacy_errors_are_still_retried() -> None:
    kube = FakeKube()
    handler(kube, protocol="zmq-legacy")
    schedule(kube, "s", interval="1h", suspend=True, annotations={RUN_NOW: "go"},
             retry={"maxAttempts": 3, "backoff": {"initial": "100ms"}})
    op = Operator(kube)
    op.dispatcher.on("*", fail("HandlerError", "disk full"), fail("HandlerError", "disk full"))
    async with op:
        await until("outcome", lambda: kube.status("s").get("lastResult"), timeout=10)
    assert len(op.dispatcher.calls) == 3
    assert kube.status("s")["lastResult"] == "Succeeded"


# -- registrations ------------------------------------------------------------------
def register(op: Operator, handler_id: str = "ding-aling", address: str = f"tcp://{A}",
             methods: list[str] | None = None, connection: bytes = b"c1") -> dict:
    return op.engine.registrations.handle(
        {"method": "register", "params": {"handler_id": handler_id, "address": address,
                                          "methods": methods or ["ping", "chime"]}},
        connection=connection, peer="10.0.0.1")


@virtual_time
async def test_a_registration_shows_on_the_handler_naming_its_address() -> None:
    kube = FakeKube()
    handler(kube, protocol="zmq-legacy", endpoints=[A, B])
    handler(kube, "other", protocol="zmq-legacy", endpoints=["10.9.9.9:4244"])
    schedule(kube, "s", handler="h", method="announce", interval="1h")
    async with Operator(kube) as op:
        await until("ready", lambda: kube.status("h", "handlers").get("ready") == "2/2")
        reply = register(op)
        assert reply["success"] and reply["status"] == "registered"
        await until("shown", lambda: kube.status("h", "handlers").get("registered"))
        [reg] = kube.status("h", "handlers")["registered"]
        assert reg == {"endpoint": A, "handlerId": "ding-aling", "methods": ["ping", "chime"],
                       "registeredTime": reg["lastHeartbeat"],
                       "lastHeartbeat": reg["lastHeartbeat"], "status": "online"}
        assert kube.status("h", "handlers")["methods"] == ["chime", "ping"]
        assert "registered" not in kube.status("other", "handlers")
        # A REP handler cannot describe itself: what it registered is what it offers.
        await until("UnknownMethod", lambda: kube.condition("s", "HandlerReady").get(
            "reason") == "UnknownMethod")
        assert "does not offer method 'announce'" in kube.condition(
            "s", "HandlerReady")["message"]


@virtual_time
async def test_report_status_offline_takes_the_endpoint_out_until_it_registers_again() -> None:
    kube = FakeKube()
    handler(kube, protocol="zmq-legacy", endpoints=[A, B])
    async with Operator(kube) as op:
        await until("ready", lambda: kube.status("h", "handlers").get("ready") == "2/2")
        register(op)
        reply = op.engine.registrations.handle(
            {"method": "report_status", "params": {"handler_id": "ding-aling",
                                                   "status": "offline"}}, connection=b"c1")
        assert reply == {"success": True, "handler_id": "ding-aling", "status": "offline"}
        op.dispatcher.down.add(A)  # it stops serving
        await until("out", lambda: kube.status("h", "handlers").get("ready") == "1/2",
                    timeout=1)
        st = kube.status("h", "handlers")
        assert st["registered"][0]["status"] == "offline"
        assert "reported offline (report_status)" in conditions(kube)["Degraded"][2]
        op.dispatcher.down.clear()  # it restarts and registers: pinged at once
        register(op, connection=b"c2")
        await until("back", lambda: kube.status("h", "handlers").get("ready") == "2/2",
                    timeout=1)
        assert kube.status("h", "handlers")["registered"][0]["status"] == "online"


@virtual_time
async def test_heartbeats_refresh_the_status_at_most_once_a_minute() -> None:
    kube = FakeKube()
    handler(kube, protocol="zmq-legacy", endpoints=[A])
    async with Operator(kube) as op:
        register(op)
        await until("shown", lambda: kube.status("h", "handlers").get("registered"))
        first = kube.status("h", "handlers")["registered"][0]["lastHeartbeat"]
        writes = kube.writes[("handlers", "h")]
        for _ in range(int(HEARTBEAT_WRITE_EVERY * 2 / 30)):
            await asyncio.sleep(30)
            assert op.engine.registrations.handle({"method": "ping"}, connection=b"c1") == {
                "success": True, "message": "pong"}
        await asyncio.sleep(1)
        last = kube.status("h", "handlers")["registered"][0]["lastHeartbeat"]
        assert last > first
        # 4 heartbeats in 2 minutes, plus the periodic probes: 2 writes for heartbeats
        assert kube.writes[("handlers", "h")] - writes <= 2


@virtual_time
async def test_registrations_no_handler_names_are_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    kube = FakeKube()
    handler(kube, protocol="zmq-legacy", endpoints=[A])
    async with Operator(kube) as op:
        with caplog.at_level(logging.INFO, logger="schedulezero.handlers"):
            for _ in range(3):
                register(op, "stray", "tcp://10.7.7.7:5000")
                op.engine.registrations.handle({"method": "ping"}, connection=b"c1")
        await asyncio.sleep(1)
    assert len([r for r in caplog.records if "stray" in r.getMessage()]) == 1
    assert "no Handler's endpoints name" in caplog.text
    assert op.engine.registrations.get("stray") is not None
    assert "registered" not in kube.status("h", "handlers")


@virtual_time
async def test_registrations_survive_an_operator_restart() -> None:
    kube = FakeKube()
    handler(kube, protocol="zmq-legacy", endpoints=[A])
    async with Operator(kube) as op:
        register(op)
        await until("shown", lambda: kube.status("h", "handlers").get("registered"))
    before = kube.status("h", "handlers")["registered"]
    async with Operator(kube, identity="op-b") as op2:
        await asyncio.sleep(PROBE_EVERY + 1)
        assert kube.status("h", "handlers")["registered"] == before
        assert op2.engine.registrations.get("ding-aling") is not None
        # Its heartbeats now come on a connection this operator has not seen register.
        await asyncio.sleep(HEARTBEAT_WRITE_EVERY)
        op2.engine.registrations.handle({"method": "ping"}, connection=b"new",
                                        peer="10.0.0.1")
        await asyncio.sleep(1)
        assert kube.status("h", "handlers")["registered"][0]["lastHeartbeat"] > \
            before[0]["lastHeartbeat"]
