"""ScheduleZero's side of things, without sockets: which legacy errors are retried, and
the registration server's answers (ScheduleZero's own shapes) and bookkeeping."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from schedulezero_operator.dispatch.clients import legacy_error_type
from schedulezero_operator.dispatch.registration import RegistrationBook, normalise

T0 = dt.datetime(2026, 5, 19, 10, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(("method", "error", "expected"), [
    # ScheduleZero's ZMQHandlerBase for a method it does not have
    ("chime", "Unknown method: chime", "UnknownMethod"),
    # the handler SDK answering a legacy request
    ("chime", "Unknown method: chime (available: ping, tick)", "UnknownMethod"),
    ("chime", "Unknown method: chimes", "HandlerError"),  # names another method
    ("chime", "Unknown method: chime.x", "HandlerError"),
    ("chime", "oops: Unknown method: chime", "HandlerError"),
    # Python's TypeError for method(params) on a method with another signature
    ("add", "TestHandler.add() missing 1 required positional argument: 'b'", "InvalidParams"),
    ("add", "add() missing 2 required positional arguments: 'a' and 'b'", "InvalidParams"),
    ("add", "main.<locals>.H.add() takes 1 positional argument but 2 were given",
     "InvalidParams"),
    ("add", "H.add() takes from 2 to 3 positional arguments but 4 were given",
     "InvalidParams"),
    ("add", "H.add() missing 1 required keyword-only argument: 'x'", "InvalidParams"),
    ("add", "H.add() got an unexpected keyword argument 'x'", "InvalidParams"),
    ("add", "H.other() missing 1 required positional argument: 'b'", "HandlerError"),
    ("add", "H.add_more() missing 1 required positional argument: 'b'", "HandlerError"),
    # the handler SDK's InvalidParams in the legacy shape
    ("write", "write() is missing required parameter(s) path", "InvalidParams"),
    ("write", "write() got unexpected parameter(s) x; it takes: path", "InvalidParams"),
    ("write", "write(): parameter 'path' must be str, got int 3", "InvalidParams"),
    # an exception inside the method: retried, as ScheduleZero did
    ("write", "'path'", "HandlerError"),
    ("write", "[Errno 28] No space left on device", "HandlerError"),
    ("write", "Invalid JSON", "HandlerError"),
    ("a.b-c", "Unknown method: a.b-c", "UnknownMethod"),
    ("a.b-c", "Unknown method: aXb-c", "HandlerError"),  # the dot is not a wildcard
    ("", "Unknown method: ", "HandlerError"),
])
def test_which_legacy_errors_are_final(method: str, error: str, expected: str) -> None:
    assert legacy_error_type(method, error) == expected


# -- the registration book -------------------------------------------------------------
class Book:
    def __init__(self, limit: int = 1000) -> None:
        self.now = T0
        self.changes: list[tuple[str, str]] = []
        self.book = RegistrationBook(lambda: self.now, limit=limit,
                                     on_change=lambda r, k: self.changes.append(
                                         (r.handler_id, k)))

    def ask(self, request: Any, connection: bytes | None = b"c1",
            peer: str | None = "10.0.0.1") -> dict[str, Any]:
        return self.book.handle(request, connection=connection, peer=peer)

    def register(self, handler_id: str = "ding", address: str = "tcp://10.0.0.1:4244",
                 connection: bytes = b"c1", **extra: Any) -> dict[str, Any]:
        return self.ask({"method": "register", "params": {
            "handler_id": handler_id, "address": address, "methods": ["ping", "chime"],
            **extra}}, connection)


def test_replies_are_schedulezeros() -> None:
    b = Book()
    assert b.ask({"method": "ping"}) == {"success": True, "message": "pong"}
    assert b.register() == {
        "success": True, "handler_id": "ding", "address": "tcp://10.0.0.1:4244",
        "status": "registered", "methods": ["ping", "chime"],
        "message": "Handler 'ding' registered successfully"}
    again = b.register()
    assert again["status"] == "re-registered"
    assert again["message"] == "Handler 'ding' re-registered successfully"
    assert b.ask({"method": "report_status", "params": {"handler_id": "ding",
                                                        "status": "offline"}}) == {
        "success": True, "handler_id": "ding", "status": "offline"}
    assert b.ask({"method": "report_status", "params": {"handler_id": "ghost",
                                                        "status": "offline"}}) == {
        "success": False, "error": "Handler not registered"}
    assert b.ask({"method": "unregister", "params": {}}) == {
        "success": False, "error": "Unknown method: unregister"}
    assert b.changes == [("ding", "register"), ("ding", "register"), ("ding", "status"),
                         ("ding", "heartbeat")]  # any request on its connection


@pytest.mark.parametrize("request_", [
    [1, 2], "ping", None,
    {"method": "register", "params": {"address": "tcp://h:1"}},
    {"method": "register", "params": {"handler_id": "", "address": "tcp://h:1"}},
    {"method": "register", "params": {"handler_id": "x", "address": 4244}},
    {"method": "register", "params": {"handler_id": "x", "address": "tcp://h:1",
                                      "methods": "ping"}},
    {"method": "register", "params": {"handler_id": "x", "address": "tcp://h:1",
                                      "methods": [1]}},
    {"method": "register", "params": {"handler_id": "x", "address": "tcp://h:1",
                                      "methods": ["m"] * 1001}},
    {"method": "register", "params": ["x"]},
    {"method": "report_status", "params": {"handler_id": "ding", "status": 0}},
])
def test_malformed_requests_get_an_error_and_change_nothing(request_: Any) -> None:
    b = Book()
    b.register()
    reply = b.ask(request_)
    assert reply["success"] is False and isinstance(reply["error"], str)
    assert len(b.book) == 1 and b.book.get("ding").status == "online"  # type: ignore[union-attr]


def test_registrations_are_found_by_normalised_address() -> None:
    b = Book()
    b.register("a", "tcp://10.0.0.1:4244")
    b.register("b", "10.0.0.1:4244", connection=b"c2")
    b.register("c", "tcp://[fd00::1]:4244", connection=b"c3")
    b.register("d", "not an address", connection=b"c4")
    assert [r.handler_id for r in b.book.at("10.0.0.1:4244")] == ["a", "b"]
    assert [r.handler_id for r in b.book.at("[fd00::1]:4244")] == ["c"]
    assert b.book.get("d").endpoint is None  # type: ignore[union-attr]
    b.register("a", "tcp://10.0.0.5:4244")  # moved
    assert [r.handler_id for r in b.book.at("10.0.0.1:4244")] == ["b"]
    assert [r.handler_id for r in b.book.at("10.0.0.5:4244")] == ["a"]


@pytest.mark.parametrize(("address", "peer", "expected"), [
    ("tcp://0.0.0.0:4244", "10.1.2.3", "10.1.2.3:4244"),
    ("tcp://*:4244", "10.1.2.3", "10.1.2.3:4244"),
    ("tcp://[::]:4244", "fd00::7", "[fd00::7]:4244"),
    ("tcp://0.0.0.0:4244", None, None),
    ("tcp://10.0.0.9:4244", "10.1.2.3", "10.0.0.9:4244"),
])
def test_a_wildcard_address_is_recorded_at_the_peer(address: str, peer: str | None,
                                                    expected: str | None) -> None:
    assert normalise(address, peer) == expected


def test_heartbeats_are_attributed_by_connection() -> None:
    b = Book()
    b.ask({"method": "ping"}, connection=b"c1")  # before registering: nobody's
    b.register("ding", connection=b"c1")
    b.register("dong", "tcp://10.0.0.1:4245", connection=b"c2")
    b.now = T0 + dt.timedelta(seconds=30)
    assert b.ask({"method": "ping"}, connection=b"c2") == {"success": True,
                                                          "message": "pong"}
    assert b.book.get("dong").last_seen == b.now  # type: ignore[union-attr]
    assert b.book.get("ding").last_seen == T0  # type: ignore[union-attr]
    # a new connection from the same host is not guessed (two handlers live there)
    b.ask({"method": "ping"}, connection=b"c3")
    assert b.changes[-1] == ("dong", "heartbeat")


def test_a_restored_registration_is_attributed_by_peer_address() -> None:
    b = Book()
    b.book.restore("10.0.0.1:4244", "ding", ["ping"], T0, T0, "online")
    b.book.restore("10.0.0.2:4244", "dong", ["ping"], T0, T0, "online")
    b.now = T0 + dt.timedelta(seconds=30)
    b.ask({"method": "ping"}, connection=b"new", peer="10.0.0.2")
    assert b.book.get("dong").last_seen == b.now  # type: ignore[union-attr]
    assert b.book.get("ding").last_seen == T0  # type: ignore[union-attr]
    b.ask({"method": "ping"}, connection=b"other", peer="10.0.0.9")
    assert b.changes == [("dong", "heartbeat")]
    b.register("ding", connection=b"c1")  # what it says now wins over the restored one
    assert b.book.get("ding").registered == b.now  # type: ignore[union-attr]
    b.book.restore("10.0.0.1:4244", "ding", ["old"], T0, T0, "offline")
    assert b.book.get("ding").methods == ["ping", "chime"]  # type: ignore[union-attr]


def test_the_book_is_bounded_least_recently_heard_first() -> None:
    b = Book(limit=3)
    for i in range(3):
        b.register(f"h{i}", f"tcp://10.0.0.{i}:4244", connection=f"c{i}".encode())
    b.ask({"method": "ping"}, connection=b"c0")  # h0 heard from: h1 is now the oldest
    b.register("h3", "tcp://10.0.0.3:4244", connection=b"c3")
    assert len(b.book) == 3 and b.book.get("h1") is None
    assert b.book.at("10.0.0.1:4244") == []
    assert {r.handler_id for r in b.book} == {"h0", "h2", "h3"}


def test_a_failing_listener_does_not_change_the_reply() -> None:
    def boom(reg: object, kind: str) -> None:
        raise RuntimeError("bug")

    book = RegistrationBook(lambda: T0, on_change=boom)
    reply = book.handle({"method": "register", "params": {
        "handler_id": "x", "address": "tcp://h:1"}}, connection=b"c")
    assert reply["success"] is True and book.get("x") is not None
