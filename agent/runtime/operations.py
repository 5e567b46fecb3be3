"""Operations: what a switch or a curtailment is doing, phase by phase, for every device.

An operation returns at once to the caller and is then followed with GetOperation and
WatchOperation; each phase is recorded with its device, start time, duration and detail. A
request_id makes a retried request return the same operation (the same id with another body is
refused). Finished operations are kept, newest last, up to a bound.
"""

from __future__ import annotations

import asyncio
import enum
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace

MAX_KEPT = 1000


class OperationState(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"  # the switch failed and the previous workload runs again


class Phase(enum.StrEnum):
    REQUESTED = "requested"
    DRAINING = "draining"
    STOPPING = "stopping"
    VERIFYING = "verifying"
    CONFIGURING = "configuring"
    STARTING = "starting"
    READY = "ready"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    SHEDDING = "shedding"
    CONFIRMED = "confirmed"


_SEVERITY = {OperationState.SUCCEEDED: 0, OperationState.ROLLED_BACK: 1,
             OperationState.FAILED: 2, OperationState.RUNNING: 3}


@dataclass(slots=True)
class PhaseRecord:
    phase: Phase
    device_id: str
    start_unix_s: float
    duration_s: float | None = None  # None while the phase runs
    detail: str = ""
    _started: float = field(default_factory=time.monotonic, repr=False)


@dataclass(slots=True)
class DeviceOutcome:
    device_id: str
    state: OperationState = OperationState.RUNNING
    error: str = ""


@dataclass(slots=True)
class Operation:
    operation_id: str
    kind: str  # "set_workload", "curtail", "restore"
    device_ids: list[str]
    state: OperationState = OperationState.RUNNING
    phases: list[PhaseRecord] = field(default_factory=list)
    outcomes: dict[str, DeviceOutcome] = field(default_factory=dict)
    error: str = ""
    create_unix_s: float = field(default_factory=time.time)
    end_unix_s: float | None = None
    request_id: str = ""
    fingerprint: str = ""  # what the request asked, to refuse a reused request_id
    detail: str = ""  # e.g. a curtailment's target and outcome in watts
    version: int = 0  # grows with every change, so watchers miss none

    def snapshot(self) -> Operation:
        """A copy that later changes do not reach (what a watcher is given)."""
        return replace(self, device_ids=list(self.device_ids),
                       phases=[replace(p) for p in self.phases],
                       outcomes={k: replace(v) for k, v in self.outcomes.items()})

    @property
    def done(self) -> bool:
        return self.state != OperationState.RUNNING


class Operations:
    """Every operation of this rigd, and the waiters that follow them."""

    def __init__(self) -> None:
        self._ops: OrderedDict[str, Operation] = OrderedDict()
        self._by_request: dict[str, str] = {}
        self._changed = asyncio.Event()
        self.closed = False
        # Called with each operation as it ends (the metrics count them there).
        self.listeners: list[Callable[[Operation], None]] = []

    def close(self) -> None:
        """Shutdown: every watch ends after its next snapshot."""
        self.closed = True
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def create(self, kind: str, device_ids: list[str], request_id: str = "",
               fingerprint: str = "") -> Operation:
        op = Operation(f"op-{secrets.token_hex(8)}", kind, list(device_ids),
                       request_id=request_id, fingerprint=fingerprint,
                       outcomes={d: DeviceOutcome(d) for d in device_ids})
        self._ops[op.operation_id] = op
        if request_id:
            self._by_request[request_id] = op.operation_id
        while len(self._ops) > MAX_KEPT:
            oldest_id, oldest = next(iter(self._ops.items()))
            if not oldest.done:
                break
            del self._ops[oldest_id]
            self._by_request.pop(oldest.request_id, None)
        return op

    def get(self, operation_id: str) -> Operation | None:
        return self._ops.get(operation_id)

    def by_request(self, request_id: str) -> Operation | None:
        op_id = self._by_request.get(request_id)
        return self._ops.get(op_id) if op_id else None

    def running_for(self, device_id: str) -> Operation | None:
        return next((op for op in self._ops.values()
                     if not op.done and device_id in op.device_ids), None)

    def all(self) -> list[Operation]:
        return list(self._ops.values())

    # -- changes --------------------------------------------------------------------------

    def changed(self, op: Operation) -> None:
        """Tell the watchers (after changing `op` directly, e.g. its detail)."""
        op.version += 1
        event, self._changed = self._changed, asyncio.Event()
        event.set()  # every waiter wakes; later waiters wait on the new event

    def begin(self, op: Operation, device_id: str, phase: Phase, detail: str = "") -> None:
        """Close the device's running phase and open the next one."""
        self._close(op, device_id)
        op.phases.append(PhaseRecord(phase, device_id, time.time(), detail=detail))
        self.changed(op)

    def end(self, op: Operation, device_id: str) -> None:
        """The device's running phase is over (its duration is fixed now)."""
        self._close(op, device_id)
        self.changed(op)

    def note(self, op: Operation, device_id: str, detail: str) -> None:
        """Say more about the device's running phase (e.g. what it waits for)."""
        for record in reversed(op.phases):
            if record.device_id == device_id:
                record.detail = detail
                break
        self.changed(op)

    def _close(self, op: Operation, device_id: str) -> None:
        for record in reversed(op.phases):
            if record.device_id == device_id:
                if record.duration_s is None:
                    record.duration_s = time.monotonic() - record._started
                return

    def settle(self, op: Operation, device_id: str, state: OperationState, error: str = "",
               phase: Phase | None = None, detail: str = "") -> None:
        """The device's outcome; with `phase`, a closing phase record (ROLLED_BACK, FAILED)."""
        if phase is not None:
            self.begin(op, device_id, phase, detail or error)
        self._close(op, device_id)
        op.outcomes[device_id] = DeviceOutcome(device_id, state, error)
        self.changed(op)

    def finish(self, op: Operation, error: str = "", failed: bool = False) -> None:
        """The whole operation ends with its worst device outcome (or FAILED, when the
        operation as a whole failed: a curtailment that missed its target)."""
        for device_id in op.device_ids:
            self._close(op, device_id)
        states = [o.state for o in op.outcomes.values()] or [OperationState.SUCCEEDED]
        if failed:
            states.append(OperationState.FAILED)
        op.state = max(states, key=_SEVERITY.__getitem__)
        if op.state == OperationState.RUNNING:  # a device never settled: a bug, not success
            op.state = OperationState.FAILED
        errors = [f"{o.device_id}: {o.error}" for o in op.outcomes.values() if o.error]
        op.error = error or "; ".join(errors)
        op.end_unix_s = time.time()
        self.changed(op)
        for listener in self.listeners:
            listener(op)

    async def watch(self, operation_id: str) -> AsyncIterator[Operation]:
        """Snapshots of the operation at each change, ending with the final one."""
        sent = -1
        while True:
            changed = self._changed
            op = self._ops.get(operation_id)
            if op is None:
                return
            if op.version == sent:
                if self.closed:
                    return
                await changed.wait()
                continue
            sent = op.version
            snapshot = op.snapshot()
            yield snapshot
            if snapshot.done:
                return
