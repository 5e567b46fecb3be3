"""Curtail the rig to a watt target by a deadline, and restore it exactly when the curtailment ends.

The plan sheds load in a configurable order of steps (default: hashing intensity down; hashing
stopped, with miners turned down and then put to sleep, or straight to sleep when one round needs
both; GPU power limits lowered; inference stopped last, so serving keeps its SLA as long as
possible). It picks actions greedily from the predicted saving of each, applies them in parallel
across devices, then confirms from telemetry: CONFIRMED once the rig reads below target, with the
time it took. When the prediction falls short it escalates to the next actions; when nothing is left
it says by how many watts the target is missed and why. A confirmed curtailment holds: a rig that
reads above its target again for settle_s (a miner woken by hand, a rig still ramping back up when
it first read below) is shed further in a new operation. What every device ran and how it was set is
recorded just before the curtailment first touches it; expiry or CancelCurtailment puts each back
exactly, asking a device that does not answer again before giving up on it. The curtailment is
journaled: a restarted rigd keeps it until its expiry.

A second Curtail while one is in force replaces it (target, deadline, expiry, reason): what is
already shed stays shed, more is shed if the new target needs it. Raising a target (giving load
back) is CancelCurtailment and a new Curtail. While a curtailment holds, a switch may stop a
workload but not start one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import structlog

from agent.config import CURTAIL_STEPS, Config
from agent.core.power import rig_power
from agent.runtime.operations import Operations
from agent.runtime.powerwrite import PowerWriter
from agent.runtime.sampler import Sampler
from agent.runtime.workloads import WorkloadError
from agent.runtime.workloads.manager import WorkloadManager
from hal.device import Capability, Device, DeviceKind
from hal.errors import HalError
from rigapi.model import (
    CurtailmentState,
    CurtailmentStatus,
    DeviceOutcome,
    Operation,
    OperationState,
    Phase,
    RigPower,
    WorkloadKind,
    WorkloadSpec,
    WorkloadState,
)

log = structlog.get_logger("rigd.curtail")

CONFIRM_POLL_S = 0.2
STEADY_POLLS = 4  # power no longer falling over this many polls (0.6 s): shed more
STEADY_FRACTION = 0.005
MARGIN = 0.95  # plan for a little below the target: predictions are only predictions
GPU_IDLE_FRACTION = 0.1  # of the default power limit: what an idle GPU still draws
ASIC_LOW_SAVING = 0.25  # a miner's low-power mode saves about a quarter
ASIC_LIMIT_FLOOR = 0.5  # of its present draw: as low as a miner's power limit is taken
ASIC_STANDBY_W = 15.0
RESTORE_ATTEMPTS = 3  # a miner that does not answer the wake command at once is asked again
RESTORE_RETRY_S = 2.0  # times the attempt number


class CurtailRefused(Exception):
    """`code` names the gRPC status."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(slots=True)
class Action:
    device_id: str
    step: str
    what: str  # intensity | stop | asic_limit | asic_mode | asic_sleep | gpu_cap
    value: Any  # the new intensity, limit or mode
    saving_w: float  # predicted
    applied: bool = False
    error: str = ""

    def describe(self) -> str:
        if self.what == "intensity":
            text = f"hashing intensity to {self.value:g}"
        elif self.what in ("asic_limit", "gpu_cap"):
            text = f"power limit to {self.value:g} W"
        elif self.what == "asic_mode":
            text = f"{self.value} mode"
        else:
            text = {"stop": "workload stopped", "asic_sleep": "asleep"}[self.what]
        return f"{text} (saves ~{self.saving_w:.0f} W)"


