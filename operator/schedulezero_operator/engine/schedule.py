"""What the engine holds per Schedule, and how a Schedule object becomes a usable spec.

All state needed after a restart is in ``record`` (the typed status as stored);
everything else here is rebuilt from the object and the clock.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from ..api.models import DECODE_PROBLEM, Claim, Condition, ScheduleSpec, ScheduleStatus
from ..dispatch import Endpoint
from ..timing import Trigger, parse_duration, parse_trigger
from . import status
from .compact import compact
from .problems import InvalidObject, validation_message
from .times import parse_iso


@dataclass(eq=False)
class Run:
    run_id: str
    slot: dt.datetime  # the nominal time
    fire_at: dt.datetime  # the slot plus jitter: lateness is measured from here
    attempt: int = 1
    start: dt.datetime | None = None  # first dispatch
    endpoint: str | None = None  # of the latest attempt
    resume_on: str | None = None  # a previous operator's endpoint for this run: join it there
    sticky: bool = False  # maybe dispatched by a predecessor: its home endpoint, any load
    # Dispatched ahead of ``fire_at`` (the dispatch lead): the first attempt goes out
    # now and starts at ``fire_at``, held by the handler (or by the dispatcher).
    held: bool = False
    recalled: bool = False  # held, then withdrawn before its start by a spec change
    last_before: str | None = None  # lastScheduleTime before this slot fired
    task: asyncio.Task[None] | None = None
    current: Endpoint | None = None  # while an attempt is in flight


@dataclass(frozen=True)
class Parsed:
    spec: ScheduleSpec
    trigger: Trigger


def parse_schedule(body: dict[str, Any], now: dt.datetime) -> Parsed | str:
    """The spec and trigger of a Schedule object, or what is wrong with it (a message)."""
    try:
        problem = body.get(DECODE_PROBLEM)
        if problem:
            raise InvalidObject(f"invalid spec: {problem}; the operator cannot use this "
                                "object (fix or delete it)")
        spec = compact(ScheduleSpec.model_validate(body.get("spec") or {}))
        created = parse_iso(body["metadata"].get("creationTimestamp")) or now
        trigger = parse_trigger(schedule=spec.schedule, interval=spec.interval, at=spec.at,
                                time_zone=spec.time_zone, start_time=spec.start_time,
                                end_time=spec.end_time, anchor=created)
        if spec.jitter:
            parse_duration(spec.jitter)
    except (ValueError, OverflowError) as e:  # ValidationError and TriggerError included
        return validation_message(e)
    return Parsed(spec, trigger)


def trigger_text(trigger: Trigger | None) -> str | None:
    """The trigger in words (the SCHEDULE printer column)."""
    if trigger is None:
        return None
    if trigger.kind == "interval":
        return f"every {trigger.expression}"
    return trigger.description


@dataclass(eq=False)
class ScheduleState:
    namespace: str
    name: str
    uid: str
    body: dict[str, Any]
    record: ScheduleStatus  # what survives restarts: history, counters, last times
    resource_version: str | None = None
    generation: int = 0
    spec: ScheduleSpec | None = None
    trigger: Trigger | None = None
    invalid: str | None = None  # why the spec cannot be used
    conditions: dict[str, Condition] = field(default_factory=dict)
    active: dict[str, Run] = field(default_factory=dict)
    buffered: Run | None = None  # BufferOne: the run waiting for the active one
    next_slot: dt.datetime | None = None
    gap: float | None = None  # seconds between the last two slots armed (the period)
    claim: Claim | None = None  # the claim we last asked for
    claim_until: dt.datetime | None = None  # confirmed by a write: slots up to here are ours
    claim_lost: bool = False  # another operator holds the next slot
    inherited_claim: Claim | None = None  # a predecessor's, found at first sight
    foreign_claim: Claim | None = None  # another live operator's, found on a conflict
    # Set when the claim of the next slot is confirmed or lost; made only by a waiter
    # (an asyncio.Event with its deque is ~850 bytes, and almost no Schedule waits).
    claim_settled: asyncio.Event | None = None
    paused_generation: int | None = None  # pauseAfterFailures hit at this generation
    # A run sent ahead starts at its slot and usually ends a moment later: its start
    # (and the next slot's claim) wait until then to go out in the same write as its
    # record. Else a minute-cron with a 1 s lead cost two writes a run.
    write_after: dt.datetime | None = None
    deleted: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def stopped(self) -> bool:
        """No scheduled runs: invalid, suspended or paused (run-now still works)."""
        return self.spec is None or self.spec.suspend or self.paused_generation is not None

    def set_condition(self, kind: str, ok: bool, reason: str, message: str,
                      now: dt.datetime) -> bool:
        """Set one condition; whether anything changed."""
        return status.set_condition(self.conditions, kind, ok, reason, message, now=now,
                                    generation=self.generation)

    def settle_claim(self) -> None:
        """Wake whoever waits for the claim of the next slot to be confirmed or lost."""
        if self.claim_settled is not None:
            self.claim_settled.set()
            self.claim_settled = None
