"""The ``schedulezero-migrate`` command line: read, convert, print YAML; warnings on stderr.

Exit codes: 0 converted (warnings and skipped schedules are reported, not fatal,
so a partial migration can be reviewed); 1 the source could not be read;
2 bad usage. ``--strict`` makes anything skipped or approximated exit 1 (for CI).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .convert import LEGACY_TIMEOUT_SECONDS, Options, migrate, render
from .source import Inventory, SourceError, read_file, read_server

EPILOG = """\
examples:
  # from a running ScheduleZero server, reviewed, then applied
  schedulezero-migrate --server http://127.0.0.1:8888 > schedulezero.yaml
  kubectl apply -n jobs -f schedulezero.yaml

  # from files: the API bodies saved with curl, and/or the handler registry file
  curl -s http://127.0.0.1:8888/api/handlers  > handlers.json
  curl -s http://127.0.0.1:8888/api/schedules > schedules.json
  schedulezero-migrate --file handlers.json --file schedules.json --timezone Europe/Berlin

  schedulezero-migrate --file handler_registry.yaml --file export.json -n jobs -o out.yaml

Schedules whose trigger has no exact equivalent are emitted with suspend: true
and a note (or left out with --skip-approximate); see docs/MIGRATING.md."""


def _zone(text: str) -> str:
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise argparse.ArgumentTypeError(f"unknown time zone {text!r}: use an IANA name such "
                                         "as Europe/Berlin") from None
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="schedulezero-migrate", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Convert a ScheduleZero deployment (handler registry and schedules) into "
                    "Handler and Schedule YAML for the ScheduleZero operator. Prints the YAML "
                    "on stdout and what was approximated or skipped on stderr.",
        epilog=EPILOG)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--server", metavar="URL",
                     help="a running ScheduleZero server, e.g. http://127.0.0.1:8888 "
                          "(GET /api/handlers and /api/schedules)")
    src.add_argument("--file", action="append", metavar="PATH",
                     help="an exported JSON/YAML file (repeatable): API bodies, "
                          "handler_registry.yaml, or a list of schedules")
    p.add_argument("-n", "--namespace", help="set metadata.namespace (default: none, so "
                                             "kubectl apply -n decides)")
    p.add_argument("--timezone", type=_zone, metavar="ZONE",
                   help="zone of cron triggers and times that used the ScheduleZero server's "
                        "local zone (default UTC, with a warning)")
    p.add_argument("--timeout-seconds", type=int, default=LEGACY_TIMEOUT_SECONDS, metavar="N",
                   help="timeoutSeconds per attempt (default 10, ScheduleZero's RPC timeout)")
    p.add_argument("--skip-approximate", action="store_true",
                   help="leave out schedules without an exact equivalent instead of emitting "
                        "them suspended")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 if anything was skipped or approximated")
    p.add_argument("-o", "--output", metavar="FILE", help="write the YAML here (default stdout)")
    p.add_argument("--http-timeout", type=float, default=10.0, metavar="SECONDS",
                   help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None,
         err: TextIO | None = None, now: dt.datetime | None = None) -> int:
    args = build_parser().parse_args(argv)
    out, err = out or sys.stdout, err or sys.stderr
    now = now or dt.datetime.now(dt.UTC)
    if not 1 <= args.timeout_seconds <= 86400:
        print("schedulezero-migrate: --timeout-seconds must be 1..86400", file=err)
        return 2
    inv = Inventory()
    try:
        if args.server:
            read_server(inv, args.server, args.http_timeout)
        for path in args.file or []:
            read_file(inv, path)
    except SourceError as e:
        print(f"schedulezero-migrate: {e}", file=err)
        return 1
    opts = Options(namespace=args.namespace, zone=args.timezone,
                   timeout_seconds=args.timeout_seconds,
                   skip_approximate=args.skip_approximate)
    result = migrate(inv, opts, now)
    text = render(inv, result, now)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        out.write(text)
    for w in result.warnings:
        print(f"warning: {w}", file=err)
    for s in result.skipped:
        print(f"skipped: {s}", file=err)
    print(f"converted {result.handlers} Handler(s) and {result.schedules} Schedule(s) "
          f"({result.suspended} suspended for review, {len(result.skipped)} skipped)", file=err)
    if args.strict and (result.skipped or result.suspended):
        return 1
    return 0
