"""Many simulated rigs from few processes, for the tests and benchmarks of fleet code.

Each rig is a real gRPC server (grpc.aio) on its own loopback port, serving rig.v1.RigAgent and
the standard health check, so a client reaches it exactly as it reaches rigd: one channel, one
TCP connection, HTTP/2, deadlines, status codes. A thousand such servers start in about a
second in one process; 2,500 per process keep 5,000 rigs on two cores.

What it shares with rigd: the API only (rigapi's generated messages, the service and method
names) and grpcio. What it does not: any of rigd's code. There is no sampler, switcher,
curtailment planner, lease manager, authentication, audit, HAL or hardware simulator behind it;
each rig is a light model written here:

- devices: `miners` ASIC miners (3,250 W nameplate, hashrate in proportion to power, sleep and
  wake) and `gpus` GPUs that switch between idle, hashing and inference through the phases rigd
  reports (requested .. ready), each phase `phase_s` long;
- telemetry: each device's power from its limit, a curtailment's cap, sleep and its workload,
  with a little noise; rebuilt at most every `interval_s` (like rigd's sampler, GetTelemetry
  answers the latest), the rig's power beside it (all measured);
- leases with fencing tokens, owned by the caller's bearer token (anonymous without one): the
  same rules as rig.v1 documents, written again here (a simulator does not borrow the product's
  code for the protocol it checks), without roles: every caller may change a simulated rig;
- curtailment: each device capped at an equal share of the target, confirmed after `phase_s`,
  lifted on cancel or at its expiry;
- faults per rig: `hang` (the connection is accepted, no call is ever answered), `refuse` (the
  server stops: connections are refused; `none` starts it again on the same port),
  `device_down` (its first miner does not answer: its reading is UNHEALTHY, and a change to it
  is UNAVAILABLE with rig.v1 ErrorInfo party=device), `firmware_refuses` (a change to its first
  miner is FAILED_PRECONDITION with party=firmware and the firmware's words);
- not served: RunDiagnostics (UNIMPLEMENTED, saying so).

    python -m client.sim --count 2500 [--miners 2] [--gpus 0] [--interval-s 1]

prints one JSON line, {"rigs": [{"name": ..., "address": "127.0.0.1:PORT"}, ...]}, then takes
one JSON command a line on stdin ({"fault": "hang", "rigs": [0, 5, ...]}), answering each with a
line, and stops when stdin closes. SimRigProcess runs it from Python.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import json
import random
import resource
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2

from rigapi import SERVICE_NAME, pb

MINER_NAMEPLATE_W = 3250.0
MINER_J_PER_TH = 30.0
SLEEP_W = 30.0
GPU_IDLE_W, GPU_HASHING_W, GPU_INFERENCE_W, GPU_LIMIT_W = 60.0, 280.0, 320.0, 350.0
PHASES = ("requested", "draining", "stopping", "verifying", "configuring", "starting", "ready")


class Fault(enum.StrEnum):
    NONE = "none"
    HANG = "hang"
    REFUSE = "refuse"
    DEVICE_DOWN = "device_down"
    FIRMWARE_REFUSES = "firmware_refuses"


def _now_ts(unix_s: float | None = None) -> Timestamp:
    t = time.time() if unix_s is None else unix_s
    seconds = int(t)
    return Timestamp(seconds=seconds, nanos=int((t - seconds) * 1e9))


class Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str, reason: str = "",
                 metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.metadata = code, reason, metadata or {}


@dataclass
class SimDevice:
    id: str
    kind: Any  # a pb.DeviceKind value
    limit_w: float
    workload: Any = pb.WORKLOAD_KIND_UNSPECIFIED  # GPUs: what runs (a pb.WorkloadKind value)
    sleeping: bool = False
    cap_w: float | None = None  # a curtailment's
    busy: bool = False  # a switch in progress

    def power_w(self, noise: float) -> float:
        if self.kind == pb.DEVICE_KIND_ASIC:
            draw = SLEEP_W if self.sleeping else min(self.limit_w, MINER_NAMEPLATE_W)
        else:
            draws: dict[Any, float] = {pb.WORKLOAD_KIND_HASHING: GPU_HASHING_W,
                                       pb.WORKLOAD_KIND_INFERENCE: GPU_INFERENCE_W}
            draw = draws.get(self.workload, GPU_IDLE_W)
            draw = min(draw, self.limit_w)
        if self.cap_w is not None:
            draw = min(draw, max(self.cap_w, SLEEP_W))
        return draw * noise


@dataclass
class SimOperation:
    message: pb.Operation
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def done(self) -> bool:
        return self.message.state != pb.OPERATION_STATE_RUNNING

    async def update(self, change: Callable[[pb.Operation], None]) -> None:
        async with self.changed:
            change(self.message)
            self.changed.notify_all()


class SimRig:
    """One simulated rig: its model and its rig.v1 handlers."""

    def __init__(self, index: int, miners: int = 2, gpus: int = 0, interval_s: float = 1.0,
                 phase_s: float = 0.05, seed: int | None = None) -> None:
        self.index = index
        self.name = f"sim-{index:05d}"
        self.interval_s = interval_s
        self.phase_s = phase_s
        self.fault = Fault.NONE
        self.random = random.Random(index if seed is None else seed)
        self.devices = [SimDevice(f"asic/{self.name}-m{j}", pb.DEVICE_KIND_ASIC,
                                  MINER_NAMEPLATE_W) for j in range(miners)]
        self.devices += [SimDevice(f"gpu/{self.name}-g{j}", pb.DEVICE_KIND_GPU, GPU_LIMIT_W,
                                   pb.WORKLOAD_KIND_IDLE) for j in range(gpus)]
        self.by_id = {d.id: d for d in self.devices}
        self.operations: dict[str, SimOperation] = {}
        self.lease: tuple[str, str, int, float] | None = None  # id, owner, token, expiry
        self.last_token = int(time.time() * 1_000_000)
        self.curtailment: pb.Curtailment | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._cached: tuple[float, bytes] | None = None
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- the model --------------------------------------------------------------------------

    def reading(self, device: SimDevice, now: float) -> pb.DeviceTelemetry:
        msg = pb.DeviceTelemetry(device_id=device.id, kind=device.kind, time=_now_ts(now))
        if device is self.devices[0] and self.fault == Fault.DEVICE_DOWN:
            msg.health.CopyFrom(pb.Health(state=pb.HEALTH_STATE_UNHEALTHY,
                                          reason="connection refused"))
            msg.error = "connection refused"
            return msg
        power = device.power_w(1 + self.random.uniform(-0.01, 0.01))
        msg.health.state = pb.HEALTH_STATE_HEALTHY
        msg.power_w = power
        msg.power_source = pb.POWER_SOURCE_MEASURED
        msg.power_limit_w = min(device.limit_w, device.cap_w or device.limit_w)
        msg.temp_c = 35 + power / 100
        if device.kind == pb.DEVICE_KIND_ASIC:
            msg.hashrate_hs = 0.0 if device.sleeping else power / MINER_J_PER_TH * 1e12
            msg.asic.is_mining = not device.sleeping
            msg.asic.firmware_family = "sim"
            msg.asic.algorithm = "sha256d"
        else:
            msg.gpu.power_limit_default_w = GPU_LIMIT_W
            msg.gpu.power_limit_enforced_w = msg.power_limit_w
            msg.workload.kind = device.workload
            msg.workload.state = pb.WORKLOAD_STATE_STARTING if device.busy else \
                pb.WORKLOAD_STATE_RUNNING
        return msg

    def telemetry(self, device_ids: Sequence[str] = ()) -> pb.GetTelemetryResponse:
        now = time.time()
        chosen = [self.by_id[d] for d in device_ids] if device_ids else self.devices
        response = pb.GetTelemetryResponse(devices=[self.reading(d, now) for d in chosen])
        if not device_ids:
            measured = sum(d.power_w for d in response.devices if d.HasField("power_w"))
            response.rig_power.CopyFrom(pb.RigPower(
                total_w=measured, measured_w=measured, estimated_w=0.0, time=_now_ts(now),
                unknown_device_ids=[d.device_id for d in response.devices
                                    if not d.HasField("power_w")]))
        return response

    def rig_power_w(self) -> float:
        return sum(d.power_w(1.0) for d in self.devices)

    # ---- leases -----------------------------------------------------------------------------

    def _live_lease(self) -> tuple[str, str, int, float] | None:
        if self.lease is not None and self.lease[3] <= time.time():
            self.lease = None
        return self.lease

    def admit(self, token: int, owner: str) -> None:
        live = self._live_lease()
        if live is None:
            if token:
                raise Abort(grpc.StatusCode.FAILED_PRECONDITION,
                            f"fencing token {token} is stale: no lease is live (expired?)")
            return
        if token != live[2]:
            raise Abort(grpc.StatusCode.FAILED_PRECONDITION,
                        f"rig is leased by {live[1]}; token {token or 'none'} refused")
        if owner != live[1]:
            raise Abort(grpc.StatusCode.PERMISSION_DENIED,
                        f"the fencing token belongs to {live[1]}, not {owner}")

    def _lease_msg(self, holder: str) -> pb.Lease:
        assert self.lease is not None
        lease_id, owner, token, expiry = self.lease
        return pb.Lease(lease_id=lease_id, holder=f"{holder} ({owner})", fencing_token=token,
                        expire_time=_now_ts(expiry))

    # ---- handlers ---------------------------------------------------------------------------

    async def _gate(self) -> None:
        if self.fault == Fault.HANG:
            await asyncio.Event().wait()  # never answers; cancelled when the caller gives up

    def _device(self, device_id: str) -> SimDevice:
        device = self.by_id.get(device_id)
        if device is None:
            raise Abort(grpc.StatusCode.NOT_FOUND, f"unknown device id(s): {device_id!r}")
        return device

    def _device_fault(self, device: SimDevice) -> None:
        if device is not self.devices[0]:
            return
        if self.fault == Fault.DEVICE_DOWN:
            raise Abort(grpc.StatusCode.UNAVAILABLE, f"{device.id}: connection refused",
                        "DEVICE_UNREACHABLE", {"party": "device", "device_id": device.id})
        if self.fault == Fault.FIRMWARE_REFUSES:
            says = "Invalid pool id 5 - range is 0 - 0"
            raise Abort(grpc.StatusCode.FAILED_PRECONDITION, f"{device.id}: {says}",
                        "FIRMWARE_REFUSED", {"party": "firmware", "device_id": device.id,
                                             "firmware_says": says})

    async def GetInventory(self, request: pb.GetInventoryRequest, owner: str
                           ) -> pb.GetInventoryResponse:
        response = pb.GetInventoryResponse(rig_id=self.name, agent_version="sim")
        for d in self.devices:
            caps = ["telemetry", "set_power_limit"] + (
                ["sleep_wake"] if d.kind == pb.DEVICE_KIND_ASIC else ["hashing", "inference"])
            entry = response.devices.add(id=d.id, kind=d.kind, name="simulated", simulated=True,
                                         capabilities=sorted(caps))
            entry.health.state = pb.HEALTH_STATE_HEALTHY
            if d.kind == pb.DEVICE_KIND_GPU:
                entry.workload.kind = d.workload
        response.backends.add(name="sim", available=True, device_count=len(self.devices))
        if self.curtailment is not None:
            response.curtailment.CopyFrom(self.curtailment)
        return response

    async def GetTelemetry(self, request: pb.GetTelemetryRequest, owner: str) -> bytes:
        for device_id in request.device_ids:
            self._device(device_id)
        if request.device_ids:
            return self.telemetry(list(request.device_ids)).SerializeToString()
        # Like rigd: the latest readings, at most max_age old (0: twice the interval); made and
        # encoded at most once per interval however many ask.
        now = time.monotonic()
        max_age = request.max_age_ms / 1000 if request.max_age_ms else 2 * self.interval_s
        if self._cached is None or now - self._cached[0] > max_age:
            self._cached = (now, self.telemetry().SerializeToString())
        return self._cached[1]

    async def StreamTelemetry(self, request: pb.StreamTelemetryRequest, owner: str
                              ) -> AsyncIterator[pb.StreamTelemetryResponse]:
        for device_id in request.device_ids:
            self._device(device_id)
        interval = request.interval_ms / 1000 if request.interval_ms else self.interval_s
        sequence = 0
        while True:
            reply = self.telemetry(list(request.device_ids))
            sequence += 1
            message = pb.StreamTelemetryResponse(devices=reply.devices, sequence=sequence)
            if reply.HasField("rig_power"):
                message.rig_power.CopyFrom(reply.rig_power)
            yield message
            await asyncio.sleep(interval)

    async def AcquireLease(self, request: pb.AcquireLeaseRequest, owner: str
                           ) -> pb.AcquireLeaseResponse:
        if not 1 <= request.ttl_s <= 3600:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "ttl_s must be within 1 .. 3600")
        live = self._live_lease()
        if live is not None and live[1] != owner and not request.preempt:
            raise Abort(grpc.StatusCode.FAILED_PRECONDITION, f"rig is leased by {live[1]}")
        self.last_token += 1 + secrets.randbelow(1 << 20)
        self.lease = (secrets.token_hex(16), owner, self.last_token,
                      time.time() + request.ttl_s)
        return pb.AcquireLeaseResponse(lease=self._lease_msg(request.holder or owner))

    async def RenewLease(self, request: pb.RenewLeaseRequest, owner: str
                         ) -> pb.RenewLeaseResponse:
        live = self._live_lease()
        if live is None or live[0] != request.lease_id:
            raise Abort(grpc.StatusCode.NOT_FOUND, f"lease {request.lease_id!r} is not live")
        if live[1] != owner:
            raise Abort(grpc.StatusCode.PERMISSION_DENIED, f"lease belongs to {live[1]}")
        self.lease = (live[0], live[1], live[2], time.time() + max(1, request.ttl_s))
        return pb.RenewLeaseResponse(lease=self._lease_msg(owner))

    async def ReleaseLease(self, request: pb.ReleaseLeaseRequest, owner: str
                           ) -> pb.ReleaseLeaseResponse:
        live = self._live_lease()
        if live is None or live[0] != request.lease_id:
            raise Abort(grpc.StatusCode.NOT_FOUND, f"lease {request.lease_id!r} is not live")
        if live[1] != owner:
            raise Abort(grpc.StatusCode.PERMISSION_DENIED, f"lease belongs to {live[1]}")
        self.lease = None
        return pb.ReleaseLeaseResponse()

    async def SetPowerLimit(self, request: pb.SetPowerLimitRequest, owner: str
                            ) -> pb.SetPowerLimitResponse:
        device = self._device(request.device_id)
        if not request.power_limit_w > 0:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT,
                        "power_limit_w must be a positive number of watts")
        self.admit(request.fencing_token, owner)
        self._device_fault(device)
        device.limit_w = request.power_limit_w
        self._cached = None
        applied = min(device.limit_w, device.cap_w or device.limit_w)
        detail = f"capped at {device.cap_w:g} W by curtailment" if applied < device.limit_w \
            else ""
        return pb.SetPowerLimitResponse(power_limit_w=applied,
                                        requested_w=request.power_limit_w, detail=detail)

    async def DeviceAction(self, request: pb.DeviceActionRequest, owner: str
                           ) -> pb.DeviceActionResponse:
        device = self._device(request.device_id)
        if device.kind != pb.DEVICE_KIND_ASIC or request.action not in (
                pb.DEVICE_ACTION_KIND_SLEEP, pb.DEVICE_ACTION_KIND_WAKE):
            raise Abort(grpc.StatusCode.FAILED_PRECONDITION,
                        f"{device.id} cannot do that (simulated: miners sleep and wake)")
        self.admit(request.fencing_token, owner)
        self._device_fault(device)
        device.sleeping = request.action == pb.DEVICE_ACTION_KIND_SLEEP
        self._cached = None
        return pb.DeviceActionResponse(detail=f"{'sleep' if device.sleeping else 'wake'} sent")

    def _operation(self, kind: str, device_ids: Iterable[str], request_id: str = ""
                   ) -> SimOperation:
        msg = pb.Operation(operation_id=f"op-{secrets.token_hex(6)}",
                           state=pb.OPERATION_STATE_RUNNING, device_ids=list(device_ids),
                           create_time=_now_ts(), kind=kind, request_id=request_id)
        op = SimOperation(msg)
        self.operations[msg.operation_id] = op
        return op

    async def _phases(self, op: SimOperation, device: SimDevice | None,
                      phases: Sequence[Any], at_end: Callable[[], None]) -> None:
        device_id = device.id if device is not None else ""
        for phase in phases:
            started = time.time()

            def begin(m: pb.Operation, phase: Any = phase, started: float = started) -> None:
                m.phases.add(phase=phase, start_time=_now_ts(started), device_id=device_id)
            await op.update(begin)
            await asyncio.sleep(self.phase_s)
            took = round((time.time() - started) * 1000)

            def close(m: pb.Operation, took: int = took) -> None:
                m.phases[-1].duration_ms = took
            await op.update(close)
        at_end()
        self._cached = None

        def finish(m: pb.Operation) -> None:
            m.outcomes.add(device_id=device_id, state=pb.OPERATION_STATE_SUCCEEDED)
            m.state = pb.OPERATION_STATE_SUCCEEDED
            m.end_time.CopyFrom(_now_ts())
        await op.update(finish)

    async def SetWorkload(self, request: pb.SetWorkloadRequest, owner: str
                          ) -> pb.SetWorkloadResponse:
        devices = [self._device(d) for d in request.device_ids]
        if not devices or len({d.id for d in devices}) != len(devices):
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "name 1 .. 64 distinct devices")
        if request.request_id:
            for op in self.operations.values():
                if op.message.request_id == request.request_id:
                    return pb.SetWorkloadResponse(operation=op.message)
        if any(d.kind != pb.DEVICE_KIND_GPU for d in devices):
            raise Abort(grpc.StatusCode.FAILED_PRECONDITION,
                        "a simulated miner runs its firmware's hashing only")
        self.admit(request.fencing_token, owner)
        if any(d.busy for d in devices):
            raise Abort(grpc.StatusCode.FAILED_PRECONDITION, "a device is already switching")
        op = self._operation("set_workload", request.device_ids, request.request_id)
        phases = [getattr(pb, f"SWITCH_PHASE_{p.upper()}") for p in PHASES]
        kind = request.workload.kind
        for device in devices:
            device.busy = True

            def switched(d: SimDevice = device) -> None:
                d.workload, d.busy = kind, False
            self._spawn(self._phases(op, device, phases, switched))
        return pb.SetWorkloadResponse(operation=op.message)

    async def GetOperation(self, request: pb.GetOperationRequest, owner: str
                           ) -> pb.GetOperationResponse:
        op = self.operations.get(request.operation_id)
        if op is None:
            raise Abort(grpc.StatusCode.NOT_FOUND, f"no operation {request.operation_id!r}")
        return pb.GetOperationResponse(operation=op.message)

    async def WatchOperation(self, request: pb.WatchOperationRequest, owner: str
                             ) -> AsyncIterator[pb.WatchOperationResponse]:
        op = self.operations.get(request.operation_id)
        if op is None:
            raise Abort(grpc.StatusCode.NOT_FOUND, f"no operation {request.operation_id!r}")
        sent = b""
        while True:
            async with op.changed:
                raw = op.message.SerializeToString()
                if raw == sent:  # nothing new since the last snapshot: wait for a change
                    await op.changed.wait()
                    continue
            sent = raw
            snapshot = pb.Operation.FromString(raw)
            yield pb.WatchOperationResponse(operation=snapshot)
            if snapshot.state != pb.OPERATION_STATE_RUNNING:
                return

    async def ListOperations(self, request: pb.ListOperationsRequest, owner: str
                             ) -> pb.ListOperationsResponse:
        ops = [op.message for op in reversed(self.operations.values())
               if not request.running_only or not op.done][:request.limit or 50]
        return pb.ListOperationsResponse(operations=ops)

    async def Curtail(self, request: pb.CurtailRequest, owner: str) -> pb.CurtailResponse:
        if not request.rig_power_target_w > 0 or not 1 <= request.deadline_s <= 3600 \
                or not 1 <= request.expiry_s <= 86400:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT,
                        "target > 0, deadline_s 1 .. 3600, expiry_s 1 .. 86400")
        self.admit(request.fencing_token, owner)
        before = self.rig_power_w()
        op = self._operation("curtail", [])
        share = request.rig_power_target_w / max(1, len(self.devices))
        self.curtailment = pb.Curtailment(
            rig_power_target_w=request.rig_power_target_w, reason=request.reason,
            deadline_time=_now_ts(time.time() + request.deadline_s),
            expire_time=_now_ts(time.time() + request.expiry_s),
            operation_id=op.message.operation_id, state="shedding", rig_power_before_w=before,
            source=owner)
        if self._expiry is not None:
            self._expiry.cancel()
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_later(request.expiry_s, self._lift)
        started = time.time()

        def shed() -> None:
            for d in self.devices:
                d.cap_w = share
            if self.curtailment is not None:
                self.curtailment.state = "confirmed"
                self.curtailment.below_target_after_s = time.time() - started
            op.message.detail = (f"target {request.rig_power_target_w:g} W: "
                                 f"{self.rig_power_w():.0f} W from {before:.0f} W")
        self._spawn(self._phases(op, None, [pb.SWITCH_PHASE_SHEDDING,
                                            pb.SWITCH_PHASE_CONFIRMED], shed))
        return pb.CurtailResponse(operation=op.message)

    def _lift(self) -> None:
        for d in self.devices:
            d.cap_w = None
        self.curtailment = None
        self._cached = None

    async def CancelCurtailment(self, request: pb.CancelCurtailmentRequest, owner: str
                                ) -> pb.CancelCurtailmentResponse:
        self.admit(request.fencing_token, owner)
        if self.curtailment is None:
            raise Abort(grpc.StatusCode.FAILED_PRECONDITION, "no curtailment is in force")
        if self._expiry is not None:
            self._expiry.cancel()
        op = self._operation("restore_curtailment", [])
        self._spawn(self._phases(op, None, [pb.SWITCH_PHASE_READY], self._lift))
        return pb.CancelCurtailmentResponse(operation=op.message)

    async def RunDiagnostics(self, request: pb.RunDiagnosticsRequest, owner: str
                             ) -> AsyncIterator[pb.RunDiagnosticsResponse]:
        raise Abort(grpc.StatusCode.UNIMPLEMENTED, "a simulated rig runs no diagnostics")
        yield pb.RunDiagnosticsResponse()  # pragma: no cover - makes this a generator

    # ---- serving ----------------------------------------------------------------------------

    def _owner(self, context: grpc.aio.ServicerContext) -> str:
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and value.startswith("Bearer "):
                return "token:" + value.removeprefix("Bearer ")[:16]
        return "anonymous"

    async def _abort(self, context: grpc.aio.ServicerContext, exc: Abort) -> None:
        if exc.reason:  # rig.v1's structured detail: a google.rpc.Status with one ErrorInfo
            status = status_pb2.Status(code=exc.code.value[0], message=str(exc))
            status.details.add().Pack(error_details_pb2.ErrorInfo(
                reason=exc.reason, domain="rig.v1", metadata=exc.metadata))
            context.set_trailing_metadata((("grpc-status-details-bin",
                                            status.SerializeToString()),))
        await context.abort(exc.code, str(exc))

    def handler(self) -> grpc.GenericRpcHandler:
        service = pb.DESCRIPTOR.services_by_name["RigAgent"]
        handlers: dict[str, grpc.RpcMethodHandler] = {}
        for method in service.methods:
            request_cls = getattr(pb, method.input_type.name)
            behaviour = getattr(self, method.name)
            if method.server_streaming:
                handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                    self._stream(behaviour), request_cls.FromString,
                    lambda m: m.SerializeToString())
            else:
                handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                    self._unary(behaviour), request_cls.FromString,
                    lambda m: m if isinstance(m, bytes) else m.SerializeToString())
        return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)

    def _unary(self, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await self._gate()
            try:
                return await behaviour(request, self._owner(context))
            except Abort as exc:
                await self._abort(context, exc)
        return call

    def _stream(self, behaviour: Callable[..., AsyncIterator[Any]]) -> Callable[..., Any]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await self._gate()
            try:
                async for item in behaviour(request, self._owner(context)):
                    yield item
            except Abort as exc:
                await self._abort(context, exc)
        return call

    async def start(self, host: str = "127.0.0.1") -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((self.handler(), _health_handler(self)))
        port = server.add_insecure_port(f"{host}:{self.port}")
        await server.start()
        self.server, self.port = server, port

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0)
            self.server = None

    async def set_fault(self, fault: Fault) -> None:
        if fault == Fault.REFUSE:
            await self.stop()
        elif self.server is None:
            await self.start()
        self.fault = fault
        self._cached = None


def _health_handler(rig: SimRig) -> grpc.GenericRpcHandler:
    async def check(request: health_pb2.HealthCheckRequest, context: Any
                    ) -> health_pb2.HealthCheckResponse:
        await rig._gate()
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    return grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
        "Check": grpc.unary_unary_rpc_method_handler(
            check, health_pb2.HealthCheckRequest.FromString,
            health_pb2.HealthCheckResponse.SerializeToString)})


def raise_fd_limit() -> None:
    """Each rig holds a listening socket and a connection: lift the soft limit to the hard."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(args: argparse.Namespace, stdin: IO[str], stdout: IO[str]) -> None:
    raise_fd_limit()
    rigs = [SimRig(args.first + i, args.miners, args.gpus, args.interval_s, args.phase_s)
            for i in range(args.count)]
    for rig in rigs:
        await rig.start()
    stdout.write(json.dumps({"rigs": [{"name": r.name, "address": f"127.0.0.1:{r.port}"}
                                      for r in rigs]}) + "\n")
    stdout.flush()
    loop = asyncio.get_running_loop()
    try:
        while True:
            line = await loop.run_in_executor(None, stdin.readline)
            if not line:
                break
            try:
                command = json.loads(line)
                fault = Fault(command["fault"])
                for index in command["rigs"]:
                    await rigs[int(index)].set_fault(fault)
                stdout.write(json.dumps({"ok": True}) + "\n")
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                stdout.write(json.dumps({"ok": False, "error": str(exc)}) + "\n")
            stdout.flush()
    finally:
        await asyncio.gather(*(rig.stop() for rig in rigs))


