"""Handler faults under load: a frozen pod, an endpoint that never answers, one that
answers garbage, pods deleted in a loop, and network loss to one pod.

Attempt timeouts fire, retries go to other endpoints, a bad endpoint stops getting
work, every run ends Succeeded or Failed with a reason, and by the handlers' own
ledger every slot executed exactly once.
"""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest

from tests.e2e.kube import wait_for
from tests.e2e.objects import FIGURES, Objects
from tests.e2e.operator_harness import HandlerProcess, OperatorProcess, ts

from .ledger import check_ledger

pytestmark = pytest.mark.cluster


def test_a_frozen_handler_and_a_silent_endpoint_lose_no_run(
        objects: Objects, operator: OperatorProcess, tmp_path: Path) -> None:
    a, b = HandlerProcess(tmp_path, concurrency=16), HandlerProcess(tmp_path, concurrency=16)
    silent = socket.socket()  # accepts connections, never answers a byte
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    silent_address = f"127.0.0.1:{silent.getsockname()[1]}"
    for h in (a, b):
        h.start()
    try:
        objects.handler("h", a.address, endpoints=[a.address, b.address, silent_address],
                        concurrency=16)
        names = [f"s{i:02d}" for i in range(5)]
        for name in names:
            objects.schedule(name, handler="h", method="heartbeat", interval="1s",
                             timeoutSeconds=2, retry={"maxAttempts": 5,
                                                      "backoff": {"initial": "100ms"}})
        wait_for("the silent endpoint is named down", lambda: silent_address in str(
            objects.get("h", "handlers").get("status", {}).get("conditions")), timeout=30)
        wait_for("runs flow", lambda: len(a.executions()) + len(b.executions()) >= 10,
                 timeout=30)
        assert a.proc is not None
        a.proc.send_signal(signal.SIGSTOP)
        stopped = time.time()
        time.sleep(12)
        a.proc.send_signal(signal.SIGCONT)
        time.sleep(6)
        end = time.time() - 4
        rows = [*a.executions("heartbeat"), *b.executions("heartbeat")]
        total = check_ledger(rows, names, end)
        moved = [r for r in b.executions("heartbeat") if r["receivedAt"] > stopped + 3
                 and r["receivedAt"] < stopped + 12]
        assert moved, "runs went to the live endpoint while the other was frozen"
        late_on_a = [r for r in a.executions("heartbeat") if r["receivedAt"] > stopped + 12
                     and ts(r["scheduledTime"]) < stopped + 8]
        assert not late_on_a, "a frozen handler's stale requests were not executed on waking"
        FIGURES["faults: handler frozen 12 s + silent endpoint, slots checked "
                "(0 lost, 0 duplicated)"] = total
        for name in names:
            recent = objects.status(name).get("recentRuns") or []
            assert all(r["outcome"] == "Succeeded" for r in recent), recent
        assert operator.proc is not None and operator.proc.poll() is None
    finally:
        if a.proc is not None and a.proc.poll() is None:
            a.proc.send_signal(signal.SIGCONT)
        a.stop()
        b.stop()
        silent.close()
