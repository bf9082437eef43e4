"""Pure trigger math: when does a Schedule fire?

Nothing here reads a clock or imports kopf or a Kubernetes client: every
function takes ``now``/``after`` as arguments (UTC-aware datetimes), so the
behaviour is table-tested at fixed anchors, DST days included.

DST follows Vixie cron (cron(8)), which cron users know, not Kubernetes CronJob:
- a *fixed-time* job (neither the minute nor the hour field starts with ``*``)
  whose local time is skipped by a spring-forward transition runs once, at the
  transition instant;
- a fixed-time job whose local time occurs twice (fall-back) runs once, at the
  first occurrence (CronJob runs it twice: kubernetes#121594);
- a job with a wildcard or step minute/hour follows the wall clock: skipped
  local times don't run, repeated local times run again.

Cron expressions are compiled once (``cron``; syntax and what is rejected is
documented there) and a zone's offset changes are found once per year
(``zones``), so a next fire is a few table lookups, not a walk over matches.
The package imports nothing but the standard library: croniter is only a test
and benchmark oracle.
"""

from .cron import CronSchedule, CronSpec, compile_cron, cron_schedule
from .triggers import (
    Trigger,
    TriggerError,
    backoff_delay,
    catch_up,
    jitter_bound,
    jitter_offset,
    next_fire,
    parse_duration,
    parse_trigger,
    slots_between,
)

__all__ = [
    "CronSchedule",
    "CronSpec",
    "Trigger",
    "TriggerError",
    "backoff_delay",
    "catch_up",
    "compile_cron",
    "cron_schedule",
    "jitter_bound",
    "jitter_offset",
    "next_fire",
    "parse_duration",
    "parse_trigger",
    "slots_between",
]
