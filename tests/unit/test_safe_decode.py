"""The operator's decoder: no object the API server can store reaches kopf unbounded."""

from __future__ import annotations

import inspect
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from schedulezero_operator.api.models import DECODE_PROBLEM, json_depth
from schedulezero_operator.controllers import safe_decode
from schedulezero_operator.controllers.safe_decode import (
    BAD_NUMBER,
    MAX_DEPTH,
    TOO_DEEP,
    bounded_loads,
    loads,
)


def event(params: str) -> str:
    return ('{"type":"ADDED","object":{"apiVersion":"schedulezero.io/v1alpha1",'
            '"metadata":{"name":"x","namespace":"ns","uid":"u","managedFields":'
            '[{"fieldsV1":{"f:spec":{}}}]},"spec":{"handler":"h","params":' + params + '}}}')


def nested(depth: int, opener: str = '{"a":', closer: str = "}") -> str:
    return opener * depth + "1" + closer * depth


def test_5000_deep_params_decode_cut_and_flagged() -> None:
    obj = loads(event(nested(5000)))["object"]
    assert obj[DECODE_PROBLEM] == f"spec nests deeper than {MAX_DEPTH} levels"
    assert json_depth(obj, 10_000) <= MAX_DEPTH + 2
    assert "managedFields" not in obj["metadata"]
    assert obj["spec"]["handler"] == "h"  # the rest of the object is intact


def test_10000_deep_arrays_in_a_list_response() -> None:
    text = ('{"kind":"ScheduleList","items":[{"metadata":{"name":"x"},"spec":{"params":'
            + nested(10_000, "[", "]") + "}}]}")
    doc = loads(text)
    item = doc["items"][0]
    assert DECODE_PROBLEM in item and TOO_DEEP in json.dumps(item)


def test_moderately_deep_params_that_json_accepts_are_cut_too() -> None:
    # 500 levels parse with json.loads but would break deepcopy and friends.
    obj = loads(event(nested(500)))["object"]
    assert obj[DECODE_PROBLEM].startswith("spec nests deeper")
    assert json_depth(obj["spec"], 10_000) <= MAX_DEPTH + 1


def test_huge_integer_becomes_a_marker_and_is_flagged() -> None:
    obj = loads(event('{"n": ' + "9" * 5000 + ', "ok": 1}'))["object"]
    assert obj["spec"]["params"] == {"n": BAD_NUMBER, "ok": 1}
    assert "4,300 digits" in obj[DECODE_PROBLEM]


def test_normal_objects_are_unchanged_but_for_managed_fields() -> None:
    text = event('{"a": [1, 2.5, "\\u00e9\\ud83d\\ude00", null, true, {"b": {}}]}')
    expected = json.loads(text)
    del expected["object"]["metadata"]["managedFields"]
    assert loads(text) == expected
    assert DECODE_PROBLEM not in loads(text)["object"]


@pytest.mark.parametrize("bad", ["", "{", "[1,]", '{"a" 1}', "tru", "[1] x", '{"a":1,}', "[",
                                 '"\x01"'])
def test_malformed_json_is_still_an_error(bad: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        bounded_loads(bad)
    with pytest.raises(json.JSONDecodeError):
        loads(bad)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5),
                                                                       children, max_size=4),
    max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_bounded_parser_equals_json_loads_within_the_limit(value: object) -> None:
    text = json.dumps(value)
    assert bounded_loads(text) == json.loads(text)
    assert bounded_loads(json.dumps(value, indent=2)) == json.loads(text)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=3000), st.sampled_from(["obj", "arr"]))
def test_any_depth_is_bounded(depth: int, kind: str) -> None:
    body = nested(depth) if kind == "obj" else nested(depth, "[", "]")
    obj = loads(event(body))["object"]
    assert json_depth(obj, 10_000) <= MAX_DEPTH + 3
    assert (DECODE_PROBLEM in obj) == (depth + 1 > MAX_DEPTH)


def test_install_patches_kopfs_two_decode_sites() -> None:
    """Pins kopf's internals: fails loudly if an upgrade moves the decode sites."""
    from kopf._cogs.clients import api, fetching, watching

    assert "json.loads(line.decode('utf-8'))" in inspect.getsource(api.stream)
    assert "response.json()" in inspect.getsource(api.get)
    assert "api.get(" in inspect.getsource(fetching)
    assert "api.stream(" in inspect.getsource(watching)
    safe_decode.install()
    deep = b'{"type": "ADDED", "object": {"spec": ' + b"[" * 5000 + b"]" * 5000 + b"}}"
    assert safe_decode.TOO_DEEP in str(api.json.loads(deep)), "the bounded decoder, no crash"
    assert api.get.__module__ == safe_decode.__name__


def test_our_own_status_echo_reaches_kopf_as_a_bookmark() -> None:
    """The engine says which objects echo its own last write; those skip kopf's handlers
    (a BOOKMARK keeps the stream's resourceVersion), everything else passes unchanged."""
    echoes = safe_decode.EchoFilter()
    mine = {"kind": "Schedule", "apiVersion": "schedulezero.io/v1alpha1",
            "metadata": {"name": "a", "namespace": "n", "resourceVersion": "42"}}
    other = {**mine, "metadata": {**mine["metadata"], "resourceVersion": "43"}}
    echoes.absorb = lambda obj: obj["metadata"]["resourceVersion"] == "42"
    out = echoes({"type": "MODIFIED", "object": mine})
    assert out == {"type": "BOOKMARK", "object": {
        "apiVersion": "schedulezero.io/v1alpha1", "kind": "Schedule",
        "metadata": {"resourceVersion": "42"}}}
    for event in ({"type": "MODIFIED", "object": other}, {"type": "ADDED", "object": mine},
                  {"type": "DELETED", "object": mine}, {"kind": "ScheduleList"}):
        assert echoes(event) is event
    assert echoes.absorbed == 1
