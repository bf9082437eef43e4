"""The operator's GC policy: survivors frozen, frozen cycles reclaimed by a thaw."""

from __future__ import annotations

import gc
import weakref

from schedulezero_operator.controllers import heap


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_survivors_are_frozen_and_a_thaw_reclaims_frozen_cycles() -> None:
    try:
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle: only the cyclic collector can free it
        probe = weakref.ref(a)
        assert heap.freeze_survivors() > 0
        del a, b
        gc.collect()
        assert probe() is not None, "frozen: full collections skip it"
        assert heap.thaw_and_collect() >= 2
        assert probe() is None, "the thaw's full collection reclaimed the cycle"
        assert gc.get_freeze_count() > 0, "frozen again afterwards"
    finally:
        gc.unfreeze()
