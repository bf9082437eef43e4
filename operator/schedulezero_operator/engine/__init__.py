"""Timer queue, run state machine, status recording (decisions in ``decisions``)."""

from .clock import Clock, FixedClock, SystemClock
from .engine import Conflict, Engine, HandlerState, NotFound, ScheduleState

__all__ = ["Clock", "Conflict", "Engine", "FixedClock", "HandlerState", "NotFound",
           "ScheduleState", "SystemClock"]
