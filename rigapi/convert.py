"""The gRPC edge: the dataclasses (the HAL's and rigapi.model's) <-> rig.v1 messages, for rigd
and for its clients alike. rigd goes one way (`fill`, `reading`, `operation`, ...: dataclass to
message), the client library the other (`extract`, `reading_from`, `operation_from`, ...).

The proto fields carry the same names as the dataclass fields, so one generic filler copies
them each way: a field added to both sides needs no code here, and a field added to one side
only is caught by tests/agent/test_convert.py. Python enums map to proto enums by name
(WorkloadKind.HASHING -> WORKLOAD_KIND_HASHING). A message converted to its dataclass and back is
the same message (times included: `timestamp` and `unix_s` are exact inverses for the times rigd
makes), which is what lets rigctl print `--json` from the client library's dataclasses.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import re
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from hal.device import DeviceInfo, Health, HealthState, Telemetry
from hal.registry import BackendStatus
from rigapi import pb
from rigapi.model import (
    CurtailmentStatus,
    DeviceOutcome,
    DiagnosticOutcome,
    DiagnosticResult,
    HashingSpec,
    InferenceSpec,
    Operation,
    OperationState,
    Phase,
    PhaseRecord,
    Reading,
    RigPower,
    WorkloadKind,
    WorkloadSpec,
    WorkloadStatus,
)

D = TypeVar("D")

# Telemetry fields that are handled explicitly rather than copied by name.
_TELEMETRY_SPECIAL = frozenset({"device_id", "timestamp_unix_s", "gpu", "asic", "host"})


def enum_prefix(name: str) -> str:
    """A proto enum's value prefix: DeviceKind -> DEVICE_KIND."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


def enum_value(descriptor: Any, member: enum.Enum) -> Any:
    """A Python enum member as the proto enum value (an int) of the same name; UNSPECIFIED
    when the proto has no such name (HealthState.UNKNOWN)."""
    prefix = enum_prefix(descriptor.name)
    value = descriptor.values_by_name.get(f"{prefix}_{member.name}")
    if value is None:
        value = descriptor.values_by_name[f"{prefix}_UNSPECIFIED"]
    return int(value.number)


def enum_member(descriptor: Any, number: int, cls: type[enum.Enum]) -> Any:
    """The inverse of enum_value; None for UNSPECIFIED or a value this build does not know."""
    return _members(descriptor, cls).get(number)


@functools.cache
def _members(descriptor: Any, cls: type[enum.Enum]) -> dict[int, Any]:
    prefix = enum_prefix(descriptor.name) + "_"
    return {value.number: cls.__members__.get(value.name.removeprefix(prefix))
            for value in descriptor.values}


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
    """Whole seconds and the fraction's nanoseconds apart (a float of ~1.7e9 s cannot hold a
    nanosecond count: its product with 1e9 is off by up to ~100 ns), so unix_s() gives back
    exactly the float this was made from."""
    seconds = math.floor(unix_s)
    nanos = round((unix_s - seconds) * 1e9)
    if nanos >= 1_000_000_000:
        seconds, nanos = seconds + 1, nanos - 1_000_000_000
    return Timestamp(seconds=seconds, nanos=nanos)


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


