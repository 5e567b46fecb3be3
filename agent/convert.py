"""HAL values -> rig.v1 messages.

The proto fields carry the same names as the HAL dataclass fields, so one generic filler copies
them: a field added to both sides needs no code here, and a field added to one side only is
caught by tests/agent/test_convert.py.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from agent.api import pb
from hal.device import DeviceInfo, DeviceKind, Health, HealthState, PowerSource, Telemetry
from hal.registry import BackendStatus

KIND_TO_PB = {
    DeviceKind.GPU: pb.DEVICE_KIND_GPU,
    DeviceKind.FPGA: pb.DEVICE_KIND_FPGA,
    DeviceKind.ASIC: pb.DEVICE_KIND_ASIC,
    DeviceKind.HOST: pb.DEVICE_KIND_HOST,
    DeviceKind.OPENCL: pb.DEVICE_KIND_OPENCL,
}
HEALTH_TO_PB = {
    HealthState.HEALTHY: pb.HEALTH_STATE_HEALTHY,
    HealthState.DEGRADED: pb.HEALTH_STATE_DEGRADED,
    HealthState.UNHEALTHY: pb.HEALTH_STATE_UNHEALTHY,
    HealthState.UNKNOWN: pb.HEALTH_STATE_UNSPECIFIED,
}
# Telemetry fields that are handled explicitly rather than copied by name.
_TELEMETRY_SPECIAL = {
    "device_id", "kind", "timestamp_unix_s", "health", "power_source", "gpu", "asic", "host",
}
POWER_SOURCE_TO_PB = {
    PowerSource.MEASURED: pb.POWER_SOURCE_MEASURED,
    PowerSource.ESTIMATED: pb.POWER_SOURCE_ESTIMATED,
}


def fill(message: Message, value: Any, skip: set[str] | frozenset[str] = frozenset()) -> Message:
    """Copy a HAL dataclass into a message field by field; None and NaN stay unset."""
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
            fill(getattr(message, f.name), item)
        elif descriptor.is_repeated:
            getattr(message, f.name).extend(item)
        else:
            setattr(message, f.name, item.value if isinstance(item, enum.Enum) else item)
    return message


def timestamp(unix_s: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(unix_s * 1e9))
    return ts


def health(value: Health) -> pb.Health:
    return pb.Health(state=HEALTH_TO_PB[value.state], reason=value.reason)


def device(info: DeviceInfo, capabilities: frozenset[Any], state: Health) -> pb.Device:
    msg = pb.Device(
        kind=KIND_TO_PB[info.kind],
        capabilities=sorted(str(c) for c in capabilities),
        health=health(state),
    )
    fill(msg, info, skip={"kind"})
    return msg


def backend(status: BackendStatus) -> pb.BackendStatus:
    return pb.BackendStatus(
        name=status.name,
        available=status.available,
        reason=status.reason,
        device_count=status.device_count,
    )


def telemetry(reading: Telemetry) -> pb.DeviceTelemetry:
    msg = pb.DeviceTelemetry(
        device_id=reading.device_id,
        kind=KIND_TO_PB[reading.kind],
        time=timestamp(reading.timestamp_unix_s),
        health=health(reading.health),
    )
    fill(msg, reading, skip=_TELEMETRY_SPECIAL)
    if reading.power_source is not None:
        msg.power_source = POWER_SOURCE_TO_PB[reading.power_source]
    for name in ("gpu", "asic", "host"):
        detail = getattr(reading, name)
        if detail is not None:
            fill(getattr(msg, name), detail)
    return msg


def failed_telemetry(
    device_id: str, kind: DeviceKind, error: str, at_unix_s: float
) -> pb.DeviceTelemetry:
    """A reading that failed as a whole: the device is reported, with why, and nothing else."""
    return pb.DeviceTelemetry(
        device_id=device_id,
        kind=KIND_TO_PB[kind],
        time=timestamp(at_unix_s),
        health=pb.Health(state=pb.HEALTH_STATE_UNHEALTHY, reason=error),
        error=error,
    )