@dataclass(slots=True)
class Before:
    """How a device was, to put it back exactly."""

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
    operation_id: str
    power_before_w: float
    created_unix_s: float = field(default_factory=time.time)
    deadline_s: float = 30.0  # as asked: a rig back above target is shed again within it
    state: str = "shedding"  # shedding | confirmed | target_not_met
    below_target_after_s: float | None = None
    shortfall_w: float | None = None
    before: dict[str, Before] = field(default_factory=dict)
    actions: list[Action] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: dict[str, Any]) -> Curtailment:
        before = {k: Before(**v) for k, v in data.pop("before").items()}
        actions = [Action(**a) for a in data.pop("actions")]
        return Curtailment(**data, before=before, actions=actions)

    def status(self) -> CurtailmentStatus:
        return CurtailmentStatus(
            self.target_w, self.deadline_unix_s, self.expire_unix_s, self.reason,
            self.operation_id, CurtailmentState(self.state), self.power_before_w, self.source,
            self.below_target_after_s, self.shortfall_w)

    def stopped(self) -> set[str]:
        return {a.device_id for a in self.actions if a.what == "stop" and a.applied}

    def intensity(self, device_id: str) -> float | None:
        return next((a.value for a in self.actions
                     if a.device_id == device_id and a.what == "intensity" and a.applied), None)


@dataclass(frozen=True, slots=True)
class MinerControls:
    """How a miner can be turned down: a watt range it accepts, its named modes."""

    limit_range_w: tuple[float, float] | None
    modes: tuple[str, ...]


