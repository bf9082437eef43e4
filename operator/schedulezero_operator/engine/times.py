"""Times as status stores them: RFC 3339 in UTC, parsed leniently, added saturating."""

from __future__ import annotations

import datetime as dt

UTC = dt.UTC


def iso(t: dt.datetime) -> str:
    """RFC 3339 in UTC, with milliseconds only when there are any.

    ``isoformat`` rather than ``strftime``: this runs several times per fire, and is
    40 % faster (a 500-fire burst spent a tenth of its dispatch time here).
    """
    if t.tzinfo is not UTC:
        t = t.astimezone(UTC)
    if t.microsecond:
        return t.isoformat(timespec="milliseconds")[:23] + "Z"
    return t.isoformat(timespec="seconds")[:19] + "Z"


def iso_or_none(t: dt.datetime | None) -> str | None:
    return None if t is None else iso(t)


def parse_iso(s: str | None) -> dt.datetime | None:
    """A time from status, or None when absent or unreadable (status can be edited by
    anyone with access to the subresource; a bad value must not stop the engine)."""
    if not s:
        return None
    try:
        t = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC)


def later(t: dt.datetime, delta: dt.timedelta) -> dt.datetime:
    """``t + delta``, saturating at the end of time (an `at` in year 9999 is legal)."""
    try:
        return t + delta
    except OverflowError:
        return dt.datetime.max.replace(tzinfo=UTC)
