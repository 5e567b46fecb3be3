"""Operations: what a switch or a curtailment is doing, phase by phase, for every device.

An operation returns at once to the caller and is then followed with GetOperation and
WatchOperation; each phase is recorded with its device, start time, duration and detail. A
request_id makes a retried request return the same operation (the same id with another body is
refused). Finished operations are kept, newest last, up to a bound.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog

from rigapi.model import DeviceOutcome, Operation, OperationState, Phase, PhaseRecord

log = structlog.get_logger("rigd.operations")

MAX_KEPT = 1000


_SEVERITY = {OperationState.SUCCEEDED: 0, OperationState.ROLLED_BACK: 1,
             OperationState.FAILED: 2, OperationState.RUNNING: 3}



class Operations:
    """Every operation of this rigd, and the waiters that follow them."""

    def __init__(self, ended: Callable[[Operation], None] | None) -> None:
        """`ended` is called with each operation as it ends (the metrics count them there;
        None where nothing counts them)."""
        self._ops: OrderedDict[str, Operation] = OrderedDict()
        self._ended = ended
        self._by_request: dict[str, str] = {}
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()  # operations running (kept referenced)
        self.closed = False

    def run(self, op: Operation, body: Awaitable[None],
            after: Callable[[], None] | None = None) -> asyncio.Task[None]:
        """Run the operation's body as a task of its own. A bug in it still ends the
        operation, saying so; `after` runs however it ends."""

        async def guarded() -> None:
            try:
                await body
            except Exception as exc:
                log.exception("operation_crashed", operation_id=op.operation_id)
                self.finish(op, f"internal error: {exc!r}")
            finally:
                if after is not None:
                    after()

        task = asyncio.create_task(guarded(), name=op.operation_id)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

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
        if self._ended is not None:
            self._ended(op)

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
