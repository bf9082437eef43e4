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
        self._pod = os.environ.get("POD_NAME")  # read once: an environ lookup costs ~2 us
        self._pending: list[dict[str, Any]] = []  # this loop iteration's entries

    def _record(self, method_name: str, ctx: JobContext | None, **fields: Any) -> dict[str, Any]:
        """Append an execution to the ledger; returns it (the method's result).

        This is the benchmarks' receipt clock, and in a held burst (hundreds of jobs
        started in one loop iteration) whatever it costs per job delays every later
        job's receipt. So on the event loop only the entry is made here; the loop
        iteration's entries are encoded and written together by one callback queued
        behind them, which runs before any of those jobs' replies is built (each reply
        comes at least one loop turn after its method returns), so a run is in the
        ledger before the operator can hear it finished. Worker threads (sync
        methods) write their line at once.
        """
        entry = {
            "method": method_name, "receivedAt": time.time(),
            "runId": ctx.run_id if ctx else None, "attempt": ctx.attempt if ctx else None,
            "schedule": ctx.schedule if ctx else None,
            "scheduledTime": ctx.scheduled_time if ctx else None,
            # The operator's dispatch time plus the attempt timeout (benchmarks split
            # lateness into operator time and transport + handler time with it).
            "deadline": ctx.deadline if ctx else None,
            "pod": self._pod, **fields,
        }
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a sync method, in a worker thread
            self._write([entry])
            return entry
        if not self._pending:
            loop.call_soon(self._write_pending)
        self._pending.append(entry)
        return entry

    def _write_pending(self) -> None:
        entries, self._pending = self._pending, []
        self._write(entries)

    def _write(self, entries: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(entry) + "\n" for entry in entries)
        with self._lock:
            # Kept open (append mode, flushed per write): opening it per job was a
            # tenth of the handler's CPU at 500 jobs/s. Reopened if the path is
            # replaced (checked by identity: a Path comparison costs more than a line).
            if self._file is None or self._file_path is not self.record_path:
                if self._file is not None:
                    self._file.close()
                self._file, self._file_path = self.record_path.open("a"), self.record_path
            self._file.write(text)
            self._file.flush()

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
