"""The handler's command line: the short path and argparse agree, and argparse still speaks.

``schedulezero_handler._cli`` reads plain ``--flag value`` command lines itself so
that an idle handler does not keep argparse; everything else goes to an argparse
parser built from the same table. These tests pin that the two never disagree.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from schedulezero_handler import _cli

ENV: dict[str, str] = {}


def by_argparse(argv: list[str], environ: dict[str, str] | None = None) -> dict[str, Any]:
    parser = _cli.build_argparser(_cli.defaults(environ or ENV))
    return dict(vars(parser.parse_args(argv)))


PLAIN = {
    "handler only": ["pkg.mod:Cls"],
    "every flag, separate values": [
        "pkg.mod:Cls", "--protocol", "zmq,http", "--bind", "127.0.0.1", "--port", "5000",
        "--http-port", "5001", "--health-port", "5002", "--concurrency", "8",
        "--threads", "2", "--grace", "1.5", "--secret-file", "/s", "--max-request-bytes",
        "10", "--max-result-bytes", "20", "--log-level", "debug"],
    "equals form": ["--port=6000", "pkg.mod:Cls", "--grace=0"],
    "handler last": ["--protocol", "http", "pkg.mod:Cls"],
    "repeated flag: last wins": ["pkg.mod:Cls", "--port", "1", "--port", "2"],
    "empty string value": ["pkg.mod:Cls", "--bind", ""],
    "no handler on the command line": ["--port", "7"],
}


@pytest.mark.parametrize("argv", PLAIN.values(), ids=PLAIN.keys())
def test_plain_command_lines_are_read_without_argparse_and_as_argparse_reads_them(
        argv: list[str]) -> None:
    plain = _cli.parse_plain(argv, _cli.defaults(ENV))
    assert plain is not None
    assert plain == by_argparse(argv)


DECLINED = {
    "help": ["-h"],
    "long help": ["pkg.mod:Cls", "--help"],
    "abbreviated flag (argparse takes prefixes)": ["pkg.mod:Cls", "--conc", "3"],
    "unknown flag": ["pkg.mod:Cls", "--nope", "1"],
    "value that does not convert": ["pkg.mod:Cls", "--port", "x"],
    "value that looks like a flag": ["pkg.mod:Cls", "--port", "-1"],
    "flag without its value": ["pkg.mod:Cls", "--port"],
    "two positionals": ["a:B", "c:D"],
    "end of options": ["--", "pkg.mod:Cls"],
}


@pytest.mark.parametrize("argv", DECLINED.values(), ids=DECLINED.keys())
def test_anything_else_is_left_to_argparse(argv: list[str]) -> None:
    assert _cli.parse_plain(argv, _cli.defaults(ENV)) is None


def test_argparse_parses_what_it_accepts_beyond_the_plain_forms() -> None:
    args = _cli.parse(["pkg.mod:Cls", "--conc", "3", "--port", "-1"], environ={})
    assert (args.concurrency, args.port, args.handler) == (3, -1, "pkg.mod:Cls")


def test_help_lists_every_option_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _cli.parse(["--help"], environ={})
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in _cli.OPTIONS:
        assert option.flag in out
    assert "SZ_HANDLER" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["pkg.mod:Cls", "--nope", "1"], "unrecognized arguments: --nope 1"),
    (["pkg.mod:Cls", "--port", "x"], "argument --port: invalid int value: 'x'"),
    ([], "the handler (package.module:Class) is required"),
])
def test_bad_command_lines_get_argparse_errors(argv: list[str], message: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _cli.parse(argv, environ={})
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: schedulezero-handler")
    assert message in err


def test_the_environment_gives_the_defaults_and_the_command_line_wins() -> None:
    environ = {"SZ_HANDLER": "env.mod:Cls", "SZ_PORT": "5100", "POD_IP": "10.0.0.7",
               "SZ_GRACE_SECONDS": "2.5", "SZ_THREADS": ""}
    args = _cli.parse([], environ=environ)
    assert (args.handler, args.port, args.bind, args.grace, args.threads) == (
        "env.mod:Cls", 5100, "10.0.0.7", 2.5, None)
    assert _cli.parse([], environ={**environ, "SZ_BIND": "127.0.0.1"}).bind == "127.0.0.1"
    args = _cli.parse(["cli.mod:Cls", "--port", "5200"], environ=environ)
    assert (args.handler, args.port) == ("cli.mod:Cls", 5200)


def test_untouched_options_keep_their_documented_defaults() -> None:
    args = _cli.parse(["pkg.mod:Cls"], environ={})
    assert vars(args) == {
        "handler": "pkg.mod:Cls", "protocol": "zmq", "bind": "0.0.0.0", "port": 4244,
        "http_port": None, "health_port": None, "concurrency": 4, "threads": None,
        "grace": 25.0, "secret_file": None, "max_request_bytes": 1 << 20,
        "max_result_bytes": 256 << 10, "log_level": "INFO"}


def test_an_environment_value_that_does_not_convert_is_named() -> None:
    with pytest.raises(SystemExit, match=r"SZ_PORT='http' is not a valid --port \(int\)"):
        _cli.parse(["pkg.mod:Cls"], environ={"SZ_PORT": "http"})


FLAGS = [option.flag for option in _cli.OPTIONS] + ["--conc", "-h", "--", "--nope"]
VALUES = ["0", "7", "-1", "1.5", "x", "", "a:B", "--port", "=", "-"]
tokens = st.one_of(
    st.sampled_from(FLAGS), st.sampled_from(VALUES),
    st.builds(lambda f, v: f"{f}={v}", st.sampled_from(FLAGS), st.sampled_from(VALUES)))


@settings(max_examples=400, deadline=None)
@given(st.lists(tokens, max_size=6))
def test_whenever_the_plain_path_answers_argparse_gives_the_same(argv: list[str]) -> None:
    plain = _cli.parse_plain(argv, _cli.defaults(ENV))
    if plain is None:
        return
    parser = _cli.build_argparser(_cli.defaults(ENV))
    parser.exit = _refuse  # type: ignore[method-assign]
    assert dict(vars(parser.parse_args(argv))) == plain


def _refuse(status: int = 0, message: str | None = None) -> None:
    raise AssertionError(f"argparse refused what the plain path accepted: {message}")

