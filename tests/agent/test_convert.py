"""Every HAL telemetry field reaches the wire under the same name; None stays absent. And back:
what the client library reads from the wire is the dataclass rigd sent, field for field."""

from __future__ import annotations

import collections.abc
import dataclasses
import typing

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hal import device as d
from hal.registry import BackendStatus
from rigapi import convert, pb
from rigapi.model import (
    CurtailmentState,
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
    WorkloadState,
    WorkloadStatus,
)


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


# ---- the client's direction: messages -> dataclasses, and back ---------------------------------

def _full(cls: type) -> typing.Any:
    """Like _sample, for every dataclass the wire carries (enums and Health included)."""
    extra = {d.PowerSource: d.PowerSource.ESTIMATED, WorkloadKind: WorkloadKind.INFERENCE,
             WorkloadState: WorkloadState.STANDBY, CurtailmentState: CurtailmentState.CONFIRMED}
    hints = typing.get_type_hints(cls)
    values: dict[str, typing.Any] = {}
    for i, f in enumerate(dataclasses.fields(cls), start=1):
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a not in (type(None), Ellipsis)]
        base = args[0] if args and typing.get_origin(hint) is not tuple else hint
        if typing.get_origin(hint) in (tuple, collections.abc.Mapping):
            values[f.name] = _sample(cls).__getattribute__(f.name)
        elif dataclasses.is_dataclass(base):
            values[f.name] = _full(base) if base is not d.Health else d.Health(
                d.HealthState.DEGRADED, "hot")
        elif base in extra:
            values[f.name] = extra[base]
        else:
            values[f.name] = _scalar(base, i)
    return cls(**values)


# (dataclass, message, the message's fields that the dataclass does not carry, and why)
PAIRS: list[tuple[type, typing.Any, frozenset[str]]] = [
    (d.GpuTelemetry, pb.GpuTelemetry, frozenset()),
    (d.AsicTelemetry, pb.AsicTelemetry, frozenset()),
    (d.HostTelemetry, pb.HostTelemetry, frozenset()),
    (d.AsicBoard, pb.AsicBoard, frozenset()),
    (d.PoolStatus, pb.PoolStatus, frozenset()),
    (d.GpuProcess, pb.GpuProcess, frozenset()),
    (d.TempSensor, pb.TempSensor, frozenset()),
    (WorkloadStatus, pb.WorkloadStatus, frozenset()),
    # time: timestamp_unix_s; error, workload: Reading's
    (d.Telemetry, pb.DeviceTelemetry, frozenset({"time", "error", "workload"})),
    # capabilities, health, workload: the inventory entry's own
    (d.DeviceInfo, pb.Device, frozenset({"capabilities", "health", "workload"})),
    (BackendStatus, pb.BackendStatus, frozenset()),
    (RigPower, pb.RigPower, frozenset({"time"})),
    (CurtailmentStatus, pb.Curtailment, frozenset({"deadline_time", "expire_time"})),
]


@pytest.mark.parametrize(("cls", "message", "apart"), PAIRS,
                         ids=lambda p: getattr(p, "__name__", ""))
def test_every_wire_field_has_a_dataclass_field(cls: type, message: typing.Any,
                                                apart: frozenset[str]) -> None:
    """A field added to the proto only is caught here (one added to the dataclass only is caught
    by fill and extract themselves)."""
    names = {f.name for f in dataclasses.fields(cls)}
    missing = {f.name for f in message.DESCRIPTOR.fields} - names - apart
    assert not missing, f"{message.DESCRIPTOR.name} fields no dataclass field carries: {missing}"


@pytest.mark.parametrize("cls", [c for c, _, _ in PAIRS if c not in (d.Telemetry, RigPower,
                                                                    CurtailmentStatus)])
def test_fill_then_extract_gives_every_field_back(cls: type) -> None:
    value = _full(cls)
    message = getattr(pb, {"DeviceInfo": "Device"}.get(cls.__name__, cls.__name__))()
    skip = frozenset({"discover_s"}) if cls is BackendStatus else frozenset()  # rigd's own
    back = convert.extract(cls, convert.fill(message, value, skip=skip), skip=skip)
    assert back == (dataclasses.replace(value, discover_s=0.0) if skip else value)


def test_a_reading_goes_to_the_wire_and_back_unchanged() -> None:
    for detail in ("gpu", "asic", "host"):
        details = {name: None for name in ("gpu", "asic", "host")}
        details[detail] = _full(getattr(d, detail.capitalize() + "Telemetry"))
        telemetry = dataclasses.replace(_full(d.Telemetry), **details)
        reading = Reading(telemetry, error="", workload=_full(WorkloadStatus))
        message = convert.reading(reading)
        assert convert.reading_from(message) == reading
        assert convert.reading(convert.reading_from(message)) == message
    bare = Reading(d.Telemetry("asic/x", d.DeviceKind.ASIC, health=d.Health(
        d.HealthState.UNHEALTHY, "connection refused")), error="connection refused")
    back = convert.reading_from(convert.reading(bare))
    assert back == bare and back.telemetry.power_w is None and back.workload is None


