"""``schedulezero-migrate``: a ScheduleZero deployment as Handler and Schedule YAML.

Why: existing ScheduleZero users should move over without rewriting handlers or
re-typing schedules. The tool reads what their server has (its handler registry
and its APScheduler schedules, from the server's API or exported files), and
prints manifests to review and ``kubectl apply``. Nothing is written to any
cluster or server.

Layout: ``source`` (reading the shapes ScheduleZero produces), ``triggers``
(APScheduler triggers to cron / interval / at), ``convert`` (the manifests and the
YAML) and ``command`` (the command line). docs/MIGRATING.md is the user's guide.
"""

from .command import main

__all__ = ["main"]
