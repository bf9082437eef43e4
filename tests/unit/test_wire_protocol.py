"""The shared strict decoder, request/reply checks and framing rules (no sockets)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from schedulezero_handler import method
from schedulezero_handler import protocol as p
from schedulezero_handler.methods import discover


# -- loads ----------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "needle"), [
    (b"[" * 10_000 + b"]" * 10_000, "nested deeper than 64"),
    (b"[" * 65 + b"]" * 65, "nested deeper than 64"),
    (b'{"a":' * 65 + b"1" + b"}" * 65, "nested deeper than 64"),
    (b"9" * 5000, "integer of 5000 digits"),
    (b"[" + b"1" * 1001 + b"]", "integer of 1001 digits"),
    (b"NaN", "NaN is not a JSON value"),
    (b"[-Infinity]", "-Infinity is not a JSON value"),
    (b"1e400", "out of range"),
    (b'{"a":1,"a":2}', "duplicate key 'a'"),
    (b'"\\ud800"', "unpaired surrogate"),
    (b'{"\\udfff":1}', "unpaired surrogate"),
    (b'["ok","\\ud83d"]', "unpaired surrogate"),
    (b"\xff", "not UTF-8"),
    (b'"\xed\xa0\x80"', "not UTF-8"),  # an encoded surrogate
    ('{"a":1}'.encode("utf-16"), "not UTF-8"),
    (b"\xef\xbb\xbf{}", "Invalid JSON"),  # BOM
    (b"", "Invalid JSON"),
    (b"{", "Invalid JSON"),
    (b"{} {}", "Invalid JSON"),
])
def test_loads_refuses_with_a_clear_message(raw: bytes, needle: str) -> None:
    with pytest.raises(p.WireFormatError) as e:
        p.loads(raw, max_bytes=1 << 20)
    assert needle in str(e.value)
    assert not e.value.too_large


@pytest.mark.parametrize(("raw", "value"), [
    (b"[" * 64 + b"]" * 64, None),
    (b"9" * 1000, int("9" * 1000)),
    (b'"\\ud83d\\ude00 \\u00e9"', "\U0001f600 \u00e9"),  # a proper pair is fine
    (b'"\\\\ud800"', "\\ud800"),  # an escaped backslash, not an escape
    (b'{"a":{"b":[1,2.5,-0,true,null]}}', {"a": {"b": [1, 2.5, 0, True, None]}}),
])
def test_loads_accepts_what_is_within_the_rules(raw: bytes, value: Any) -> None:
    decoded = p.loads(raw, max_bytes=1 << 20)
    if value is not None:
        assert decoded == value


def test_loads_size_limit_is_checked_before_parsing() -> None:
    with pytest.raises(p.WireFormatError) as e:
        p.loads(b"[" * 100, max_bytes=10, what="reply")
    assert e.value.too_large and str(e.value) == "reply of 100 bytes exceeds the limit of 10"


# -- decode_request -------------------------------------------------------------------
def req(**fields: Any) -> bytes:
    return p.encode({"v": 1, "id": "x", "type": "execute", "runId": "r", "method": "m",
                     **fields})


@pytest.mark.parametrize(("raw", "error_type", "needle"), [
    (req(v=True), "UnsupportedVersion", "version True"),
    (req(v=1.0), "UnsupportedVersion", "version 1.0"),
    (req(v="1"), "UnsupportedVersion", "version '1'"),
    (req(attempt=0), "BadRequest", "'attempt' must be >= 1"),
    (req(attempt=True), "BadRequest", "'attempt' must be int, got bool"),
    (req(params=[]), "BadRequest", "'params' must be dict"),
    (req(runId=True), "BadRequest", "'runId' must be str, got bool"),
    (b'{"v":1,"v":1,"id":"x","type":"health"}', "BadRequest", "duplicate key"),
    (b"x" * 11, "TooLarge", "exceeds the limit of 10"),
])
def test_request_fields_are_strict(raw: bytes, error_type: str, needle: str) -> None:
    with pytest.raises(p.ProtocolError) as e:
        p.decode_request(raw, max_bytes=10 if raw == b"x" * 11 else 1 << 20)
    assert e.value.error_type == error_type and needle in str(e.value)


@pytest.mark.parametrize("body", [
    {"method": 5}, {"method": "m", "params": []}, {"method": "m", "params": 0},
    {"method": "m", "params": ""},
])
def test_malformed_legacy_requests_are_marked_legacy(body: dict[str, Any]) -> None:
    with pytest.raises(p.ProtocolError) as e:
        p.decode_request(p.encode(body))
    assert e.value.legacy and e.value.error_type == "BadRequest"


def test_legacy_params_may_be_missing_or_null() -> None:
    assert p.decode_request(b'{"method":"m"}').params == {}
    assert p.decode_request(b'{"method":"m","params":null}').params == {}


def test_default_type_fills_in_and_must_agree() -> None:
    body = p.encode({"v": 1, "id": "x", "runId": "r"})
    assert p.decode_request(body, default_type="cancel").type == "cancel"
    with pytest.raises(p.ProtocolError, match="'cancel' request sent where"):
        p.decode_request(p.encode({"v": 1, "id": "x", "type": "cancel", "runId": "r"}),
                         default_type="execute")


# -- framing --------------------------------------------------------------------------
SIG = b"v1=" + b"a" * 64


@pytest.mark.parametrize(("frames", "ok"), [
    ([b"body"], True),
    ([b"body", b"1700000000.123", SIG], True),
    ([b"body", b"1700000000", SIG], True),
    ([b"body", b"x"], False),
    ([b"a", b"b", b"c"], False),
    ([b"body", b"1700000000.123", b"v1=short"], False),
    ([b"body", b"1e9", SIG], False),
    ([b"a", b"b", b"c", b"d"], False),
])
def test_split_frames(frames: list[bytes], ok: bool) -> None:
    if ok:
        assert p.split_frames(frames)[0] == b"body"
    else:
        with pytest.raises(p.ProtocolError) as e:
            p.split_frames(frames)
        assert e.value.error_type == "BadRequest"


# -- replies ------------------------------------------------------------------------
GOOD_ERROR = {"type": "HandlerError", "message": "m", "retryable": True}


@pytest.mark.parametrize("reply", [
    [], "x", None,
    {"v": 1, "id": "x"},
    {"v": 1, "id": "x", "ok": "false", "error": GOOD_ERROR},
    {"v": 1, "id": "x", "ok": 1, "result": 1},
    {"v": "1", "id": "x", "ok": True},
    {"v": 2, "id": "x", "ok": True},
    {"id": "x", "ok": True},
    {"v": 1, "id": 5, "ok": True},
    {"v": 1, "id": "x", "runId": 5, "ok": True},
    {"v": 1, "id": "x", "ok": True, "durationMs": "1"},
    {"v": 1, "id": "x", "ok": True, "durationMs": True},
    {"v": 1, "id": "x", "ok": False},
    {"v": 1, "id": "x", "ok": False, "error": "boom"},
    {"v": 1, "id": "x", "ok": False, "error": {**GOOD_ERROR, "retryable": "yes"}},
    {"v": 1, "id": "x", "ok": False, "error": {**GOOD_ERROR, "retryable": 0}},
    {"v": 1, "id": "x", "ok": False, "error": {**GOOD_ERROR, "type": ""}},
    {"v": 1, "id": "x", "ok": False, "error": {**GOOD_ERROR, "message": None}},
])
def test_check_reply_is_strict(reply: Any) -> None:
    with pytest.raises(p.ProtocolError) as e:
        p.check_reply(reply)
    assert e.value.error_type == "ProtocolError"


def test_check_reply_accepts_what_the_sdk_sends() -> None:
    assert p.check_reply(p.ok_reply("x", [1], "r"))
    assert p.check_reply(p.error_reply(None, "BadRequest", "m"))
    assert p.check_reply({**p.ok_reply("x", 1), "durationMs": 1.5})


@pytest.mark.parametrize(("reply", "ok"), [
    ({"success": True}, True), ({"success": False, "error": {"any": "json"}}, True),
    ({"success": "false"}, False), ({"success": 0}, False), ({}, False), ([True], False),
])
def test_check_legacy_reply_wants_a_real_boolean(reply: Any, ok: bool) -> None:
    if ok:
        assert p.check_legacy_reply(reply) is reply
    else:
        with pytest.raises(p.ProtocolError):
            p.check_legacy_reply(reply)


def test_error_messages_are_clipped() -> None:
    reply = p.error_reply("x", "BadRequest", "y" * 100_000)
    assert len(reply["error"]["message"]) == p.MAX_ERROR_MESSAGE


def test_encode_refuses_nan_instead_of_emitting_non_json() -> None:
    with pytest.raises(ValueError):
        p.encode({"x": float("nan")})


def test_verify_survives_a_non_ascii_signature() -> None:
    with pytest.raises(p.ProtocolError) as e:
        p.verify(b"k", b"body", f"{time.time():.3f}", "v1=\u00e9\u00e9", time.time())
    assert e.value.error_type == "Unauthorized"
    with pytest.raises(p.ProtocolError, match="stale"):
        p.verify(b"k", b"body", "nan", "v1=x", time.time())


# -- private names ------------------------------------------------------------------
def test_method_refuses_private_names_at_class_setup() -> None:
    with pytest.raises(TypeError, match="'_private'"):
        class A:
            @method
            def _private(self) -> None: ...

    with pytest.raises(TypeError, match="'__init__'"):
        class B:
            @method
            def __init__(self) -> None: ...

    with pytest.raises(TypeError, match="never callable remotely"):
        class C:
            @method(name="_hidden")
            def visible(self) -> None: ...

    with pytest.raises(TypeError, match="non-empty string"):
        class D:
            @method(name="")
            def visible(self) -> None: ...


def test_listing_a_private_name_is_refused() -> None:
    class Listed:
        __schedulezero_methods__ = ["_helper"]

        def _helper(self) -> None: ...

    with pytest.raises(TypeError, match="private names"):
        discover(Listed())
