"""A handler written the ScheduleZero way: a REP socket, {"method","params"} in,
{"success", ...} out, one job at a time. The operator calls it with protocol
``zmq-legacy``, unchanged. (No SDK involved on purpose.)"""

from __future__ import annotations

import json
import os
import sys

import zmq


class LegacyHandler:
    def __init__(self, address: str) -> None:
        self.address = address
        self.count = 0

    def increment_counter(self, params: dict) -> dict:
        self.count += int(params.get("by", 1))
        return {"count": self.count}

    def echo(self, params: dict) -> object:
        return params.get("message")

    def fail(self, params: dict) -> dict:
        raise RuntimeError("legacy failure")

    def run(self) -> None:
        ctx = zmq.Context()
        sock = ctx.socket(zmq.REP)
        sock.bind(self.address)
        while True:
            raw = sock.recv_string()
            try:
                request = json.loads(raw)
            except ValueError:
                sock.send_string(json.dumps({"success": False, "error": "Invalid JSON"}))
                continue
            name, params = request.get("method"), request.get("params", {})
            if name == "ping":
                reply: dict = {"success": True, "message": "pong"}
            elif name in ("increment_counter", "echo", "fail"):
                try:
                    result = getattr(self, name)(params)
                    reply = ({"success": True, **result} if isinstance(result, dict)
                             else {"success": True, "result": result})
                except Exception as e:  # noqa: BLE001 - ScheduleZero's own behaviour
                    reply = {"success": False, "error": str(e)}
            else:
                reply = {"success": False, "error": f"Unknown method: {name}"}
            sock.send_string(json.dumps(reply))


if __name__ == "__main__":
    LegacyHandler(sys.argv[1] if len(sys.argv) > 1 else
                  os.environ.get("LEGACY_ADDRESS", "tcp://127.0.0.1:4244")).run()
