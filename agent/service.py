"""The rig.v1.RigAgent servicer: validates requests, admits them through leases, calls the HAL.

Each HAL error maps to exactly one gRPC status (ERROR_CODES), so controllers can act on the code
alone. RPCs whose behaviour is not built yet answer UNIMPLEMENTED saying what is missing; they
never pretend to succeed.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import NoReturn

import grpc
import structlog

from agent import __version__, convert
from agent.api import pb, pb_grpc
from agent.auth import current_identity
from agent.leases import Lease, LeaseError, LeaseManager
from agent.telemetry import TelemetryCollector
from agent.workloads.manager import WorkloadManager
from hal import errors
from hal.device import Capability, Device
from hal.registry import Discovery

log = structlog.get_logger("rigd.service")

ERROR_CODES: dict[type[errors.HalError], grpc.StatusCode] = {
    errors.DeviceLost: grpc.StatusCode.UNAVAILABLE,
    errors.NotSupported: grpc.StatusCode.FAILED_PRECONDITION,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.Timeout: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.ProtocolError: grpc.StatusCode.INTERNAL,
}
MIN_STREAM_INTERVAL_MS = 100
MAX_STREAM_INTERVAL_MS = 3_600_000
MAX_DEVICE_IDS = 10_000


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("unreachable")  # context.abort always raises


def _abort_hal(context: grpc.ServicerContext, exc: errors.HalError) -> NoReturn:
    code = next(
        (c for cls, c in ERROR_CODES.items() if isinstance(exc, cls)), grpc.StatusCode.UNKNOWN
    )
    _abort(context, code, f"{type(exc).__name__}: {exc}")


@contextlib.contextmanager
def _lease_refusals(context: grpc.ServicerContext) -> Iterator[None]:
    """A refused lease operation becomes its status: bad values, conflicts, not found, not yours."""
    try:
        yield
    except ValueError as exc:
        _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    except LeaseError as exc:
        _abort(context, grpc.StatusCode[exc.code], str(exc))


def _lease_pb(lease: Lease) -> pb.Lease:
    return pb.Lease(
        lease_id=lease.lease_id,
        holder=f"{lease.holder} ({lease.owner})",
        fencing_token=lease.fencing_token,
        expire_time=convert.timestamp(lease.expire_unix_s),
    )


class RigAgentService(pb_grpc.RigAgentServicer):
    def __init__(
        self,
        rig_id: str,
        discovery: Discovery,
        collector: TelemetryCollector,
        workloads: WorkloadManager,
        stream_queue_max: int = 16,
    ) -> None:
        self.rig_id = rig_id
        self.discovery = discovery
        self.devices: dict[str, Device] = discovery.by_id()
        self.collector = collector
        self.workloads = workloads
        self.leases = LeaseManager()
        self.stream_queue_max = stream_queue_max
        self.stopping = False

    # -- helpers --------------------------------------------------------------------------

    def _device_ids(self, context: grpc.ServicerContext, ids: list[str]) -> list[str]:
        if len(ids) > MAX_DEVICE_IDS:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "too many device_ids")
        unknown = [d for d in ids if d not in self.devices]
        if unknown:
            _abort(
                context, grpc.StatusCode.NOT_FOUND,
                f"unknown device id(s): {', '.join(unknown[:5])}; see GetInventory",
            )
        return ids

    def _admit(self, context: grpc.ServicerContext, fencing_token: int) -> None:
        with _lease_refusals(context):
            self.leases.check(fencing_token)

    # -- inventory and telemetry ----------------------------------------------------------

    def GetInventory(
        self, request: pb.GetInventoryRequest, context: grpc.ServicerContext
    ) -> pb.GetInventoryResponse:
        response = pb.GetInventoryResponse(
            rig_id=self.rig_id,
            agent_version=__version__,
            backends=[convert.backend(b) for b in self.discovery.backends],
        )
        for device_id, info in self.collector.infos().items():
            device = self.devices[device_id]
            if isinstance(info, str):  # never answered: say why
                msg = pb.Device(
                    id=device_id,
                    kind=convert.KIND_TO_PB[device.kind],
                    health=pb.Health(state=pb.HEALTH_STATE_UNHEALTHY, reason=info),
                )
            else:
                msg = convert.device(info, device.capabilities, device.health())
            status = self.workloads.status(device.id)
            if status is not None:
                msg.workload.kind = status.kind
            response.devices.append(msg)
        return response

    def GetTelemetry(
        self, request: pb.GetTelemetryRequest, context: grpc.ServicerContext
    ) -> pb.GetTelemetryResponse:
        ids = self._device_ids(context, list(request.device_ids))
        max_age_s = request.max_age_ms / 1000 if request.max_age_ms else None
        return pb.GetTelemetryResponse(devices=self.collector.latest(ids, max_age_s))

    def StreamTelemetry(
        self, request: pb.StreamTelemetryRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.StreamTelemetryResponse]:
        ids = self._device_ids(context, list(request.device_ids))
        interval_ms = request.interval_ms or int(self.collector.interval_s * 1000)
        if not MIN_STREAM_INTERVAL_MS <= interval_ms <= MAX_STREAM_INTERVAL_MS:
            _abort(
                context, grpc.StatusCode.INVALID_ARGUMENT,
                f"interval_ms must be within {MIN_STREAM_INTERVAL_MS} .. {MAX_STREAM_INTERVAL_MS}",
            )
        sub = self.collector.subscribe(ids, interval_ms / 1000, self.stream_queue_max)
        try:
            while context.is_active() and not self.stopping:
                readings = sub.get(timeout_s=0.5)
                if readings is None:
                    if sub.closed:
                        return
                    continue
                yield pb.StreamTelemetryResponse(
                    devices=readings, sequence=sub.sequence, dropped_count=sub.dropped
                )
        finally:
            self.collector.unsubscribe(sub)

    # -- leases ---------------------------------------------------------------------------

    def AcquireLease(
        self, request: pb.AcquireLeaseRequest, context: grpc.ServicerContext
    ) -> pb.AcquireLeaseResponse:
        identity = current_identity()
        if request.preempt and not identity.at_least("admin"):
            _abort(context, grpc.StatusCode.PERMISSION_DENIED, "preempting a lease needs admin")
        with _lease_refusals(context):
            lease = self.leases.acquire(
                request.holder, identity.name, request.ttl_s, request.preempt
            )
        return pb.AcquireLeaseResponse(lease=_lease_pb(lease))

    def RenewLease(
        self, request: pb.RenewLeaseRequest, context: grpc.ServicerContext
    ) -> pb.RenewLeaseResponse:
        with _lease_refusals(context):
            lease = self.leases.renew(request.lease_id, current_identity().name, request.ttl_s)
        return pb.RenewLeaseResponse(lease=_lease_pb(lease))

    def ReleaseLease(
        self, request: pb.ReleaseLeaseRequest, context: grpc.ServicerContext
    ) -> pb.ReleaseLeaseResponse:
        with _lease_refusals(context):
            self.leases.release(request.lease_id, current_identity().name)
        return pb.ReleaseLeaseResponse()

    # -- control --------------------------------------------------------------------------

    def SetPowerLimit(
        self, request: pb.SetPowerLimitRequest, context: grpc.ServicerContext
    ) -> pb.SetPowerLimitResponse:
        (device_id,) = self._device_ids(context, [request.device_id])
        watts = request.power_limit_w
        if not math.isfinite(watts) or watts <= 0:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "power_limit_w must be positive")
        self._admit(context, request.fencing_token)
        device = self.devices[device_id]
        if Capability.SET_POWER_LIMIT not in device.capabilities:
            _abort(
                context, grpc.StatusCode.FAILED_PRECONDITION,
                f"{device_id} cannot set a power limit (capabilities: "
                f"{', '.join(sorted(device.capabilities))})",
            )
        try:
            device.set_power_limit(watts)
            reading = device.telemetry()
        except errors.HalError as exc:
            _abort_hal(context, exc)
        applied = reading.power_limit_w if reading.power_limit_w is not None else watts
        log.info("power_limit_set", device_id=device_id, power_limit_w=applied)
        return pb.SetPowerLimitResponse(power_limit_w=applied)

    def SetWorkload(
        self, request: pb.SetWorkloadRequest, context: grpc.ServicerContext
    ) -> pb.SetWorkloadResponse:
        _abort(
            context, grpc.StatusCode.UNIMPLEMENTED,
            "SetWorkload: the switch state machine (drain, stop, verify, configure, start) and the "
            "inference runtime supervisor are not built yet; hashing workloads start from the "
            "[[hashing]] config table",
        )

    def GetOperation(
        self, request: pb.GetOperationRequest, context: grpc.ServicerContext
    ) -> pb.GetOperationResponse:
        _abort(context, grpc.StatusCode.UNIMPLEMENTED,
               "GetOperation: no operations exist until SetWorkload and Curtail are built")

    def WatchOperation(
        self, request: pb.WatchOperationRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchOperationResponse]:
        _abort(context, grpc.StatusCode.UNIMPLEMENTED,
               "WatchOperation: no operations exist until SetWorkload and Curtail are built")

    def Curtail(
        self, request: pb.CurtailRequest, context: grpc.ServicerContext
    ) -> pb.CurtailResponse:
        _abort(
            context, grpc.StatusCode.UNIMPLEMENTED,
            "Curtail: rig-level load shedding (priority order, confirmation from telemetry, "
            "expiry) is not built yet; SetPowerLimit works per device",
        )

    def CancelCurtailment(
        self, request: pb.CancelCurtailmentRequest, context: grpc.ServicerContext
    ) -> pb.CancelCurtailmentResponse:
        _abort(context, grpc.StatusCode.UNIMPLEMENTED,
               "CancelCurtailment: curtailment is not built yet")

    def RunDiagnostics(
        self, request: pb.RunDiagnosticsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.RunDiagnosticsResponse]:
        _abort(
            context, grpc.StatusCode.UNIMPLEMENTED,
            "RunDiagnostics: agent-side diagnostics are not built yet; "
            "`rigctl fpga validate` runs FPGA card tests locally",
        )
