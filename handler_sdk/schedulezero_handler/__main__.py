"""``python -m schedulezero_handler package.module:Class [options]``.

Every option also reads an environment variable (``SZ_PROTOCOL``, ``SZ_PORT``,
``SZ_BIND``, ...), so a pod template can configure a handler with ``env`` only.
The secret for request signing comes from a file or an environment variable,
never from the command line (which shows up in process listings).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import time
from typing import Any

from . import _cli
from .server import HandlerServer, ServeOptions


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line, with run_id/method/attempt when a log call has them."""

    _EXTRA = ("run_id", "method", "attempt", "ok", "duration_ms")

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in self._EXTRA:
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def load_handler(target: str) -> object:
    module_name, _, attr = target.partition(":")
    if not attr:
        raise SystemExit(f"handler must be given as package.module:Class, got {target!r}")
    obj = getattr(importlib.import_module(module_name), attr)
    return obj() if isinstance(obj, type) else obj


def main(argv: list[str] | None = None) -> None:
    args = _cli.parse(argv)
    env = os.environ.get

    handler_log = logging.StreamHandler(sys.stderr)
    handler_log.setFormatter(JsonLogFormatter())
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler_log])

    secret: bytes | None = None
    if args.secret_file:
        # open(), not pathlib: pathlib brings urllib.parse and ipaddress (~0.8 MiB
        # of an idle handler's RSS) for this one read.
        with open(args.secret_file, "rb") as secret_file:
            secret = secret_file.read().strip()
    elif env("SZ_SECRET"):
        secret = env("SZ_SECRET", "").encode()

    sys.path.insert(0, os.getcwd())
    options = ServeOptions(
        protocols=[s.strip() for s in args.protocol.split(",") if s.strip()],
        bind=args.bind, port=args.port, http_port=args.http_port,
        health_port=args.health_port, concurrency=args.concurrency, threads=args.threads,
        secret=secret,
        grace_seconds=args.grace, max_request_bytes=args.max_request_bytes,
        max_result_bytes=args.max_result_bytes,
    )
    import asyncio

    asyncio.run(HandlerServer(load_handler(args.handler), options).run_until_signalled())


if __name__ == "__main__":
    main()