def workload(spec: WorkloadSpec, password: bool = False) -> pb.Workload:
    """What a device should run. The pool password stays inside unless `password` (a request:
    the client sends it; rigd never shows it)."""
    msg = pb.Workload(kind=enum_value(pb.WorkloadKind.DESCRIPTOR, spec.kind))
    if spec.hashing is not None:
        msg.hashing.CopyFrom(pb.HashingSpec(
            algorithm="sha256d", pool_urls=spec.hashing.pool_urls, user=spec.hashing.user,
            password=spec.hashing.password if password else "",
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
    if c.dispatched_after_s is not None:
        msg.dispatched_after_s = c.dispatched_after_s
    return msg


def diagnostic(outcome: DiagnosticOutcome) -> pb.RunDiagnosticsResponse:
    return pb.RunDiagnosticsResponse(
        device_id=outcome.device_id, test_name=outcome.test,
        result=f"DIAGNOSTIC_RESULT_{outcome.result.name}",
        detail=outcome.detail, duration_ms=round(outcome.duration_s * 1000),
        tests_done=outcome.done, tests_total=outcome.total,
        level=pb.DiagnosticLevel.Name(outcome.level))


# ---- messages -> dataclasses (the client's direction) -------------------------------------------
#
# `extract` is `fill` backwards, compiled once per (dataclass, message type) into one reader per
# field: a fleet-wide GetTelemetry converts thousands of readings at a time.


def unix_s(ts: Timestamp) -> float:
    """The inverse of timestamp()."""
    return ts.seconds + ts.nanos / 1e9


_Reader = Callable[[Message], Any]


def _optional(hint: Any) -> tuple[Any, bool]:
    """(the type inside `X | None`, whether None is allowed)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return (args[0] if len(args) == 1 else hint), len(args) < len(typing.get_args(hint))
    return hint, False


def _is_enum(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, enum.Enum)


def _element(hint: Any) -> Any:
    """The element type of tuple[X, ...] or list[X]."""
    args = [a for a in typing.get_args(hint) if a is not Ellipsis]
    return args[0] if args else Any


def _scalar(hint: Any, descriptor: Any) -> Callable[[Any], Any]:
    """How one wire value becomes the dataclass's value."""
    if descriptor.message_type is not None:
        if descriptor.message_type.full_name == "google.protobuf.Timestamp":
            return unix_s
        if hint is Health:
            return health_from
        return lambda msg: extract(hint, msg)
    if _is_enum(hint) and descriptor.enum_type is not None:
        enum_type = descriptor.enum_type
        return lambda number: enum_member(enum_type, number, hint)
    if _is_enum(hint):  # a proto string holding the enum's value ("confirmed")
        return lambda text: hint._value2member_map_.get(text, text)
    return lambda value: value


def _reader(name: str, hint: Any, descriptor: Any) -> _Reader:
    inner, nullable = _optional(hint)
    if descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry:
        return lambda msg: dict(getattr(msg, name))
    if descriptor.is_repeated:
        each = _scalar(_element(inner), descriptor)
        container = list if typing.get_origin(inner) is list else tuple
        return lambda msg: container(each(v) for v in getattr(msg, name))
    convert_one = _scalar(inner, descriptor)
    if descriptor.has_presence and nullable:
        return lambda msg: convert_one(getattr(msg, name)) if msg.HasField(name) else None
    # Not optional on the dataclass side: an unset message reads as its default (a Health
    # rigd left out is UNKNOWN, not the dataclass's HEALTHY default).
    return lambda msg: convert_one(getattr(msg, name))


@functools.cache
def _readers(cls: type, descriptor: Any, skip: frozenset[str]) -> tuple[tuple[str, _Reader], ...]:
    hints = typing.get_type_hints(cls)
    fields = descriptor.fields_by_name
    readers = []
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init or f.name.startswith("_"):
            continue
        if f.name not in fields:
            raise KeyError(f"{descriptor.name} has no field {f.name!r}")
        readers.append((f.name, _reader(f.name, hints[f.name], fields[f.name])))
    return tuple(readers)


def extract(cls: type[D], message: Message, skip: frozenset[str] = frozenset(),
            **given: Any) -> D:
    """A dataclass from a message field by field (an unset optional field is None); the fields
    in `skip` come from `given` or keep their defaults."""
    values = dict(given)
    readers = _readers(cls, message.DESCRIPTOR, skip | frozenset(given))  # type: ignore[arg-type]
    for name, read in readers:
        values[name] = read(message)
    return cls(**values)


def health_from(msg: pb.Health) -> Health:
    state = enum_member(pb.HealthState.DESCRIPTOR, msg.state, HealthState)
    return Health(state or HealthState.UNKNOWN, msg.reason)


def device_info_from(msg: pb.Device) -> DeviceInfo:
    return extract(DeviceInfo, msg)


def workload_from(msg: pb.Workload) -> WorkloadSpec:
    """What a device should run, as inventory shows it (no password; hashing's version rolling
    is rigd's configuration, not on the wire)."""
    kind = enum_member(pb.WorkloadKind.DESCRIPTOR, msg.kind, WorkloadKind)
    which = msg.WhichOneof("spec")
    hashing = inference = None
    if which == "hashing":
        h = msg.hashing
        hashing = HashingSpec(tuple(h.pool_urls), h.user, h.password, h.intensity)
    elif which == "inference":
        inference = InferenceSpec(msg.inference.profile, msg.inference.model)
    return WorkloadSpec(kind, hashing=hashing, inference=inference)


def telemetry_from(msg: pb.DeviceTelemetry) -> Telemetry:
    return extract(Telemetry, msg, timestamp_unix_s=unix_s(msg.time))


def reading_from(msg: pb.DeviceTelemetry) -> Reading:
    status = extract(WorkloadStatus, msg.workload) if msg.HasField("workload") else None
    return Reading(telemetry_from(msg), msg.error, status)


def rig_power_from(msg: pb.RigPower) -> RigPower:
    return extract(RigPower, msg, time_unix_s=unix_s(msg.time))


def backend_from(msg: pb.BackendStatus) -> BackendStatus:
    return extract(BackendStatus, msg, skip=frozenset({"discover_s"}))


def curtailment_from(msg: pb.Curtailment) -> CurtailmentStatus:
    return extract(CurtailmentStatus, msg, deadline_unix_s=unix_s(msg.deadline_time),
                   expire_unix_s=unix_s(msg.expire_time))


def operation_from(msg: pb.Operation) -> Operation:
    def state(number: int) -> OperationState:  # None for a state this build does not know
        return enum_member(pb.OperationState.DESCRIPTOR, number, OperationState)

    phases = [PhaseRecord(
        phase=enum_member(pb.SwitchPhase.DESCRIPTOR, p.phase, Phase), device_id=p.device_id,
        start_unix_s=unix_s(p.start_time),
        duration_s=p.duration_ms / 1000 if p.HasField("duration_ms") else None,
        detail=p.detail) for p in msg.phases]
    outcomes = {o.device_id: DeviceOutcome(o.device_id, state(o.state), o.error)
                for o in msg.outcomes}
    return Operation(
        operation_id=msg.operation_id, kind=msg.kind, device_ids=list(msg.device_ids),
        state=state(msg.state), phases=phases, outcomes=outcomes, error=msg.error,
        create_unix_s=unix_s(msg.create_time),
        end_unix_s=unix_s(msg.end_time) if msg.HasField("end_time") else None,
        request_id=msg.request_id, detail=msg.detail)


def diagnostic_from(msg: pb.RunDiagnosticsResponse) -> DiagnosticOutcome:
    return DiagnosticOutcome(
        device_id=msg.device_id, test=msg.test_name, level=int(msg.level),
        result=enum_member(pb.DiagnosticResult.DESCRIPTOR, msg.result, DiagnosticResult),
        detail=msg.detail, duration_s=msg.duration_ms / 1000, done=msg.tests_done,
        total=msg.tests_total)
