"""Processes the e2e tests run next to the cluster: the operator and SDK handlers.

The operator runs exactly as users run it (``python -m schedulezero_operator``
against the kubeconfig); handlers run as real SDK processes on loopback, and
record every execution to a JSON-lines file the tests read.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from schedulezero_testcluster.cluster import free_port

REPO = Path(__file__).resolve().parents[2]


def ts(rfc3339: str) -> float:
    """An RFC 3339 time from a status or a handler record, as unix seconds."""
    return dt.datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


class Proc:
    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.argv, self.log, self.env = argv, log, env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                         cwd=REPO, env={**os.environ, **(self.env or {})},
                                         start_new_session=True)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def wait_listening(self, port: int, host: str = "127.0.0.1", timeout: float = 15) -> None:
        """Until something accepts TCP connections on ``host``:``port``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection((host, port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.argv[2:4]} did not start: {self.tail()}")

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text()[-n:] if self.log.exists() else ""


class OperatorProcess(Proc):
    """``python -m schedulezero_operator *args``; /metrics off unless ``args`` ask for it
    (``--metrics-port N``), so test operators never compete for the default port.

    ``start`` returns once the engine runs (its log says so), so a test creating objects
    next does not race the operator's start-up (slots due before it ran would be caught
    up or recorded Missed, as for any operator that was down)."""

    def __init__(self, log: Path, *args: str) -> None:
        super().__init__([sys.executable, "-m", "schedulezero_operator", "--metrics-port", "0",
                          *args], log)

    def start(self, timeout: float = 60) -> None:
        offset = self.log.stat().st_size if self.log.exists() else 0
        super().start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "engine started" in self.log.read_text()[offset:]:
                return
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"the operator did not start: {self.tail()}")


class HandlerProcess(Proc):
    """An SDK handler serving examples.handlers.testing:TestHandler on 127.0.0.1."""

    def __init__(self, directory: Path, protocol: str = "zmq", concurrency: int = 4,
                 target: str = "examples.handlers.testing:TestHandler",
                 host: str = "127.0.0.1", secret: str | None = None) -> None:
        self.port = free_port()
        self.record = directory / f"executions-{self.port}.jsonl"
        super().__init__(
            [sys.executable, "-m", "schedulezero_handler", target, "--protocol", protocol,
             "--bind", host, "--port", str(self.port), "--http-port", str(self.port),
             "--concurrency", str(concurrency), "--grace", "2"],
            directory / f"handler-{self.port}.log",
            env={"SZ_TEST_RECORD": str(self.record), "PYTHONPATH": str(REPO),
                 **({"SZ_SECRET": secret} if secret is not None else {})},
        )
        self.host, self.address = host, f"{host}:{self.port}"

    def start(self) -> None:
        super().start()
        self.wait_listening(self.port, self.host)

    def executions(self, method: str | None = None) -> list[dict[str, Any]]:
        return read_records(self.record, method)


def read_records(path: Path, method: str | None = None) -> list[dict[str, Any]]:
    """A handler's JSON-lines ledger of what it executed (optionally one method's)."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line]
    return [r for r in rows if method is None or r["method"] == method]
