"""Unchanged ScheduleZero handlers under a real operator on a real API server.

(a) a ScheduleZero-style REP handler (``examples/handlers/legacy_rep.py``) as an
    external ``zmq-legacy`` Handler: killed, it is named on the Handler
    (Available=False, Degraded, a Warning Event) and the Schedule's HandlerReady
    turns False within seconds; restarted, runs resume. A method outside the
    Handler's allow-list is recorded, never sent.
(b) a handler that registers at start-up as ScheduleZero's ``ZMQHandlerBase`` does
    (``examples/handlers/legacy_registering.py``) with the operator's registration
    port: its registration shows on the Handler, and on SIGTERM it reports offline
    and exits at once.

The operator is our own process (the session's steps aside meanwhile), watching only
this module's namespace, with ``--legacy-registry-port`` and a 2 s probe interval.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from schedulezero_testcluster.cluster import free_port

from .kube import unique, wait_for
from .objects import FIGURES, Objects
from .operator_harness import REPO, OperatorProcess, Proc, read_records

pytestmark = pytest.mark.cluster
RUN_NOW = "schedulezero.io/run-now"


class LegacyProcess(Proc):
    """A ScheduleZero-style REP handler on 127.0.0.1; jobs recorded as JSON lines."""

    def __init__(self, directory: Path, port: int | None = None,
                 registry: str | None = None, handler_id: str = "ding-aling") -> None:
        self.port = port or free_port()
        self.record = directory / f"legacy-{self.port}.jsonl"
        address = f"tcp://127.0.0.1:{self.port}"
        if registry is None:
            argv = [sys.executable, str(REPO / "examples" / "handlers" / "legacy_rep.py"),
                    address]
        else:
            argv = [sys.executable, "-m", "examples.handlers.legacy_registering",
                    "--id", handler_id, "--address", address, "--server", registry,
                    "--heartbeat", "1", "--record", str(self.record)]
        super().__init__(argv, directory / f"legacy-{self.port}.log",
                         env={"LEGACY_RECORD": str(self.record), "PYTHONPATH": str(REPO)})
        self.address = f"127.0.0.1:{self.port}"

    def start(self) -> None:
        super().start()
        self.wait_listening(self.port)

    def jobs(self, method: str | None = None) -> list[dict[str, Any]]:
        return read_records(self.record, method)


@dataclass
class Stack:
    objects: Objects
    operator: OperatorProcess
    registry: str
    work: Path


@pytest.fixture(scope="module")
def stack(crds: None, api: client.ApiClient, operator: OperatorProcess,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("legacy")
    core = client.CoreV1Api(api)
    ns = unique("e2e-legacy")
    registry_port = free_port()
    operator.stop()
    ours = OperatorProcess(work / "operator.log", "--legacy-registry-port", str(registry_port),
                           "--legacy-registry-bind", "127.0.0.1", "--probe-interval", "2",
                           "-n", ns)
    try:
        core.create_namespace({"metadata": {"name": ns}})
        ours.start()
        yield Stack(Objects(api, ns), ours, f"tcp://127.0.0.1:{registry_port}", work)
    finally:
        ours.stop()
        try:
            core.delete_namespace(ns)
        finally:
            operator.start()


def handler_status(objects: Objects, name: str) -> dict[str, Any]:
    return dict(objects.get(name, "handlers").get("status") or {})


def handler_condition(objects: Objects, name: str, kind: str) -> dict[str, Any]:
    for c in handler_status(objects, name).get("conditions") or []:
        if c["type"] == kind:
            return dict(c)
    return {}


def test_a_killed_legacy_handler_is_named_and_runs_resume_when_it_returns(
        stack: Stack) -> None:
    objects, work = stack.objects, stack.work
    legacy = LegacyProcess(work)
    legacy.start()
    try:
        objects.handler("legacy", legacy.address, protocol="zmq-legacy",
                        methods=["increment_counter", "echo"])
        objects.schedule("count", handler="legacy", method="increment_counter",
                         interval="1s", timeoutSeconds=2,
                         retry={"maxAttempts": 2, "backoff": {"initial": "200ms"}})
        objects.create("Schedule", "forbidden", {
            "handler": "legacy", "method": "fail", "interval": "1h", "suspend": True},
            annotations={RUN_NOW: "go"})
        wait_for("3 runs", lambda: len(legacy.jobs("increment_counter")) >= 3, timeout=60)
        assert handler_condition(objects, "legacy", "Available")["message"] == \
            "1/1 endpoint(s) answer ping"

        # the allow-list: recorded, never sent
        forbidden = wait_for("the forbidden run is recorded", lambda: (
            objects.status("forbidden").get("recentRuns") or [None])[0], timeout=30)
        assert forbidden["outcome"] == "Failed" and forbidden["attempts"] == 0
        assert "not in Handler legacy's allow-list" in forbidden["message"]
        assert not legacy.jobs("fail")

        legacy.stop(signal.SIGKILL)
        killed = time.monotonic()
        available = wait_for("Available=False", lambda: (
            lambda c: c if c.get("status") == "False" else None)(
            handler_condition(objects, "legacy", "Available")), timeout=30)
        detected = time.monotonic() - killed
        FIGURES["legacy handler SIGKILL -> Handler Available=False (s)"] = round(detected, 2)
        assert legacy.address in available["message"], available
        degraded = handler_condition(objects, "legacy", "Degraded")
        assert degraded["status"] == "True" and legacy.address in degraded["message"]
        ready = wait_for("HandlerReady=False", lambda: (
            lambda c: c if c and c["status"] == "False" else None)(
            objects.condition("count", "HandlerReady")), timeout=15)
        assert ready["reason"] == "NoReadyEndpoint" and legacy.address in ready["message"]
        assert time.monotonic() - killed < 10, "within a few seconds"
        assert any(e.reason == "EndpointDown" and e.type == "Warning"
                   and legacy.address in e.message for e in objects.events("legacy"))

        before = len(legacy.jobs("increment_counter"))
        time.sleep(2)
        assert len(legacy.jobs("increment_counter")) == before, "nothing sent meanwhile"
        back = LegacyProcess(work, port=legacy.port)  # same address, same record file
        restarted = time.monotonic()
        back.start()
        try:
            wait_for("runs resume", lambda: len(back.jobs("increment_counter")) >= before + 2,
                     timeout=30)
            FIGURES["legacy handler restart -> runs resume (s)"] = round(
                time.monotonic() - restarted, 2)
            wait_for("Available=True", lambda: handler_condition(
                objects, "legacy", "Available").get("status") == "True", timeout=15)
            wait_for("HandlerReady=True", lambda: (objects.condition(
                "count", "HandlerReady") or {}).get("status") == "True", timeout=15)
        finally:
            back.stop()
    finally:
        legacy.stop(signal.SIGKILL)


def test_a_registering_handler_shows_on_the_handler_and_stops_promptly(stack: Stack) -> None:
    objects, work = stack.objects, stack.work
    legacy = LegacyProcess(work, registry=stack.registry, handler_id="ding-dong")
    objects.handler("registering", f"127.0.0.1:{legacy.port}", protocol="zmq-legacy")
    legacy.start()
    try:
        [reg] = wait_for("the registration on the Handler", lambda: handler_status(
            objects, "registering").get("registered"), timeout=30)
        assert reg["endpoint"] == legacy.address and reg["handlerId"] == "ding-dong"
        assert reg["status"] == "online" and reg["lastHeartbeat"]
        assert reg["methods"] == ["add", "echo", "fail", "increment_counter", "ping", "sleep"]
        wait_for("methods from the registration", lambda: handler_status(
            objects, "registering").get("methods") == reg["methods"], timeout=15)

        assert legacy.proc is not None
        legacy.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        legacy.proc.wait(10)
        stopped = time.monotonic() - started
        FIGURES["registering legacy handler SIGTERM -> exit (s)"] = round(stopped, 2)
        assert legacy.proc.returncode == 0 and stopped < 3, legacy.tail()
        log = legacy.tail()
        assert "registered successfully" in log and "attempt" not in log, log
        assert "reported offline: {'success': True" in log, log
        wait_for("offline on the Handler", lambda: (handler_status(
            objects, "registering").get("registered") or [{}])[0].get("status") == "offline",
            timeout=15)
        available = wait_for("Available=False", lambda: (
            lambda c: c if c.get("status") == "False" else None)(
            handler_condition(objects, "registering", "Available")), timeout=15)
        assert legacy.address in available["message"]
    finally:
        legacy.stop(signal.SIGKILL)