class Curtailer:
    def __init__(self, config: Config, devices: dict[str, Device], sampler: Sampler,
                 manager: WorkloadManager, operations: Operations, power: PowerWriter) -> None:
        self.config = config
        self.devices = devices
        self.sampler = sampler
        self.manager = manager
        self.ops = operations
        self.power = power
        self.current: Curtailment | None = None
        self._expiry: asyncio.Task[None] | None = None
        self._restoring: asyncio.Task[None] | None = None
        self._hold: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one curtail, replace or restore at a time

    # -- asking ------------------------------------------------------------------------------

    def check(self, target_w: float, deadline_s: float, expiry_s: float, reason: str) -> None:
        if not math.isfinite(target_w) or target_w <= 0:
            raise CurtailRefused("INVALID_ARGUMENT",
                                 f"rig_power_target_w must be a positive number of watts, got "
                                 f"{target_w!r}")
        if not 1 <= deadline_s <= 3600:
            raise CurtailRefused("INVALID_ARGUMENT", "deadline_s must be within 1 .. 3600")
        if not 1 <= expiry_s <= 86400:
            raise CurtailRefused("INVALID_ARGUMENT", "expiry_s must be within 1 .. 86400")
        if expiry_s < deadline_s:
            raise CurtailRefused("INVALID_ARGUMENT",
                                 f"expiry_s ({expiry_s:g}) must not come before deadline_s "
                                 f"({deadline_s:g})")
        if len(reason) > 200:
            raise CurtailRefused("INVALID_ARGUMENT", "reason: at most 200 characters")
        current = self.current
        if current is not None and target_w > current.target_w:
            raise CurtailRefused("FAILED_PRECONDITION", (
                f"a curtailment to {current.target_w:g} W is in force ({current.operation_id}); "
                f"a higher target gives load back: CancelCurtailment, then Curtail again"))

    async def curtail(self, target_w: float, deadline_s: float, expiry_s: float, reason: str,
                      source: str) -> Operation:
        """Start (or replace) a curtailment; returns its operation at once."""
        if self._restoring is not None and not self._restoring.done():
            await asyncio.shield(self._restoring)  # the restore finishes first: a fresh start
        self.check(target_w, deadline_s, expiry_s, reason)
        now = time.time()
        op = self.ops.create("curtail", [])
        power = await self.rig_power()
        op.detail = f"target {target_w:g} W ({reason or 'no reason given'}); rig at " \
                    f"{power.total_w:.0f} W"
        if self.current is None:
            self.current = Curtailment(target_w, now + deadline_s, now + expiry_s, reason,
                                       source, op.operation_id, power.total_w,
                                       deadline_s=deadline_s)
        else:  # replace: what is shed stays shed
            self.current = dataclasses.replace(
                self.current, target_w=target_w, deadline_unix_s=now + deadline_s,
                expire_unix_s=now + expiry_s, reason=reason, source=source,
                operation_id=op.operation_id, state="shedding", below_target_after_s=None,
                shortfall_w=None, deadline_s=deadline_s)
        self._journal()
        self._arm_expiry()
        self.ops.run(op, self._shed(op, self.current, power, started=time.monotonic()))
        log.info("curtail_started", operation_id=op.operation_id, target_w=target_w,
                 rig_w=power.total_w, deadline_s=deadline_s, expiry_s=expiry_s, source=source)
        return op

    async def cancel(self, why: str = "cancelled") -> Operation | None:
        """Lift the curtailment now: every device back as it was. None if none is in force
        (or its restore already runs)."""
        if self.current is None or (self._restoring is not None and not self._restoring.done()):
            return None
        return self._start_restore(why)

    # -- power ---------------------------------------------------------------------------------

    async def rig_power(self, max_age_s: float = 0.5) -> RigPower:
        return rig_power((await self.sampler.latest(max_age_s=max_age_s)).values())

    async def _rig_power_now(self, c: Curtailment) -> RigPower:
        """The rig with the devices this curtailment acts on read afresh (theirs is the power
        that changes), the others at the sampler's own pace: a fleet of miners is not polled
        five times a second while some of them are turned down."""
        readings = await self.sampler.latest()
        acted_on = list(dict.fromkeys(a.device_id for a in c.actions))
        if acted_on:
            readings.update(await self.sampler.latest(acted_on, max_age_s=CONFIRM_POLL_S / 2))
        return rig_power(readings.values())

    # -- shedding ------------------------------------------------------------------------------

    def _lifting(self) -> bool:
        return self._restoring is not None and not self._restoring.done()

    def _superseded(self, c: Curtailment) -> str:
        """Why shedding for `c` stops short ("" if it goes on): replaced, or being lifted."""
        if self._lifting() or self.current is None:
            return "the curtailment is lifted"
        if self.current is not c:
            return f"replaced by {self.current.operation_id}"
        return ""

    async def _shed(self, op: Operation, c: Curtailment, power: RigPower,
                    started: float) -> None:
        async with self._lock:
            superseded = self._superseded(c)  # e.g. cancelled while this waited for the lock
            if superseded:
                op.detail += f"; nothing shed: {superseded}"
                self.ops.finish(op)
                return
            self.ops.begin(op, "", Phase.SHEDDING, f"rig at {power.total_w:.0f} W "
                           f"(measured {power.measured_w:.0f} + estimated "
                           f"{power.estimated_w:.0f}); target {c.target_w:g} W")
            readings = await self.sampler.latest(max_age_s=0.5)
            # A device this curtailment has not touched yet is put back as it is now, not as
            # it was when the curtailment began: someone may have changed it since.
            touched = {a.device_id for a in c.actions}
            fresh = [d for d in readings if d not in touched]
            # firmware calls, a miner each (its mode, its limits): all at once, off the loop
            befores, controls = await asyncio.gather(
                asyncio.gather(*(self._before(d, readings[d]) for d in fresh)),
                self._miner_controls(readings))
            c.before.update(zip(fresh, befores, strict=True))
            candidates = self._candidates(c, readings, controls)
            predicted = power.total_w
            while True:
                chosen, predicted = self._choose(candidates, predicted, c.target_w)
                chosen = self._sleep_at_once(chosen)
                # Watched while the actions run: a rig below target is confirmed then, not when
                # the slowest miner's firmware has answered.
                applying = asyncio.ensure_future(self._apply(op, c, chosen))
                try:
                    below = await self._confirm(c, started, applying)
                finally:
                    await applying
                if chosen:
                    self._journal()
                if below is not None:
                    c.state, c.below_target_after_s = "confirmed", below
                    self.ops.begin(op, "", Phase.CONFIRMED,
                                   f"below {c.target_w:g} W {below:.1f} s after the command")
                    break
                superseded = self._superseded(c)
                if superseded:  # no more shedding for a target nobody asks for any more
                    op.detail += f"; stopped shedding: {superseded}"
                    break
                if not candidates or time.time() >= c.deadline_unix_s:
                    await self._missed(op, c)
                    break
                predicted = (await self._rig_power_now(c)).total_w  # escalate from the reading
            for device_id in op.device_ids:
                if op.outcomes[device_id].state == OperationState.RUNNING:
                    self.ops.settle(op, device_id, OperationState.SUCCEEDED)
            if not superseded:
                self._journal()
            missed = c.state != "confirmed" and not superseded
            self.ops.finish(op, op.error if missed else "", failed=missed)
            if c.state == "confirmed" and self.current is c:
                self._start_hold(c)

    def _start_hold(self, c: Curtailment) -> None:
        if self._hold is not None and self._hold is not asyncio.current_task():
            self._hold.cancel()
        self._hold = asyncio.create_task(self._keep_below(c), name="curtailment-hold")

    async def _keep_below(self, c: Curtailment) -> None:
        """A confirmed curtailment holds: a rig that reads above its target again for settle_s
        (a miner woken by hand, a rig still ramping back up when it read below target) is shed
        again, in a new operation, as a Curtail with the same target would."""
        interval_s = self.config.telemetry_interval_s
        above_since: float | None = None
        while True:
            await asyncio.sleep(interval_s)
            if self._superseded(c):
                return
            power = await self.rig_power(max_age_s=2 * interval_s)  # the sampler's own
            if power.total_w <= c.target_w:
                above_since = None
                continue
            now = time.monotonic()
            above_since = now if above_since is None else above_since
            expiry_s = c.expire_unix_s - time.time()
            if now - above_since < self.config.curtail_settle_s or expiry_s < 1 \
                    or self._superseded(c):
                continue
            log.warning("curtail_rig_above_target", operation_id=c.operation_id,
                        rig_w=round(power.total_w), target_w=c.target_w,
                        for_s=round(now - above_since, 1))
            try:
                op = await self.curtail(c.target_w, max(1.0, min(c.deadline_s, expiry_s)),
                                        expiry_s, c.reason, c.source)
            except CurtailRefused as exc:  # e.g. lifted meanwhile
                log.warning("curtail_hold_refused", error=str(exc))
                return
            op.detail = f"the rig read above target again for {now - above_since:.0f} s; " \
                        + op.detail
            self.ops.changed(op)
            return

    async def _missed(self, op: Operation, c: Curtailment) -> None:
        power = await self._rig_power_now(c)
        c.state, c.shortfall_w = "target_not_met", power.total_w - c.target_w
        unknown = f"; no reading from {', '.join(power.unknown_device_ids)}" \
            if power.unknown_device_ids else ""
        failed = [f"{a.device_id}: {a.error}" for a in c.actions if a.error]
        why = ("everything the order allows is shed" if not failed
               else "some actions failed: " + "; ".join(failed))
        op.error = (f"target {c.target_w:g} W not met: the rig reads {power.total_w:.0f} W, "
                    f"{c.shortfall_w:.0f} W above ({why}{unknown})")
        self.ops.begin(op, "", Phase.FAILED, op.error)

    async def _confirm(self, c: Curtailment, started: float, applying: asyncio.Future[None]
                       ) -> float | None:
        """Seconds from the command to a reading below target; None once the actions are done
        and the rig's power has stopped falling above the target (escalate), or at settle_s
        after them or the deadline."""
        settle_until: float | None = None
        recent: list[float] = []
        while True:
            power = await self._rig_power_now(c)
            if power.total_w <= c.target_w:
                return time.monotonic() - started
            if not applying.done():  # still shedding: not yet a reason to shed more
                await asyncio.wait({applying}, timeout=CONFIRM_POLL_S)
                continue
            if settle_until is None:
                settle_until = min(c.deadline_unix_s, time.time() + self.config.curtail_settle_s)
            recent = [*recent[-(STEADY_POLLS - 1):], power.total_w]
            steady = len(recent) == STEADY_POLLS and \
                recent[0] - recent[-1] < STEADY_FRACTION * recent[0]
            if steady or time.time() >= settle_until:
                log.info("curtail_escalates", rig_w=round(power.total_w), target_w=c.target_w,
                         steady=steady)
                return None
            await asyncio.sleep(CONFIRM_POLL_S)

    async def _before(self, device_id: str, reading: Any) -> Before:
        device = self.devices[device_id]
        before = Before(power_w=reading.telemetry.power_w)
        status = reading.workload
        desired = self.manager.current_spec(device_id).hashing
        if status is not None and status.kind == WorkloadKind.HASHING:
            before.intensity = desired.intensity if desired is not None else status.intensity
        if device.kind == DeviceKind.ASIC:
            asic = reading.telemetry.asic
            before.asic_mining = asic.is_mining if asic else None
            before.asic_limit_w = reading.telemetry.power_limit_w
            mode = getattr(device, "power_mode", None)
            if mode is not None:
                with contextlib.suppress(HalError):
                    before.asic_mode = await asyncio.to_thread(mode)
        return before

    async def _miner_controls(self, readings: dict[str, Any]) -> dict[str, MinerControls]:
        """What each mining ASIC can be turned down with, read from every miner at once."""
        ids = [d for d, r in readings.items() if self.devices[d].kind == DeviceKind.ASIC
               and r.telemetry.asic is not None and r.telemetry.asic.is_mining]
        found = await asyncio.gather(*(asyncio.to_thread(_read_controls, self.devices[d])
                                       for d in ids))
        return dict(zip(ids, found, strict=True))

    def _candidates(self, c: Curtailment, readings: dict[str, Any],
                    controls: dict[str, MinerControls]) -> list[Action]:
        """Every action the order allows, step by step; within a step the devices that save
        most come first (the fewest devices are touched), each device's actions in their own
        order (a miner turned down before it is put to sleep)."""
        done = {(a.device_id, a.what) for a in c.actions}
        order = [s for s in self.config.curtail_order if s in CURTAIL_STEPS]
        actions: list[Action] = []
        for step in order:
            per_device = []
            for device_id, reading in readings.items():
                mode = c.before[device_id].asic_mode if device_id in c.before else None
                own = [a for a in self._step_actions(step, device_id, reading, controls, mode)
                       if (a.device_id, a.what) not in done and a.saving_w > 0]
                if own:
                    per_device.append(own)
            per_device.sort(key=lambda own: -sum(a.saving_w for a in own))
            actions += [a for own in per_device for a in own]
        return actions

    def _step_actions(self, step: str, device_id: str, reading: Any,
                      controls: dict[str, MinerControls], mode: str | None) -> list[Action]:
        device, t = self.devices[device_id], reading.telemetry
        status = reading.workload
        power = t.power_w or 0.0
        running = status is not None and status.state == WorkloadState.RUNNING
        idle_w = self._idle_w(device, t)
        if step == "hashing_intensity" and running and status.kind == WorkloadKind.HASHING:
            low = self.config.curtail_min_intensity
            if (status.intensity or 1.0) > low:
                saving = (power - idle_w) * (1 - low / (status.intensity or 1.0))
                return [Action(device_id, step, "intensity", low, max(0.0, saving))]
        if step == "hashing_stop":
            if running and status.kind == WorkloadKind.HASHING:
                return [Action(device_id, step, "stop", None, max(0.0, power - idle_w))]
            if device_id in controls:
                return self._asic_actions(device, power, step, controls[device_id], mode)
        if step == "gpu_power_limit" and device.kind == DeviceKind.GPU and t.gpu is not None \
                and t.gpu.power_limit_min_w is not None and power > t.gpu.power_limit_min_w:
            return [Action(device_id, step, "gpu_cap", t.gpu.power_limit_min_w,
                           power - t.gpu.power_limit_min_w)]
        if step == "inference_stop" and running and status.kind == WorkloadKind.INFERENCE:
            return [Action(device_id, step, "stop", None, max(0.0, power - idle_w))]
        return []

    @staticmethod
    def _asic_actions(device: Device, power: float, step: str, controls: MinerControls,
                      mode: str | None) -> list[Action]:
        """Turned down first (a lower power limit, or its low mode unless it runs in it
        already), then asleep."""
        actions = []
        if controls.limit_range_w is not None:
            # An API's range may reach far below what hash boards can run at (Whatsminer
            # takes 1 W): aim no lower than half the present draw.
            floor = max(controls.limit_range_w[0], ASIC_LIMIT_FLOOR * power)
            if floor < power:
                actions.append(Action(device.id, step, "asic_limit", round(floor),
                                      power - floor))
        if not actions and "low" in controls.modes and mode != "low":
            actions.append(Action(device.id, step, "asic_mode", "low", power * ASIC_LOW_SAVING))
        if Capability.SLEEP_WAKE in device.capabilities:
            first = actions[0].saving_w if actions else 0.0
            actions.append(Action(device.id, step, "asic_sleep", None,
                                  max(0.0, power - ASIC_STANDBY_W - first)))
        return actions

    @staticmethod
    def _idle_w(device: Device, t: Any) -> float:
        if device.kind == DeviceKind.GPU and t.gpu is not None \
                and t.gpu.power_limit_default_w is not None:
            return GPU_IDLE_FRACTION * t.gpu.power_limit_default_w
        return 0.0

    @staticmethod
    def _choose(candidates: list[Action], predicted_w: float, target_w: float
                ) -> tuple[list[Action], float]:
        """Take actions in order until the predicted power is below target (with a margin)."""
        chosen = []
        while candidates and predicted_w > target_w * MARGIN:
            action = candidates.pop(0)
            chosen.append(action)
            predicted_w -= action.saving_w
        return chosen, predicted_w

    @staticmethod
    def _sleep_at_once(chosen: list[Action]) -> list[Action]:
        """A miner chosen to be turned down and put to sleep in one round goes to sleep at
        once: one firmware write, not two (an Antminer restarts its miner for each)."""
        sleeps = {a.device_id: a for a in chosen if a.what == "asic_sleep"}
        kept = []
        for action in chosen:
            if action.what in ("asic_limit", "asic_mode") and action.device_id in sleeps:
                sleeps[action.device_id].saving_w += action.saving_w
            else:
                kept.append(action)
        return kept

    async def _apply(self, op: Operation, c: Curtailment, actions: list[Action]) -> None:
        """Every chosen action at once, each device's in order (a miner turned down, then put
        to sleep)."""
        by_device: dict[str, list[Action]] = {}
        for action in actions:
            by_device.setdefault(action.device_id, []).append(action)
            c.actions.append(action)
            if action.device_id not in op.device_ids:
                op.device_ids.append(action.device_id)
                op.outcomes[action.device_id] = DeviceOutcome(action.device_id)
                self.power.held[action.device_id] = op.operation_id

        async def one(device_id: str, device_actions: list[Action]) -> None:
            for action in device_actions:
                self.ops.begin(op, device_id, Phase.SHEDDING, action.describe())
                try:
                    await self._do(op, action)
                    action.applied = True
                    log.info("curtail_action", operation_id=op.operation_id,
                             device_id=device_id, action=action.describe(),
                             before=asdict(c.before[device_id]) if device_id in c.before
                             else None)
                except (HalError, WorkloadError) as exc:
                    action.error = str(exc)
                    self.ops.note(op, device_id, f"{action.describe()}: failed: {exc}")
                    log.warning("curtail_action_failed", device_id=device_id,
                                action=action.what, error=str(exc))
                self.ops.end(op, device_id)

        await asyncio.gather(*(one(d, a) for d, a in by_device.items()))

    async def _do(self, op: Operation, action: Action) -> None:
        device = self.devices[action.device_id]
        if action.what == "intensity":
            workload = self.manager.running.get(action.device_id)
            if workload is None or not hasattr(workload, "set_intensity"):
                raise WorkloadError("no hashing workload runs there any more")
            workload.set_intensity(action.value)
        elif action.what == "stop":
            await self.manager.drain(action.device_id)
            await self.manager.stop(action.device_id)
        elif action.what == "asic_limit":
            await self.power.write(device, device.set_power_limit, action.value)
        elif action.what == "asic_mode":
            await self.power.write(device, device.set_power_mode,
                                   action.value)
        elif action.what == "asic_sleep":
            await self.power.write(device, device.sleep)
        elif action.what == "gpu_cap":
            await self.power.write(device, device.set_power_cap,
                                   action.value)

    # -- restoring -----------------------------------------------------------------------------

    def _start_restore(self, why: str) -> Operation:
        c = self.current
        assert c is not None
        devices = sorted({a.device_id for a in c.actions if a.applied})
        op = self.ops.create("restore_curtailment", devices)
        op.detail = f"{why}: curtailment {c.operation_id} to {c.target_w:g} W lifted"
        if self._expiry is not None and self._expiry is not asyncio.current_task():
            self._expiry.cancel()
        if self._hold is not None and self._hold is not asyncio.current_task():
            self._hold.cancel()
        self._restoring = self.ops.run(op, self._restore(op, c))
        return op

    async def _restore(self, op: Operation, c: Curtailment) -> None:
        async with self._lock:
            by_device: dict[str, list[Action]] = {}
            for action in c.actions:
                if action.applied:
                    by_device.setdefault(action.device_id, []).append(action)

            async def one(device_id: str, actions: list[Action]) -> None:
                self.ops.begin(op, device_id, Phase.STARTING,
                               "put back: " + ", ".join(a.what for a in actions))
                done: list[str] = []
                for attempt in range(1, RESTORE_ATTEMPTS + 1):
                    try:
                        await self._undo(device_id, actions, c.before.get(device_id), done)
                        break
                    except (HalError, WorkloadError) as exc:
                        log.warning("curtail_put_back_failed", operation_id=op.operation_id,
                                    device_id=device_id, attempt=attempt, error=str(exc))
                        if attempt == RESTORE_ATTEMPTS:
                            self.power.held.pop(device_id, None)
                            self.ops.settle(op, device_id, OperationState.FAILED,
                                            "; ".join([*done, f"{exc} (tried {attempt} times)"]),
                                            Phase.FAILED)
                            return
                        self.ops.note(op, device_id, f"attempt {attempt} failed: {exc}")
                        await asyncio.sleep(RESTORE_RETRY_S * attempt)
                detail = "; ".join(done) or "nothing to put back"
                self.ops.note(op, device_id, detail)
                log.info("curtail_put_back", operation_id=op.operation_id, device_id=device_id,
                         detail=detail)
                self.power.held.pop(device_id, None)
                self.ops.settle(op, device_id, OperationState.SUCCEEDED)

            try:
                await asyncio.gather(*(one(d, a) for d, a in by_device.items()))
            finally:  # even after a bug: a curtailment whose restore ran never holds again
                self.current = None
                self.manager.journal.update(curtailment=None)
            self.ops.finish(op)
            log.info("curtail_restored", operation_id=op.operation_id, state=str(op.state))

    async def _undo(self, device_id: str, actions: list[Action], before: Before | None,
                    done: list[str]) -> None:
        """Each action undone, the last first; what is undone is no longer `applied`, so a
        second attempt after a failure goes on where the first stopped. Says what it did in
        `done`."""
        device = self.devices[device_id]
        for action in reversed(actions):
            if not action.applied:
                continue
            if action.what == "intensity" and before is not None \
                    and before.intensity is not None:
                workload = self.manager.running.get(device_id)
                if workload is not None and hasattr(workload, "set_intensity"):
                    workload.set_intensity(before.intensity)
                    done.append(f"intensity back to {before.intensity:g}")
            elif action.what == "stop":
                spec = self.manager.current_spec(device_id)
                if spec.kind != WorkloadKind.IDLE:
                    if device_id not in self.manager.running:  # not started by an attempt
                        await self.manager.start(device_id, spec)
                    done.append(await self.manager.wait_ready(device_id, spec))
            elif action.what == "gpu_cap":
                await self.power.write(device, device.set_power_cap, None)
                done.append("power cap lifted")
            elif action.what == "asic_sleep":
                if before is None or before.asic_mining is not False:
                    await self.power.write(device, device.wake)
                    done.append("awake")
                    turned_down = any(a.what in ("asic_mode", "asic_limit") for a in actions)
                    if before is not None and before.asic_mode and not turned_down:
                        # its wake may not bring its mode back (an Antminer wakes in normal)
                        mode = await asyncio.to_thread(device.power_mode)
                        if mode != before.asic_mode:
                            await self.power.write(device, device.set_power_mode,
                                                   before.asic_mode)
                            done.append(f"{before.asic_mode} mode")
            elif action.what == "asic_mode":
                mode = before.asic_mode if before and before.asic_mode else "normal"
                await self.power.write(device, device.set_power_mode,
                                       mode)
                done.append(f"{mode} mode")
            elif action.what == "asic_limit" and device_id not in self.power.pending \
                    and before is not None:  # (an operator's pending limit is applied below)
                if before.asic_mode:  # the firmware's own setting: its named profile
                    await self.power.write(device, device.set_power_mode,
                                           before.asic_mode)
                    done.append(f"{before.asic_mode} profile")
                elif before.asic_limit_w is not None:
                    await self.power.write(device, device.set_power_limit, before.asic_limit_w)
                    done.append(f"power limit {before.asic_limit_w:g} W")
            action.applied = False
        pending = self.power.pending.get(device_id)
        if pending is not None:  # an operator's limit set while the miner was held
            await self.power.write(device, device.set_power_limit, pending)
            self.power.take_pending(device_id)
            done.append(f"operator's power limit {pending:g} W")

    # -- expiry, journal, restart ----------------------------------------------------------------

    def _arm_expiry(self) -> None:
        c = self.current
        assert c is not None
        if self._expiry is not None:
            self._expiry.cancel()

        async def expire() -> None:
            await asyncio.sleep(max(0.0, c.expire_unix_s - time.time()))
            if self.current is c and (self._restoring is None or self._restoring.done()):
                self._start_restore("expired")

        self._expiry = asyncio.create_task(expire(), name="curtailment-expiry")

    def _journal(self) -> None:
        c = self.current
        self.manager.journal.update(curtailment=c.to_json() if c else None)

    def recover(self) -> None:
        """At start, before workloads come back: a journaled curtailment holds again."""
        data = self.manager.journal.get("curtailment")
        if not data:
            return
        c = Curtailment.from_json(dict(data))
        self.current = c
        for action in c.actions:
            if action.applied:
                self.power.held[action.device_id] = c.operation_id
        log.warning("curtailment_recovered", operation_id=c.operation_id, target_w=c.target_w,
                    expires_in_s=round(c.expire_unix_s - time.time()))

    async def resume(self) -> None:
        """After the restore: caps live in device drivers' memory only, so set them again;
        expire (restore) at once if the expiry passed while rigd was down."""
        c = self.current
        if c is None:
            return
        for action in c.actions:
            if action.applied and action.what == "gpu_cap":
                device = self.devices.get(action.device_id)
                if device is not None:
                    with contextlib.suppress(HalError):
                        await self.power.write(device, device.set_power_cap,
                                               action.value)
        self._arm_expiry()
        if c.state == "confirmed":
            self._start_hold(c)

    def adjust(self, device_id: str, spec: WorkloadSpec) -> WorkloadSpec | None:
        """What a restarted rigd brings back on a device while the curtailment holds: nothing
        for a stopped one, the lower intensity for a turned-down one."""
        c = self.current
        if c is None:
            return spec
        if device_id in c.stopped():
            return None
        intensity = c.intensity(device_id)
        if intensity is not None and spec.hashing is not None:
            return dataclasses.replace(spec, hashing=dataclasses.replace(spec.hashing,
                                                                         intensity=intensity))
        return spec

    def blocks_start(self, spec: WorkloadSpec) -> str:
        """Why a switch may not start this workload now ("" if it may)."""
        c = self.current
        if c is None or spec.kind == WorkloadKind.IDLE:
            return ""
        until = time.strftime("%H:%M:%S UTC", time.gmtime(c.expire_unix_s))
        return (f"curtailment {c.operation_id} to {c.target_w:g} W is in force until {until}: "
                f"no workload starts before it ends (CancelCurtailment to end it now)")


def _read_controls(device: Device) -> MinerControls:
    """Blocking firmware reads (LuxOS profiles, Braiins constraints): run in a thread."""
    limit_range_w = None
    limits = getattr(device, "power_limit_range_w", None)
    if Capability.SET_POWER_LIMIT in device.capabilities and limits is not None:
        with contextlib.suppress(HalError):
            limit_range_w = limits()
    modes: tuple[str, ...] = ()
    read_modes = getattr(device, "power_modes", None)
    if read_modes is not None:
        with contextlib.suppress(HalError):
            modes = tuple(read_modes())
    return MinerControls(limit_range_w, modes)
