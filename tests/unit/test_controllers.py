"""The kopf adapters route watch events to the engine found in kopf's memo."""

from __future__ import annotations

from typing import Any

import kopf
import pytest
from schedulezero_operator import __main__ as entry
from schedulezero_operator import controllers


class RecordingEngine:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def upsert_schedule(self, body: dict[str, Any]) -> None:
        self.calls.append(("upsert_schedule", body["metadata"]["name"]))

    def delete_schedule(self, key: tuple[str, str]) -> None:
        self.calls.append(("delete_schedule", key))

    def upsert_handler(self, body: dict[str, Any]) -> None:
        self.calls.append(("upsert_handler", body["metadata"]["name"]))

    def delete_handler(self, namespace: str, name: str) -> None:
        self.calls.append(("delete_handler", namespace, name))

    def on_pod(self, event_type: str, pod: dict[str, Any]) -> None:
        self.calls.append(("on_pod", event_type, pod["metadata"]["name"]))


def event(kind: str | None, name: str) -> Any:
    return {"type": kind, "object": {"metadata": {"namespace": "ns", "name": name}}}


async def test_events_reach_the_engine_in_the_memo() -> None:
    eng = RecordingEngine()
    memo = kopf.Memo(runtime=controllers.Runtime(engine=eng))  # type: ignore[arg-type]
    await controllers._schedule_event(event=event("ADDED", "s"), memo=memo)
    await controllers._schedule_event(event=event("DELETED", "s"), memo=memo)
    await controllers._handler_event(event=event("MODIFIED", "h"), memo=memo)
    await controllers._handler_event(event=event("DELETED", "h"), memo=memo)
    await controllers._pod_event(event=event(None, "p"), memo=memo)
    assert eng.calls == [("upsert_schedule", "s"), ("delete_schedule", ("ns", "s")),
                         ("upsert_handler", "h"), ("delete_handler", "ns", "h"),
                         ("on_pod", "ADDED", "p")]


def test_a_memo_without_a_runtime_gets_the_defaults() -> None:
    memo = kopf.Memo()
    rt = controllers.runtime(memo)
    assert rt.options == controllers.Options() and memo["runtime"] is rt
    with pytest.raises(AssertionError, match="start-up"):
        controllers.engine(memo)


def test_the_entry_point_hands_its_options_to_kopf_in_the_memo(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(kopf, "run", lambda **kwargs: seen.update(kwargs))
    monkeypatch.setattr(kopf, "configure", lambda **kwargs: None)
    monkeypatch.setattr(controllers.safe_decode, "install", lambda: None)  # kopf untouched
    entry.main(["--leader-elect", "--lease-namespace", "ops", "-n", "team-a"])
    rt = seen["memo"]["runtime"]
    assert rt.options == controllers.Options(leader_elect=True, lease_namespace="ops",
                                             lease_name="schedulezero-operator")
    assert seen["namespaces"] == ["team-a"] and seen["clusterwide"] is False
