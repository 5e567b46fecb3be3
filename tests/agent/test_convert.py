"""Every HAL telemetry field reaches the wire under the same name; None stays absent."""

from __future__ import annotations

import collections.abc
import dataclasses
import typing

import pytest

from hal import device as d
from rigapi import convert, pb
from rigapi.model import Reading, WorkloadKind, WorkloadState, WorkloadStatus


def _sample(cls: type) -> typing.Any:
    """An instance of a HAL dataclass with every field set to a non-default value."""
    hints = typing.get_type_hints(cls)
    values: dict[str, typing.Any] = {}
    for i, f in enumerate(dataclasses.fields(cls), start=1):
        hint = hints[f.name]
        origin = typing.get_origin(hint)
        args = [a for a in typing.get_args(hint) if a not in (type(None), Ellipsis)]
        if origin is collections.abc.Mapping:
            values[f.name] = {"k": "v"}
        elif origin is tuple:
            (element,) = args
            values[f.name] = (
                _sample(element) if dataclasses.is_dataclass(element) else _scalar(element, i),
            )
        else:
            base = args[0] if args else hint
            values[f.name] = _sample(base) if dataclasses.is_dataclass(base) else _scalar(base, i)
    return cls(**values)


def _scalar(kind: typing.Any, i: int) -> typing.Any:
    samples = {bool: True, int: 1000 + i, float: 0.5 + i, str: f"v{i}",
               d.DeviceKind: d.DeviceKind.GPU, d.Health: d.Health(d.HealthState.DEGRADED, "hot")}
    return samples[kind]


@pytest.mark.parametrize("cls", [d.GpuTelemetry, d.AsicTelemetry, d.HostTelemetry])
def test_every_detail_field_is_carried(cls: type) -> None:
    value = _sample(cls)
    msg = convert.fill(getattr(pb, cls.__name__)(), value)
    for f in dataclasses.fields(cls):
        wire = getattr(msg, f.name)
        src = getattr(value, f.name)
        if isinstance(src, tuple):
            assert len(wire) == len(src), f.name
        elif not dataclasses.is_dataclass(src):
            assert wire == pytest.approx(src), f.name


def test_telemetry_common_fields_and_absent_values() -> None:
    reading = d.Telemetry(
        device_id="gpu/x", kind=d.DeviceKind.GPU, power_w=312.5, temp_c=None,
        gpu=d.GpuTelemetry(clock_sm_mhz=1980, processes=(d.GpuProcess(42, 1 << 30),)),
    )
    msg = convert.reading(Reading(reading))
    assert msg.power_w == 312.5
    assert msg.power_source == pb.POWER_SOURCE_MEASURED
    assert msg.kind == pb.DEVICE_KIND_GPU
    assert not msg.HasField("temp_c"), "None must stay absent, not become 0"
    assert msg.WhichOneof("detail") == "gpu"
    assert msg.gpu.processes[0].pid == 42
    assert not msg.gpu.HasField("mem_used_bytes")


def test_device_info_fields_are_carried() -> None:
    info = _sample(d.DeviceInfo)
    caps = frozenset({d.Capability.SET_POWER_LIMIT})
    msg = convert.device(info, caps, d.Health(d.HealthState.HEALTHY))
    assert msg.id == info.id and msg.simulated is True
    assert dict(msg.attributes) == {"k": "v"}
    assert list(msg.capabilities) == ["set_power_limit"]


def test_a_field_missing_on_the_wire_is_an_error() -> None:
    @dataclasses.dataclass
    class Extra:
        not_in_proto_w: float = 1.0

    with pytest.raises(KeyError, match="not_in_proto_w"):
        convert.fill(pb.GpuTelemetry(), Extra())


@pytest.mark.parametrize("cls", [d.DeviceKind, d.HealthState, d.PowerSource, WorkloadKind,
                                 WorkloadState])
def test_every_enum_member_has_its_proto_value(cls: type) -> None:
    descriptor = getattr(pb, cls.__name__).DESCRIPTOR
    for member in cls:  # type: ignore[attr-defined]
        number = convert.enum_value(descriptor, member)
        if member is d.HealthState.UNKNOWN:
            assert number == 0
            continue
        assert number != 0, member
        assert convert.enum_member(descriptor, number, cls) is member


def test_workload_status_reaches_the_wire_with_its_state() -> None:
    status = WorkloadStatus(WorkloadKind.HASHING, WorkloadState.FAILED, detail="pool refused",
                            hashrate_hs=None, shares_accepted=0)
    msg = convert.reading(Reading(d.Telemetry("opencl/x", d.DeviceKind.OPENCL), workload=status))
    assert msg.workload.kind == pb.WORKLOAD_KIND_HASHING
    assert msg.workload.state == pb.WORKLOAD_STATE_FAILED
    assert msg.workload.detail == "pool refused"
    assert msg.workload.HasField("shares_accepted") and msg.workload.shares_accepted == 0
    assert not msg.workload.HasField("hashrate_hs")


def test_a_stream_message_is_its_encoded_devices_plus_its_counters() -> None:
    readings = [Reading(d.Telemetry(f"opencl/{i}", d.DeviceKind.OPENCL, power_w=float(i)))
                for i in range(3)]
    raw = convert.encode_stream_message([convert.encode_stream_device(r) for r in readings],
                                        sequence=7, dropped_count=300)
    msg = pb.StreamTelemetryResponse.FromString(raw)
    assert [t.device_id for t in msg.devices] == ["opencl/0", "opencl/1", "opencl/2"]
    assert [t.power_w for t in msg.devices] == [0.0, 1.0, 2.0]
    assert msg.sequence == 7 and msg.dropped_count == 300
