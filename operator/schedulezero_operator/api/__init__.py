"""Resource models (the single source of the CRDs)."""

from .models import (
    GROUP,
    HANDLER_LABEL,
    RUN_NOW_ANNOTATION,
    VERSION,
    HandlerSpec,
    HandlerStatus,
    RunRecord,
    ScheduleSpec,
    ScheduleStatus,
)

__all__ = [
    "GROUP",
    "HANDLER_LABEL",
    "RUN_NOW_ANNOTATION",
    "VERSION",
    "HandlerSpec",
    "HandlerStatus",
    "RunRecord",
    "ScheduleSpec",
    "ScheduleStatus",
]
