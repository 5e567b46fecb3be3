"""Curtailment: the rig held to a watt target by one control loop (control.py), a pure planner
(plan.py), the curtailment's journaled state (model.py) and what each device draws at work
(draws.py)."""

from agent.runtime.curtail.control import Curtailer
from agent.runtime.curtail.draws import WorkingDraw
from agent.runtime.curtail.model import (
    MAX_DEADLINE_S,
    MAX_EXPIRY_S,
    MAX_REASON_CHARS,
    Action,
    ActionKind,
    ActionState,
    Before,
    Curtailment,
)

__all__ = [
    "MAX_DEADLINE_S",
    "MAX_EXPIRY_S",
    "MAX_REASON_CHARS",
    "Action",
    "ActionKind",
    "ActionState",
    "Before",
    "Curtailer",
    "Curtailment",
    "WorkingDraw",
]
