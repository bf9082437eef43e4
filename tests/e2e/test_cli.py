"""The kubectl plugin against the local control plane, run as users run it (a subprocess).

Every verb: run (success after a retry, failure, no-wait, a Schedule the operator
cannot run), suspend/resume, history, next (and that a printed time really
fires), cron, status (-n and -A), and ``kubectl sz`` through kubectl's own plugin
lookup when the console script is installed.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from schedulezero_operator.api.models import RUN_NOW_ANNOTATION
from schedulezero_operator.engine.decisions import run_now_id

from .kube import wait_for
from .objects import Objects
from .operator_harness import REPO, HandlerProcess, ts

pytestmark = pytest.mark.cluster


def sz(kubeconfig: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "schedulezero_operator.cli", "--kubeconfig", kubeconfig, *args],
        capture_output=True, text=True, timeout=timeout, cwd=REPO)


def rows(table: str) -> list[list[str]]:
    return [re.split(r" {3,}", line.strip()) for line in table.strip().splitlines()]


def test_run_history_suspend_resume_next_cron_and_status(
        objects: Objects, handler_proc: HandlerProcess, kubeconfig: str) -> None:
    ns = objects.ns
    objects.handler("h", handler_proc.address)
    objects.schedule("beat", handler="h", method="heartbeat", interval="2s")
    objects.schedule("manual", handler="h", method="flaky", params={"failures": 1},
                     interval="1h", suspend=True,
                     retry={"maxAttempts": 3, "backoff": {"initial": "100ms"}})
    objects.schedule("broken", handler="h", method="fail", interval="1h", suspend=True,
                     retry={"maxAttempts": 2, "backoff": {"initial": "100ms"}})
    objects.schedule("bad", handler="h", method="heartbeat", schedule="61 * * * *")
    objects.schedule("nightly", handler="h", method="heartbeat", schedule="30 2 * * *",
                     timeZone="Europe/Berlin", suspend=True)
    wait_for("handler ready", lambda: (objects.get("h", "handlers").get("status") or {})
             .get("ready") == "1/1")

    # run: the run-now is retried once and succeeds; the plugin waits for exactly it.
    r = sz(kubeconfig, "run", "manual", "-n", ns)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    value = objects.get("manual")["metadata"]["annotations"][RUN_NOW_ANNOTATION]
    run_id = run_now_id(objects.get("manual")["metadata"]["uid"], value)
    assert lines[0] == (f"schedule.schedulezero.io/manual: run {run_id} requested "
                        f"({RUN_NOW_ANNOTATION}={value})")
    assert lines[1] == f"run {run_id} Succeeded"
    assert "  attempts:  2" in lines
    assert f"  endpoint:  {handler_proc.address}" in lines
    assert any(line.startswith("  duration:  ") for line in lines)
    assert any(line.startswith('  result:    {"succeededOnAttempt":2') for line in lines)
    assert [row["runId"] for row in handler_proc.executions("flaky")] == [run_id, run_id]

    # A failing run: outcome and message, exit code 1.
    r = sz(kubeconfig, "run", "broken", "-n", ns)
    assert r.returncode == 1, r.stdout + r.stderr
    assert re.search(r"^run \S+-now-\S+ Failed$", r.stdout, re.M)
    assert "  message:   HandlerError: RuntimeError: always fails" in r.stdout

    # --no-wait only requests it; the run still happens.
    r = sz(kubeconfig, "run", "manual", "-n", ns, "--no-wait")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 1
    wait_for("the no-wait run", lambda: len(handler_proc.executions("flaky")) >= 3)

    # A Schedule the operator cannot use never runs: the plugin times out and says why.
    r = sz(kubeconfig, "run", "bad", "-n", ns, "--timeout", "3")
    assert r.returncode == 1
    assert "no outcome within 3s; the Schedule is not Ready (InvalidSchedule)" in r.stdout
    assert "minute field value 61 is out of range" in r.stdout

    # history: the run-now of "manual" with its attempts.
    r = sz(kubeconfig, "history", "manual", "-n", ns)
    assert r.returncode == 0, r.stderr
    table = rows(r.stdout)
    assert table[0] == ["RUN ID", "SCHEDULED", "OUTCOME", "ATTEMPTS", "LATENCY", "DURATION",
                        "ENDPOINT", "MESSAGE"]
    mine = next(row for row in table[1:] if row[0] == run_id)
    assert mine[2:4] == ["Succeeded", "2"] and mine[6] == handler_proc.address

    # next: what it prints for the running interval is what fires.
    r = sz(kubeconfig, "next", "beat", "--namespace", ns, "-n", "3")
    assert r.returncode == 0, r.stderr
    created = objects.get("beat")["metadata"]["creationTimestamp"]
    assert r.stdout.splitlines()[0] == ("schedule.schedulezero.io/beat: every 2s, anchored at "
                                        f"the creation time {created}")
    printed = [row[2] for row in rows(r.stdout.split("\n\n")[-1])[1:]]
    assert len(printed) == 3
    assert all((ts(t) - ts(created)) % 2 == 0 for t in printed)
    wait_for(f"a heartbeat scheduled at {printed[1]}", lambda: any(
        ts(row["scheduledTime"]) == ts(printed[1])
        for row in handler_proc.executions("heartbeat")), timeout=20)

    # next for a cron in its zone, across the spring-forward night (02:30 -> 03:00 CEST).
    r = sz(kubeconfig, "-n", ns, "next", "nightly", "-n", "2", "--from", "2026-03-28T00:00:00Z")
    assert r.returncode == 0, r.stderr
    assert "note: suspended - these times will not fire until resumed" in r.stdout
    assert "Sun 2026-03-29 03:00:00 CEST   2026-03-29T01:00:00Z" in r.stdout

    # cron needs no Schedule; a bad expression is the operator's message, exit 2.
    r = sz(kubeconfig, "cron", "*/3 * * * * *", "-n", "2")
    assert r.returncode == 0 and "meaning:    every 3 seconds, every minute" in r.stdout
    r = sz(kubeconfig, "cron", "61 * * * *")
    assert r.returncode == 2
    assert r.stderr.strip() == ("error: invalid cron expression '61 * * * *': minute field "
                                "value 61 is out of range 0-59")

    # suspend / resume.
    r = sz(kubeconfig, "suspend", "beat", "-n", ns)
    assert r.stdout.strip() == "schedule.schedulezero.io/beat suspended"
    assert objects.get("beat")["spec"]["suspend"] is True
    wait_for("Suspended", lambda: (objects.condition("beat", "Suspended") or {})
             .get("status") == "True")
    r = sz(kubeconfig, "suspend", "beat", "-n", ns)
    assert r.stdout.strip() == "schedule.schedulezero.io/beat already suspended (no change)"

    # status: one row for the namespace, matching the objects (polled: status writes lag).
    def expected() -> list[str]:
        schedules = [objects.get(n) for n in ("beat", "manual", "broken", "bad", "nightly")]
        counters = [sum((s.get("status") or {}).get("counters", {}).get(k, 0)
                        for s in schedules)
                    for k in ("runs", "succeeded", "failed", "retried", "skipped", "missed")]
        # 5 Schedules, 4 suspended (beat too, now), 1 invalid (bad), 1 failing (broken);
        # 1 Handler, available.
        return [ns, "5", "4", "1", "1", "1", "1", *map(str, counters)]

    def status_matches() -> bool:
        want = expected()
        out = sz(kubeconfig, "status", "-n", ns)
        return out.returncode == 0 and rows(out.stdout)[1] == want

    wait_for("status row matching the objects", status_matches, timeout=30, interval=1)
    r = sz(kubeconfig, "status", "-A")
    table = rows(r.stdout)
    assert table[0][:3] == ["NAMESPACE", "SCHEDULES", "SUSPENDED"]
    assert any(row[0] == ns and row[1] == "5" for row in table)
    if len(table) > 2:
        assert table[-1][0] == "TOTAL"

    r = sz(kubeconfig, "resume", "beat", "-n", ns)
    assert r.stdout.strip() == "schedule.schedulezero.io/beat resumed"
    assert objects.get("beat")["spec"].get("suspend") is False
    count = len(handler_proc.executions("heartbeat"))
    wait_for("beats again", lambda: len(handler_proc.executions("heartbeat")) > count)

    # Errors read like kubectl's.
    r = sz(kubeconfig, "history", "nope", "-n", ns)
    assert r.returncode == 1
    assert r.stderr.strip() == ('Error from server (NotFound): schedules.schedulezero.io '
                                '"nope" not found')


def test_kubectl_finds_the_installed_plugin(objects: Objects, kubeconfig: str) -> None:
    """``kubectl sz`` / ``kubectl schedulezero``: the console scripts, found on PATH by kubectl."""
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "kubectl-sz").exists() or shutil.which("kubectl") is None:
        pytest.skip("console scripts not installed (pip install -e .) or no kubectl")
    objects.schedule("one", handler="h", method="m", at=(
        dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    env = {**os.environ, "KUBECONFIG": kubeconfig,
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    for name in ("sz", "schedulezero"):
        r = subprocess.run(["kubectl", name, "status", "-n", objects.ns], env=env,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert rows(r.stdout)[1][:2] == [objects.ns, "1"]
    r = subprocess.run(["kubectl", "sz", "next", "--help"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert "kubectl sz next nightly-report -n 10 --namespace reports" in r.stdout
