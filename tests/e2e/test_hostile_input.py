"""Hostile input never stops scheduling: the corpus applied to a running operator.

Each case of ``corpus.CASES`` is refused by the API server with a message naming the
field, or stored and reported on the object itself (condition + Warning Event), or
accepted as legal; a valid control Schedule keeps firing throughout and after, and
every object deletes cleanly. The second test restarts the operator with the worst
objects present: it must start cleanly and keep firing.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

import pytest
from kubernetes import client
from schedulezero_operator.controllers import safe_decode

from .corpus import CASES, GOOD_HANDLER, WORST, Accepted, Case, Refused, Surfaced, manifest
from .kube import wait_for
from .objects import Objects
from .operator_harness import HandlerProcess, OperatorProcess

pytestmark = pytest.mark.cluster


def apply(case: Case, namespace: str, kubeconfig: str) -> subprocess.CompletedProcess[bytes]:
    kubectl = ["kubectl", "--kubeconfig", kubeconfig]
    if case.raw is not None:
        path = f"/apis/schedulezero.io/v1alpha1/namespaces/{namespace}/{case.plural}"
        return subprocess.run([*kubectl, "create", "--raw", path, "-f", "-"], input=case.raw,
                              capture_output=True, timeout=60)
    return subprocess.run([*kubectl, "apply", "-n", namespace, "-f", "-"],
                          input=manifest(case).encode(), capture_output=True, timeout=60)


def get(api: client.ApiClient, namespace: str, case: Case) -> dict[str, Any]:
    """Read an object whatever its shape (the client's json.loads dies on 5,000 levels)."""
    raw = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "schedulezero.io", "v1alpha1", namespace, case.plural, case.name,
        _preload_content=False)
    return dict(safe_decode.loads(raw.data))


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == kind:
            return dict(c)
    return None


def control_runs(handler_proc: HandlerProcess) -> int:
    return len([r for r in handler_proc.executions("heartbeat")
                if (r.get("schedule") or "").endswith("/control")])


def test_corpus_is_refused_or_surfaced_and_scheduling_never_stops(
        objects: Objects, handler_proc: HandlerProcess, operator: OperatorProcess,
        kubeconfig: str, api: client.ApiClient) -> None:
    objects.handler(GOOD_HANDLER, handler_proc.address, methods=["heartbeat", "echo"])
    objects.schedule("control", handler=GOOD_HANDLER, method="heartbeat", interval="1s")
    wait_for("the control Schedule fires", lambda: control_runs(handler_proc) >= 2, timeout=30)

    stored: list[Case] = []
    wrong: list[str] = []
    for case in CASES:
        result = apply(case, objects.ns, kubeconfig)
        err = result.stderr.decode("utf-8", "replace")
        if isinstance(case.expect, Refused):
            if result.returncode == 0:
                wrong.append(f"{case.name}: accepted, expected refusal naming "
                             f"{case.expect.needle!r}")
            elif case.expect.needle not in err:
                wrong.append(f"{case.name}: refused, but the error does not name "
                             f"{case.expect.needle!r}: {err[:300]}")
        elif result.returncode != 0:
            wrong.append(f"{case.name}: refused ({err[:300]}), expected it stored")
        else:
            stored.append(case)
    assert not wrong, "\n".join(wrong)

    before = control_runs(handler_proc)
    for case in stored:
        expect = case.expect
        kind = expect.condition if isinstance(expect, Surfaced) else (
            "Ready" if case.kind == "Schedule" else "Available")
        cond = wait_for(f"{case.name}: condition {kind}", lambda c=case, k=kind: condition(
            get(api, objects.ns, c), k), timeout=30)
        if isinstance(expect, Accepted):
            assert cond["status"] == "True", f"{case.name}: {cond}"
            continue
        assert isinstance(expect, Surfaced)
        got = wait_for(f"{case.name}: {expect.reason}", lambda c=case, e=expect: (
            x if (x := condition(get(api, objects.ns, c), e.condition))
            and x["reason"] == e.reason else None), timeout=30)
        assert got["status"] == expect.status, f"{case.name}: {got}"
        assert expect.needle in got["message"], f"{case.name}: {got['message']}"
        assert "Traceback" not in got["message"] and "KeyError" not in got["message"]
        event_reason = expect.event or expect.reason
        wait_for(f"{case.name}: Warning Event {event_reason}", lambda c=case, r=event_reason: [
            e for e in objects.events(c.name) if e.reason == r and e.type == "Warning"],
            timeout=30)
    # Events stay useful: one per (object, reason), repeats counted, not re-posted.
    for case in stored:
        reasons = [e.reason for e in objects.events(case.name)]
        assert len(reasons) == len(set(reasons)), f"{case.name}: duplicate Events {reasons}"

    wait_for("the control Schedule kept firing", lambda: control_runs(handler_proc)
             >= before + 3, timeout=30)
    assert operator.proc is not None and operator.proc.poll() is None, operator.tail()
    assert "RecursionError" not in operator.tail(200_000)

    custom = client.CustomObjectsApi(api)
    for case in stored:
        custom.delete_namespaced_custom_object("schedulezero.io", "v1alpha1", objects.ns,
                                               case.plural, case.name)
    for case in stored:
        wait_for(f"{case.name} deleted", lambda c=case: _gone(custom, objects.ns, c), timeout=30)
    after_delete = control_runs(handler_proc)
    wait_for("the control Schedule fires after the deletions",
             lambda: control_runs(handler_proc) >= after_delete + 2, timeout=30)
    assert operator.proc.poll() is None, operator.tail()


def _gone(custom: client.CustomObjectsApi, namespace: str, case: Case) -> bool:
    try:
        custom.get_namespaced_custom_object("schedulezero.io", "v1alpha1", namespace,
                                            case.plural, case.name)
    except client.ApiException as e:
        return e.status == 404
    return False


def test_operator_restarts_cleanly_with_the_worst_objects_present(
        objects: Objects, handler_proc: HandlerProcess, operator: OperatorProcess,
        kubeconfig: str, api: client.ApiClient) -> None:
    objects.handler(GOOD_HANDLER, handler_proc.address)
    objects.schedule("control", handler=GOOD_HANDLER, method="heartbeat", interval="1s")
    worst = [c for c in CASES if c.name in WORST]
    for case in worst:
        assert apply(case, objects.ns, kubeconfig).returncode == 0, case.name
    wait_for("the control Schedule fires", lambda: control_runs(handler_proc) >= 2, timeout=30)

    operator.stop()
    operator.start()
    started = time.monotonic()
    count = control_runs(handler_proc)
    wait_for("firing resumes after the restart", lambda: control_runs(handler_proc)
             >= count + 3, timeout=45)
    time.sleep(max(0.0, 5 - (time.monotonic() - started)))  # past any crash-on-list
    assert operator.proc is not None and operator.proc.poll() is None, operator.tail()
    for case in worst:
        expect = case.expect
        assert isinstance(expect, Surfaced)
        got = wait_for(f"{case.name} surfaced after the restart", lambda c=case, e=expect: (
            x if (x := condition(get(api, objects.ns, c), e.condition))
            and x["reason"] == e.reason else None), timeout=30)
        assert got["status"] == expect.status, f"{case.name}: {got}"
