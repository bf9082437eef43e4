"""A handler written the ScheduleZero way: a REP socket, {"method","params"} in,
{"success", ...} out, one job at a time. The operator calls it with protocol
``zmq-legacy``, unchanged. (No SDK involved on purpose.)

It behaves as ScheduleZero's ``ZMQHandlerBase`` does: every public method except
run/start/stop is callable; a method that takes an argument is called as
``method(params)``, one that takes none as ``method()``; a dict result gets
``"success": true`` added, any other result is wrapped as ``{"success": true,
"result": ...}``; an exception becomes ``{"success": false, "error": str(e)}``; an
unknown method ``{"success": false, "error": "Unknown method: <name>"}``; ``ping``
answers ``{"success": true, "message": "pong", ...}``.

``python examples/handlers/legacy_rep.py tcp://127.0.0.1:4244``; with
``LEGACY_RECORD=<file>`` every job it runs is appended to that file as a JSON line
(for the e2e tests). SIGTERM stops it.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import sys
import threading
import time
from typing import Any

import zmq


class LegacyHandler:
    handler_id = "legacy-rep"
    # ScheduleZero exposes every public callable but run/start/stop; plus our plumbing.
    not_exposed: tuple[str, ...] = ("run", "start", "stop", "methods", "handle")

    def __init__(self, address: str, record: str | None = None) -> None:
        self.address = address
        self.record = record
        self.count = 0
        self.stopping = threading.Event()

    # -- the jobs ---------------------------------------------------------------------
    def increment_counter(self, params: dict) -> dict:
        self.count += int(params.get("by", 1))
        return {"count": self.count}

    def echo(self, params: dict) -> object:
        return params.get("message")

    def fail(self, params: dict) -> dict:
        raise RuntimeError("legacy failure")

    def sleep(self, params: dict) -> dict:
        time.sleep(float(params.get("seconds", 1)))
        return {"slept": params.get("seconds", 1)}

    def add(self, a: int, b: int) -> int:
        """Not ScheduleZero's one-dict signature: calling it fails with a TypeError."""
        return a + b

    def ping(self, params: dict | None = None) -> dict:
        return {"success": True, "message": "pong", "handler_id": self.handler_id}

    # -- ScheduleZero's request handling ---------------------------------------------------
    def methods(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in dir(self)
                if not name.startswith("_") and name not in self.not_exposed
                and callable(getattr(self, name))}

    def handle(self, request: Any) -> dict:
        name = request.get("method") if isinstance(request, dict) else None
        params = request.get("params", {}) if isinstance(request, dict) else {}
        method = self.methods().get(name) if isinstance(name, str) else None
        if method is None:
            return {"success": False, "error": f"Unknown method: {name}"}
        try:
            result = method(params) if inspect.signature(method).parameters else method()
        except Exception as e:  # noqa: BLE001 - ScheduleZero's own behaviour
            return {"success": False, "error": str(e)}
        finally:
            if self.record and name != "ping":
                with open(self.record, "a") as f:
                    f.write(json.dumps({"method": name, "params": params,
                                        "at": time.time()}) + "\n")
        if isinstance(result, dict):
            return result if "success" in result else {"success": True, **result}
        return {"success": True, "result": result}

    def run(self) -> None:
        """Serve until ``stop()``: one request at a time, as a REP socket does."""
        ctx = zmq.Context()
        sock = ctx.socket(zmq.REP)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 200)  # wake up to notice stop()
        sock.bind(self.address)
        try:
            while not self.stopping.is_set():
                try:
                    raw = sock.recv_string()
                except zmq.Again:
                    continue
                try:
                    request = json.loads(raw)
                except ValueError:
                    sock.send_string(json.dumps({"success": False, "error": "Invalid JSON"}))
                    continue
                sock.send_string(json.dumps(self.handle(request)))
        finally:
            sock.close(0)
            ctx.term()

    def stop(self) -> None:
        self.stopping.set()


def main() -> None:
    handler = LegacyHandler(sys.argv[1] if len(sys.argv) > 1 else
                            os.environ.get("LEGACY_ADDRESS", "tcp://127.0.0.1:4244"),
                            record=os.environ.get("LEGACY_RECORD"))
    signal.signal(signal.SIGTERM, lambda *_: handler.stop())
    signal.signal(signal.SIGINT, lambda *_: handler.stop())
    handler.run()


if __name__ == "__main__":
    main()
