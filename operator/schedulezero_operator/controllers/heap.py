"""Garbage collection for a long-lived operator with a large, mostly stable heap.

CPython's full (generation 2) collection walks every tracked object while the event
loop waits. With 1,000 Schedules the operator tracks about a million objects (kopf's
and our copies of every object, the Kubernetes client's modules), and at 500 fires/s a
full collection came every ~5 s and stalled the loop 170-230 ms: the largest single
term of fire lateness at the tail (measured with gc.callbacks and a loop-lag probe).

Nearly all of that heap lives as long as the process. So the young generations are
collected and what survived them is moved to the permanent generation
(``gc.freeze``), which collections skip: first once start-up has settled, then every
``FREEZE_EVERY`` seconds. An object frozen while alive that later becomes part of a
garbage *cycle* is not reclaimed until it is unfrozen, so every ``THAW_EVERY``
seconds the heap is unfrozen, fully collected and frozen again: one long pause then
instead of one every few seconds. Objects without cycles are freed by reference
counting as always. ``SZ_GC_FREEZE=0`` turns this off.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time

log = logging.getLogger("schedulezero.heap")
SETTLE = 15.0  # seconds after start before the first freeze (the initial list is in)
FREEZE_EVERY = 60.0
THAW_EVERY = 1800.0


def freeze_survivors() -> int:
    """Collect the young generations, then freeze what survived; the frozen count."""
    gc.collect(1)
    gc.freeze()
    return gc.get_freeze_count()


def thaw_and_collect() -> int:
    """A full collection of everything, frozen or not; then freeze again."""
    gc.unfreeze()
    collected = gc.collect()
    gc.freeze()
    return collected


async def keep_heap_frozen(settle: float = SETTLE, every: float = FREEZE_EVERY,
                           thaw_every: float = THAW_EVERY) -> None:
    if os.environ.get("SZ_GC_FREEZE", "1") == "0":
        return
    await asyncio.sleep(settle)
    last_thaw = time.monotonic()
    while True:
        started = time.perf_counter()
        if time.monotonic() - last_thaw >= thaw_every:
            collected = thaw_and_collect()
            last_thaw = time.monotonic()
            log.info("heap thawed, %d unreachable objects collected, refrozen in %.0f ms",
                     collected, 1000 * (time.perf_counter() - started))
        else:
            frozen = freeze_survivors()
            log.debug("heap: %d objects frozen in %.0f ms", frozen,
                      1000 * (time.perf_counter() - started))
        await asyncio.sleep(every)
