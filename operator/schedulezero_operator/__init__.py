"""ScheduleZero operator: Schedule and Handler resources, fired by kopf.

Public surface: the resource models (``api``), the pure trigger math
(``timing``), and ``main`` (the entry point). Everything else is internal.
"""

from .api import GROUP, VERSION, HandlerSpec, ScheduleSpec

__all__ = ["GROUP", "VERSION", "HandlerSpec", "ScheduleSpec"]
