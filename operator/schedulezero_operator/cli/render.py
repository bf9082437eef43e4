"""Plain aligned tables and short human durations, as kubectl prints them.

Pure functions (no API, no clock), so the output format is unit-tested.
kubectl's tables are tab-writer columns: upper-case headers, left-aligned cells,
three spaces between columns, nothing trailing; absent values read ``<none>``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

NONE = "<none>"
GAP = "   "


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Rows under headers, each column as wide as its widest cell; no trailing blanks."""
    cells = [[str(h) for h in headers]]
    cells += [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [c.ljust(w) for c, w in zip(row, widths, strict=True)]
        lines.append(GAP.join(padded).rstrip())
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return NONE
    text = str(value)
    # One row per record: a multi-line message would break the columns.
    return " ".join(text.split()) if ("\n" in text or "\t" in text) else text


def truncate(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: max(0, width - 1)] + "…"


def millis(ms: float | None) -> str | None:
    """A duration given in milliseconds, short: ``0.4ms``, ``12ms``, ``1.25s``, ``2m3s``."""
    if ms is None:
        return None
    if ms < 0:
        return "-" + (millis(-ms) or "")
    if ms < 10:
        return f"{ms:.1f}ms"
    if ms < 1000:
        return f"{ms:.0f}ms"
    return seconds(ms / 1000)


def seconds(value: float) -> str:
    """A duration in seconds, short and exact to the unit shown: ``4.2s``, ``5m``, ``1h30m``."""
    if value < 0:
        return "-" + seconds(-value)
    if value < 60:
        text = f"{value:.2f}" if value < 10 else f"{value:.1f}"
        text = text.rstrip("0").rstrip(".")
        return f"{text}s"
    whole = round(value)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    shown = [f"{n}{unit}" for n, unit in parts if n]
    # Like kubectl's ages: two units are enough to read (1d3h, not 1d3h4m5s).
    return "".join(shown[:2])


def rfc3339(value: dt.datetime) -> str:
    """UTC, to the second (milliseconds only when present): how status times read."""
    value = value.astimezone(dt.UTC)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def local(value: dt.datetime, zone: dt.tzinfo) -> str:
    """Wall-clock time in ``zone``, weekday and abbreviation: ``Sun 2026-03-29 03:00:00 CEST``."""
    wall = value.astimezone(zone)
    text = wall.strftime("%a %Y-%m-%d %H:%M:%S")
    if wall.microsecond:
        text += f".{wall.microsecond // 1000:03d}"
    return f"{text} {wall.tzname()}"


def status_time(text: str | None) -> str | None:
    """A time from a status (RFC 3339) as shown in tables: unchanged, fractions dropped."""
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
