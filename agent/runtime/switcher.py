"""SetWorkload: switch devices between idle, hashing and inference, phase by phase.

Per device: REQUESTED -> DRAINING (the old workload stops taking work) -> STOPPING (its process
group ends) -> VERIFYING (the device shows its memory freed, read from the device) ->
CONFIGURING -> STARTING -> READY (the readiness probe passed). A failure after the old workload
stopped rolls back to it (ROLLED_BACK); if that fails too the device ends FAILED and unhealthy.
One operation per device at a time, a minimum dwell time between switches, and a request_id
that makes a retry return the same operation. The journal keeps the operations in flight, so a
rigd killed mid-switch restarts every device on its previous workload.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from agent.core.errors import Code, Refused
from agent.runtime.operations import Operations
from agent.runtime.workloads import WorkloadError
from agent.runtime.workloads.manager import WorkloadManager
from rigapi.model import Operation, OperationState, Phase, WorkloadKind, WorkloadSpec

log = structlog.get_logger("rigd.switch")

MAX_DEVICES_PER_REQUEST = 64


class StartGate(Protocol):
    """What may hold a workload's start back: a curtailment in force."""

    def blocks_start(self, spec: WorkloadSpec) -> str:
        """Why this workload may not start now; "" if it may."""

    async def wait_lifted(self) -> None:
        """Until nothing holds starts back."""


