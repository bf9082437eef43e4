from __future__ import annotations

import re

import pytest
from schedulezero_operator.api.models import ENDPOINT_PATTERN
from schedulezero_operator.dispatch import Endpoint, EndpointPool


def ep(n: int) -> Endpoint:
    return Endpoint(f"127.0.0.{n}", 4244, "zmq", pod=f"pod-{n}")


def test_least_loaded_first_and_capacity_respected() -> None:
    pool = EndpointPool(capacity_per_endpoint=2)
    pool.set_ready([ep(1), ep(2)])
    got = [pool.acquire() for _ in range(4)]
    assert sorted(str(g) for g in got) == ["pod-1", "pod-1", "pod-2", "pod-2"]
    assert pool.acquire() is None, "no free slot anywhere"
    pool.release(ep(2))
    assert pool.acquire() == ep(2)


def test_ties_rotate_between_equal_endpoints() -> None:
    pool = EndpointPool(capacity_per_endpoint=10)
    pool.set_ready([ep(1), ep(2), ep(3)])
    first_three = {str(pool.acquire()) for _ in range(3)}
    assert first_three == {"pod-1", "pod-2", "pod-3"}


def test_avoid_loses_ties_for_retries_elsewhere() -> None:
    pool = EndpointPool(capacity_per_endpoint=1)
    pool.set_ready([ep(1), ep(2)])
    for _ in range(5):
        chosen = pool.acquire(avoid=ep(1).key)
        assert chosen == ep(2)
        pool.release(ep(2))


def test_endpoint_leaving_gets_no_new_jobs_but_keeps_accounting() -> None:
    pool = EndpointPool(capacity_per_endpoint=1)
    pool.set_ready([ep(1), ep(2)])
    a = pool.acquire()
    assert a is not None
    other = ep(2) if a == ep(1) else ep(1)
    pool.set_ready([other])
    assert pool.ready_endpoints == [other]
    assert pool.in_flight == 1, "the job on the leaving endpoint is still counted"
    assert pool.acquire() == other
    assert pool.acquire() is None
    pool.release(a)
    assert pool.in_flight == 1


@pytest.mark.parametrize(("address", "host", "port", "shown"), [
    ("10.1.2.3:4244", "10.1.2.3", 4244, "10.1.2.3:4244"),
    ("tcp://10.0.0.5:4244", "10.0.0.5", 4244, "10.0.0.5:4244"),
    ("handler.ns.svc:80", "handler.ns.svc", 80, "handler.ns.svc:80"),
    ("[::1]:4244", "::1", 4244, "[::1]:4244"),
    ("tcp://[fd00::5]:9", "fd00::5", 9, "[fd00::5]:9"),
])
def test_endpoint_forms_normalise_to_one(address: str, host: str, port: int, shown: str) -> None:
    e = Endpoint.parse(address, "zmq")
    assert (e.host, e.port, str(e)) == (host, port, shown)
    assert re.match(ENDPOINT_PATTERN, address), "the CRD admits what the operator parses"


@pytest.mark.parametrize("address", ["no-port", "host:", ":80", "[::1]4244", "tcp://",
                                     "a b:1", "[zz]:1", "[::1:80"])
def test_bad_endpoints_are_refused_by_schema_and_parser(address: str) -> None:
    assert not re.match(ENDPOINT_PATTERN, address)
    with pytest.raises(ValueError, match="invalid endpoint"):
        Endpoint.parse(address, "zmq")


def test_a_port_out_of_range_is_refused_by_the_parser() -> None:
    with pytest.raises(ValueError, match="invalid endpoint"):
        Endpoint.parse("h:99999", "zmq")


def test_a_run_id_has_the_same_home_on_every_operator() -> None:
    """Two operators (two pools) that see the same endpoints send a run id's first
    attempt to the same one: the SDK there dedupes a run sent by both."""
    a, b = EndpointPool(capacity_per_endpoint=100), EndpointPool(capacity_per_endpoint=100)
    a.set_ready([ep(1), ep(2), ep(3)])
    b.set_ready([ep(3), ep(1), ep(2)])
    b.acquire()  # unequal loads within the bound do not matter
    for i in range(50):
        run_id = f"uid-{i}"
        got_a, got_b = a.acquire(home=run_id), b.acquire(home=run_id)
        assert got_a is not None and got_a == got_b
        a.release(got_a)
        b.release(got_b)


