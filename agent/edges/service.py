"""The rig.v1.RigAgent servicer: validates requests, admits them through leases, calls the HAL.

It runs on the agent's event loop (grpc.aio): a stream costs no thread, and blocking HAL calls run
off the loop, in asyncio's default executor (sized by the daemon). Every call reaches it through
the gate (agent/edges/gate.py), which has identified the caller (`caller(context)`), decoded the
request and taken a place in the streams budget; every string field has been checked against
agent/edges/limits.py. What a method raises (agent.core.errors.Refused, the HAL's errors, with
the device named where one is involved) becomes its status in one table (agent/edges/status.py).
RPCs whose behaviour is not built yet answer UNIMPLEMENTED saying what is missing; they never
pretend to succeed. Text that came from the caller is clipped before it is echoed in a status.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import structlog

from agent import __version__
from agent.core.errors import Code, Refused
from agent.core.power import rig_power
from agent.edges.gate import caller
from agent.edges.status import DeviceFailed, clip
from agent.runtime.curtail import Curtailer
from agent.runtime.diagnostics import LEVEL_NAMES, Diagnostics, DiagnosticsBusy
from agent.runtime.leases import Lease, LeaseManager
from agent.runtime.operations import Operations
from agent.runtime.powerwrite import PowerWriter
from agent.runtime.sampler import MIN_INTERVAL_S, Sampler
from agent.runtime.switcher import Switcher, SwitchRequest
from agent.runtime.workloads.manager import WorkloadManager
from hal import errors
from hal.device import Capability, Device, Health, HealthState
from hal.registry import Discovery
from rigapi import convert, pb
from rigapi.model import (
    IDLE,
    HashingSpec,
    InferenceSpec,
    Operation,
    Reading,
    WorkloadKind,
    WorkloadSpec,
)

log = structlog.get_logger("rigd.service")

MIN_STREAM_INTERVAL_MS = round(MIN_INTERVAL_S * 1000)
MAX_STREAM_INTERVAL_MS = 3_600_000
_ACTIONS = {
    pb.DEVICE_ACTION_KIND_SLEEP: ("sleep", Capability.SLEEP_WAKE),
    pb.DEVICE_ACTION_KIND_WAKE: ("wake", Capability.SLEEP_WAKE),
    pb.DEVICE_ACTION_KIND_RESTART: ("restart", Capability.RESTART),
    pb.DEVICE_ACTION_KIND_POOL_SWITCH: ("switch_pool", Capability.POOL_SWITCH),
}
# Responses the servicer hands over already serialized (see convert.encode_stream_message).
_PRESERIALIZED = frozenset({"StreamTelemetry"})


@contextlib.contextmanager
def _on_device(device_id: str) -> Iterator[None]:
    """A HAL error raised here is the device's (or its firmware's), said with its id."""
    try:
        yield
    except errors.HalError as exc:
        raise DeviceFailed(device_id, exc) from None


def _lease_pb(lease: Lease) -> pb.Lease:
    return pb.Lease(
        lease_id=lease.lease_id,
        holder=f"{lease.holder} ({lease.owner})",
        fencing_token=lease.fencing_token,
        expire_time=convert.timestamp(lease.expire_unix_s),
    )


class RigAgentService:
    def __init__(
        self,
        rig_id: str,
        discovery: Discovery,
        sampler: Sampler,
        workloads: WorkloadManager,
        operations: Operations,
        switcher: Switcher,
        curtailer: Curtailer,
        power: PowerWriter,
        leases: LeaseManager,
        diagnostics: Diagnostics,
    ) -> None:
        self.rig_id = rig_id
        self.discovery = discovery
        self.devices: dict[str, Device] = discovery.by_id()
        self.sampler = sampler
        self.workloads = workloads
        self.operations = operations
        self.switcher = switcher
        self.curtailer = curtailer
        self.power = power
        self.leases = leases
        self.diagnostics = diagnostics
        self.stopping = False
        self._encoded: dict[str, tuple[Reading, bytes]] = {}

    # -- helpers --------------------------------------------------------------------------

    def _device_ids(self, ids: Any) -> list[str]:
        unknown = [d for d in ids if d not in self.devices]
        if unknown:
            shown = ", ".join(repr(clip(d, 80)) for d in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise Refused(Code.NOT_FOUND,
                          f"unknown device id(s): {shown}{more}; see `rigctl inventory`",
                          reason="UNKNOWN_DEVICE")
        return list(ids)

    def _admit(self, fencing_token: int, context: Any) -> None:
        self.leases.check(fencing_token, caller(context).name)

    def _encode(self, reading: Reading) -> bytes:
        cached = self._encoded.get(reading.device_id)
        if cached is not None and cached[0] is reading:
            return cached[1]
        encoded = convert.encode_stream_device(reading)
        self._encoded[reading.device_id] = (reading, encoded)
        return encoded

    # -- inventory and telemetry ----------------------------------------------------------

    async def GetInventory(self, request: pb.GetInventoryRequest, context: Any
                           ) -> pb.GetInventoryResponse:
        response = pb.GetInventoryResponse(
            rig_id=self.rig_id,
            agent_version=__version__,
            backends=[convert.backend(b) for b in self.discovery.backends],
        )
        # Health as telemetry says it: the latest attempt, success or not (the same readings
        # GetTelemetry serves, with the same freshness rule).
        readings = await self.sampler.latest()
        for device_id, info in (await self.sampler.infos()).items():
            device = self.devices[device_id]
            reading = readings.get(device_id)
            latest = reading.telemetry.health if reading is not None else \
                Health(HealthState.UNKNOWN, "not read yet")
            if isinstance(info, str):  # never answered: say why
                msg = pb.Device(
                    id=device_id,
                    kind=convert.enum_value(pb.DeviceKind.DESCRIPTOR, device.kind),
                    health=pb.Health(state=pb.HEALTH_STATE_UNHEALTHY, reason=info),
                )
            else:
                msg = convert.device(info, self.workloads.capabilities(device),
                                     self.workloads.health(device_id, latest),
                                     self.workloads.current_spec(device_id))
            response.devices.append(msg)
        if self.curtailer.current is not None:
            response.curtailment.CopyFrom(convert.curtailment(self.curtailer.current.status()))
        return response

    async def GetTelemetry(self, request: pb.GetTelemetryRequest, context: Any
                           ) -> pb.GetTelemetryResponse:
        ids = self._device_ids(request.device_ids)
        max_age_s = request.max_age_ms / 1000 if request.max_age_ms else None
        readings = await self.sampler.latest(ids, max_age_s)
        response = pb.GetTelemetryResponse(devices=[convert.reading(r)
                                                    for r in readings.values()])
        if not ids:
            response.rig_power.CopyFrom(convert.rig_power(rig_power(readings.values())))
        return response

    async def StreamTelemetry(self, request: pb.StreamTelemetryRequest, context: Any
                              ) -> AsyncIterator[bytes]:
        ids = self._device_ids(request.device_ids)
        interval_ms = request.interval_ms or round(self.sampler.interval_s * 1000)
        if not MIN_STREAM_INTERVAL_MS <= interval_ms <= MAX_STREAM_INTERVAL_MS:
            raise Refused(Code.INVALID_ARGUMENT,
                          f"interval_ms must be within {MIN_STREAM_INTERVAL_MS} .. "
                          f"{MAX_STREAM_INTERVAL_MS}, got {interval_ms}")
        sub = self.sampler.subscribe(ids, interval_ms / 1000)
        try:
            while not self.stopping:
                readings = await sub.get()
                if readings is None:
                    return
                # The generator is resumed once the transport has taken this message: while
                # it holds the message, the sampler's newer readings replace the one waiting
                # here (each replaced one counted as dropped), so what is sent is the newest.
                power = rig_power(readings.values()) if not ids else None
                yield convert.encode_stream_message(
                    [self._encode(r) for r in readings.values()], sub.sequence, sub.dropped,
                    power, time.time(), interval_ms)
        finally:
            self.sampler.unsubscribe(sub)

    # -- leases ---------------------------------------------------------------------------

    async def AcquireLease(self, request: pb.AcquireLeaseRequest, context: Any
                           ) -> pb.AcquireLeaseResponse:
        identity = caller(context)
        if request.preempt and not identity.at_least("admin"):
            raise Refused(Code.PERMISSION_DENIED, "preempting a lease needs admin",
                          reason="ROLE_TOO_LOW")
        lease = self.leases.acquire(request.holder, identity.name, request.ttl_s,
                                    request.preempt)
        return pb.AcquireLeaseResponse(lease=_lease_pb(lease))

    async def RenewLease(self, request: pb.RenewLeaseRequest, context: Any
                         ) -> pb.RenewLeaseResponse:
        lease = self.leases.renew(request.lease_id, caller(context).name, request.ttl_s)
        return pb.RenewLeaseResponse(lease=_lease_pb(lease))

    async def ReleaseLease(self, request: pb.ReleaseLeaseRequest, context: Any
                           ) -> pb.ReleaseLeaseResponse:
        self.leases.release(request.lease_id, caller(context).name)
        return pb.ReleaseLeaseResponse()

    # -- control --------------------------------------------------------------------------

    async def SetPowerLimit(self, request: pb.SetPowerLimitRequest, context: Any
                            ) -> pb.SetPowerLimitResponse:
        (device_id,) = self._device_ids([request.device_id])
        watts = request.power_limit_w
        if not math.isfinite(watts) or watts <= 0:
            raise Refused(Code.INVALID_ARGUMENT,
                          f"power_limit_w must be a positive number of watts, got {watts!r}")
        self._admit(request.fencing_token, context)
        device = self.devices[device_id]
        if Capability.SET_POWER_LIMIT not in device.capabilities:
            raise Refused(
                Code.FAILED_PRECONDITION,
                f"{device_id} cannot set a power limit (capabilities: "
                f"{', '.join(sorted(self.workloads.capabilities(device)))})",
                reason="NOT_SUPPORTED")
        with _on_device(device_id):
            detail = await self.power.set_operator_limit(device, watts)
            reading = await self.power.write(device, device.telemetry)
        applied = reading.power_limit_w if reading.power_limit_w is not None else watts
        if not detail and abs(applied - watts) > 0.5:
            detail = f"the firmware applied {applied:g} W (its nearest setting)"
        log.info("power_limit_set", device_id=device_id, requested_w=watts, applied_w=applied,
                 detail=detail or None)
        return pb.SetPowerLimitResponse(power_limit_w=applied, requested_w=watts, detail=detail)

    def _spec_for(self, device_id: str, workload: pb.Workload) -> WorkloadSpec:
        """The request's workload for one device, its gaps filled from the configuration (the
        strings are already bounded and shaped by the edge's limits)."""
        kind = convert.enum_member(pb.WorkloadKind.DESCRIPTOR, workload.kind, WorkloadKind)
        which = workload.WhichOneof("spec")
        if kind is None:
            raise Refused(Code.INVALID_ARGUMENT,
                          "workload.kind must be idle, hashing or inference")
        if which is not None and which != str(kind):
            raise Refused(Code.INVALID_ARGUMENT,
                          f"a {kind} workload cannot carry a {which} spec")
        if kind == WorkloadKind.IDLE:
            return IDLE
        if kind == WorkloadKind.INFERENCE:
            profile, model = workload.inference.profile, workload.inference.model
            if not profile:
                raise Refused(Code.INVALID_ARGUMENT, "inference needs a profile")
            return WorkloadSpec(kind, inference=InferenceSpec(profile, model))
        return WorkloadSpec(kind, hashing=self._hashing_spec(device_id, workload.hashing))

    def _hashing_spec(self, device_id: str, requested: pb.HashingSpec) -> HashingSpec:
        base = self.workloads.configured_hashing(device_id)
        if requested.algorithm not in ("", "sha256d"):
            raise Refused(Code.INVALID_ARGUMENT,
                          f"algorithm {clip(requested.algorithm, 40)!r}: only sha256d")
        urls = tuple(requested.pool_urls) or base.pool_urls
        if not urls:
            raise Refused(Code.FAILED_PRECONDITION,
                          "no pool given and none configured ([pool] urls)",
                          reason="NO_POOL")
        intensity = requested.intensity or base.intensity
        if not math.isfinite(intensity) or not 0 < intensity <= 1:
            raise Refused(Code.INVALID_ARGUMENT,
                          f"intensity must be in (0, 1], got {intensity!r}")
        user, password = requested.user or base.user, requested.password or base.password
        return HashingSpec(urls, user, password, intensity, base.version_rolling)

    async def SetWorkload(self, request: pb.SetWorkloadRequest, context: Any
                          ) -> pb.SetWorkloadResponse:
        ids = self._device_ids(request.device_ids)
        if len(set(ids)) != len(ids):
            raise Refused(Code.INVALID_ARGUMENT, "a device is named twice")
        specs = {d: self._spec_for(d, request.workload) for d in ids}
        self._admit(request.fencing_token, context)
        switch = SwitchRequest(specs, request.request_id)
        op = self.switcher.check(switch) or self.switcher.submit(switch)
        return pb.SetWorkloadResponse(operation=convert.operation(op.snapshot()))

    def _operation(self, operation_id: str) -> Operation:
        op = self.operations.get(operation_id)
        if op is None:
            raise Refused(Code.NOT_FOUND,
                          f"no operation {clip(operation_id, 80)!r}; see `rigctl ops`",
                          reason="UNKNOWN_OPERATION")
        return op

    async def GetOperation(self, request: pb.GetOperationRequest, context: Any
                           ) -> pb.GetOperationResponse:
        op = self._operation(request.operation_id)
        return pb.GetOperationResponse(operation=convert.operation(op.snapshot()))

    async def WatchOperation(self, request: pb.WatchOperationRequest, context: Any
                             ) -> AsyncIterator[pb.WatchOperationResponse]:
        self._operation(request.operation_id)
        async for snapshot in self.operations.watch(request.operation_id):
            yield pb.WatchOperationResponse(operation=convert.operation(snapshot))

    async def ListOperations(self, request: pb.ListOperationsRequest, context: Any
                             ) -> pb.ListOperationsResponse:
        limit = request.limit or 50
        if not 1 <= limit <= 1000:
            raise Refused(Code.INVALID_ARGUMENT, "limit must be within 1 .. 1000")
        ops = [op for op in reversed(self.operations.all())
               if not request.running_only or not op.done][:limit]
        return pb.ListOperationsResponse(operations=[convert.operation(op.snapshot())
                                                     for op in ops])

    async def Curtail(self, request: pb.CurtailRequest, context: Any) -> pb.CurtailResponse:
        identity = caller(context).name
        self.curtailer.check(request.rig_power_target_w, request.deadline_s,
                             request.expiry_s, request.reason)
        self._admit(request.fencing_token, context)
        op = await self.curtailer.curtail(request.rig_power_target_w, request.deadline_s,
                                          request.expiry_s, request.reason, identity)
        return pb.CurtailResponse(operation=convert.operation(op.snapshot()))

    async def CancelCurtailment(self, request: pb.CancelCurtailmentRequest, context: Any
                                ) -> pb.CancelCurtailmentResponse:
        self._admit(request.fencing_token, context)
        op = await self.curtailer.cancel(f"cancelled by {caller(context).name}")
        if op is None:
            raise Refused(Code.FAILED_PRECONDITION, "no curtailment is in force",
                          reason="NO_CURTAILMENT")
        return pb.CancelCurtailmentResponse(operation=convert.operation(op.snapshot()))

    async def DeviceAction(self, request: pb.DeviceActionRequest, context: Any
                           ) -> pb.DeviceActionResponse:
        (device_id,) = self._device_ids([request.device_id])
        action = _ACTIONS.get(request.action)
        if action is None:
            raise Refused(Code.INVALID_ARGUMENT,
                          "action must be sleep, wake, restart or pool_switch")
        name, capability = action
        device = self.devices[device_id]
        if capability not in self.workloads.capabilities(device):
            raise Refused(Code.FAILED_PRECONDITION,
                          f"{device_id} cannot {name.replace('_', ' ')} (capabilities: "
                          f"{', '.join(sorted(self.workloads.capabilities(device)))})",
                          reason="NOT_SUPPORTED")
        if request.pool_index and name != "switch_pool":
            raise Refused(Code.INVALID_ARGUMENT, "pool_index is for pool_switch only")
        if request.pool_index > 63:
            raise Refused(Code.INVALID_ARGUMENT, "pool_index must be within 0 .. 63")
        self._admit(request.fencing_token, context)
        held = self.power.held.get(device_id)
        if held and name in ("wake", "restart"):
            raise Refused(Code.FAILED_PRECONDITION,
                          f"curtailment {held} holds {device_id}; it comes back when the "
                          f"curtailment ends (CancelCurtailment to end it now)",
                          reason="CURTAILMENT_IN_FORCE")
        args = (request.pool_index,) if name == "switch_pool" else ()
        with _on_device(device_id):
            await self.power.write(device, getattr(device, name), *args)
        log.info("device_action", device_id=device_id, action=name, pool=request.pool_index)
        return pb.DeviceActionResponse(detail=f"{name.replace('_', ' ')} sent")

    async def RunDiagnostics(self, request: pb.RunDiagnosticsRequest, context: Any
                             ) -> AsyncIterator[pb.RunDiagnosticsResponse]:
        ids = self._device_ids(request.device_ids)
        level = request.level or pb.DIAGNOSTIC_LEVEL_QUICK
        if level not in LEVEL_NAMES:
            raise Refused(Code.INVALID_ARGUMENT,
                          f"level must be 1 (quick), 2 (medium) or 3 (long), got {level}")
        try:
            async for outcome in self.diagnostics.run(level, ids, caller(context).name):
                yield convert.diagnostic(outcome)
        except DiagnosticsBusy as exc:
            raise Refused(Code.FAILED_PRECONDITION, str(exc), reason="DIAGNOSTICS_BUSY") \
                from None


def rpc_handler(servicer: RigAgentService) -> grpc.GenericRpcHandler:
    """The servicer's methods as gRPC handlers, built from the service descriptor (the generated
    add_..._to_server would serialize every response, and streams hand over bytes)."""
    service = pb.DESCRIPTOR.services_by_name["RigAgent"]
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in service.methods:
        request_cls = getattr(pb, method.input_type.name)
        response_cls = getattr(pb, method.output_type.name)
        behaviour = getattr(servicer, method.name)
        serialize: Callable[[Any], bytes] = (
            bytes if method.name in _PRESERIALIZED else response_cls.SerializeToString)
        if method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                behaviour, request_cls.FromString, serialize)
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                behaviour, request_cls.FromString, serialize)
    return grpc.method_handlers_generic_handler(service.full_name, handlers)
