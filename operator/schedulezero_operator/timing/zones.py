"""A time zone's UTC-offset timeline: the instants where its offset changes.

Why: mapping a cron match (a wall-clock time) to an instant needs to know which
UTC offset applies, and whether the wall time is skipped or repeated by a DST
transition. ``zoneinfo`` answers "what is the offset at this instant" but does not
list its transitions, and asking it per wall time (with ``fold``) for every
candidate is what made the old walker slow. So the transitions of a zone are
found once per calendar year, by sampling its offset every few hours and
bisecting each change to the second, and cached; a lookup is then a bisect (or
a hit on the last segment, which is the common case for a chain of fires).

All instants here are integer seconds since 1970-01-01T00:00:00Z and offsets are
integer seconds east of UTC (tzdata offsets are whole seconds).
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_right
from functools import lru_cache
from zoneinfo import ZoneInfo

UTC = dt.UTC
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
# The first and last instants a datetime can represent (years 1 and 9999, UTC).
MIN_INSTANT = (1 - EPOCH_ORDINAL) * 86400
MAX_INSTANT = (dt.date.max.toordinal() - EPOCH_ORDINAL + 1) * 86400 - 1
# Offsets are only sampled where any zone's local time is still a valid datetime.
_SAFE_LO = MIN_INSTANT + 2 * 86400
_SAFE_HI = MAX_INSTANT - 2 * 86400
# The offset is sampled once a day and each change bisected to the second. That
# finds every change as long as no two are less than a day apart: in tzdata the
# closest are 4 days apart (Africa/Freetown, 1939; since 1970, 6.9 days), DST
# changes are months apart.
_SAMPLE = 86400
_FAR = 1 << 62
# Zones whose offset never changes (tzdata's "etcetera" file and its aliases).
_FIXED_NAMES = frozenset({"UTC", "UCT", "GMT", "GMT0", "GMT+0", "GMT-0", "Greenwich",
                          "Universal", "Zulu"})

# (start, end, offset before start, offset in [start, end)). ``start`` is the last
# offset change at or before the instant looked up (or an arbitrary earlier bound,
# with the same offset on both sides, when there was none for over a year); ``end``
# is the next change (or an arbitrary later bound, same offset, where the cached
# tables end). Within [start, end) the zone's offset is constant.
Segment = tuple[int, int, int, int]


def _year_of(t: int) -> int:
    return dt.date.fromordinal(t // 86400 + EPOCH_ORDINAL).year


def _year_start(year: int) -> int:
    return (dt.date(year, 1, 1).toordinal() - EPOCH_ORDINAL) * 86400


class ZoneTimeline:
    """Offset changes of one zone, computed per year on demand and cached."""

    __slots__ = ("_memo", "_years", "constant", "fixed_offset", "zone")

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        self._years: dict[int, tuple[int, tuple[int, ...], tuple[int, ...]]] = {}
        key = getattr(zone, "key", None) or ""
        self.constant = key in _FIXED_NAMES or key.startswith("Etc/")
        off = self.fixed_offset = self.offset(0)
        self._memo: Segment = (-_FAR, _FAR, off, off) if self.constant else (0, 0, off, off)

    def offset(self, t: int) -> int:
        """UTC offset in seconds at instant ``t``."""
        t = min(max(t, _SAFE_LO), _SAFE_HI)
        try:
            local = dt.datetime.fromtimestamp(t, self.zone)
        except (OverflowError, OSError, ValueError):  # platform time_t limits
            local = (EPOCH + dt.timedelta(seconds=t)).astimezone(self.zone)
        delta = local.utcoffset()
        assert delta is not None
        return delta.days * 86400 + delta.seconds

    def segment(self, t: int) -> Segment:
        """The constant-offset stretch of time containing instant ``t``."""
        memo = self._memo
        if memo[0] <= t < memo[1]:
            return memo
        memo = self._lookup(t)
        self._memo = memo
        return memo

    def _year(self, year: int) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
        """(offset at the start of ``year``, changes in it, offset after each change)."""
        cached = self._years.get(year)
        if cached is None:
            cached = self._years[year] = self._scan(year)
        return cached

    def _scan(self, year: int) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
        # A change at instant T means offset(T - 1) != offset(T); the changes of
        # ``year`` are those with T in [start of year, start of next year).
        p = max(_year_start(year) - 1, _SAFE_LO)
        end = min(_year_start(year + 1) - 1 if year < 9999 else MAX_INSTANT, _SAFE_HI)
        op = first = self.offset(p)
        changes: list[int] = []
        offsets: list[int] = []
        while p < end:
            q = min(p + _SAMPLE, end)
            oq = self.offset(q)
            while oq != op:  # at least one change in (p, q]: bisect to the second
                lo, hi = p, q
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if self.offset(mid) == op:
                        lo = mid
                    else:
                        hi = mid
                changes.append(hi)
                p, op = hi, self.offset(hi)
                offsets.append(op)
            p = q
        return first, tuple(changes), tuple(offsets)

    def _lookup(self, t: int) -> Segment:
        if self.constant:
            return self._memo
        year = min(max(_year_of(min(max(t, MIN_INSTANT), MAX_INSTANT)), 1), 9999)
        first, changes, offsets = self._year(year)
        i = bisect_right(changes, t)
        if i:
            start, off = changes[i - 1], offsets[i - 1]
            off_prev = offsets[i - 2] if i >= 2 else first
        else:
            off = first
            start, off_prev = _year_start(year), first
            if year > 1:  # the last change may be late in the previous year
                _, prev_changes, prev_offsets = self._year(year - 1)
                if prev_changes:
                    start = prev_changes[-1]
                    off_prev = prev_offsets[-2] if len(prev_changes) >= 2 else \
                        self._year(year - 1)[0]
        if i < len(changes):
            end = changes[i]
        else:
            end = _year_start(year + 1) if year < 9999 else _FAR
        return start, end, off_prev, off


@lru_cache(maxsize=1024)
def timeline(zone: ZoneInfo) -> ZoneTimeline:
    """The (shared, cached) timeline of ``zone``."""
    return ZoneTimeline(zone)
