"""The timing package's one exception type.

It lives in its own module so that ``cron`` (the compiled expressions) and
``triggers`` (which re-exports it) can both raise it without importing each other.
"""

from __future__ import annotations


class TriggerError(ValueError):
    """A trigger the operator can't use; the message is shown to the user as is."""
