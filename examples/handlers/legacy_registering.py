"""A ScheduleZero handler that registers with its server, as ``ZMQHandlerBase`` does.

Start-up and shutdown follow ScheduleZero's handler base class: the REP socket is
served in one thread; another connects a REQ socket to the server (10 s send and
receive timeouts), sends ``ping``, then ``register`` with ``handler_id``,
``address`` (the REP socket's bound address) and ``methods``, then a ``ping``
heartbeat every ``heartbeat`` seconds (ScheduleZero: 30) on the same connection;
a failed ping drops the connection and registers again. On SIGTERM it sends
``report_status`` ``offline`` and waits for the reply before exiting, so without
a server answering it would hang for the 10 s timeout. Point ``--server`` at the
operator's ``--legacy-registry-port``.

    python -m examples.handlers.legacy_registering --id ding-aling \\
        --address tcp://127.0.0.1:4244 --server tcp://127.0.0.1:4242
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from typing import Any

import zmq

from examples.handlers.legacy_rep import LegacyHandler

log = logging.getLogger("legacy-registering")
TIMEOUT_MS = 10_000  # ScheduleZero's REQ timeouts


class RegisteringHandler(LegacyHandler):
    not_exposed = (*LegacyHandler.not_exposed, "serve", "keep_registered")

    def __init__(self, handler_id: str, address: str, server: str, *,
                 heartbeat: float = 30.0, retry_interval: float = 15.0, retries: int = 5,
                 record: str | None = None) -> None:
        super().__init__(address, record=record)
        self.handler_id = handler_id
        self.server = server
        self.heartbeat = heartbeat
        self.retry_interval = retry_interval
        self.retries = retries
        self.registered = threading.Event()
        self.reported_offline = False

    def _ask(self, sock: zmq.Socket, method: str, params: dict[str, Any] | None = None
             ) -> dict[str, Any]:
        request: dict[str, Any] = {"method": method}
        if params is not None:
            request["params"] = params
        sock.send_string(json.dumps(request))
        reply: dict[str, Any] = json.loads(sock.recv_string())
        return reply

    def keep_registered(self, ctx: zmq.Context) -> None:
        """The registration thread: ping, register, heartbeat; report offline at the end."""
        sock: zmq.Socket | None = None
        failures = 0
        while not self.stopping.is_set() and failures < self.retries:
            try:
                if sock is None:
                    sock = ctx.socket(zmq.REQ)
                    sock.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
                    sock.setsockopt(zmq.SNDTIMEO, TIMEOUT_MS)
                    sock.setsockopt(zmq.LINGER, 0)
                    sock.connect(self.server)
                    if not self._ask(sock, "ping").get("success"):
                        raise ConnectionError("ping failed")
                if not self.registered.is_set():
                    reply = self._ask(sock, "register", {
                        "handler_id": self.handler_id, "address": self.address,
                        "methods": sorted(self.methods())})
                    if not reply.get("success"):
                        raise ConnectionError(f"registration failed: {reply}")
                    log.info("registered: %s", reply.get("message"))
                    self.registered.set()
                    failures = 0
                if self.stopping.wait(self.heartbeat):
                    break
                if not self._ask(sock, "ping").get("success"):
                    raise ConnectionError("heartbeat ping failed")
            except (zmq.ZMQError, ConnectionError, ValueError) as e:
                failures += 1
                log.warning("server %s: %s (attempt %d/%d)", self.server, e, failures,
                            self.retries)
                self.registered.clear()
                if sock is not None:
                    sock.close(0)
                    sock = None
                self.stopping.wait(self.retry_interval)
        if sock is not None and self.registered.is_set():
            try:
                reply = self._ask(sock, "report_status",
                                  {"handler_id": self.handler_id, "status": "offline"})
                self.reported_offline = bool(reply.get("success"))
                log.info("reported offline: %s", reply)
            except zmq.ZMQError as e:
                log.warning("could not report offline: %s", e)
        if sock is not None:
            sock.close(0)

    def serve(self) -> None:
        """Serve jobs and stay registered until ``stop()``."""
        ctx = zmq.Context()
        server = threading.Thread(target=self.run, name="rep")
        registration = threading.Thread(target=self.keep_registered, args=(ctx,),
                                        name="registration")
        server.start()
        registration.start()
        self.stopping.wait()
        registration.join()
        server.join()
        ctx.term()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--id", default="legacy-registering")
    parser.add_argument("--address", default="tcp://127.0.0.1:4244")
    parser.add_argument("--server", default="tcp://127.0.0.1:4242")
    parser.add_argument("--heartbeat", type=float, default=30.0)
    parser.add_argument("--record", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    handler = RegisteringHandler(args.id, args.address, args.server,
                                 heartbeat=args.heartbeat, record=args.record)
    signal.signal(signal.SIGTERM, lambda *_: handler.stop())
    signal.signal(signal.SIGINT, lambda *_: handler.stop())
    handler.serve()
    log.info("stopped")


if __name__ == "__main__":
    main()
