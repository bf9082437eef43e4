"""The handler's command line: one table of options, read without argparse when it can.

A handler pod starts with a handful of ``--flag value`` pairs (or none: every option
also reads an ``SZ_*`` environment variable), and then idles for days. argparse with
gettext is ~0.4 MiB of that idle process, kept only to have parsed a few flags. So
the options are declared once, in ``OPTIONS``, and:

- ``parse`` reads the plain forms itself (``--flag value``, ``--flag=value``, one
  positional handler), converting each value with the option's type;
- anything else (``-h``, an unknown or abbreviated flag, a value that does not
  convert, a value that looks like a flag, ``--``) goes to an argparse parser built
  from the same table, which prints the help or the error exactly as it always did,
  or parses what it accepts that the short path does not.

``tests/unit/test_sdk_cli.py`` checks that both paths give the same result on every
input the short path accepts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any, NamedTuple

DESCRIPTION = """\
Serve a handler class: ``schedulezero-handler package.module:Class [options]``.

Every option also reads an environment variable (SZ_PROTOCOL, SZ_PORT, SZ_BIND,
...), so a pod template can configure a handler with ``env`` only. The secret for
request signing comes from a file (--secret-file, SZ_SECRET_FILE) or SZ_SECRET,
never from the command line (which shows up in process listings)."""


class Option(NamedTuple):
    flag: str
    # Environment variables read for the default, first set wins.
    env: tuple[str, ...]
    kind: Callable[[str], Any]
    default: Any
    help: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")


OPTIONS: tuple[Option, ...] = (
    Option("--protocol", ("SZ_PROTOCOL",), str, "zmq",
           "zmq, http or zmq,http (env SZ_PROTOCOL)"),
    Option("--bind", ("SZ_BIND", "POD_IP"), str, "0.0.0.0",
           "address to bind (env SZ_BIND, else POD_IP, else 0.0.0.0)"),
    Option("--port", ("SZ_PORT",), int, 4244, "ZMQ port, or the HTTP port when HTTP is "
           "the only protocol (env SZ_PORT)"),
    Option("--http-port", ("SZ_HTTP_PORT",), int, None,
           "HTTP port beside ZMQ (env SZ_HTTP_PORT)"),
    Option("--health-port", ("SZ_HEALTH_PORT",), int, None,
           "serve /healthz and /readyz here, useful with ZMQ only (env SZ_HEALTH_PORT)"),
    Option("--concurrency", ("SZ_CONCURRENCY",), int, 4,
           "jobs run at once (env SZ_CONCURRENCY)"),
    Option("--threads", ("SZ_THREADS",), int, None,
           "threads for sync (def) methods (env SZ_THREADS; default the concurrency, at "
           "most 32: more Python threads only contend for the GIL; raise it for methods "
           "that block on I/O)"),
    Option("--grace", ("SZ_GRACE_SECONDS",), float, 25.0,
           "seconds to finish in-flight jobs after SIGTERM (env SZ_GRACE_SECONDS)"),
    Option("--secret-file", ("SZ_SECRET_FILE",), str, None,
           "file holding the request-signing secret (env SZ_SECRET_FILE)"),
    Option("--max-request-bytes", ("SZ_MAX_REQUEST_BYTES",), int, 1 << 20,
           "largest request accepted (env SZ_MAX_REQUEST_BYTES)"),
    Option("--max-result-bytes", ("SZ_MAX_RESULT_BYTES",), int, 256 << 10,
           "largest result returned (env SZ_MAX_RESULT_BYTES)"),
    Option("--log-level", ("SZ_LOG_LEVEL",), str, "INFO", "(env SZ_LOG_LEVEL)"),
)
_BY_FLAG = {option.flag: option for option in OPTIONS}
HANDLER_ENV = "SZ_HANDLER"


class UsageError(Exception):
    """An environment variable that does not convert (argparse never sees those)."""


def defaults(environ: Mapping[str, str]) -> dict[str, Any]:
    """Each option's value before the command line: its environment, else its default."""
    values: dict[str, Any] = {"handler": environ.get(HANDLER_ENV) or None}
    for option in OPTIONS:
        raw = next((environ[name] for name in option.env if environ.get(name)), None)
        if raw is None:
            values[option.dest] = option.default
            continue
        try:
            values[option.dest] = option.kind(raw)
        except ValueError:
            raise UsageError(f"{option.env[0]}={raw!r} is not a valid {option.flag} "
                             f"({option.kind.__name__})") from None
    return values


def parse_plain(argv: Sequence[str], base: Mapping[str, Any]) -> dict[str, Any] | None:
    """``argv`` over ``base`` if it uses only the plain forms, else None (ask argparse)."""
    values = dict(base)
    positional: list[str] = []
    tokens = iter(argv)
    for token in tokens:
        if not token.startswith("-"):
            positional.append(token)
            continue
        flag, has_value, value = token.partition("=")
        option = _BY_FLAG.get(flag)
        if option is None:
            return None
        if not has_value:
            following = next(tokens, None)
            if following is None or following.startswith("-"):
                return None
            value = following
        try:
            values[option.dest] = option.kind(value)
        except ValueError:
            return None
    if len(positional) > 1:
        return None
    if positional:
        values["handler"] = positional[0]
    return values


def build_argparser(base: Mapping[str, Any]) -> Any:
    """The same options as an ``argparse.ArgumentParser`` (imported only now)."""
    import argparse

    parser = argparse.ArgumentParser(prog="schedulezero-handler", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("handler", nargs="?", default=base["handler"],
                        help=f"package.module:Class (env {HANDLER_ENV})")
    for option in OPTIONS:
        parser.add_argument(option.flag, type=option.kind, default=base[option.dest],
                            help=option.help)
    return parser


def parse(argv: Sequence[str] | None = None,
          environ: Mapping[str, str] | None = None) -> SimpleNamespace:
    """The handler's settings; exits with argparse's message on bad input or ``-h``."""
    argv = list(argv) if argv is not None else sys.argv[1:]
    try:
        base = defaults(os.environ if environ is None else environ)
    except UsageError as error:
        raise SystemExit(f"schedulezero-handler: error: {error}") from None
    values = parse_plain(argv, base)
    if values is None:
        values = vars(build_argparser(base).parse_args(argv))
    if not values["handler"]:
        build_argparser(base).error("the handler (package.module:Class) is required")
    return SimpleNamespace(**values)
