"""Clock handler in the spirit of ScheduleZero's "ding-aling": chimes and announces time.

It has no speaker in a pod, so each chime is written as a line of text to stdout
(the pod log) and kept in a bounded in-memory history that ``history`` returns.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import sys
from typing import Any

from schedulezero_handler import JobContext, method

_QUARTERS = {1: "ding", 2: "ding-dong", 3: "ding-dong-ding", 4: "ding-dong-ding-dong"}


class Clock:
    def __init__(self) -> None:
        self.name = os.environ.get("CLOCK_NAME", "ding-aling")
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=100)

    def _say(self, text: str, ctx: JobContext | None) -> dict[str, Any]:
        entry = {"clock": self.name, "said": text,
                 "at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                 "runId": ctx.run_id if ctx else None,
                 "scheduledTime": ctx.scheduled_time if ctx else None}
        self.recent.append(entry)
        print(f"[{self.name}] {text}", file=sys.stdout, flush=True)
        return entry

    @method
    def play_hour_bongs(self, hour: int, ctx: JobContext | None = None) -> dict[str, Any]:
        """Bong once per hour on a 12-hour dial."""
        if not 0 <= hour <= 23:
            raise ValueError(f"hour must be 0..23, got {hour}")
        count = hour % 12 or 12
        return self._say(" ".join(["BONG"] * count), ctx)

    @method
    def play_quarter_chime(self, quarter: int, ctx: JobContext | None = None) -> dict[str, Any]:
        """Westminster-ish quarter chime, 1..4."""
        if quarter not in _QUARTERS:
            raise ValueError(f"quarter must be 1..4, got {quarter}")
        return self._say(_QUARTERS[quarter], ctx)

    @method
    def announce_time(self, timezone: str = "UTC",
                      ctx: JobContext | None = None) -> dict[str, Any]:
        """Say the current time in ``timezone``."""
        from zoneinfo import ZoneInfo

        now = dt.datetime.now(ZoneInfo(timezone))
        return self._say(f"it is {now:%H:%M:%S} in {timezone}", ctx)

    @method
    def history(self, limit: int = 10) -> list[dict[str, Any]]:
        """What the clock said most recently."""
        return list(self.recent)[-limit:]