def test_homes_spread_and_loads_stay_bounded() -> None:
    pool = EndpointPool(capacity_per_endpoint=1000)
    pool.set_ready([ep(n) for n in range(1, 5)])
    got = [pool.acquire(home=f"run-{i}") for i in range(400)]
    counts = sorted(sum(1 for g in got if g == ep(n)) for n in range(1, 5))
    assert counts[-1] <= 1.25 * 400 / 4 + 3, counts
    assert counts[0] >= 60, counts


def test_a_home_endpoint_that_is_full_sends_the_run_elsewhere() -> None:
    pool = EndpointPool(capacity_per_endpoint=1)
    pool.set_ready([ep(1), ep(2)])
    home = pool.acquire(home="run-x")
    assert home is not None
    other = pool.acquire(home="run-x")
    assert other is not None and other != home
    assert pool.acquire(home="run-x") is None


def test_prefer_joins_a_resumed_run_where_it_runs_even_when_full() -> None:
    pool = EndpointPool(capacity_per_endpoint=1)
    pool.set_ready([ep(1), ep(2)])
    assert pool.acquire(prefer=ep(2).key) == ep(2)
    assert pool.acquire(prefer=ep(2).key) == ep(2), "joining adds no work there"
    pool.set_ready([ep(1)])
    assert pool.acquire(prefer=ep(2).key) == ep(1), "gone: anywhere else"


def test_an_endpoint_garbling_its_replies_is_quarantined_longer_each_time() -> None:
    now = [0.0]
    pool = EndpointPool(capacity_per_endpoint=10, clock=lambda: now[0])
    pool.set_ready([ep(1), ep(2)])
    assert pool.report(ep(1), bad_reply=True) is None
    assert pool.report(ep(1), bad_reply=True) is None
    assert pool.report(ep(1), bad_reply=True) == 10.0, "the third bad reply in a row"
    assert {str(pool.acquire()) for _ in range(4)} == {"pod-2"}
    now[0] = 10.0
    assert pool.acquire(prefer=ep(1).key) == ep(1), "let back after 10 s"
    assert pool.report(ep(1), bad_reply=True) == 20.0, "garbled again at once: doubled"
    now[0] = 29.0
    assert pool.acquire(prefer=ep(1).key) == ep(2)
    now[0] = 30.0
    pool.report(ep(1), bad_reply=False)  # one good reply clears it
    assert pool.report(ep(1), bad_reply=True) is None


def test_an_unbounded_home_ignores_load_but_not_capacity() -> None:
    """Catch-up after a take-over: many runs at once, each maybe already sent by the
    predecessor, so each must reach its home whatever the momentary imbalance."""
    pool = EndpointPool(capacity_per_endpoint=1000)
    pool.set_ready([ep(1), ep(2), ep(3)])
    homes = {}
    for i in range(300):
        probe = EndpointPool(capacity_per_endpoint=1000)
        probe.set_ready([ep(1), ep(2), ep(3)])
        homes[f"run-{i}"] = probe.acquire(home=f"run-{i}")
    got = {f"run-{i}": pool.acquire(home=f"run-{i}", bounded=False) for i in range(300)}
    assert got == homes
    small = EndpointPool(capacity_per_endpoint=1)
    small.set_ready([ep(1), ep(2)])
    first = small.acquire(home="x", bounded=False)
    assert small.acquire(home="x", bounded=False) not in (None, first), "full: elsewhere"


def test_a_replacement_pod_does_not_take_the_home_of_a_run_sent_before_it_was_ready() -> None:
    """A successor resends a run a dead leader may have sent: its home must be chosen
    among the endpoints that were there at its slot, or a newcomer steals a third."""
    wall = [100.0]
    pool = EndpointPool(capacity_per_endpoint=100, wall=lambda: wall[0])
    pool.set_ready([ep(1), ep(2)])
    before = {f"r{i}": pool.acquire(home=f"r{i}", bounded=False) for i in range(60)}
    wall[0] = 200.0
    pool.set_ready([ep(1), ep(2), ep(3)])  # ep(3) replaces a pod that died at 150
    resent = {rid: pool.acquire(home=rid, bounded=False, home_since=120.0) for rid in before}
    assert resent == before
    fresh = [pool.acquire(home=f"n{i}", bounded=False, home_since=250.0) for i in range(60)]
    assert ep(3) in fresh, "runs of later slots use every endpoint"
