"""Test handler: sleep, fail, flaky and bookkeeping methods for e2e and reliability tests.

In the spirit of ScheduleZero's test handler (write_file, append_to_file,
increment_counter, heartbeat, get_execution_count). Every execution is appended
to a JSON-lines file (``SZ_TEST_RECORD``, default ``executions.jsonl`` in the temp
directory, never the working directory) so tests can check what really ran — at most
once per run id, on which pod, how late.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from schedulezero_handler import JobContext, PermanentError, method


class TestHandler:
    __test__ = False  # not a pytest class, despite the name
    def __init__(self) -> None:
        self.record_path = Path(os.environ.get("SZ_TEST_RECORD") or Path(
            tempfile.gettempdir()) / "executions.jsonl")
        self.counters: dict[str, int] = {}
        self._attempts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self._file_path: Path | None = None

    def _record(self, method_name: str, ctx: JobContext | None, **fields: Any) -> dict[str, Any]:
        entry = {
            "method": method_name, "receivedAt": time.time(),
            "runId": ctx.run_id if ctx else None, "attempt": ctx.attempt if ctx else None,
            "schedule": ctx.schedule if ctx else None,
            "scheduledTime": ctx.scheduled_time if ctx else None,
            # The operator's dispatch time plus the attempt timeout (benchmarks split
            # lateness into operator time and transport + handler time with it).
            "deadline": ctx.deadline if ctx else None,
            "pod": os.environ.get("POD_NAME"), **fields,
        }
        line = json.dumps(entry) + "\n"
        with self._lock:
            # Kept open (append mode, a line flushed at a time): opening it per job was
            # a tenth of the handler's CPU at 500 jobs/s. Reopened if the path changes.
            if self._file is None or self._file_path != self.record_path:
                if self._file is not None:
                    self._file.close()
                self._file, self._file_path = self.record_path.open("a"), self.record_path
            self._file.write(line)
            self._file.flush()
        return entry

    @method
    async def heartbeat(self, ctx: JobContext) -> dict[str, Any]:
        """Record that the job ran; return the receipt time.

        Async: it runs on the handler's event loop, so ``receivedAt`` is when the handler
        got the job, not when a worker thread got the GIL (benchmarks measure lateness
        with it; ``sleep_sync`` covers sync methods)."""
        return self._record("heartbeat", ctx)

    @method
    async def sleep(self, seconds: float, ctx: JobContext) -> dict[str, Any]:
        """Sleep (cancellable), then record."""
        self._record("sleep.start", ctx, seconds=seconds)
        await asyncio.sleep(seconds)
        return self._record("sleep", ctx, seconds=seconds)

    @method
    def sleep_sync(self, seconds: float, ctx: JobContext) -> dict[str, Any]:
        """Sleep in a worker thread (a blocking method), then record."""
        time.sleep(seconds)
        return self._record("sleep_sync", ctx, seconds=seconds)

    @method
    def fail(self, message: str = "always fails", ctx: JobContext | None = None) -> None:
        """Always raise (retryable)."""
        self._record("fail", ctx)
        raise RuntimeError(message)

    @method
    def fail_permanently(self, ctx: JobContext | None = None) -> None:
        """Raise an error that must not be retried."""
        self._record("fail_permanently", ctx)
        raise PermanentError("this run can never succeed")

    @method
    def flaky(self, failures: int, ctx: JobContext) -> dict[str, Any]:
        """Fail the first ``failures`` attempts of each run, then succeed."""
        key = ctx.run_id or "no-run"
        with self._lock:
            self._attempts[key] = self._attempts.get(key, 0) + 1
            seen = self._attempts[key]
        self._record("flaky", ctx, seen=seen)
        if seen <= failures:
            raise RuntimeError(f"flaky failure {seen}/{failures}")
        return {"succeededOnAttempt": seen}

    @method
    def increment_counter(self, name: str = "default") -> int:
        """ScheduleZero's counter method."""
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + 1
            return self.counters[name]

    @method
    def get_execution_count(self) -> int:
        """How many executions were recorded."""
        if not self.record_path.exists():
            return 0
        return sum(1 for _ in self.record_path.open())

    @method
    def big_result(self, size: int) -> str:
        """Return ``size`` characters (to exercise result limits)."""
        return "x" * size