def test_an_inventory_entry_goes_to_the_wire_and_back_unchanged() -> None:
    info = _full(d.DeviceInfo)
    caps = frozenset({d.Capability.SET_POWER_LIMIT, d.Capability.HASHING})
    health = d.Health(d.HealthState.UNKNOWN, "")
    for spec in (WorkloadSpec(WorkloadKind.HASHING, hashing=HashingSpec(
            ("stratum+tcp://pool:3333",), "u", "", 0.5)),
                 WorkloadSpec(WorkloadKind.INFERENCE, inference=InferenceSpec("vllm", "m")),
                 WorkloadSpec(WorkloadKind.HASHING), WorkloadSpec(WorkloadKind.IDLE)):
        message = convert.device(info, caps, health, spec)
        assert convert.device_info_from(message) == info
        assert convert.health_from(message.health) == health
        assert convert.workload_from(message.workload) == spec
        again = convert.device(convert.device_info_from(message), frozenset(message.capabilities),
                               convert.health_from(message.health),
                               convert.workload_from(message.workload))
        assert again == message


def test_a_request_carries_the_pool_password_and_inventory_never_does() -> None:
    spec = WorkloadSpec(WorkloadKind.HASHING, hashing=HashingSpec(("stratum+tcp://p:1",), "u",
                                                                  "secret", 1.0))
    assert convert.workload(spec).hashing.password == ""
    assert convert.workload(spec, password=True).hashing.password == "secret"


def test_operations_power_curtailments_and_diagnostics_go_and_come_back() -> None:
    op = Operation(
        operation_id="op-1", kind="set_workload", device_ids=["gpu/a", "gpu/b"],
        state=OperationState.ROLLED_BACK,
        phases=[PhaseRecord(Phase.DRAINING, "gpu/a", 1_700_000_000.123456, 0.25, "drained"),
                PhaseRecord(Phase.STARTING, "gpu/b", 1_700_000_001.5, None, "")],
        outcomes={"gpu/a": DeviceOutcome("gpu/a", OperationState.SUCCEEDED),
                  "gpu/b": DeviceOutcome("gpu/b", OperationState.ROLLED_BACK, "not ready")},
        error="gpu/b rolled back", create_unix_s=1_700_000_000.0001,
        end_unix_s=1_700_000_009.987654321, request_id="r-1", detail="target 300 W")
    message = convert.operation(op)
    back = convert.operation_from(message)
    assert [dataclasses.replace(p, _started=0) for p in back.phases] == \
        [dataclasses.replace(p, _started=0) for p in op.phases]
    assert (back.operation_id, back.kind, back.device_ids, back.state, back.outcomes, back.error,
            back.create_unix_s, back.end_unix_s, back.request_id, back.detail) == \
        (op.operation_id, op.kind, op.device_ids, op.state, op.outcomes, op.error,
         op.create_unix_s, op.end_unix_s, op.request_id, op.detail)
    assert convert.operation(back) == message
    running = convert.operation_from(convert.operation(Operation("op-2", "curtail", [])))
    assert running.end_unix_s is None and not running.done

    power = _full(RigPower)
    assert convert.rig_power_from(convert.rig_power(power)) == power
    curtailment = _full(CurtailmentStatus)
    assert convert.curtailment_from(convert.curtailment(curtailment)) == curtailment
    open_ended = dataclasses.replace(curtailment, below_target_after_s=None, shortfall_w=None)
    assert convert.curtailment_from(convert.curtailment(open_ended)) == open_ended

    outcome = DiagnosticOutcome("gpu/a", "temperature", pb.DIAGNOSTIC_LEVEL_MEDIUM,
                                DiagnosticResult.WARN, "87 C", 0.012, 3, 9)
    assert convert.diagnostic_from(convert.diagnostic(outcome)) == outcome
    backend = BackendStatus("nvml", False, "libnvidia-ml.so.1 not found", 0)
    assert convert.backend_from(convert.backend(backend)) == backend


def test_a_value_this_build_does_not_know_is_none_not_a_guess() -> None:
    message = convert.operation(Operation("op-3", "set_workload", ["gpu/a"]))
    message.state = 99  # a state a newer rigd might send
    message.phases.add(phase=77, device_id="gpu/a")
    back = convert.operation_from(message)
    assert back.state is None and back.phases[0].phase is None
    telemetry = convert.reading(Reading(d.Telemetry("x/1", d.DeviceKind.GPU)))
    telemetry.kind = 42
    assert convert.reading_from(telemetry).telemetry.kind is None
    assert convert.health_from(pb.Health()).state is d.HealthState.UNKNOWN


def test_extract_refuses_a_dataclass_field_the_wire_lacks() -> None:
    @dataclasses.dataclass
    class Extra:
        not_in_proto_w: float = 1.0

    with pytest.raises(KeyError, match="not_in_proto_w"):
        convert.extract(Extra, pb.GpuTelemetry())


# From 2001 to 2100: a float there is ~0.1-0.5 us apart from the next, far coarser than a
# nanosecond (an epoch float near 0 holds sub-nanosecond digits no Timestamp can).
@given(st.floats(min_value=1e9, max_value=4_102_444_800))
def test_a_time_goes_to_the_wire_and_back_exactly(unix_s: float) -> None:
    ts = convert.timestamp(unix_s)
    assert 0 <= ts.nanos < 1_000_000_000
    assert convert.unix_s(ts) == unix_s
    assert convert.timestamp(convert.unix_s(ts)) == ts