class SimRigProcess:
    """`python -m client.sim` in a process of its own: start(), the rigs' (name, address),
    set_fault(), stop()."""

    def __init__(self, count: int, *, first: int = 0, miners: int = 2, gpus: int = 0,
                 interval_s: float = 1.0, phase_s: float = 0.05) -> None:
        self.argv = [sys.executable, "-m", "client.sim", "--count", str(count), "--first",
                     str(first), "--miners", str(miners), "--gpus", str(gpus), "--interval-s",
                     str(interval_s), "--phase-s", str(phase_s)]
        self.proc: subprocess.Popen[str] | None = None
        self.rigs: list[tuple[str, str]] = []

    def start(self) -> SimRigProcess:
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError(f"{' '.join(self.argv)} exited {self.proc.returncode}")
        self.rigs = [(r["name"], r["address"]) for r in json.loads(line)["rigs"]]
        return self

    def set_fault(self, indices: Iterable[int], fault: Fault | str) -> None:
        assert self.proc is not None and self.proc.stdin is not None \
            and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"fault": str(Fault(fault)),
                                          "rigs": list(indices)}) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        if not answer["ok"]:
            raise RuntimeError(f"simulated rigs refused the fault: {answer['error']}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def __enter__(self) -> SimRigProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m client.sim",
                                     description="Serve many simulated rig.v1 rigs.")
    parser.add_argument("--count", type=int, default=10, help="rigs (default: %(default)s)")
    parser.add_argument("--first", type=int, default=0,
                        help="the first rig's number, for names unique across processes")
    parser.add_argument("--miners", type=int, default=2, help="miners per rig")
    parser.add_argument("--gpus", type=int, default=0, help="GPUs per rig")
    parser.add_argument("--interval-s", type=float, default=1.0,
                        help="seconds between telemetry rebuilds")
    parser.add_argument("--phase-s", type=float, default=0.05,
                        help="seconds each switch or curtailment phase takes")
    args = parser.parse_args(argv)
    if args.count < 1 or args.miners + args.gpus < 1:
        parser.error("a rig needs at least one device, and --count at least 1")
    asyncio.run(serve(args, sys.stdin, sys.stdout))
    return 0


if __name__ == "__main__":
    sys.exit(main())
