"""Curtail the rig to a watt target by a deadline, hold it there, and restore it exactly.

One control loop runs while a curtailment is in force, whatever its state: it compares what the
rig draws, and what it will draw (a waking miner, a starting workload, an action whose effect is
not yet seen), with the target, and sheds more whenever the projection is above it: on devices
still ramping up, devices brought back by hand, devices whose action did not take effect.
`target_not_met` means "shed as far as the order allows and still watching", never "stopped".

Every action is verified by the device's own reading within `curtail.verify_s` (asleep: near
standby and not mining; a limit: read back and the draw down to it; a stop: no workload); an
action without effect is sent once more, then counted failed (`no_effect`), logged with the
device's reading, and the plan sheds elsewhere. Each round of shedding is an operation that lists
what every device was asked and what it did; its first round ends CONFIRMED once the rig reads
below target, or FAILED with the shortfall and why once the deadline has passed with nothing left
to shed. A rig that reads above target again for `curtail.settle_s` opens a new round.

What every device ran and how it was set is recorded just before the curtailment first touches
it; expiry or CancelCurtailment puts each back exactly, asking a device that does not answer
again before giving up on it. The curtailment is journaled, before each command goes out (how
the device was, the command in flight) and after: a rigd restarted in any state, even killed
while a firmware takes a command, re-plans from the rig as it is and resumes, with its
deadline and expiry unchanged and every device's "as it was" from before its first command.

A second Curtail while one is in force replaces it (target, deadline, expiry, reason): what is
already shed stays shed, more is shed if the new target needs it. Raising a target (giving load
back) is CancelCurtailment and a new Curtail. No workload starts while a curtailment holds: a
switch that reaches its start meanwhile waits for the curtailment to end (blocks_start and
wait_lifted are the switcher's gate), and a workload that started in a race is shed by the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
from collections.abc import Iterable
from dataclasses import asdict

import structlog

from agent.config import CURTAIL_STEPS, Config
from agent.core.errors import Code, Refused
from agent.core.power import rig_power
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
    MinerControls,
)
from agent.runtime.curtail.plan import (
    MARGIN,
    DeviceView,
    candidates,
    plan,
    projected_w,
    took_effect,
)
from agent.runtime.operations import Operations
from agent.runtime.powerwrite import PowerWriter
from agent.runtime.sampler import Sampler
from agent.runtime.workloads import WorkloadError
from agent.runtime.workloads.manager import WorkloadManager
from hal.device import Capability, Device, DeviceKind
from hal.errors import HalError
from rigapi.model import (
    CurtailmentState,
    DeviceOutcome,
    Operation,
    OperationState,
    Phase,
    Reading,
    RigPower,
    WorkloadKind,
    WorkloadSpec,
    WorkloadState,
)

log = structlog.get_logger("rigd.curtail")

FRESH_S = 0.1  # the devices an action is under way on are read this fresh
POLL_S = 0.2  # the loop's pace while a round sheds or an action's effect is awaited
RETRIES = 1  # an action without effect is sent once more
CONTROLS_TTL_S = 600.0  # a miner's limit range and modes, read again after this long
# Threads the reads of miners' controls may hold at once, of the device calls' (rigd's
# DEVICE_CALL_THREADS, 64): a fleet of hung miners never holds the ones a control needs.
CONTROL_READS_AT_ONCE = 16
RESTORE_ATTEMPTS = 3  # a miner that does not answer the wake command at once is asked again
RESTORE_RETRY_S = 2.0  # times the attempt number
STOP_LOOP_S = 10.0  # the longest the restore waits for actions under way to be answered


class Curtailer:
    def __init__(self, config: Config, devices: dict[str, Device], sampler: Sampler,
                 manager: WorkloadManager, operations: Operations, power: PowerWriter,
                 draws: WorkingDraw) -> None:
        """`draws` tells what each device draws at work (the sampler feeds it)."""
        self.config = config
        self.devices = devices
        self.sampler = sampler
        self.manager = manager
        self.ops = operations
        self.power = power
        self.draws = draws
        self.current: Curtailment | None = None
        self._round: Operation | None = None  # the running round of shedding, if any
        self._loop: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # a new target: the loop looks at once
        self._applying: dict[str, asyncio.Task[None]] = {}  # device -> its actions under way
        self._first_round: list[Action] = []  # its dispatch time is measured (dispatched_after_s)
        self._ahead: asyncio.Task[None] | None = None  # the journal write commands wait for
        self._expiry: asyncio.Task[None] | None = None
        self._restoring: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one curtail, replace or restore at a time
        self._lifted = asyncio.Event()  # no curtailment in force (the switcher's gate)
        self._lifted.set()
        self._controls: dict[str, tuple[float, MinerControls]] = {}  # monotonic read time
        self._warm: asyncio.Task[None] | None = None  # keeps _controls read ahead of need
        self._control_reads = asyncio.Semaphore(CONTROL_READS_AT_ONCE)

    # -- asking ------------------------------------------------------------------------------

    def check(self, target_w: float, deadline_s: float, expiry_s: float, reason: str) -> None:
        if not math.isfinite(target_w) or target_w <= 0:
            raise Refused(Code.INVALID_ARGUMENT, f"rig_power_target_w must be a positive "
                          f"number of watts, got {target_w!r}")
        if not 1 <= deadline_s <= MAX_DEADLINE_S:
            raise Refused(Code.INVALID_ARGUMENT,
                          f"deadline_s must be within 1 .. {MAX_DEADLINE_S:g}")
        if not 1 <= expiry_s <= MAX_EXPIRY_S:
            raise Refused(Code.INVALID_ARGUMENT, f"expiry_s must be within 1 .. {MAX_EXPIRY_S:g}")
        if expiry_s < deadline_s:
            raise Refused(Code.INVALID_ARGUMENT, f"expiry_s ({expiry_s:g}) must not come before "
                          f"deadline_s ({deadline_s:g})")
        if len(reason) > MAX_REASON_CHARS:
            raise Refused(Code.INVALID_ARGUMENT,
                          f"reason: at most {MAX_REASON_CHARS} characters")

    async def curtail(self, target_w: float, deadline_s: float, expiry_s: float, reason: str,
                      source: str) -> Operation:
        """Start (or replace) a curtailment; returns its operation at once."""
        if self._restoring is not None and not self._restoring.done():
            await asyncio.shield(self._restoring)  # the restore finishes first: a fresh start
        self.check(target_w, deadline_s, expiry_s, reason)
        now = time.time()
        power = await self.rig_power()
        op = self.ops.create("curtail", [])
        op.detail = f"target {target_w:g} W ({reason or 'no reason given'}); rig at " \
                    f"{power.total_w:.0f} W"
        c = self.current
        if c is None:
            c = self.current = Curtailment(target_w, now + deadline_s, now + expiry_s, reason,
                                           source, op.operation_id, power.total_w,
                                           asked_unix_s=now, deadline_s=deadline_s)
            self._lifted.clear()
        else:  # replace: what is shed stays shed (a higher target gives some back)
            c.reason, c.source, c.operation_id, c.deadline_s = reason, source, \
                op.operation_id, deadline_s
            c.giving_back = target_w > c.target_w
            c.target_w, c.deadline_unix_s, c.expire_unix_s = target_w, now + deadline_s, \
                now + expiry_s
            c.asked_unix_s, c.state = now, CurtailmentState.SHEDDING
            c.below_target_after_s = c.shortfall_w = c.dispatched_after_s = None
        self._open_round(op, f"rig at {power.total_w:.0f} W (measured {power.measured_w:.0f} "
                             f"+ estimated {power.estimated_w:.0f}); target {target_w:g} W")
        self._journal()
        self._arm_expiry()
        self._run_loop()
        log.info("curtail_started", operation_id=op.operation_id, target_w=target_w,
                 rig_w=power.total_w, deadline_s=deadline_s, expiry_s=expiry_s, source=source)
        return op

    async def cancel(self, why: str = "cancelled") -> Operation | None:
        """Lift the curtailment now: every device back as it was. None if none is in force
        (or its restore already runs)."""
        if self.current is None or self._lifting():
            return None
        return self._start_restore(why)

    async def rig_power(self) -> RigPower:
        return await self.sampler.rig_power()

    # -- the switcher's gate -------------------------------------------------------------------

    def blocks_start(self, spec: WorkloadSpec) -> str:
        """Why a switch may not start this workload now ("" if it may)."""
        c = self.current
        if c is None or spec.kind == WorkloadKind.IDLE:
            return ""
        until = time.strftime("%H:%M:%S UTC", time.gmtime(c.expire_unix_s))
        return (f"curtailment {c.operation_id} to {c.target_w:g} W is in force until {until}: "
                f"no workload starts before it ends (CancelCurtailment to end it now)")

    async def wait_lifted(self) -> None:
        """Until no curtailment is in force."""
        await self._lifted.wait()

    # -- the control loop ------------------------------------------------------------------------

    def _lifting(self) -> bool:
        return self._restoring is not None and not self._restoring.done()

    def _run_loop(self) -> None:
        self._wake.set()
        if self._loop is None or self._loop.done():
            self._loop = asyncio.create_task(self._control(), name="curtailment-loop")

    def _open_round(self, op: Operation, detail: str) -> None:
        """`op` records the next round of shedding (a round still running is closed)."""
        previous = self._round
        if previous is not None and not previous.done:
            self._close_round(previous, f"replaced by {op.operation_id}")
        self._round = op
        self.ops.begin(op, "", Phase.SHEDDING, detail)

    def _close_round(self, op: Operation, detail: str = "", failed: bool = False) -> None:
        for device_id in op.device_ids:
            if op.outcomes[device_id].state == OperationState.RUNNING:
                self.ops.settle(op, device_id, OperationState.SUCCEEDED)
        if detail:
            op.detail += f"; {detail}"
        self.ops.finish(op, op.error if failed else "", failed=failed)
        if self._round is op:
            self._round = None

    async def _control(self) -> None:
        """While a curtailment is in force: look, verify, shed, say how it stands."""
        above_since: float | None = None
        while (c := self.current) is not None and not self._lifting():
            self._wake.clear()
            try:
                readings = await self._look(c)
                total = rig_power(readings.values()).total_w
                now = time.monotonic()
                above_since = None if total <= c.target_w else (above_since or now)
                await self._step(c, readings, total, now - (above_since or now))
            except Exception:  # the loop lives on: a rig left unwatched is the failure
                log.exception("curtail_loop_failed")
            busy = self._round is not None or any(a.state.pending for a in c.actions)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(),
                                       POLL_S if busy else self.config.telemetry_interval_s)

    async def _look(self, c: Curtailment) -> dict[str, Reading]:
        """Every device at the sampler's own pace; those an action is under way on afresh (a
        fleet of miners is not polled five times a second while a few of them are shed)."""
        readings = await self.sampler.latest(max_age_s=self.config.telemetry_interval_s)
        acted = sorted({a.device_id for a in c.actions if a.state.pending})
        if acted:
            readings.update(await self.sampler.latest(acted, max_age_s=FRESH_S))
        return readings

    async def _step(self, c: Curtailment, readings: dict[str, Reading], total_w: float,
                    above_for_s: float) -> None:
        self._verify(c, readings)
        views = await self._views(c, readings)
        projected, unknown = projected_w(views)
        now = time.time()
        order = [s for s in self.config.curtail_order if s in CURTAIL_STEPS]
        settled = not self._applying and not any(a.state.pending for a in c.actions)
        if total_w <= c.target_w:
            self._below(c, now)
        elif above_for_s >= self.config.curtail_settle_s and self._round is None:
            if candidates(views, order, self.config.curtail_min_intensity):
                again = self.ops.create("curtail", [])
                again.detail = (f"the rig read above target again for {above_for_s:.0f} s: "
                                f"{total_w:.0f} W over the {c.target_w:g} W of "
                                f"{c.operation_id}")
                c.operation_id = again.operation_id
                self._open_round(again, again.detail)
                log.warning("curtail_rig_above_target", operation_id=again.operation_id,
                            rig_w=round(total_w), target_w=c.target_w)
            elif settled and c.state != CurtailmentState.TARGET_NOT_MET:
                self._not_met(c, total_w, unknown, "")
        op = self._round
        if c.giving_back and settled and op is not None:
            self._give_back(c, op, views, projected)
            settled = not self._applying
        if op is not None and projected > c.target_w:
            chosen = plan(views, c.target_w, order, self.config.curtail_min_intensity)
            self._launch(c, op, chosen.actions, readings)
            settled = settled and not chosen.actions
        if op is None or not settled:
            return
        if total_w <= c.target_w:
            self._close_round(op)
            self._journal()
        elif now >= c.deadline_unix_s and not candidates(views, order,
                                                         self.config.curtail_min_intensity):
            why = self._not_met(c, total_w, unknown, op.operation_id)
            op.error = why
            self.ops.begin(op, "", Phase.FAILED, why)
            self._close_round(op, failed=True)

    def _give_back(self, c: Curtailment, op: Operation, views: list[DeviceView],
                   projected: float) -> None:
        """A raised target: devices are put back, the last shed first, while the rig will
        still read below the new target (each counted at what it drew before)."""
        c.giving_back = False
        expected = {v.device_id: v.expected_w for v in views}
        last_shed = {a.device_id: i for i, a in enumerate(c.actions) if a.state.accepted}
        for device_id in sorted(last_shed, key=last_shed.__getitem__, reverse=True):
            now_w, before = expected.get(device_id), c.before.get(device_id)
            back_w = max((before.power_w if before else None) or 0.0,
                         self.draws.of(device_id) or 0.0)
            if now_w is None or not back_w or projected - now_w + back_w > c.target_w * MARGIN:
                continue
            projected += back_w - now_w
            if device_id not in op.device_ids:
                op.device_ids.append(device_id)
            op.outcomes.setdefault(device_id, DeviceOutcome(device_id))
            self._applying[device_id] = asyncio.create_task(
                self._put_back_now(c, op, device_id), name=f"give-back-{device_id}")

    async def _put_back_now(self, c: Curtailment, op: Operation, device_id: str) -> None:
        actions = _latest_of_each_kind(c.accepted(device_id))
        self.ops.begin(op, device_id, Phase.STARTING,
                       "given back: " + ", ".join(str(a.kind) for a in actions))
        done: list[str] = []
        try:
            await self._undo(device_id, list(actions), c.before.get(device_id), done)
        except (HalError, WorkloadError) as exc:
            self.ops.note(op, device_id, f"could not give it back: {exc}")
            log.warning("curtail_give_back_failed", device_id=device_id, error=str(exc))
        else:
            for action in c.accepted(device_id):
                action.state = ActionState.GIVEN_BACK
            self.power.held.pop(device_id, None)
            before = c.before.get(device_id)
            self.draws.release(device_id, before.power_w if before else None)
            self.ops.note(op, device_id, "given back: " + ("; ".join(done) or "nothing to do"))
            log.info("curtail_given_back", device_id=device_id, detail="; ".join(done))
        finally:
            self.ops.end(op, device_id)
            self._applying.pop(device_id, None)
            self._journal()
            self._wake.set()

    def _below(self, c: Curtailment, now: float) -> None:
        if c.state == CurtailmentState.CONFIRMED:
            return
        c.state = CurtailmentState.CONFIRMED
        c.below_target_after_s = now - c.asked_unix_s
        c.shortfall_w = None
        if self._round is not None:
            self.ops.begin(self._round, "", Phase.CONFIRMED,
                           f"below {c.target_w:g} W {c.below_target_after_s:.1f} s after the "
                           f"command")
        log.info("curtail_confirmed", operation_id=c.operation_id,
                 after_s=round(c.below_target_after_s, 2))
        self._journal()

    def _not_met(self, c: Curtailment, total_w: float, unknown: tuple[str, ...],
                 operation_id: str) -> str:
        """Shed as far as the order allows and still above: say by how much and why."""
        c.state, c.shortfall_w = CurtailmentState.TARGET_NOT_MET, total_w - c.target_w
        failed = [f"{a.device_id}: {a.describe().split(' (')[0]}: {a.error}"
                  for a in c.actions if a.state in (ActionState.FAILED, ActionState.NO_EFFECT)]
        why = ("everything the order allows is shed" if not failed
               else "some actions failed: " + "; ".join(failed))
        no_reading = f"; cannot count {', '.join(unknown)} (no power reading)" if unknown else ""
        text = (f"target {c.target_w:g} W not met: the rig reads {total_w:.0f} W, "
                f"{c.shortfall_w:.0f} W above ({why}{no_reading}); still watching")
        log.warning("curtail_target_not_met", operation_id=operation_id or c.operation_id,
                    rig_w=round(total_w), target_w=c.target_w, why=why)
        self._journal()
        return text

    # -- what the planner sees ---------------------------------------------------------------

    async def _views(self, c: Curtailment, readings: dict[str, Reading]) -> list[DeviceView]:
        miners = [d for d in readings if self.devices[d].kind == DeviceKind.ASIC]
        controls = await self._controls_of(miners)
        views = []
        for device_id, reading in readings.items():
            device = self.devices[device_id]
            mine = [a for a in c.actions if a.device_id == device_id]
            pending = [a for a in mine if a.state.pending]
            busy = self.ops.running_for(device_id)
            if busy is not None and busy.kind != "curtail":
                continue  # a switch is changing it: shed once it is done
            before = c.before.get(device_id)
            control = controls.get(device_id)
            views.append(DeviceView(
                device_id, device.kind, device.capabilities, reading,
                self._expected_w(c, device_id, reading), control,
                before.asic_mode if before is not None else (control.mode if control else None),
                frozenset(a.kind for a in mine if _holds(a, reading)),
                sum(a.saving_w for a in pending) if pending else None))
        return views

    def _expected_w(self, c: Curtailment, device_id: str, reading: Reading) -> float | None:
        """What the device will draw: its reading, or its full draw while it ramps up (a miner
        rigd woke that is not mining yet, a workload starting)."""
        t = reading.telemetry
        if t.power_w is None or reading.error:
            return None
        full = self.draws.of(device_id)
        if full is None or full <= t.power_w:
            return t.power_w
        if t.asic is not None:
            asleep = any(a.kind == ActionKind.ASIC_SLEEP and a.state.accepted
                         for a in c.actions if a.device_id == device_id)
            ramping = t.asic.is_mining is not True and not asleep \
                and self.draws.waking(device_id)
        else:
            ramping = reading.workload is not None \
                and reading.workload.state == WorkloadState.STARTING
        return full if ramping else t.power_w

    async def _keep_controls_read(self) -> None:
        miners = [d for d, device in self.devices.items() if device.kind == DeviceKind.ASIC]
        while miners:
            try:
                await self._controls_of(miners, max_age_s=CONTROLS_TTL_S / 2)
            except Exception:  # a miner's firmware read failing must not end this task
                log.exception("miner_controls_read_failed")
            await asyncio.sleep(CONTROLS_TTL_S / 4)

    async def _controls_of(self, miners: Iterable[str], max_age_s: float = CONTROLS_TTL_S
                           ) -> dict[str, MinerControls]:
        """Each miner's limit range and modes, read off the loop (CONTROL_READS_AT_ONCE at a
        time) where not read since the device last changed, or not within max_age_s. A miner
        whose latest reading failed is not asked (it is once it reads again): none known."""
        now = time.monotonic()
        miners = list(miners)
        stale = [d for d in miners if d not in self._controls
                 or now - self._controls[d][0] > max_age_s
                 or self._controls[d][0] < self.sampler.changes.changed_at(d)]
        failing = {d for d in stale if (r := self.sampler.cached(d)) is not None and r.error}
        stale = [d for d in stale if d not in failing]
        if stale:
            found = await asyncio.gather(*(self._read_controls_of(d) for d in stale))
            for device_id, controls in zip(stale, found, strict=True):
                self._controls[device_id] = (now, controls)
        return {d: self._controls[d][1] if d in self._controls and d not in failing
                else MinerControls(None, (), None) for d in miners}

    async def _read_controls_of(self, device_id: str) -> MinerControls:
        async with self._control_reads:
            return await asyncio.to_thread(_read_controls, self.devices[device_id])

    # -- acting --------------------------------------------------------------------------------

    def _launch(self, c: Curtailment, op: Operation, actions: list[Action],
                readings: dict[str, Reading]) -> None:
        """Every chosen action at once, each device's in order, watched by the loop while they
        run (a rig below target is confirmed then, not when the slowest firmware answers)."""
        by_device: dict[str, list[Action]] = {}
        for action in actions:
            action.round_id = op.operation_id
            c.actions.append(action)
            by_device.setdefault(action.device_id, []).append(action)
            if action.device_id not in op.device_ids:
                op.device_ids.append(action.device_id)
            op.outcomes.setdefault(action.device_id, DeviceOutcome(action.device_id))
            self.power.held[action.device_id] = c.operation_id
        if c.dispatched_after_s is None and actions:
            self._first_round = actions
        for device_id, device_actions in by_device.items():
            self._applying[device_id] = asyncio.create_task(
                self._apply(c, op, device_id, device_actions, readings[device_id]),
                name=f"curtail-{device_id}")

    async def _apply(self, c: Curtailment, op: Operation, device_id: str, actions: list[Action],
                     reading: Reading) -> None:
        try:
            if device_id not in c.before:  # how it was, just before it is first touched
                c.before[device_id] = await self._before(device_id, reading)
                self.draws.hold(device_id)
            for action in actions:
                self.ops.begin(op, device_id, Phase.SHEDDING, action.describe())
                await self._send(op, action, c.before.get(device_id))
                self.ops.end(op, device_id)
                self._mode_seen_at_sleep(c, action)
        finally:
            self._applying.pop(device_id, None)
            first = self._first_round
            if first and all(a.dispatched_unix_s is not None for a in first):
                c.dispatched_after_s = max(a.dispatched_unix_s or 0.0
                                           for a in first) - c.asked_unix_s
                self._first_round = []
            self._journal()
            self._wake.set()

    def _mode_seen_at_sleep(self, c: Curtailment, action: Action) -> None:
        """A miner's mode as its firmware client read it when putting it to sleep: fresher than
        the controls read ahead of need (a mode changed on the miner itself since), and
        journaled, so a restarted rigd, whose client never saw the sleep, wakes it into it."""
        before = c.before.get(action.device_id)
        if action.kind != ActionKind.ASIC_SLEEP or not action.state.accepted or before is None:
            return
        mode = None
        with contextlib.suppress(HalError):
            mode = self.devices[action.device_id].mode_before_sleep()
        if mode is not None:
            before.asic_mode = mode

    async def _send(self, op: Operation, action: Action, before: Before | None) -> None:
        """One attempt; the action's state says how it went."""
        action.attempts += 1
        action.state = ActionState.APPLYING
        if action.dispatched_unix_s is None:
            action.dispatched_unix_s = time.time()
        await self._write_ahead()
        try:
            await self._do(action)
        except (HalError, WorkloadError) as exc:
            action.state, action.error = ActionState.FAILED, str(exc)
            self.ops.note(op, action.device_id, f"{action.describe()}: refused: {exc}")
            log.warning("curtail_action_failed", device_id=action.device_id,
                        action=str(action.kind), error=str(exc))
            return
        action.state, action.applied_unix_s = ActionState.APPLIED, time.time()
        log.info("curtail_action", operation_id=op.operation_id, device_id=action.device_id,
                 action=action.describe(), attempt=action.attempts,
                 before=asdict(before) if before is not None else None)

    async def _do(self, action: Action) -> None:
        device = self.devices[action.device_id]
        match action.kind:
            case ActionKind.INTENSITY:
                self.manager.set_intensity(action.device_id, float(action.value))
            case ActionKind.STOP:
                await self.manager.drain(action.device_id)
                await self.manager.stop(action.device_id)
            case ActionKind.ASIC_LIMIT:
                await self.power.write(device, device.set_power_limit, float(action.value))
            case ActionKind.ASIC_MODE:
                await self.power.write(device, device.set_power_mode, str(action.value))
            case ActionKind.ASIC_SLEEP:
                await self.power.write(device, device.sleep)
            case ActionKind.GPU_CAP:
                await self.power.write(device, device.set_power_cap, float(action.value))

    def _verify(self, c: Curtailment, readings: dict[str, Reading]) -> None:
        """Each accepted action against the device's own reading: VERIFIED once it shows the
        effect; without it past verify_s, sent once more, then NO_EFFECT."""
        now = time.time()
        for action in c.actions:
            if action.state != ActionState.APPLIED or action.device_id in self._applying:
                continue
            reading = readings.get(action.device_id)
            why = took_effect(action, reading) if reading is not None else "no reading"
            op = self.ops.get(action.round_id)
            if not why:
                action.state = ActionState.VERIFIED
                if op is not None and not op.done:
                    self.ops.note(op, action.device_id, f"{action.describe()}: done, its "
                                  f"reading shows it")
                continue
            if now - (action.applied_unix_s or now) < self.config.curtail_verify_s:
                continue
            if action.attempts <= RETRIES and op is not None and not op.done:
                log.warning("curtail_action_no_effect_yet", device_id=action.device_id,
                            action=str(action.kind), reading=why, attempt=action.attempts)
                self.ops.note(op, action.device_id,
                              f"{action.describe()}: no effect after "
                              f"{self.config.curtail_verify_s:g} s ({why}); sent again")
                self._applying[action.device_id] = asyncio.create_task(
                    self._apply(c, op, action.device_id, [action],
                                readings[action.device_id]), name=f"curtail-{action.device_id}")
                continue
            action.state, action.error = ActionState.NO_EFFECT, f"no effect: {why}"
            log.warning("curtail_action_no_effect", device_id=action.device_id,
                        action=str(action.kind), reading=why, attempts=action.attempts)
            if op is not None and not op.done:
                self.ops.note(op, action.device_id, f"{action.describe()}: accepted but never "
                              f"took effect ({why}); shedding elsewhere")
            self._journal()

    async def _before(self, device_id: str, reading: Reading) -> Before:
        device = self.devices[device_id]
        before = Before(power_w=reading.telemetry.power_w)
        status = reading.workload
        desired = self.manager.current_spec(device_id).hashing
        if status is not None and status.kind == WorkloadKind.HASHING:
            before.intensity = desired.intensity if desired is not None else status.intensity
        if device.kind == DeviceKind.ASIC:
            asic = reading.telemetry.asic
            before.asic_mining = asic.is_mining if asic else None
            if self.draws.waking(device_id):  # rigd woke it and it comes up: it is awake
                before.asic_mining = True
                before.power_w = self.draws.of(device_id) or before.power_w
            before.asic_limit_w = reading.telemetry.power_limit_w
            cached = self._controls.get(device_id)
            if cached is not None and cached[0] >= self.sampler.changes.changed_at(device_id):
                before.asic_mode = cached[1].mode
            else:
                with contextlib.suppress(HalError):
                    before.asic_mode = await asyncio.to_thread(device.power_mode)
        return before

    # -- restoring -----------------------------------------------------------------------------

    def _start_restore(self, why: str) -> Operation:
        c = self.current
        assert c is not None
        devices = sorted({a.device_id for a in c.actions if a.state.accepted})
        op = self.ops.create("restore_curtailment", devices)
        op.detail = f"{why}: curtailment {c.operation_id} to {c.target_w:g} W lifted"
        if self._expiry is not None and self._expiry is not asyncio.current_task():
            self._expiry.cancel()
        self._restoring = self.ops.run(op, self._restore(op, c, why))
        return op

    async def _stop_loop(self) -> None:
        """The loop ends, and what it sent is answered (bounded), before anything is put back."""
        loop = self._loop
        if loop is not None and loop is not asyncio.current_task():
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        if self._applying:
            await asyncio.wait(list(self._applying.values()), timeout=STOP_LOOP_S)

    async def _restore(self, op: Operation, c: Curtailment, why: str) -> None:
        async with self._lock:
            await self._stop_loop()
            if self._round is not None:
                self._close_round(self._round, f"stopped shedding: {why}")

            async def one(device_id: str) -> None:
                actions = _latest_of_each_kind(c.accepted(device_id))
                before = c.before.get(device_id)
                self.ops.begin(op, device_id, Phase.STARTING,
                               "put back: " + ", ".join(str(a.kind) for a in actions))
                done: list[str] = []
                for attempt in range(1, RESTORE_ATTEMPTS + 1):
                    try:
                        await self._undo(device_id, actions, before, done)
                        break
                    except (HalError, WorkloadError) as exc:
                        log.warning("curtail_put_back_failed", operation_id=op.operation_id,
                                    device_id=device_id, attempt=attempt, error=str(exc))
                        if attempt == RESTORE_ATTEMPTS:
                            self.power.held.pop(device_id, None)
                            self.draws.release(device_id, None)
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
                self.draws.release(device_id, before.power_w if before else None)
                self.ops.settle(op, device_id, OperationState.SUCCEEDED)

            try:
                await asyncio.gather(*(one(d) for d in op.device_ids))
            finally:  # even after a bug: a curtailment whose restore ran never holds again
                self.current = None
                self.manager.journal.update(curtailment=None)
                self._lifted.set()
            self.ops.finish(op)
            log.info("curtail_restored", operation_id=op.operation_id, state=str(op.state))

    async def _undo(self, device_id: str, actions: list[Action], before: Before | None,
                    done: list[str]) -> None:
        """Each action undone, the last first; an undone action leaves `actions`, so a second
        attempt after a failure goes on where the first stopped. Says what it did in `done`."""
        device = self.devices[device_id]
        turned_down = any(a.kind in (ActionKind.ASIC_MODE, ActionKind.ASIC_LIMIT)
                          for a in actions)
        for action in reversed(list(actions)):
            match action.kind:
                case ActionKind.INTENSITY if before is not None and before.intensity is not None:
                    with contextlib.suppress(WorkloadError):  # no hashing runs there any more
                        self.manager.set_intensity(device_id, before.intensity)
                        done.append(f"intensity back to {before.intensity:g}")
                case ActionKind.STOP:
                    spec = self.manager.current_spec(device_id)
                    if spec.kind != WorkloadKind.IDLE:
                        if device_id not in self.manager.running:  # not started by an attempt
                            await self.manager.start(device_id, spec)
                        done.append(await self.manager.wait_ready(device_id, spec))
                case ActionKind.GPU_CAP:
                    await self.power.write(device, device.set_power_cap, None)
                    done.append("power cap lifted")
                case ActionKind.ASIC_SLEEP if before is None or before.asic_mining is not False:
                    await self.power.write(device, device.wake)
                    self.draws.woken(device_id)
                    done.append("awake")
                    if before is not None and before.asic_mode and not turned_down:
                        # its wake may not bring its mode back (an Antminer wakes in normal)
                        mode = await asyncio.to_thread(device.power_mode)
                        if mode != before.asic_mode:
                            await self.power.write(device, device.set_power_mode,
                                                   before.asic_mode)
                            done.append(f"{before.asic_mode} mode")
                case ActionKind.ASIC_MODE:
                    mode = before.asic_mode if before and before.asic_mode else "normal"
                    await self.power.write(device, device.set_power_mode, mode)
                    done.append(f"{mode} mode")
                case ActionKind.ASIC_LIMIT if device_id not in self.power.pending \
                        and before is not None:  # (an operator's pending limit: below)
                    if before.asic_mode and device.limit_sets_mode:  # its named profile
                        await self.power.write(device, device.set_power_mode, before.asic_mode)
                        done.append(f"{before.asic_mode} profile")
                    elif before.asic_limit_w is not None:
                        await self.power.write(device, device.set_power_limit,
                                               before.asic_limit_w)
                        done.append(f"power limit {before.asic_limit_w:g} W")
            actions.remove(action)
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
            if self.current is c and not self._lifting():
                self._start_restore("expired")

        self._expiry = asyncio.create_task(expire(), name="curtailment-expiry")

    def _journal(self) -> None:
        c = self.current
        self.manager.journal.update(curtailment=c.to_json() if c else None)

    async def _write_ahead(self) -> None:
        """The journal written before a command goes to a device: how the device was and that a
        command is in flight are on disk first, so a rigd killed while the firmware takes the
        command puts the device back as it was (recover counts the command as taken). The
        devices that ask in the same turn of the loop share one write."""
        if self._ahead is None or self._ahead.done():  # (done: cancelled before it wrote)
            self._ahead = asyncio.create_task(self._write_soon(), name="curtail-journal")
        await asyncio.shield(self._ahead)

    async def _write_soon(self) -> None:
        await asyncio.sleep(0)  # the other devices of the round join this write
        self._ahead = None  # a device that asks from now on waits for a later write
        self._journal()

    def recover(self) -> None:
        """At start, before workloads come back: a journaled curtailment holds again (an action
        a crash interrupted counts as accepted: the restore undoes it, the loop verifies it)."""
        data = self.manager.journal.get("curtailment")
        if not data:
            return
        c = Curtailment.from_json(dict(data))
        for action in c.actions:
            if action.state == ActionState.APPLYING:
                action.state, action.applied_unix_s = ActionState.APPLIED, time.time()
            if action.state.accepted:
                self.power.held[action.device_id] = c.operation_id
                self.draws.hold(action.device_id)
        for device_id, before in c.before.items():
            self.draws.release(device_id, before.power_w)
            if device_id in self.power.held:
                self.draws.hold(device_id)
        self.current = c
        self._lifted.clear()
        log.warning("curtailment_recovered", operation_id=c.operation_id, target_w=c.target_w,
                    state=str(c.state), expires_in_s=round(c.expire_unix_s - time.time()))

    async def resume(self) -> None:
        """Once serving: keep every miner's controls read ahead of need (a curtailment's first
        round then sends its commands without reading a hundred firmwares first). Caps live in
        device drivers' memory only, so set them again; expire (restore) at once if the expiry
        passed while rigd was down; otherwise re-plan from the rig as it is now and shed on,
        deadline and expiry unchanged."""
        if self._warm is None:
            self._warm = asyncio.create_task(self._keep_controls_read(), name="miner-controls")
        c = self.current
        if c is None:
            return
        for action in c.actions:
            if action.state.accepted and action.kind == ActionKind.GPU_CAP:
                device = self.devices.get(action.device_id)
                if device is not None:
                    with contextlib.suppress(HalError):
                        await self.power.write(device, device.set_power_cap, float(action.value))
        self._arm_expiry()
        op = self.ops.create("curtail", [])
        op.detail = (f"rigd restarted: curtailment {c.operation_id} to {c.target_w:g} W "
                     f"({c.state}) resumed from the rig as it is")
        c.operation_id = op.operation_id
        self._open_round(op, op.detail)
        self._journal()
        self._run_loop()

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


def _holds(action: Action, reading: Reading) -> bool:
    """The action counts as taken on the device: it failed (not tried again), or it was
    accepted and its effect still holds (a miner woken by hand is put to sleep again)."""
    if action.state in (ActionState.FAILED, ActionState.NO_EFFECT) or action.state.pending:
        return True
    return action.state.accepted and not took_effect(action, reading)


def _latest_of_each_kind(actions: list[Action]) -> list[Action]:
    latest = {a.kind: a for a in actions}
    return [a for a in actions if latest[a.kind] is a]


def _read_controls(device: Device) -> MinerControls:
    """Blocking firmware reads (LuxOS profiles, Braiins constraints): run in a thread."""
    limit_range_w = None
    if Capability.SET_POWER_LIMIT in device.capabilities:
        with contextlib.suppress(HalError):
            limit_range_w = device.power_limit_range_w()
    modes: tuple[str, ...] = ()
    mode = None
    with contextlib.suppress(HalError):
        modes = tuple(device.power_modes())
        mode = device.power_mode()
    return MinerControls(limit_range_w, modes, mode)
