"""The rig.v1.RigAgent servicer: validates requests, admits them through leases, calls the HAL.

It runs on the agent's event loop (grpc.aio): a stream costs no thread, and blocking HAL calls run
off the loop, in asyncio's default executor (sized by the daemon). Each HAL error maps to exactly
one gRPC status (ERROR_CODES), so controllers can act on the code alone. RPCs whose behaviour is
not built yet answer UNIMPLEMENTED saying what is missing; they never pretend to succeed. Text
that came from the caller is clipped before it is echoed in a status.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import grpc
import structlog

from agent import __version__
from agent.core import errors as agent_errors
from agent.core.pool_url import parse_pool_url
from agent.core.power import rig_power
from agent.edges.auth import clip, current_identity
from agent.runtime.curtail import Curtailer
from agent.runtime.diagnostics import LEVEL_NAMES, Diagnostics, DiagnosticsBusy
from agent.runtime.leases import Lease, LeaseError, LeaseManager
from agent.runtime.operations import Operations
from agent.runtime.powerwrite import PowerWriter
from agent.runtime.sampler import MIN_INTERVAL_S, Sampler
from agent.runtime.switcher import Refused, Switcher, SwitchRequest
from agent.runtime.workloads.manager import WorkloadManager
from hal import errors
from hal.device import Capability, Device
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
T = TypeVar("T")

ERROR_CODES: dict[type[errors.HalError], grpc.StatusCode] = {
    errors.DeviceLost: grpc.StatusCode.UNAVAILABLE,
    errors.NotSupported: grpc.StatusCode.FAILED_PRECONDITION,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.Timeout: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.ProtocolError: grpc.StatusCode.INTERNAL,
}
MIN_STREAM_INTERVAL_MS = round(MIN_INTERVAL_S * 1000)
MAX_STREAM_INTERVAL_MS = 3_600_000
MAX_DEVICE_IDS = 10_000
MAX_DETAIL_CHARS = 1000
_ACTIONS = {
    pb.DEVICE_ACTION_KIND_SLEEP: ("sleep", Capability.SLEEP_WAKE),
    pb.DEVICE_ACTION_KIND_WAKE: ("wake", Capability.SLEEP_WAKE),
    pb.DEVICE_ACTION_KIND_RESTART: ("restart", Capability.RESTART),
    pb.DEVICE_ACTION_KIND_POOL_SWITCH: ("switch_pool", Capability.POOL_SWITCH),
}
# Responses the servicer hands over already serialized (see convert.encode_stream_message).
_PRESERIALIZED = frozenset({"StreamTelemetry"})


class Abort(Exception):
    """A refusal with its status; raised inside helpers, turned into context.abort at the edge."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def status_of(exc: errors.HalError) -> Abort:
    code = next((c for cls, c in ERROR_CODES.items() if isinstance(exc, cls)),
                grpc.StatusCode.INTERNAL)
    return Abort(code, str(exc))


@contextlib.contextmanager
def _lease_refusals() -> Iterator[None]:
    """A refused lease operation becomes its status: bad values, conflicts, not found, not yours."""
    try:
        yield
    except ValueError as exc:
        raise Abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
    except LeaseError as exc:
        raise Abort(grpc.StatusCode[exc.code], str(exc)) from None


def _lease_pb(lease: Lease) -> pb.Lease:
    return pb.Lease(
        lease_id=lease.lease_id,
        holder=f"{lease.holder} ({lease.owner})",
        fencing_token=lease.fencing_token,
        expire_time=convert.timestamp(lease.expire_unix_s),
    )


def _unary(method: Callable[..., Any]) -> Callable[..., Any]:
    """Turn Abort into the call's status (a unary method)."""

    async def call(self: RigAgentService, request: Any, context: Any) -> Any:
        try:
            return await method(self, request, context)
        except Abort as exc:
            await context.abort(exc.code, clip(str(exc), MAX_DETAIL_CHARS))

    call.__name__ = method.__name__
    call.__doc__ = method.__doc__
    return call


