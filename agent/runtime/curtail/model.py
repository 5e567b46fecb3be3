"""A curtailment's state: what it asks, what it did to each device, and what each device was
before it was first touched. Journaled as JSON, so a restarted rigd resumes it."""

from __future__ import annotations

import enum
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from rigapi.model import CurtailmentState, CurtailmentStatus

MAX_DEADLINE_S = 3600.0
MAX_EXPIRY_S = 86400.0  # a lost controller never leaves a rig curtailed for more than a day
MAX_REASON_CHARS = 200


class ActionKind(enum.StrEnum):
    INTENSITY = "intensity"  # hashing intensity down
    STOP = "stop"  # the device's workload stopped
    ASIC_LIMIT = "asic_limit"  # a miner's power limit lowered
    ASIC_MODE = "asic_mode"  # a miner turned to its low-power mode
    ASIC_SLEEP = "asic_sleep"  # a miner asleep (hash boards off)
    GPU_CAP = "gpu_cap"  # a GPU's power capped over its operator limit


class ActionState(enum.StrEnum):
    APPLYING = "applying"  # sent to the device, not yet answered
    APPLIED = "applied"  # the device accepted it; its effect is not yet seen
    VERIFIED = "verified"  # the device's own reading shows its effect
    NO_EFFECT = "no_effect"  # accepted twice, never took effect: counted failed
    FAILED = "failed"  # the device refused it (or could not be reached)
    GIVEN_BACK = "given_back"  # undone while the curtailment holds: a raised target

    @property
    def accepted(self) -> bool:
        """The device may have changed: the restore undoes it."""
        return self in (ActionState.APPLYING, ActionState.APPLIED, ActionState.VERIFIED,
                        ActionState.NO_EFFECT)

    @property
    def pending(self) -> bool:
        """Sent, and its effect not yet known."""
        return self in (ActionState.APPLYING, ActionState.APPLIED)


@dataclass(slots=True)
class Action:
    device_id: str
    step: str  # the [curtail] order step it belongs to
    kind: ActionKind
    value: Any  # the new intensity, limit (W) or mode; None for stop and sleep
    saving_w: float  # predicted
    from_w: float | None = None  # what the device drew (or was about to draw) when chosen
    state: ActionState = ActionState.APPLYING
    attempts: int = 0
    applied_unix_s: float | None = None  # the latest attempt's answer
    dispatched_unix_s: float | None = None  # the first attempt sent to the device
    error: str = ""  # why it failed, or what the device showed instead of its effect
    round_id: str = ""  # the operation of the round that chose it

    def describe(self) -> str:
        text = {
            ActionKind.INTENSITY: lambda: f"hashing intensity to {self.value:g}",
            ActionKind.STOP: lambda: "workload stopped",
            ActionKind.ASIC_LIMIT: lambda: f"power limit to {self.value:g} W",
            ActionKind.GPU_CAP: lambda: f"power capped at {self.value:g} W",
            ActionKind.ASIC_MODE: lambda: f"{self.value} mode",
            ActionKind.ASIC_SLEEP: lambda: "asleep",
        }[self.kind]()
        return f"{text} (saves ~{self.saving_w:.0f} W)"


@dataclass(slots=True)
class Before:
    """How a device was just before the curtailment first touched it, to put it back exactly."""

    power_w: float | None
    intensity: float | None = None
    asic_limit_w: float | None = None
    asic_mode: str | None = None
    asic_mining: bool | None = None


@dataclass(slots=True)
class Curtailment:
    target_w: float
    deadline_unix_s: float
    expire_unix_s: float
    reason: str
    source: str  # who asked (identity, or "openadr:<event id>")
    operation_id: str  # the operation of its latest round of shedding
    power_before_w: float
    asked_unix_s: float = field(default_factory=time.time)  # the latest Curtail's time
    deadline_s: float = 30.0  # as asked: a rig back above target is shed again within it
    state: CurtailmentState = CurtailmentState.SHEDDING
    below_target_after_s: float | None = None
    shortfall_w: float | None = None
    giving_back: bool = False  # its target was raised: devices are put back while it fits
    dispatched_after_s: float | None = None  # command -> last firmware command of round one
    before: dict[str, Before] = field(default_factory=dict)
    actions: list[Action] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: dict[str, Any]) -> Curtailment:
        data = dict(data)
        before = {k: Before(**v) for k, v in data.pop("before").items()}
        actions = [_action_from_json(a) for a in data.pop("actions")]
        data.pop("created_unix_s", None)  # written by rigd before 0.2: asked_unix_s now
        data["state"] = CurtailmentState(data.get("state", "shedding"))
        return Curtailment(**data, before=before, actions=actions)

    def status(self) -> CurtailmentStatus:
        return CurtailmentStatus(
            self.target_w, self.deadline_unix_s, self.expire_unix_s, self.reason,
            self.operation_id, self.state, self.power_before_w, self.source,
            self.below_target_after_s, self.shortfall_w, self.dispatched_after_s)

    def accepted(self, device_id: str) -> list[Action]:
        """What the device accepted (the restore undoes these, the last first)."""
        return [a for a in self.actions if a.device_id == device_id and a.state.accepted]

    def stopped(self) -> set[str]:
        return {a.device_id for a in self.actions
                if a.kind == ActionKind.STOP and a.state.accepted}

    def intensity(self, device_id: str) -> float | None:
        return next((a.value for a in self.actions if a.device_id == device_id
                     and a.kind == ActionKind.INTENSITY and a.state.accepted), None)


def _action_from_json(data: dict[str, Any]) -> Action:
    data = dict(data)
    if "what" in data:  # written by rigd before 0.2: `what` and `applied`
        data["kind"] = data.pop("what")
        data["state"] = ActionState.APPLIED if data.pop("applied") else ActionState.FAILED
    data["kind"] = ActionKind(data["kind"])
    data["state"] = ActionState(data.get("state", ActionState.APPLIED))
    return Action(**data)


@dataclass(frozen=True, slots=True)
class MinerControls:
    """How a miner can be turned down: a watt range it accepts, its named modes, and the mode
    it runs in (as read)."""

    limit_range_w: tuple[float, float] | None
    modes: tuple[str, ...]
    mode: str | None = None
