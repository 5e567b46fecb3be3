"""The curtailment's planner: pure functions from the rig as it is (and will be) to actions.

A device counts at what it will draw, not only at what it draws this instant: a miner that is
waking or a workload that is starting counts at its full draw, a device whose action has not yet
shown its effect at what that action should leave. A device whose power nobody knows is not
counted (the plan names it). Actions come in the configured order of steps; within a step the
devices that save most come first, so that the fewest devices are touched. `took_effect` judges
an action by the device's own reading.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from agent.runtime.curtail.model import Action, ActionKind, MinerControls
from hal.asic.power import STANDBY_W
from hal.device import Capability, DeviceKind
from rigapi.model import Reading, WorkloadKind, WorkloadState

MARGIN = 0.95  # plan for a little below the target: predictions are only predictions
GPU_IDLE_FRACTION = 0.1  # of the default power limit: what an idle GPU still draws
ASIC_LOW_SAVING = 0.25  # a miner's low-power mode saves about a quarter
ASIC_LIMIT_FLOOR = 0.5  # of its present draw: as low as a miner's power limit is taken
ASLEEP_FRACTION = 0.2  # asleep: at most this share of its draw before (or STANDBY_W x 4)
LIMIT_TOLERANCE = 1.05  # a limit has taken effect once the draw is within 5% of it
INTENSITY_TOLERANCE = 0.01


Make = Callable[[ActionKind, object, float], Action]  # an action on the device in view


@dataclass(frozen=True, slots=True)
class DeviceView:
    """One device as the planner sees it."""

    device_id: str
    kind: DeviceKind
    capabilities: frozenset[Capability]
    reading: Reading
    expected_w: float | None  # what it will draw: its reading, or more while it ramps up
    controls: MinerControls | None = None  # a miner's watt range and modes
    mode: str | None = None  # a miner's mode before the curtailment touched it
    done: frozenset[ActionKind] = frozenset()  # taken on it already, whatever came of it
    pending_saving_w: float | None = None  # its actions' predicted saving while unverified


@dataclass(frozen=True, slots=True)
class Plan:
    actions: list[Action]
    projected_w: float  # the rig's draw once the actions have taken effect
    uncounted: tuple[str, ...] = field(default=())  # devices whose power nobody knows


def projected_w(views: Iterable[DeviceView]) -> tuple[float, tuple[str, ...]]:
    """What the rig will draw once what is under way has shown its effect, and the devices it
    cannot count."""
    total = 0.0
    unknown = []
    for view in views:
        if view.expected_w is None:
            unknown.append(view.device_id)
        elif view.pending_saving_w is not None:
            total += max(_floor_w(view), view.expected_w - view.pending_saving_w)
        else:
            total += view.expected_w
    return total, tuple(unknown)


def plan(views: Sequence[DeviceView], target_w: float, order: Sequence[str],
         min_intensity: float) -> Plan:
    """The actions that bring the projected draw below the target (with a margin), in order;
    none when it is below already."""
    projected, unknown = projected_w(views)
    chosen: list[Action] = []
    if projected > target_w:
        for action in candidates(views, order, min_intensity):
            if projected <= target_w * MARGIN:
                break
            chosen.append(action)
            projected -= action.saving_w
    return Plan(at_once(chosen), projected, unknown)


def candidates(views: Sequence[DeviceView], order: Sequence[str], min_intensity: float
               ) -> list[Action]:
    """Every action the order allows, step by step; within a step the devices that save most
    come first, each device's actions in their own order (a miner turned down before it is put
    to sleep). A device whose last action has not shown its effect yet gets no new one."""
    actions: list[Action] = []
    for step in order:
        per_device = []
        for view in views:
            if view.expected_w is None or view.pending_saving_w is not None:
                continue
            own = [a for a in _step_actions(step, view, min_intensity)
                   if a.kind not in view.done and a.saving_w > 0]
            if own:
                per_device.append(own)
        per_device.sort(key=lambda own: -sum(a.saving_w for a in own))
        actions += [a for own in per_device for a in own]
    return actions


def at_once(chosen: list[Action]) -> list[Action]:
    """A device chosen to be turned down and then stopped (or put to sleep) in one round is
    stopped at once: one write, not two (an Antminer restarts its miner for each mode change),
    the saving of the other actions folded into it."""
    final = {a.device_id: a for a in chosen if a.kind in (ActionKind.ASIC_SLEEP, ActionKind.STOP)}
    kept = []
    for action in chosen:
        strongest = final.get(action.device_id)
        if strongest is not None and action is not strongest:
            strongest.saving_w += action.saving_w
        else:
            kept.append(action)
    return kept


def _step_actions(step: str, view: DeviceView, min_intensity: float) -> list[Action]:
    power = view.expected_w
    assert power is not None
    t, status = view.reading.telemetry, view.reading.workload
    working = status is not None and status.state in (WorkloadState.RUNNING,
                                                      WorkloadState.STARTING)
    idle_w = _idle_w(view)

    def action(kind: ActionKind, value: object, saving_w: float) -> Action:
        return Action(view.device_id, step, kind, value, max(0.0, saving_w), from_w=power)

    if step == "hashing_intensity" and working and status is not None \
            and status.kind == WorkloadKind.HASHING:
        intensity = status.intensity or 1.0
        if intensity > min_intensity:
            return [action(ActionKind.INTENSITY, min_intensity,
                           (power - idle_w) * (1 - min_intensity / intensity))]
    if step == "hashing_stop":
        if working and status is not None and status.kind == WorkloadKind.HASHING:
            return [action(ActionKind.STOP, None, power - idle_w)]
        if view.kind == DeviceKind.ASIC:
            return _asic_actions(view, power, action)
    if step == "gpu_power_limit" and view.kind == DeviceKind.GPU and t.gpu is not None \
            and t.gpu.power_limit_min_w is not None and power > t.gpu.power_limit_min_w:
        return [action(ActionKind.GPU_CAP, t.gpu.power_limit_min_w,
                       power - t.gpu.power_limit_min_w)]
    if step == "inference_stop" and working and status is not None \
            and status.kind == WorkloadKind.INFERENCE:
        return [action(ActionKind.STOP, None, power - idle_w)]
    return []


def _asic_actions(view: DeviceView, power: float, action: Make) -> list[Action]:
    """Turned down first (a lower power limit, or its low mode unless it runs in it already),
    then asleep. A miner this curtailment put to sleep is left alone; one that hashes nothing
    (asleep by hand, or not yet waking) is only put to sleep."""
    if ActionKind.ASIC_SLEEP in view.done:
        return []
    actions = []
    controls = view.controls
    t = view.reading.telemetry
    hashing = (t.asic is not None and t.asic.is_mining is True) or power > (t.power_w or 0.0)
    if hashing and controls is not None and controls.limit_range_w is not None \
            and Capability.SET_POWER_LIMIT in view.capabilities:
        # An API's range may reach far below what hash boards can run at (Whatsminer takes
        # 1 W): aim no lower than half the present draw.
        floor = max(controls.limit_range_w[0], ASIC_LIMIT_FLOOR * power)
        if floor < power:
            actions.append(action(ActionKind.ASIC_LIMIT, round(floor), power - floor))
    if hashing and not actions and controls is not None and "low" in controls.modes \
            and view.mode != "low":
        actions.append(action(ActionKind.ASIC_MODE, "low", power * ASIC_LOW_SAVING))
    if Capability.SLEEP_WAKE in view.capabilities:
        first = actions[0].saving_w if actions else 0.0
        actions.append(action(ActionKind.ASIC_SLEEP, None, power - STANDBY_W - first))
    return actions


def _idle_w(view: DeviceView) -> float:
    t = view.reading.telemetry
    if view.kind == DeviceKind.GPU and t.gpu is not None \
            and t.gpu.power_limit_default_w is not None:
        return GPU_IDLE_FRACTION * t.gpu.power_limit_default_w
    return 0.0


def _floor_w(view: DeviceView) -> float:
    """The least a device draws whatever is done to it."""
    if view.kind == DeviceKind.ASIC:
        return STANDBY_W
    return _idle_w(view)


def took_effect(action: Action, reading: Reading) -> str:
    """Why the device's own reading does not show the action's effect ("" once it does)."""
    t, status = reading.telemetry, reading.workload
    power = t.power_w
    if reading.error:
        return f"no reading: {reading.error}"
    if action.kind == ActionKind.STOP:
        if status is None or status.state in (WorkloadState.STOPPED, WorkloadState.FAILED):
            return ""
        return f"its workload is still {status.state}"
    if action.kind == ActionKind.INTENSITY:
        if status is not None and status.intensity is not None \
                and abs(status.intensity - float(action.value)) <= INTENSITY_TOLERANCE:
            return ""
        return f"hashing intensity reads {status.intensity if status else None}"
    if power is None:
        return "it reports no power"
    if action.kind == ActionKind.ASIC_SLEEP:
        asleep_w = max(STANDBY_W * 4, ASLEEP_FRACTION * (action.from_w or power))
        mining = t.asic.is_mining if t.asic is not None else None
        if power <= asleep_w and mining is not True:
            return ""
        return f"still {'mining, ' if mining else ''}drawing {power:.0f} W"
    if action.kind in (ActionKind.ASIC_LIMIT, ActionKind.GPU_CAP):
        limit = float(action.value)
        if t.power_limit_w is not None and t.power_limit_w > limit + 1:
            return f"its power limit reads {t.power_limit_w:g} W"
        if power <= limit * LIMIT_TOLERANCE:
            return ""
        return f"drawing {power:.0f} W over a {limit:g} W limit"
    if action.kind == ActionKind.ASIC_MODE:
        if action.from_w is None or power <= action.from_w * (1 - ASIC_LOW_SAVING / 2):
            return ""
        return f"still drawing {power:.0f} W (was {action.from_w:.0f} W)"
    return ""
