from __future__ import annotations

from typing import Any, Literal

import pytest
from schedulezero_handler import method
from schedulezero_handler.methods import InvalidParams, JobContext, bind, discover


class Sample:
    __schedulezero_methods__ = ["listed"]

    @method
    def typed(self, count: int, ratio: float = 1.0, tags: list[str] | None = None,
              mode: Literal["a", "b"] = "a") -> None: ...

    @method(name="renamed")
    async def original(self, ctx: JobContext, **extra: Any) -> None: ...

    def listed(self, params: dict) -> None: ...

    def helper(self) -> None: ...


def test_discovery_is_explicit() -> None:
    specs = discover(Sample())
    assert set(specs) == {"typed", "renamed", "listed"}
    assert specs["renamed"].is_async and specs["renamed"].context_param == "ctx"
    assert specs["listed"].legacy_dict


@pytest.mark.parametrize(("params", "error"), [
    ({"count": 1}, None),
    ({"count": 1, "ratio": 2}, None),  # an int is a fine float
    ({"count": 1, "tags": ["x"], "mode": "b"}, None),
    ({"count": 1.5}, "parameter 'count' must be int, got float 1.5"),
    ({"count": True}, "parameter 'count' must be int, got bool"),
    ({"count": 1, "tags": [1]}, "parameter 'tags' must be"),
    ({"count": 1, "mode": "c"}, "parameter 'mode' must be"),
    ({}, "missing required parameter(s) count"),
    ({"count": 1, "zap": 0}, "unexpected parameter(s) zap; it takes: count, ratio, tags, mode"),
])
def test_bind_checks_params(params: dict[str, Any], error: str | None) -> None:
    spec = discover(Sample())["typed"]
    if error is None:
        assert bind(spec, params) == params
    else:
        with pytest.raises(InvalidParams, match=None) as e:
            bind(spec, params)
        assert error in str(e.value)


def test_kwargs_methods_accept_extras_and_legacy_gets_the_dict() -> None:
    specs = discover(Sample())
    assert bind(specs["renamed"], {"anything": 1}) == {"anything": 1}
    assert bind(specs["listed"], {"a": 1}) == {"params": {"a": 1}}


def test_optional_job_context_is_injected_not_a_param() -> None:
    class Clocky:
        @method
        def tick(self, n: int = 1, ctx: JobContext | None = None) -> None: ...

    spec = discover(Clocky())["tick"]
    assert spec.context_param == "ctx"
    assert [p.name for p in spec.params] == ["n"]


def test_sync_methods_share_at_most_32_threads_unless_asked() -> None:
    """A thousand Python threads running a short method only contend for the GIL."""
    from schedulezero_handler import Executor

    class Blocking:
        @method
        def wait(self) -> None: ...

    assert Executor(Blocking(), concurrency=1024).threads == 32
    assert Executor(Blocking(), concurrency=4).threads == 4
    ex = Executor(Blocking(), concurrency=1024, threads=200)
    assert ex.threads == 200
    pool = ex._threads()
    try:
        assert pool._max_workers == 200
    finally:
        pool.shutdown()
