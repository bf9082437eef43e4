"""``python -m schedulezero_handler package.module:Class [options]``.

Every option also reads an environment variable (``SZ_PROTOCOL``, ``SZ_PORT``,
``SZ_BIND``, ...), so a pod template can configure a handler with ``env`` only.
The secret for request signing comes from a file or an environment variable,
never from the command line (which shows up in process listings).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

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


def _int_env(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def load_handler(target: str) -> object:
    module_name, _, attr = target.partition(":")
    if not attr:
        raise SystemExit(f"handler must be given as package.module:Class, got {target!r}")
    obj = getattr(importlib.import_module(module_name), attr)
    return obj() if isinstance(obj, type) else obj


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, told the terminal width instead of asking ``shutil``.

    argparse makes a formatter on every ``add_argument`` (to check the metavar), and
    the stock one imports ``shutil`` for the width, which imports zlib, bz2 and lzma
    with their shared libraries: ~0.7 MiB that every idle handler would keep.
    """

    def __init__(self, prog: str, **kwargs: Any) -> None:
        if kwargs.get("width") is None:
            try:
                columns = int(os.environ.get("COLUMNS") or os.get_terminal_size().columns)
            except (OSError, ValueError):
                columns = 80
            kwargs["width"] = columns - 2
        super().__init__(prog, **kwargs)


def main(argv: list[str] | None = None) -> None:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="schedulezero-handler", description=__doc__,
                                     formatter_class=_HelpFormatter)
    parser.add_argument("handler", nargs="?", default=env("SZ_HANDLER"),
                        help="package.module:Class (env SZ_HANDLER)")
    parser.add_argument("--protocol", default=env("SZ_PROTOCOL", "zmq"),
                        help="zmq, http or zmq,http (env SZ_PROTOCOL)")
    parser.add_argument("--bind", default=env("SZ_BIND") or env("POD_IP") or "0.0.0.0",
                        help="address to bind (env SZ_BIND, else POD_IP, else 0.0.0.0)")
    parser.add_argument("--port", type=int, default=int(env("SZ_PORT", "4244")))
    parser.add_argument("--http-port", type=int,
                        default=_int_env("SZ_HTTP_PORT"))
    parser.add_argument("--health-port", type=int,
                        default=_int_env("SZ_HEALTH_PORT"),
                        help="serve /healthz and /readyz here (useful with ZMQ only)")
    parser.add_argument("--concurrency", type=int, default=int(env("SZ_CONCURRENCY", "4")))
    parser.add_argument("--threads", type=int, default=_int_env("SZ_THREADS"),
                        help="threads for sync (def) methods (env SZ_THREADS; default the "
                        "concurrency, at most 32: more Python threads only contend for "
                        "the GIL; raise it for methods that block on I/O)")
    parser.add_argument("--grace", type=float, default=float(env("SZ_GRACE_SECONDS", "25")),
                        help="seconds to finish in-flight jobs after SIGTERM")
    parser.add_argument("--secret-file", default=env("SZ_SECRET_FILE"),
                        help="file holding the request-signing secret")
    parser.add_argument("--max-request-bytes", type=int,
                        default=int(env("SZ_MAX_REQUEST_BYTES", str(1 << 20))))
    parser.add_argument("--max-result-bytes", type=int,
                        default=int(env("SZ_MAX_RESULT_BYTES", str(256 << 10))))
    parser.add_argument("--log-level", default=env("SZ_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    if not args.handler:
        parser.error("the handler (package.module:Class) is required")

    handler_log = logging.StreamHandler(sys.stderr)
    handler_log.setFormatter(JsonLogFormatter())
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler_log])

    secret: bytes | None = None
    if args.secret_file:
        secret = Path(args.secret_file).read_bytes().strip()
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
