"""Echo handler: returns what it is given. The smallest useful handler."""

from __future__ import annotations

from typing import Any

from schedulezero_handler import JobContext, method


class Echo:
    @method
    def echo(self, message: Any = None, ctx: JobContext | None = None) -> dict[str, Any]:
        """Return the message with the run id it arrived under."""
        return {"message": message, "runId": ctx.run_id if ctx else None}

    @method
    async def noop(self) -> None:
        """Do nothing (used by benchmarks)."""
        return None
