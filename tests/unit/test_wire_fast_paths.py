"""The wire protocol's shortcuts answer exactly as the strict paths they skip.

``plainly_decodable`` lets a handler skip decoding its own reply for scalar
results; the shared encoder/decoder replace ``json.dumps``/``json.loads`` with
options. Each is checked against the strict code it stands in for.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from schedulezero_handler import protocol as p

SCALARS = st.one_of(
    st.none(), st.booleans(), st.floats(allow_nan=False, allow_infinity=False),
    st.integers(), st.integers(min_value=10**990, max_value=10**1010),
    st.text(), st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)),
)
IDS = st.text(max_size=40).filter(lambda t: t.encode("utf-8", "surrogatepass") == t.encode(
    "utf-8", "ignore"))


def strict_accepts(body: bytes) -> bool:
    try:
        p.loads(body, max_bytes=len(body))
    except p.WireFormatError:
        return False
    return True


@settings(max_examples=500, deadline=None)
@given(value=SCALARS, rid=IDS, run_id=st.one_of(st.none(), IDS))
def test_plainly_decodable_only_when_the_strict_decoder_accepts(value: Any, rid: str,
                                                                run_id: str | None) -> None:
    try:
        body = p.encode(p.ok_reply(rid, value, run_id))
    except ValueError:
        return  # ints past Python's own str() limit: refused before any check
    if p.plainly_decodable(value, body):
        assert strict_accepts(body), body[:200]


@pytest.mark.parametrize("value", [
    "\ud800", "a\udfffb", 10**1000, -(10**1000), [1], {"a": 1}, {1: "a", "1": "b"},
    type("Text", (str,), {})("a str subclass"),
])
def test_what_needs_the_strict_decoder_takes_it(value: Any) -> None:
    body = p.encode(p.ok_reply("r", value, "run"))
    assert not p.plainly_decodable(value, body)


@pytest.mark.parametrize("value", [None, True, False, 0, -5, 1.5, 1e308, "", "héllo", "\U0001f600",
                                   10**900])
def test_common_scalars_skip_the_decoder(value: Any) -> None:
    body = p.encode(p.ok_reply("r", value, "run"))
    assert p.plainly_decodable(value, body) is not ("\U0001f600" in str(value))
    assert strict_accepts(body)


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(),
              st.floats(allow_nan=False, allow_infinity=False)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(value=JSON_VALUES)
def test_shared_encoder_matches_json_dumps(value: Any) -> None:
    expected = json.dumps(value, separators=(",", ":"), default=str, allow_nan=False).encode()
    assert p.encode(value) == expected


def reference_loads(raw: bytes) -> Any:
    """The strict decoder as it was before the shared decoder: json.loads with hooks."""
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as e:
        raise p.WireFormatError(f"Invalid JSON: body is not UTF-8 ({e.reason} at byte "
                                f"{e.start})") from None
    try:
        value = json.loads(text, object_pairs_hook=p._object, parse_int=p._int,
                           parse_float=p._float, parse_constant=p._constant)
    except p.WireFormatError:
        raise
    except RecursionError:
        raise p.WireFormatError("Invalid JSON: nested deeper than 64 levels") from None
    except ValueError as e:
        raise p.WireFormatError(f"Invalid JSON: {p._clip(str(e), 200)}") from None
    p._check_tree(value, p.MAX_DEPTH, p._SURROGATE_ESCAPE.search(text) is not None)
    return value


def outcome(decode: Any, raw: bytes) -> tuple[str, Any]:
    try:
        return "ok", decode(raw)
    except p.WireFormatError as e:
        return "error", str(e)


@settings(max_examples=400, deadline=None)
@given(raw=st.one_of(
    st.builds(lambda v: json.dumps(v).encode(), JSON_VALUES),
    st.text(alphabet='{}[]",:0123456789.eE-+ \\untrufalsNI\ufeff\ud800', max_size=40).map(
        lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(max_size=30)))
def test_shared_decoder_matches_json_loads_with_the_hooks(raw: bytes) -> None:
    """Same value, or the same error message, as json.loads with the protocol's hooks."""
    assert outcome(lambda b: p.loads(b, max_bytes=1 << 20), raw) == outcome(reference_loads,
                                                                            raw)


@pytest.mark.parametrize("raw", [b"\xef\xbb\xbf{}", b"[" * 70 + b"]" * 70, b"1" * 1001,
                                 b'{"a":1,"a":2}', b'"\\ud800"', b"NaN", b"1e400", b"\xff"])
def test_shared_decoder_refuses_what_json_loads_with_the_hooks_refuses(raw: bytes) -> None:
    assert outcome(lambda b: p.loads(b, max_bytes=1 << 20), raw) == outcome(reference_loads,
                                                                            raw)
    assert outcome(reference_loads, raw)[0] == "error"
