"""Cron expressions in words, and upcoming fire times, from the operator's own timing code.

Why here and not a cron library: ``kubectl sz cron`` and ``next`` must print what
*will* fire. So an expression is first accepted (or rejected, with the operator's
message) by ``timing.parse_trigger``, the same call the operator makes, and the
listed times come from ``timing.next_fire``. Only the wording is written here, and
it only ever describes expressions that parser accepted, field by field in the
same reading the parser documents (``timing.cron``): seconds first when there are
six fields, ``a/n`` runs to the end of the field, ``7`` is Sunday, ``?`` is ``*``,
ranges may wrap, and day-of-month / day-of-week combine as in Vixie cron.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from ..timing import Trigger, next_fire
from ..timing.cron import MONTH_NAMES, compile_cron, normalised

WEEKDAY_NAMES = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday",
                 "Saturday")
_MONTHS = {name[:3].lower(): i for i, name in enumerate(MONTH_NAMES) if name}
_WEEKDAYS = {name[:3].lower(): i for i, name in enumerate(WEEKDAY_NAMES)}
FIELD_NAMES = ("second", "minute", "hour", "day-of-month", "month", "day-of-week")


@dataclass(frozen=True)
class Explanation:
    """An accepted cron expression in words: per field, and as one sentence."""

    expression: str
    fields: tuple[tuple[str, str, str], ...]  # (field name, text, meaning)
    summary: str
    seconds_field: bool


def _join(items: list[str], word: str = "and") -> str:
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {word} {items[-1]}"


def _month(token: str) -> str:
    return MONTH_NAMES[int(token) if token.isdigit() else _MONTHS[token.lower()]]


def _weekday(token: str) -> str:
    return WEEKDAY_NAMES[(int(token) if token.isdigit() else _WEEKDAYS[token.lower()]) % 7]


def _items(text: str) -> list[tuple[str, str | None, int, bool]]:
    """Split a field into (first, last, step, has_step) items; ``*`` has first ``*``."""
    out = []
    for item in text.split(","):
        base, slash, step = item.partition("/")
        first, dash, last = base.partition("-")
        out.append((first, last if dash else None, int(step) if slash else 1, bool(slash)))
    return out


def _describe(text: str, *, singular: str | None, plural: str, every_noun: str, top: str,
              name: Callable[[str], str]) -> list[tuple[bool, str]]:
    """The items of a field in words, in order, each flagged as a single value or not.

    ``singular`` None: values are names (months, weekdays) and read without a noun.
    """
    words: list[tuple[bool, str]] = []
    for first, last, step, has_step in _items(text):
        every = f"every {every_noun}" if step == 1 else f"every {step} {plural}"
        if first == "*":
            words.append((False, every))
        elif last is None and not has_step:
            words.append((True, name(first)))
        else:
            end = name(last) if last is not None else name(top)
            wrap = (f" (wrapping past {name(top)})"
                    if last is not None and last.isdigit() and first.isdigit()
                    and int(last) < int(first) else "")
            span = f"{name(first)} through {end}{wrap}"
            if singular is None:
                words.append((False, f"{every} from {span}" if has_step else span))
            else:
                words.append((False, f"{every} from {singular} {span}" if has_step
                              else f"{plural} {span}"))
    return words


def _grouped(words: list[tuple[bool, str]], noun: str, plural: str, prefix: str) -> list[str]:
    """Numbers: single values first, together (``at minutes 0 and 30``), then the rest."""
    singles = list(dict.fromkeys(w for single, w in words if single))
    phrases = list(dict.fromkeys(w for single, w in words if not single))
    if singles:
        phrases.insert(0, f"{prefix}{noun if len(singles) == 1 else plural} {_join(singles)}")
    return phrases


def _number(token: str) -> str:
    return str(int(token))


def _time_field(name: str, text: str) -> str:
    """second/minute/hour: ``at minute 0``, ``every 15 minutes``, ``hours 9 through 17``."""
    top = "23" if name == "hour" else "59"
    words = _describe(text, singular=name, plural=name + "s", every_noun=name, top=top,
                      name=_number)
    return _join(_grouped(words, name, name + "s", "at "))


def _dom(text: str) -> str:
    if text == "*":
        return "every day of the month"
    words = _describe(text, singular="day", plural="days", every_noun="day of the month",
                      top="31", name=_number)
    text = _join(_grouped(words, "day", "days", ""))
    return text if text.endswith(" of the month") else text + " of the month"


def _named_field(text: str, values: list[int], noun: str, plural: str, name: Callable[[str], str],
                 top: str) -> str:
    """month/day-of-week: items in order (``January through March and November``).

    A field with a step lists the values it selects by name instead (``*/2`` in
    day-of-week is Sunday, Tuesday, Thursday and Saturday): a step over names is
    hard to picture, the resulting days are not.
    """
    if "/" in text or "*" in text.split(","):
        return _join([name(str(v)) for v in values])
    words = _describe(text, singular=None, plural=plural, every_noun=noun, top=top, name=name)
    return _join(list(dict.fromkeys(w for _, w in words)))


def _month_field(text: str, months: list[int]) -> str:
    if text == "*" or len(months) == 12:
        return "every month"
    return "in " + _named_field(text, months, "month", "months", _month, "12")


def _dow_field(text: str, dows: list[int]) -> str:
    if text in ("*", "?") or len(dows) == 7:
        return "every day of the week"
    return "on " + _named_field(text, dows, "day of the week", "days of the week", _weekday,
                                "6")


def explain_cron(expression: str) -> Explanation:
    """Describe an expression ``timing`` accepted (call ``parse_trigger`` first).

    The day part follows Vixie cron: a field starting with ``*`` (or ``?``) is
    unrestricted; if both day fields are restricted a day matching *either* fires.
    """
    spec = compile_cron(expression)
    fields = normalised(expression).split()
    seconds_field = len(fields) == 6
    texts = fields if seconds_field else ["0", *fields]
    second, minute, hour, dom, month, dow = texts
    dom = "*" if dom == "?" else dom
    dow = "*" if dow == "?" else dow
    meanings = [_time_field("second", second), _time_field("minute", minute),
                _time_field("hour", hour),
                _dom(dom) if _dom(dom).startswith("every") else "on " + _dom(dom),
                _month_field(month, list(spec.months)), _dow_field(dow, list(spec.dows))]
    rows = [(name, text if (seconds_field or name != "second") else "(0)", meaning)
            for name, text, meaning in zip(FIELD_NAMES, texts, meanings, strict=True)]

    clock = _clock(second, minute, hour)
    parts = [clock] if clock else meanings[:3]
    dom_star, dow_star = dom.startswith("*"), dow.startswith("*")
    if dom_star and dow_star:
        day = "every day" if dom == "*" and dow == "*" else _join(
            [m for m, t in ((meanings[3], dom), (meanings[5], dow)) if t != "*"])
    elif dow_star:
        day = meanings[3] + ("" if dow == "*" else f", only if also {meanings[5]}")
    elif dom_star:
        day = meanings[5] + ("" if dom == "*" else f", only if also {meanings[3]}")
    else:
        day = f"{meanings[3]} or {meanings[5]} (either matches, as in Vixie cron)"
    parts.append(day)
    parts.append(meanings[4])
    return Explanation(expression, tuple(rows), ", ".join(parts), seconds_field)


def _clock(second: str, minute: str, hour: str) -> str | None:
    """``at 09:30:00`` when second, minute and hour are single values, else None."""
    if all(t.isdigit() for t in (second, minute, hour)):
        return f"at {int(hour):02d}:{int(minute):02d}:{int(second):02d}"
    return None


def dst_note(trigger: Trigger, around: dt.datetime) -> str:
    """How the trigger behaves across DST changes in its zone (Vixie cron rules)."""
    year = around.year
    offsets = {dt.datetime(year, m, 1, tzinfo=dt.UTC).astimezone(trigger.zone).utcoffset()
               for m in (1, 4, 7, 10)}
    if trigger.kind != "cron":
        return "none: intervals and one-shot times are instants, not wall-clock times"
    if len(offsets) == 1:
        return f"none in {trigger.zone.key} in {year}"
    if trigger.fixed_time:
        return ("fixed time of day: a local time skipped by the spring-forward change runs "
                "at the transition; one repeated by the fall-back change runs once")
    return ("follows the wall clock (wildcard or step minute/hour): skipped local times "
            "do not run, repeated ones run again")


def upcoming(trigger: Trigger, after: dt.datetime, count: int) -> list[dt.datetime]:
    """The next ``count`` fire instants strictly after ``after`` (fewer if the trigger ends)."""
    times: list[dt.datetime] = []
    current = after
    while len(times) < count:
        nxt = next_fire(trigger, current)
        if nxt is None:
            break
        times.append(nxt)
        current = nxt
    return times
