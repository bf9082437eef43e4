"""Slot claims, pure: which slots a claim covers, when it must be extended, whose it is.

A claim in ``status.claim`` says "``holder`` fires the slots from ``scheduledTime``
through ``until``"; it is written with a resourceVersion precondition, so two
operators cannot both get one write through. Slots are claimed for a horizon
ahead, in the write that records the previous run, so the firing instant never
waits for the API server, and a frequent Schedule needs one claim write per
horizon, not per run. ``expires`` (``until`` + a grace) bounds how long a holder
that vanished keeps others from taking over.

The horizon is long (a minute, or four slots of a slower trigger, up to ten minutes)
because the status writer runs on a budget: under load a Schedule's status may be
written only every few tens of seconds, and a claim that ran out before the next
write would hold its slots back. With more Schedules than a minute's claims fit in
half the budget, the writer lengthens it (``StatusWriter.claim_horizon``). A long
claim costs nothing on failover: the Lease says the predecessor is gone, and its claim
is taken over at once.
"""

from __future__ import annotations

import datetime as dt

from ..api.models import Claim
from ..timing import Trigger, next_fire
from .compact import compact
from .decisions import run_id_for
from .times import iso, later, parse_iso

# Slots are claimed this far ahead in one write ...
CLAIM_HORIZON = dt.timedelta(seconds=60)
# ... or this many slots ahead when that is further (a 100 s interval: 4 runs per claim) ...
CLAIM_SLOTS = 4
# ... but never further than this (an hourly cron claims its next slot only).
CLAIM_MAX = dt.timedelta(minutes=10)
# A claim stays valid this long after its last slot (a slow holder may still be firing it).
CLAIM_GRACE = dt.timedelta(seconds=30)


def horizon_end(trigger: Trigger, slot: dt.datetime, horizon: dt.timedelta = CLAIM_HORIZON,
                slots: int = CLAIM_SLOTS) -> dt.datetime:
    """The last slot within ``horizon`` of ``slot``, or within ``slots`` slots of it when
    that reaches further (at most ``CLAIM_MAX``); ``slot`` itself at least."""
    nxt = next_fire(trigger, slot)
    if nxt is None:
        return slot
    span = max(horizon, min(slots * (nxt - slot), CLAIM_MAX))
    limit = later(slot, span)
    until = slot
    while nxt is not None and nxt <= limit:
        until, nxt = nxt, next_fire(trigger, nxt)
    return until


def new_claim(holder: str, uid: str, slot: dt.datetime, trigger: Trigger,
              horizon: dt.timedelta = CLAIM_HORIZON) -> Claim:
    """Our claim of ``slot`` and the slots after it within the horizon."""
    until = horizon_end(trigger, slot, horizon)
    return compact(Claim(holder=holder, run_id=run_id_for(uid, slot),
                         scheduled_time=iso(slot), until=iso(until),
                         expires=iso(later(until, CLAIM_GRACE))))


def claim_until(claim: Claim) -> dt.datetime | None:
    """The last slot a claim covers; a claim written before ``until`` existed covers its
    own slot only."""
    return parse_iso(claim.until) or parse_iso(claim.scheduled_time)


def covers(claim: Claim | None, holder: str, slot: dt.datetime, trigger: Trigger,
           horizon: dt.timedelta = CLAIM_HORIZON) -> bool:
    """``holder``'s claim covers ``slot`` with half a horizon to spare (else extend it)."""
    if claim is None or claim.holder != holder:
        return False
    start, until = parse_iso(claim.scheduled_time), claim_until(claim)
    if start is None or until is None or slot < start:
        return False
    nxt = next_fire(trigger, slot)
    if nxt is None or next_fire(trigger, until) is None:
        return True  # nothing after it to claim
    if CLAIM_SLOTS * (nxt - slot) <= horizon:  # a frequent trigger: time decides
        return later(slot, horizon / 2) <= until
    return horizon_end(trigger, slot, horizon / 2, CLAIM_SLOTS // 2) <= until


def blocks(claim: Claim | None, holder: str, slot: dt.datetime, now: dt.datetime) -> bool:
    """Another holder's unexpired claim covers ``slot``: respect it, do not fire."""
    if claim is None or claim.holder == holder:
        return False
    until, expires = claim_until(claim), parse_iso(claim.expires)
    return until is not None and expires is not None and slot <= until and now < expires