def _streaming(method: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    """Turn Abort into the call's status (a server-streaming method)."""

    async def call(self: RigAgentService, request: Any, context: Any) -> AsyncIterator[Any]:
        try:
            async for item in method(self, request, context):
                yield item
        except Abort as exc:
            await context.abort(exc.code, clip(str(exc), MAX_DETAIL_CHARS))

    call.__name__ = method.__name__
    call.__doc__ = method.__doc__
    return call


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
        stream_queue_max: int,
        max_streams: int,
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
        self.stream_queue_max = stream_queue_max
        self.max_streams = max_streams
        self.stopping = False
        self._encoded: dict[str, tuple[Reading, bytes]] = {}

    # -- helpers --------------------------------------------------------------------------

    def _device_ids(self, ids: Any) -> list[str]:
        if len(ids) > MAX_DEVICE_IDS:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT,
                        f"too many device_ids ({len(ids)}; at most {MAX_DEVICE_IDS})")
        unknown = [d for d in ids if d not in self.devices]
        if unknown:
            shown = ", ".join(repr(clip(d, 80)) for d in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise Abort(grpc.StatusCode.NOT_FOUND,
                        f"unknown device id(s): {shown}{more}; see `rigctl inventory`")
        return list(ids)

    def _admit(self, fencing_token: int) -> None:
        with _lease_refusals():
            self.leases.check(fencing_token, current_identity().name)

    def _encode(self, reading: Reading) -> bytes:
        cached = self._encoded.get(reading.device_id)
        if cached is not None and cached[0] is reading:
            return cached[1]
        encoded = convert.encode_stream_device(reading)
        self._encoded[reading.device_id] = (reading, encoded)
        return encoded

    # -- inventory and telemetry ----------------------------------------------------------

    @_unary
    async def GetInventory(self, request: pb.GetInventoryRequest, context: Any
                           ) -> pb.GetInventoryResponse:
        response = pb.GetInventoryResponse(
            rig_id=self.rig_id,
            agent_version=__version__,
            backends=[convert.backend(b) for b in self.discovery.backends],
        )
        for device_id, info in (await self.sampler.infos()).items():
            device = self.devices[device_id]
            if isinstance(info, str):  # never answered: say why
                msg = pb.Device(
                    id=device_id,
                    kind=convert.enum_value(pb.DeviceKind.DESCRIPTOR, device.kind),
                    health=pb.Health(state=pb.HEALTH_STATE_UNHEALTHY, reason=info),
                )
            else:
                msg = convert.device(info, self.workloads.capabilities(device),
                                     self.workloads.health(device),
                                     self.workloads.current_spec(device_id))
            response.devices.append(msg)
        if self.curtailer.current is not None:
            response.curtailment.CopyFrom(convert.curtailment(self.curtailer.current.status()))
        return response

    @_unary
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

    @_streaming
    async def StreamTelemetry(self, request: pb.StreamTelemetryRequest, context: Any
                              ) -> AsyncIterator[bytes]:
        ids = self._device_ids(request.device_ids)
        interval_ms = request.interval_ms or round(self.sampler.interval_s * 1000)
        if not MIN_STREAM_INTERVAL_MS <= interval_ms <= MAX_STREAM_INTERVAL_MS:
            raise Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"interval_ms must be within {MIN_STREAM_INTERVAL_MS} .. "
                f"{MAX_STREAM_INTERVAL_MS}, got {interval_ms}",
            )
        if self.sampler.stream_count >= self.max_streams:
            raise Abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"{self.max_streams} streams are open (server.max_streams)")
        sub = self.sampler.subscribe(ids, interval_ms / 1000, self.stream_queue_max)
        try:
            while not self.stopping:
                readings = await sub.get()
                if readings is None:
                    return
                # Awaiting each write is the back-pressure: while the transport holds this
                # message the sampler's pushes pile up in the bounded queue, oldest dropped.
                power = rig_power(readings.values()) if not ids else None
                yield convert.encode_stream_message(
                    [self._encode(r) for r in readings.values()], sub.sequence, sub.dropped,
                    power)
        finally:
            self.sampler.unsubscribe(sub)

    # -- leases ---------------------------------------------------------------------------

    @_unary
    async def AcquireLease(self, request: pb.AcquireLeaseRequest, context: Any
                           ) -> pb.AcquireLeaseResponse:
        identity = current_identity()
        if request.preempt and not identity.at_least("admin"):
            raise Abort(grpc.StatusCode.PERMISSION_DENIED, "preempting a lease needs admin")
        with _lease_refusals():
            lease = self.leases.acquire(
                request.holder, identity.name, request.ttl_s, request.preempt
            )
        return pb.AcquireLeaseResponse(lease=_lease_pb(lease))

    @_unary
    async def RenewLease(self, request: pb.RenewLeaseRequest, context: Any
                         ) -> pb.RenewLeaseResponse:
        with _lease_refusals():
            lease = self.leases.renew(request.lease_id, current_identity().name, request.ttl_s)
        return pb.RenewLeaseResponse(lease=_lease_pb(lease))

    @_unary
    async def ReleaseLease(self, request: pb.ReleaseLeaseRequest, context: Any
                           ) -> pb.ReleaseLeaseResponse:
        with _lease_refusals():
            self.leases.release(request.lease_id, current_identity().name)
        return pb.ReleaseLeaseResponse()

    # -- control --------------------------------------------------------------------------

    @_unary
    async def SetPowerLimit(self, request: pb.SetPowerLimitRequest, context: Any
                            ) -> pb.SetPowerLimitResponse:
        (device_id,) = self._device_ids([request.device_id])
        watts = request.power_limit_w
        if not math.isfinite(watts) or watts <= 0:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT,
                        f"power_limit_w must be a positive number of watts, got {watts!r}")
        self._admit(request.fencing_token)
        device = self.devices[device_id]
        if Capability.SET_POWER_LIMIT not in device.capabilities:
            raise Abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{device_id} cannot set a power limit (capabilities: "
                f"{', '.join(sorted(self.workloads.capabilities(device)))})",
            )
        try:
            detail = await self.power.set_operator_limit(device, watts)
            reading = await self.power.write(device, device.telemetry)
        except errors.HalError as exc:
            raise status_of(exc) from None
        applied = reading.power_limit_w if reading.power_limit_w is not None else watts
        if not detail and abs(applied - watts) > 0.5:
            detail = f"the firmware applied {applied:g} W (its nearest setting)"
        log.info("power_limit_set", device_id=device_id, requested_w=watts, applied_w=applied,
                 detail=detail or None)
        return pb.SetPowerLimitResponse(power_limit_w=applied, requested_w=watts, detail=detail)

    def _spec_for(self, device_id: str, workload: pb.Workload) -> WorkloadSpec:
        """The request's workload for one device, its gaps filled from the configuration."""
        kind = convert.enum_member(pb.WorkloadKind.DESCRIPTOR, workload.kind, WorkloadKind)
        which = workload.WhichOneof("spec")
        if kind is None:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT,
                        "workload.kind must be idle, hashing or inference")
        if which is not None and which != str(kind):
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT,
                        f"a {kind} workload cannot carry a {which} spec")
        if kind == WorkloadKind.IDLE:
            return IDLE
        if kind == WorkloadKind.INFERENCE:
            profile, model = workload.inference.profile, workload.inference.model
            if not profile or len(profile) > 64 or len(model) > 512:
                raise Abort(grpc.StatusCode.INVALID_ARGUMENT,
                            "inference needs a profile (at most 64 characters; model at most "
                            "512)")
            return WorkloadSpec(kind, inference=InferenceSpec(profile, model))
        return WorkloadSpec(kind, hashing=self._hashing_spec(device_id, workload.hashing))

    def _hashing_spec(self, device_id: str, requested: pb.HashingSpec) -> HashingSpec:
        base = self.workloads.configured_hashing(device_id)
        if requested.algorithm not in ("", "sha256d"):
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT,
                        f"algorithm {clip(requested.algorithm, 40)!r}: only sha256d")
        urls = tuple(requested.pool_urls) or base.pool_urls
        if not urls:
            raise Abort(grpc.StatusCode.FAILED_PRECONDITION,
                        "no pool given and none configured ([pool] urls)")
        if len(urls) > 8:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "at most 8 pool_urls")
        for url in urls:
            try:
                parse_pool_url(url)
            except errors.InvalidArgument as exc:
                raise Abort(grpc.StatusCode.INVALID_ARGUMENT, clip(str(exc), 200)) from None
        intensity = requested.intensity or base.intensity
        if not math.isfinite(intensity) or not 0 < intensity <= 1:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT,
                        f"intensity must be in (0, 1], got {intensity!r}")
        user, password = requested.user or base.user, requested.password or base.password
        for name, text in (("user", user), ("password", password)):
            if len(text) > 256 or any(ord(c) < 32 for c in text):
                raise Abort(grpc.StatusCode.INVALID_ARGUMENT,
                            f"{name}: at most 256 printable characters")
        return HashingSpec(urls, user, password, intensity, base.version_rolling)

    @_unary
    async def SetWorkload(self, request: pb.SetWorkloadRequest, context: Any
                          ) -> pb.SetWorkloadResponse:
        ids = self._device_ids(request.device_ids)
        if len(request.request_id) > 128:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "request_id: at most 128 characters")
        if len(set(ids)) != len(ids):
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "a device is named twice")
        specs = {d: self._spec_for(d, request.workload) for d in ids}
        self._admit(request.fencing_token)
        switch = SwitchRequest(specs, request.request_id)
        try:
            op = self.switcher.check(switch) or self.switcher.submit(switch)
        except Refused as exc:
            raise Abort(grpc.StatusCode[exc.code], str(exc)) from None
        return pb.SetWorkloadResponse(operation=convert.operation(op.snapshot()))

    def _operation(self, operation_id: str) -> Operation:
        op = self.operations.get(operation_id)
        if op is None:
            raise Abort(grpc.StatusCode.NOT_FOUND,
                        f"no operation {clip(operation_id, 80)!r}; see `rigctl ops`")
        return op

    @_unary
    async def GetOperation(self, request: pb.GetOperationRequest, context: Any
                           ) -> pb.GetOperationResponse:
        op = self._operation(request.operation_id)
        return pb.GetOperationResponse(operation=convert.operation(op.snapshot()))

    @_streaming
    async def WatchOperation(self, request: pb.WatchOperationRequest, context: Any
                             ) -> AsyncIterator[pb.WatchOperationResponse]:
        self._operation(request.operation_id)
        async for snapshot in self.operations.watch(request.operation_id):
            yield pb.WatchOperationResponse(operation=convert.operation(snapshot))

    @_unary
    async def ListOperations(self, request: pb.ListOperationsRequest, context: Any
                             ) -> pb.ListOperationsResponse:
        limit = request.limit or 50
        if not 1 <= limit <= 1000:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "limit must be within 1 .. 1000")
        ops = [op for op in reversed(self.operations.all())
               if not request.running_only or not op.done][:limit]
        return pb.ListOperationsResponse(operations=[convert.operation(op.snapshot())
                                                     for op in ops])

    @_unary
    async def Curtail(self, request: pb.CurtailRequest, context: Any) -> pb.CurtailResponse:
        identity = current_identity().name
        try:
            self.curtailer.check(request.rig_power_target_w, request.deadline_s,
                                 request.expiry_s, request.reason)
            self._admit(request.fencing_token)
            op = await self.curtailer.curtail(request.rig_power_target_w, request.deadline_s,
                                              request.expiry_s, request.reason, identity)
        except agent_errors.Refused as exc:
            raise Abort(grpc.StatusCode[exc.code.value], str(exc)) from None
        return pb.CurtailResponse(operation=convert.operation(op.snapshot()))

    @_unary
    async def CancelCurtailment(self, request: pb.CancelCurtailmentRequest, context: Any
                                ) -> pb.CancelCurtailmentResponse:
        self._admit(request.fencing_token)
        op = await self.curtailer.cancel(f"cancelled by {current_identity().name}")
        if op is None:
            raise Abort(grpc.StatusCode.FAILED_PRECONDITION, "no curtailment is in force")
        return pb.CancelCurtailmentResponse(operation=convert.operation(op.snapshot()))

    @_unary
    async def DeviceAction(self, request: pb.DeviceActionRequest, context: Any
                           ) -> pb.DeviceActionResponse:
        (device_id,) = self._device_ids([request.device_id])
        action = _ACTIONS.get(request.action)
        if action is None:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT,
                        "action must be sleep, wake, restart or pool_switch")
        name, capability = action
        device = self.devices[device_id]
        if capability not in self.workloads.capabilities(device):
            raise Abort(grpc.StatusCode.FAILED_PRECONDITION,
                        f"{device_id} cannot {name.replace('_', ' ')} (capabilities: "
                        f"{', '.join(sorted(self.workloads.capabilities(device)))})")
        if request.pool_index and name != "switch_pool":
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "pool_index is for pool_switch only")
        if request.pool_index > 63:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "pool_index must be within 0 .. 63")
        self._admit(request.fencing_token)
        held = self.power.held.get(device_id)
        if held and name in ("wake", "restart"):
            raise Abort(grpc.StatusCode.FAILED_PRECONDITION,
                        f"curtailment {held} holds {device_id}; it comes back when the "
                        f"curtailment ends (CancelCurtailment to end it now)")
        args = (request.pool_index,) if name == "switch_pool" else ()
        try:
            await self.power.write(device, getattr(device, name), *args)
        except errors.HalError as exc:
            raise status_of(exc) from None
        log.info("device_action", device_id=device_id, action=name, pool=request.pool_index)
        return pb.DeviceActionResponse(detail=f"{name.replace('_', ' ')} sent")

    @_streaming
    async def RunDiagnostics(self, request: pb.RunDiagnosticsRequest, context: Any
                             ) -> AsyncIterator[pb.RunDiagnosticsResponse]:
        ids = self._device_ids(request.device_ids)
        level = request.level or pb.DIAGNOSTIC_LEVEL_QUICK
        if level not in LEVEL_NAMES:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT,
                        f"level must be 1 (quick), 2 (medium) or 3 (long), got {level}")
        try:
            async for outcome in self.diagnostics.run(level, ids, current_identity().name):
                yield convert.diagnostic(outcome)
        except DiagnosticsBusy as exc:
            raise Abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc)) from None


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
