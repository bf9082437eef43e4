"""The one injectable clock of the operator (wall time, UTC).

The engine reads the wall clock only through ``Clock.now()``; every wait (timers,
backoff, write coalescing) is an ``asyncio`` sleep on the event loop's clock. Unit
tests therefore run the engine on an event loop with virtual time and a clock
that follows it (``tests/fakes.py``): hours of schedule pass in milliseconds.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> dt.datetime: ...


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(time.time(), dt.UTC)


class FixedClock:
    """For tests: time moves only when told to."""

    def __init__(self, start: dt.datetime) -> None:
        self.current = start

    def now(self) -> dt.datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += dt.timedelta(seconds=seconds)
