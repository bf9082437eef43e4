"""Pure decisions of the run state machine (no I/O, no clock): unit-tested in tables."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Literal

PRIORITY_RANK = {"high": 0, "normal": 1, "low": 2}


def run_id_for(uid: str, slot: dt.datetime) -> str:
    """Deterministic per (Schedule uid, nominal time): every operator derives the same id."""
    return f"{uid[:8]}-{slot.astimezone(dt.UTC):%Y%m%dT%H%M%S}{slot.microsecond // 1000:03d}Z"


def run_now_id(uid: str, annotation_value: str) -> str:
    digest = hashlib.sha256(annotation_value.encode()).hexdigest()[:10]
    return f"{uid[:8]}-now-{digest}"


SlotAction = Literal["fire", "skip", "replace", "buffer"]


def on_slot_due(policy: str, active: int) -> SlotAction:
    """What to do with a due slot given the Schedule's runs still active."""
    if active == 0 or policy == "Allow":
        return "fire"
    if policy == "Forbid":
        return "skip"
    if policy == "Replace":
        return "replace"
    return "buffer"  # BufferOne: keep one waiting; a newer one replaces it (and is skipped)


@dataclass(frozen=True)
class AttemptVerdict:
    retry: bool
    outcome: str | None  # final outcome when not retrying


def after_attempt(*, ok: bool, retryable: bool, error_type: str | None, attempt: int,
                  max_attempts: int, cancelled: bool = False) -> AttemptVerdict:
    if ok:
        return AttemptVerdict(False, "Succeeded")
    if cancelled:
        return AttemptVerdict(False, "Cancelled")
    if retryable and attempt < max_attempts:
        return AttemptVerdict(True, None)
    return AttemptVerdict(False, "TimedOut" if error_type == "Timeout" else "Failed")


def should_pause(consecutive_failures: int, pause_after: int | None) -> bool:
    return pause_after is not None and consecutive_failures >= pause_after
