"""The firing engine: timers -> claim -> dispatch -> retry -> record (see ``engine.engine``)."""

from .clock import Clock, FixedClock, SystemClock
from .engine import Engine, ScalingTarget
from .handler import HandlerState
from .ports import Conflict, DispatcherPort, KubePort, NotFound
from .schedule import ScheduleState

__all__ = ["Clock", "Conflict", "DispatcherPort", "Engine", "FixedClock", "HandlerState",
           "KubePort", "NotFound", "ScalingTarget", "ScheduleState", "SystemClock"]