@dataclass(frozen=True, slots=True)
class SwitchRequest:
    specs: dict[str, WorkloadSpec]  # device id -> what it should run (resolved per device)
    request_id: str = ""
    ignore_dwell: bool = False  # curtailment and its restore: the grid does not wait

    @property
    def device_ids(self) -> list[str]:
        return list(self.specs)

    def fingerprint(self) -> str:
        body = json.dumps({d: s.to_json() for d, s in self.specs.items()}, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()


class Switcher:
    def __init__(self, manager: WorkloadManager, operations: Operations,
                 gate: StartGate) -> None:
        """`gate` says why a workload may not start now: a curtailment in force."""
        self.manager = manager
        self.ops = operations
        self.gate = gate

    # -- admission ---------------------------------------------------------------------------

    def check(self, request: SwitchRequest) -> Operation | None:
        """Refused (nothing changes), or the operation a retried request_id already started."""
        if request.request_id:
            earlier = self.ops.by_request(request.request_id)
            if earlier is not None:
                if earlier.fingerprint != request.fingerprint():
                    raise Refused(Code.ALREADY_EXISTS, (
                        f"request_id {request.request_id[:80]!r} was used for another request "
                        f"(operation {earlier.operation_id}); use a new request_id"),
                        reason="REQUEST_ID_REUSED")
                return earlier
        if not 1 <= len(request.specs) <= MAX_DEVICES_PER_REQUEST:
            raise Refused(Code.INVALID_ARGUMENT, f"name 1 .. {MAX_DEVICES_PER_REQUEST} devices")
        for device_id, spec in request.specs.items():
            self._check_device(device_id, spec, request.ignore_dwell)
        return None

    def _check_device(self, device_id: str, spec: WorkloadSpec, ignore_dwell: bool) -> None:
        manager = self.manager
        running = self.ops.running_for(device_id)
        if running is not None:
            raise Refused(Code.FAILED_PRECONDITION, (
                f"{device_id} is being changed by operation {running.operation_id} "
                f"({running.kind}); wait for it (rigctl ops watch {running.operation_id})"),
                reason="DEVICE_BUSY")
        reason = ""  # idle: whatever runs stops
        if spec.kind == WorkloadKind.HASHING:
            reason = manager.hashing_unavailable(device_id)
        elif spec.inference is not None:
            reason = manager.inference_unavailable(device_id, spec.inference.profile)
        if reason:
            raise Refused(Code.FAILED_PRECONDITION, reason, reason="WORKLOAD_UNAVAILABLE")
        gate = self.gate.blocks_start(spec)
        if gate:
            raise Refused(Code.FAILED_PRECONDITION, gate, reason="CURTAILMENT_IN_FORCE")
        dwell = manager.dwell_left_s(device_id)
        if dwell > 0 and not ignore_dwell:
            raise Refused(Code.FAILED_PRECONDITION, (
                f"{device_id} switched less than {manager.config.min_dwell_s:g} s ago; the "
                f"next switch is allowed in {dwell:.0f} s (workloads.min_dwell_s)"),
                reason="MIN_DWELL")

    # -- running -------------------------------------------------------------------------------

    def submit(self, request: SwitchRequest, kind: str = "set_workload") -> Operation:
        """check() must have passed. Starts the operation and returns it at once."""
        op = self.ops.create(kind, request.device_ids, request.request_id,
                             request.fingerprint())
        previous = {d: self.manager.current_spec(d) for d in request.device_ids}
        for device_id, spec in request.specs.items():
            self.manager.busy.add(device_id)
            self.ops.begin(op, device_id, Phase.REQUESTED,
                           f"{previous[device_id].describe()} -> {spec.describe()}")
        self._journal_op(op, previous, request.specs)
        self.run(op, self._switch_all(op, previous, request.specs))
        return op

    def run(self, op: Operation, body: Awaitable[None]) -> asyncio.Task[None]:
        def after() -> None:
            for device_id in op.device_ids:
                self.manager.busy.discard(device_id)
            self._forget_op(op)

        return self.ops.run(op, body, after)

    async def _switch_all(self, op: Operation, previous: dict[str, WorkloadSpec],
                          targets: dict[str, WorkloadSpec]) -> None:
        await asyncio.gather(*(self.switch_device(op, d, previous[d], targets[d])
                               for d in op.device_ids))
        self.ops.finish(op)
        log.info("operation_finished", operation_id=op.operation_id, state=str(op.state),
                 error=op.error or None)

    async def _phase(self, op: Operation, device_id: str, phase: Phase,
                     step: Callable[[], Awaitable[str]]) -> None:
        self.ops.begin(op, device_id, phase)
        self.ops.note(op, device_id, await step())

    async def switch_device(self, op: Operation, device_id: str, previous: WorkloadSpec,
                            target: WorkloadSpec) -> None:
        manager, timeout = self.manager, self.manager.config.verify_timeout_s
        try:
            await self._phase(op, device_id, Phase.DRAINING, lambda: manager.drain(device_id))
            await self._phase(op, device_id, Phase.STOPPING, lambda: manager.stop(device_id))
        except WorkloadError as exc:
            self._give_up(op, device_id, f"could not stop {previous.describe()}: {exc}")
            return
        try:
            await self._bring_up(op, device_id, target, timeout)
        except WorkloadError as exc:
            await self._roll_back(op, device_id, previous, target, str(exc))
            return
        manager.commit(device_id, target)
        self.ops.settle(op, device_id, OperationState.SUCCEEDED)

    async def _bring_up(self, op: Operation, device_id: str, spec: WorkloadSpec,
                        verify_timeout_s: float, gated: bool = True) -> None:
        """Verify the device is free, configure, start, wait until ready. A `gated` start
        (a switch, not the start-up's restore) waits while a curtailment holds."""
        manager = self.manager
        await self._phase(op, device_id, Phase.VERIFYING, lambda: manager.verify_released(
            device_id, verify_timeout_s, lambda detail: self._note_once(op, device_id, detail)))
        await self._phase(op, device_id, Phase.CONFIGURING, lambda: self._configure(spec))

        async def start() -> str:
            detail, _ = await manager.start(device_id, spec)
            return detail

        while True:
            while gated and (held := self.gate.blocks_start(spec)):
                # admitted before the curtailment: it waits for its end, not for its turn
                self.ops.note(op, device_id, f"waiting to start: {held}")
                log.info("switch_held_by_curtailment", operation_id=op.operation_id,
                         device_id=device_id)
                await self.gate.wait_lifted()
            await self._phase(op, device_id, Phase.STARTING, start)
            held = self.gate.blocks_start(spec) if gated else ""
            if not held:
                break
            # a curtailment began while the workload started: it stops again and waits
            await manager.drain(device_id)
            await manager.stop(device_id)
            self.ops.note(op, device_id, f"stopped again, waiting to start: {held}")
        await self._phase(op, device_id, Phase.READY, lambda: manager.wait_ready(device_id, spec))

    def _note_once(self, op: Operation, device_id: str, detail: str) -> None:
        """A phase's progress, told to watchers only when it changes."""
        current = next((p.detail for p in reversed(op.phases) if p.device_id == device_id), "")
        if detail != current:
            self.ops.note(op, device_id, detail)

    async def _configure(self, spec: WorkloadSpec) -> str:
        return f"no power or clock profile configured for {spec.kind}"

    async def _roll_back(self, op: Operation, device_id: str, previous: WorkloadSpec,
                         target: WorkloadSpec, error: str) -> None:
        """Back to what ran before; FAILED (and the device unhealthy) if even that fails."""
        log.warning("switch_failed", device_id=device_id, target=target.describe(), error=error)
        manager = self.manager
        held = ""
        try:
            await manager.drain(device_id)
            await manager.stop(device_id)
            if previous.kind != WorkloadKind.IDLE:
                try:
                    await manager.verify_released(device_id, manager.config.verify_timeout_s)
                except WorkloadError as exc:  # what ran before ran beside it: start it anyway
                    held = f" ({exc})"
                await manager.start(device_id, previous)
                await manager.wait_ready(device_id, previous)
        except WorkloadError as exc:
            self._give_up(op, device_id, f"{error}; rolling back to {previous.describe()} "
                                         f"failed too: {exc}")
            return
        manager.commit(device_id, previous)
        self.ops.settle(op, device_id, OperationState.ROLLED_BACK, error, Phase.ROLLED_BACK,
                        f"{error}; {previous.describe()} runs again{held}")

    def _give_up(self, op: Operation, device_id: str, error: str) -> None:
        """The device runs nothing it should: unhealthy, with the reason, until supervision
        brings its desired workload back (with backoff)."""
        log.error("switch_failed_unrecoverably", device_id=device_id, error=error)
        self.manager.unhealthy[device_id] = f"operation {op.operation_id} failed: {error}"
        self.manager.schedule_restart(device_id)
        self.ops.settle(op, device_id, OperationState.FAILED, error, Phase.FAILED)

    # -- journal -------------------------------------------------------------------------------

    def _journal_op(self, op: Operation, previous: dict[str, WorkloadSpec],
                    targets: dict[str, WorkloadSpec]) -> None:
        inflight = dict(self.manager.journal.get("operations", {}))
        inflight[op.operation_id] = {
            "operation_id": op.operation_id, "kind": op.kind, "device_ids": op.device_ids,
            "previous": {d: s.to_json() for d, s in previous.items()},
            "targets": {d: s.to_json() for d, s in targets.items()},
            "create_unix_s": op.create_unix_s,
        }
        self.manager.journal.update(operations=inflight)

    def _forget_op(self, op: Operation) -> None:
        inflight = dict(self.manager.journal.get("operations", {}))
        inflight.pop(op.operation_id, None)
        self.manager.journal.update(operations=inflight)

    def interrupted(self, records: list[dict[str, object]]) -> None:
        """Operations a crashed rigd left in flight: each ends FAILED, saying what runs now."""
        for record in records:
            device_ids = [str(d) for d in record.get("device_ids", [])]  # type: ignore[attr-defined]
            op = self.ops.create(str(record.get("kind", "set_workload")), device_ids)
            op.operation_id = str(record.get("operation_id", op.operation_id))
            for device_id in device_ids:
                now = self.manager.current_spec(device_id).describe()
                self.ops.settle(op, device_id, OperationState.FAILED,
                                f"interrupted: rigd stopped during the switch; {now} runs",
                                Phase.FAILED)
            self.ops.finish(op)
            log.warning("operation_interrupted", operation_id=op.operation_id)

    async def restore(self, seeds: dict[str, WorkloadSpec],
                      adjust: Callable[[str, WorkloadSpec], WorkloadSpec | None] | None = None
                      ) -> Operation | None:
        """At start: every device back to its desired workload, as one operation. `adjust`
        may change what starts (a curtailment in force: nothing, or a lower intensity)."""
        manager = self.manager
        if not manager.desired and seeds:
            manager.desired = dict(seeds)
        wanted = {}
        for device_id, spec in manager.desired.items():
            started = adjust(device_id, spec) if adjust is not None else spec
            if started is not None and started.kind != WorkloadKind.IDLE:
                wanted[device_id] = started
        if not wanted:
            return None
        op = self.ops.create("restore", list(wanted))
        for device_id in wanted:
            manager.busy.add(device_id)

        async def one(device_id: str, spec: WorkloadSpec) -> None:
            self.ops.begin(op, device_id, Phase.REQUESTED, f"restore {spec.describe()}")
            try:
                await self._bring_up(op, device_id, spec, manager.config.verify_timeout_s,
                                     gated=False)
            except WorkloadError as exc:
                await manager.stop(device_id)
                manager.schedule_restart(device_id)  # it stays desired: try again, later
                self.ops.settle(op, device_id, OperationState.FAILED, str(exc), Phase.FAILED)
                return
            if spec == manager.desired.get(device_id):
                manager.commit(device_id, spec)
            self.ops.settle(op, device_id, OperationState.SUCCEEDED)

        async def all_devices() -> None:
            await asyncio.gather(*(one(d, s) for d, s in wanted.items()))
            self.ops.finish(op)

        self.run(op, all_devices())
        return op
