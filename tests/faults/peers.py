"""Broken handler endpoints for fault scenarios, run in a thread next to the test."""

from __future__ import annotations

import itertools
import json
import threading
from typing import Any

import zmq


def _garbage(req: dict[str, Any] | None) -> list[list[bytes]]:
    """Every way a reply can be wrong on the wire, cycled through request by request."""
    rid = (req or {}).get("id", "x")
    return [
        [b"\xff\xfe\x00 not utf-8"],
        [b"not json at all"],
        [b"{}"],
        [json.dumps({"v": 1, "id": "someone-else", "ok": True, "result": 1}).encode()],
        [json.dumps({"v": 1, "id": rid, "ok": "yes"}).encode()],
        [json.dumps({"v": 1, "id": rid, "ok": True}).encode(), b"an extra frame"],
        [b""],
        [json.dumps({"v": 99, "id": rid, "ok": True, "result": None}).encode()],
        [b"[" * 100_000],
        [json.dumps({"v": 1, "id": rid, "ok": False, "error": "a string"}).encode()],
    ]


class GarbageRouter:
    """A ZMQ endpoint that garbles its job replies, and counts what it was sent, by
    request type. With ``probes_ok`` it answers ``describe`` properly (a handler whose
    health check passes while its jobs fail on the wire), else it garbles those too."""

    def __init__(self, host: str = "127.0.0.1", probes_ok: bool = True) -> None:
        self.probes_ok = probes_ok
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.port = self.sock.bind_to_random_port(f"tcp://{host}")
        self.address = f"{host}:{self.port}"
        self.received: list[tuple[float, str]] = []  # (time, type) per request
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> GarbageRouter:
        self._thread.start()
        return self

    def _serve(self) -> None:
        import time

        shapes = itertools.count()
        while not self._stop.is_set():
            if not self.sock.poll(100):
                continue
            ident, *frames = self.sock.recv_multipart()
            try:
                req = json.loads(frames[-1])
            except ValueError:
                req = None
            kind = str((req or {}).get("type", "?"))
            self.received.append((time.time(), kind))
            if self.probes_ok and kind == "describe" and isinstance(req, dict):
                self.sock.send_multipart([ident, json.dumps({
                    "v": 1, "id": req.get("id"), "ok": True,
                    "result": {"methods": [{"name": "heartbeat"}]}}).encode()])
                continue
            options = _garbage(req if isinstance(req, dict) else None)
            self.sock.send_multipart([ident, *options[next(shapes) % len(options)]])

    def executes_since(self, t: float) -> int:
        return sum(1 for at, kind in self.received if at >= t and kind == "execute")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close(0)
        self.ctx.term()
