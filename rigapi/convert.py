"""The gRPC edge: the dataclasses (the HAL's and rigapi.model's) <-> rig.v1 messages, for rigd
and for its clients alike.

The proto fields carry the same names as the dataclass fields, so one generic filler copies
them: a field added to both sides needs no code here, and a field added to one side only is
caught by tests/agent/test_convert.py. Python enums map to proto enums by name
(WorkloadKind.HASHING -> WORKLOAD_KIND_HASHING).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from hal.device import DeviceInfo, Health
from hal.registry import BackendStatus
from rigapi import pb
from rigapi.model import (
    CurtailmentStatus,
    DiagnosticOutcome,
    Operation,
    Reading,
    RigPower,
    WorkloadSpec,
    WorkloadStatus,
)

# Telemetry fields that are handled explicitly rather than copied by name.
_TELEMETRY_SPECIAL = frozenset({"device_id", "timestamp_unix_s", "gpu", "asic", "host"})


def _enum_prefix(descriptor: Any) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", descriptor.name).upper()


def enum_value(descriptor: Any, member: enum.Enum) -> Any:
    """A Python enum member as the proto enum value (an int) of the same name; UNSPECIFIED
    when the proto has no such name (HealthState.UNKNOWN)."""
    prefix = _enum_prefix(descriptor)
    value = descriptor.values_by_name.get(f"{prefix}_{member.name}")
    if value is None:
        value = descriptor.values_by_name[f"{prefix}_UNSPECIFIED"]
    return int(value.number)


def enum_member(descriptor: Any, number: int, cls: type[enum.Enum]) -> Any:
    """The inverse of enum_value; None for UNSPECIFIED or a value this build does not know."""
    prefix = _enum_prefix(descriptor) + "_"
    value = descriptor.values_by_number.get(number)
    if value is None:
        return None
    name = value.name.removeprefix(prefix)
    return cls.__members__.get(name)


def fill(message: Message, value: Any, skip: frozenset[str] = frozenset()) -> Message:
    """Copy a dataclass into a message field by field; None and NaN stay unset."""
    fields = message.DESCRIPTOR.fields_by_name
    for f in dataclasses.fields(value):
        if f.name in skip:
            continue
        if f.name not in fields:
            raise KeyError(f"{type(message).__name__} has no field {f.name!r}")
        item = getattr(value, f.name)
        if item is None or (isinstance(item, float) and math.isnan(item)):
            continue
        descriptor = fields[f.name]
        if descriptor.message_type is not None and descriptor.is_repeated:
            if descriptor.message_type.GetOptions().map_entry:
                getattr(message, f.name).update(item)
            else:
                container = getattr(message, f.name)
                for element in item:
                    fill(container.add(), element)
        elif descriptor.message_type is not None:
            if descriptor.message_type.full_name == "google.protobuf.Timestamp":
                getattr(message, f.name).CopyFrom(timestamp(item))
            elif isinstance(item, Health):
                getattr(message, f.name).CopyFrom(health(item))
            else:
                fill(getattr(message, f.name), item)
        elif descriptor.is_repeated:
            getattr(message, f.name).extend(item)
        elif descriptor.enum_type is not None and isinstance(item, enum.Enum):
            setattr(message, f.name, enum_value(descriptor.enum_type, item))
        else:
            setattr(message, f.name, item)
    return message


def timestamp(unix_s: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(unix_s * 1e9))
    return ts


def health(value: Health) -> pb.Health:
    return pb.Health(state=enum_value(pb.HealthState.DESCRIPTOR, value.state),
                     reason=value.reason)


def device(info: DeviceInfo, capabilities: frozenset[Any], state: Health,
           spec: WorkloadSpec | None = None) -> pb.Device:
    msg = pb.Device(capabilities=sorted(str(c) for c in capabilities), health=health(state))
    fill(msg, info)
    if spec is not None:
        msg.workload.CopyFrom(workload(spec))
    return msg


def workload(spec: WorkloadSpec) -> pb.Workload:
    """What a device should run (the pool password stays inside)."""
    msg = pb.Workload(kind=enum_value(pb.WorkloadKind.DESCRIPTOR, spec.kind))
    if spec.hashing is not None:
        msg.hashing.CopyFrom(pb.HashingSpec(
            algorithm="sha256d", pool_urls=spec.hashing.pool_urls, user=spec.hashing.user,
            intensity=spec.hashing.intensity))
    if spec.inference is not None:
        msg.inference.CopyFrom(pb.InferenceSpec(profile=spec.inference.profile,
                                                model=spec.inference.model))
    return msg


def operation(op: Operation) -> pb.Operation:
    msg = pb.Operation(
        operation_id=op.operation_id,
        state=enum_value(pb.OperationState.DESCRIPTOR, op.state),
        device_ids=op.device_ids, error=op.error, create_time=timestamp(op.create_unix_s),
        kind=op.kind, request_id=op.request_id, detail=op.detail,
    )
    if op.end_unix_s is not None:
        msg.end_time.CopyFrom(timestamp(op.end_unix_s))
    for record in op.phases:
        phase = msg.phases.add(phase=enum_value(pb.SwitchPhase.DESCRIPTOR, record.phase),
                               start_time=timestamp(record.start_unix_s), detail=record.detail,
                               device_id=record.device_id)
        if record.duration_s is not None:
            phase.duration_ms = round(record.duration_s * 1000)
    for outcome in op.outcomes.values():
        msg.outcomes.add(device_id=outcome.device_id,
                         state=enum_value(pb.OperationState.DESCRIPTOR, outcome.state),
                         error=outcome.error)
    return msg


def backend(status: BackendStatus) -> pb.BackendStatus:
    return pb.BackendStatus(
        name=status.name,
        available=status.available,
        reason=status.reason,
        device_count=status.device_count,
    )


def workload_status(status: WorkloadStatus) -> pb.WorkloadStatus:
    msg = pb.WorkloadStatus()
    fill(msg, status)
    return msg


def reading(value: Reading) -> pb.DeviceTelemetry:
    t = value.telemetry
    msg = pb.DeviceTelemetry(device_id=t.device_id, time=timestamp(t.timestamp_unix_s),
                             error=value.error)
    fill(msg, t, skip=_TELEMETRY_SPECIAL)
    for name in ("gpu", "asic", "host"):
        detail = getattr(t, name)
        if detail is not None:
            fill(getattr(msg, name), detail)
    if value.workload is not None:
        fill(msg.workload, value.workload)
    return msg


# ---- stream messages, encoded once per reading --------------------------------------------------

_DEVICES_TAG = b"\x0a"  # StreamTelemetryResponse.devices: field 1, length-delimited


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_stream_device(value: Reading) -> bytes:
    """One reading as an encoded `devices` entry of StreamTelemetryResponse. Protobuf messages
    concatenate, so a stream message is these entries plus its own sequence and drop count:
    each reading is converted and serialized once however many streams carry it."""
    body = reading(value).SerializeToString()
    return _DEVICES_TAG + _varint(len(body)) + body


def encode_stream_message(devices: list[bytes], sequence: int, dropped_count: int,
                          power: RigPower | None = None, sent_unix_s: float | None = None,
                          interval_ms: int = 0) -> bytes:
    tail = pb.StreamTelemetryResponse(sequence=sequence, dropped_count=dropped_count,
                                      interval_ms=interval_ms)
    if sent_unix_s is not None:
        tail.sent_time.CopyFrom(timestamp(sent_unix_s))
    if power is not None:
        tail.rig_power.CopyFrom(rig_power(power))
    return b"".join(devices) + tail.SerializeToString()


def rig_power(power: RigPower) -> pb.RigPower:
    return pb.RigPower(total_w=power.total_w, measured_w=power.measured_w,
                       estimated_w=power.estimated_w,
                       unknown_device_ids=power.unknown_device_ids,
                       time=timestamp(power.time_unix_s))


def curtailment(c: CurtailmentStatus) -> pb.Curtailment:
    msg = pb.Curtailment(
        rig_power_target_w=c.rig_power_target_w, deadline_time=timestamp(c.deadline_unix_s),
        expire_time=timestamp(c.expire_unix_s), reason=c.reason, operation_id=c.operation_id,
        state=str(c.state), rig_power_before_w=c.rig_power_before_w, source=c.source)
    if c.below_target_after_s is not None:
        msg.below_target_after_s = c.below_target_after_s
    if c.shortfall_w is not None:
        msg.shortfall_w = c.shortfall_w
    return msg


def diagnostic(outcome: DiagnosticOutcome) -> pb.RunDiagnosticsResponse:
    return pb.RunDiagnosticsResponse(
        device_id=outcome.device_id, test_name=outcome.test,
        result=f"DIAGNOSTIC_RESULT_{outcome.result.name}",
        detail=outcome.detail, duration_ms=round(outcome.duration_s * 1000),
        tests_done=outcome.done, tests_total=outcome.total,
        level=pb.DiagnosticLevel.Name(outcome.level))
