import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeviceKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEVICE_KIND_UNSPECIFIED: _ClassVar[DeviceKind]
    DEVICE_KIND_GPU: _ClassVar[DeviceKind]
    DEVICE_KIND_FPGA: _ClassVar[DeviceKind]
    DEVICE_KIND_ASIC: _ClassVar[DeviceKind]
    DEVICE_KIND_HOST: _ClassVar[DeviceKind]
    DEVICE_KIND_OPENCL: _ClassVar[DeviceKind]

class HealthState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEALTH_STATE_UNSPECIFIED: _ClassVar[HealthState]
    HEALTH_STATE_HEALTHY: _ClassVar[HealthState]
    HEALTH_STATE_DEGRADED: _ClassVar[HealthState]
    HEALTH_STATE_UNHEALTHY: _ClassVar[HealthState]

class PowerSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POWER_SOURCE_UNSPECIFIED: _ClassVar[PowerSource]
    POWER_SOURCE_MEASURED: _ClassVar[PowerSource]
    POWER_SOURCE_ESTIMATED: _ClassVar[PowerSource]

class WorkloadKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKLOAD_KIND_UNSPECIFIED: _ClassVar[WorkloadKind]
    WORKLOAD_KIND_IDLE: _ClassVar[WorkloadKind]
    WORKLOAD_KIND_HASHING: _ClassVar[WorkloadKind]
    WORKLOAD_KIND_INFERENCE: _ClassVar[WorkloadKind]

class WorkloadState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKLOAD_STATE_UNSPECIFIED: _ClassVar[WorkloadState]
    WORKLOAD_STATE_STARTING: _ClassVar[WorkloadState]
    WORKLOAD_STATE_RUNNING: _ClassVar[WorkloadState]
    WORKLOAD_STATE_STANDBY: _ClassVar[WorkloadState]
    WORKLOAD_STATE_STOPPING: _ClassVar[WorkloadState]
    WORKLOAD_STATE_STOPPED: _ClassVar[WorkloadState]
    WORKLOAD_STATE_FAILED: _ClassVar[WorkloadState]

class OperationState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPERATION_STATE_UNSPECIFIED: _ClassVar[OperationState]
    OPERATION_STATE_RUNNING: _ClassVar[OperationState]
    OPERATION_STATE_SUCCEEDED: _ClassVar[OperationState]
    OPERATION_STATE_FAILED: _ClassVar[OperationState]
    OPERATION_STATE_ROLLED_BACK: _ClassVar[OperationState]

class SwitchPhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SWITCH_PHASE_UNSPECIFIED: _ClassVar[SwitchPhase]
    SWITCH_PHASE_REQUESTED: _ClassVar[SwitchPhase]
    SWITCH_PHASE_DRAINING: _ClassVar[SwitchPhase]
    SWITCH_PHASE_STOPPING: _ClassVar[SwitchPhase]
    SWITCH_PHASE_VERIFYING: _ClassVar[SwitchPhase]
    SWITCH_PHASE_CONFIGURING: _ClassVar[SwitchPhase]
    SWITCH_PHASE_STARTING: _ClassVar[SwitchPhase]
    SWITCH_PHASE_READY: _ClassVar[SwitchPhase]
    SWITCH_PHASE_ROLLED_BACK: _ClassVar[SwitchPhase]
    SWITCH_PHASE_FAILED: _ClassVar[SwitchPhase]
    SWITCH_PHASE_SHEDDING: _ClassVar[SwitchPhase]
    SWITCH_PHASE_CONFIRMED: _ClassVar[SwitchPhase]

class DeviceActionKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEVICE_ACTION_KIND_UNSPECIFIED: _ClassVar[DeviceActionKind]
    DEVICE_ACTION_KIND_SLEEP: _ClassVar[DeviceActionKind]
    DEVICE_ACTION_KIND_WAKE: _ClassVar[DeviceActionKind]
    DEVICE_ACTION_KIND_RESTART: _ClassVar[DeviceActionKind]
    DEVICE_ACTION_KIND_POOL_SWITCH: _ClassVar[DeviceActionKind]

class DiagnosticLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DIAGNOSTIC_LEVEL_UNSPECIFIED: _ClassVar[DiagnosticLevel]
    DIAGNOSTIC_LEVEL_QUICK: _ClassVar[DiagnosticLevel]
    DIAGNOSTIC_LEVEL_MEDIUM: _ClassVar[DiagnosticLevel]
    DIAGNOSTIC_LEVEL_LONG: _ClassVar[DiagnosticLevel]

class DiagnosticResult(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DIAGNOSTIC_RESULT_UNSPECIFIED: _ClassVar[DiagnosticResult]
    DIAGNOSTIC_RESULT_PASS: _ClassVar[DiagnosticResult]
    DIAGNOSTIC_RESULT_FAIL: _ClassVar[DiagnosticResult]
    DIAGNOSTIC_RESULT_WARN: _ClassVar[DiagnosticResult]
    DIAGNOSTIC_RESULT_SKIP: _ClassVar[DiagnosticResult]
DEVICE_KIND_UNSPECIFIED: DeviceKind
DEVICE_KIND_GPU: DeviceKind
DEVICE_KIND_FPGA: DeviceKind
DEVICE_KIND_ASIC: DeviceKind
DEVICE_KIND_HOST: DeviceKind
DEVICE_KIND_OPENCL: DeviceKind
HEALTH_STATE_UNSPECIFIED: HealthState
HEALTH_STATE_HEALTHY: HealthState
HEALTH_STATE_DEGRADED: HealthState
HEALTH_STATE_UNHEALTHY: HealthState
POWER_SOURCE_UNSPECIFIED: PowerSource
POWER_SOURCE_MEASURED: PowerSource
POWER_SOURCE_ESTIMATED: PowerSource
WORKLOAD_KIND_UNSPECIFIED: WorkloadKind
WORKLOAD_KIND_IDLE: WorkloadKind
WORKLOAD_KIND_HASHING: WorkloadKind
WORKLOAD_KIND_INFERENCE: WorkloadKind
WORKLOAD_STATE_UNSPECIFIED: WorkloadState
WORKLOAD_STATE_STARTING: WorkloadState
WORKLOAD_STATE_RUNNING: WorkloadState
WORKLOAD_STATE_STANDBY: WorkloadState
WORKLOAD_STATE_STOPPING: WorkloadState
WORKLOAD_STATE_STOPPED: WorkloadState
WORKLOAD_STATE_FAILED: WorkloadState
OPERATION_STATE_UNSPECIFIED: OperationState
OPERATION_STATE_RUNNING: OperationState
OPERATION_STATE_SUCCEEDED: OperationState
OPERATION_STATE_FAILED: OperationState
OPERATION_STATE_ROLLED_BACK: OperationState
SWITCH_PHASE_UNSPECIFIED: SwitchPhase
SWITCH_PHASE_REQUESTED: SwitchPhase
SWITCH_PHASE_DRAINING: SwitchPhase
SWITCH_PHASE_STOPPING: SwitchPhase
SWITCH_PHASE_VERIFYING: SwitchPhase
SWITCH_PHASE_CONFIGURING: SwitchPhase
SWITCH_PHASE_STARTING: SwitchPhase
SWITCH_PHASE_READY: SwitchPhase
SWITCH_PHASE_ROLLED_BACK: SwitchPhase
SWITCH_PHASE_FAILED: SwitchPhase
SWITCH_PHASE_SHEDDING: SwitchPhase
SWITCH_PHASE_CONFIRMED: SwitchPhase
DEVICE_ACTION_KIND_UNSPECIFIED: DeviceActionKind
DEVICE_ACTION_KIND_SLEEP: DeviceActionKind
DEVICE_ACTION_KIND_WAKE: DeviceActionKind
DEVICE_ACTION_KIND_RESTART: DeviceActionKind
DEVICE_ACTION_KIND_POOL_SWITCH: DeviceActionKind
DIAGNOSTIC_LEVEL_UNSPECIFIED: DiagnosticLevel
DIAGNOSTIC_LEVEL_QUICK: DiagnosticLevel
DIAGNOSTIC_LEVEL_MEDIUM: DiagnosticLevel
DIAGNOSTIC_LEVEL_LONG: DiagnosticLevel
DIAGNOSTIC_RESULT_UNSPECIFIED: DiagnosticResult
DIAGNOSTIC_RESULT_PASS: DiagnosticResult
DIAGNOSTIC_RESULT_FAIL: DiagnosticResult
DIAGNOSTIC_RESULT_WARN: DiagnosticResult
DIAGNOSTIC_RESULT_SKIP: DiagnosticResult

class Health(_message.Message):
    __slots__ = ("state", "reason")
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    state: HealthState
    reason: str
    def __init__(self, state: _Optional[_Union[HealthState, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class Device(_message.Message):
    __slots__ = ("id", "kind", "name", "vendor", "model", "serial", "firmware_version", "driver_version", "pci_bus_id", "simulated", "attributes", "capabilities", "health", "workload")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VENDOR_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    FIRMWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    DRIVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    PCI_BUS_ID_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: DeviceKind
    name: str
    vendor: str
    model: str
    serial: str
    firmware_version: str
    driver_version: str
    pci_bus_id: str
    simulated: bool
    attributes: _containers.ScalarMap[str, str]
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    health: Health
    workload: Workload
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[_Union[DeviceKind, str]] = ..., name: _Optional[str] = ..., vendor: _Optional[str] = ..., model: _Optional[str] = ..., serial: _Optional[str] = ..., firmware_version: _Optional[str] = ..., driver_version: _Optional[str] = ..., pci_bus_id: _Optional[str] = ..., simulated: _Optional[bool] = ..., attributes: _Optional[_Mapping[str, str]] = ..., capabilities: _Optional[_Iterable[str]] = ..., health: _Optional[_Union[Health, _Mapping]] = ..., workload: _Optional[_Union[Workload, _Mapping]] = ...) -> None: ...

class BackendStatus(_message.Message):
    __slots__ = ("name", "available", "reason", "device_count")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DEVICE_COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    available: bool
    reason: str
    device_count: int
    def __init__(self, name: _Optional[str] = ..., available: _Optional[bool] = ..., reason: _Optional[str] = ..., device_count: _Optional[int] = ...) -> None: ...

class GetInventoryRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetInventoryResponse(_message.Message):
    __slots__ = ("rig_id", "agent_version", "devices", "backends", "curtailment")
    RIG_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    BACKENDS_FIELD_NUMBER: _ClassVar[int]
    CURTAILMENT_FIELD_NUMBER: _ClassVar[int]
    rig_id: str
    agent_version: str
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    backends: _containers.RepeatedCompositeFieldContainer[BackendStatus]
    curtailment: Curtailment
    def __init__(self, rig_id: _Optional[str] = ..., agent_version: _Optional[str] = ..., devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ..., backends: _Optional[_Iterable[_Union[BackendStatus, _Mapping]]] = ..., curtailment: _Optional[_Union[Curtailment, _Mapping]] = ...) -> None: ...

class GpuProcess(_message.Message):
    __slots__ = ("pid", "used_mem_bytes")
    PID_FIELD_NUMBER: _ClassVar[int]
    USED_MEM_BYTES_FIELD_NUMBER: _ClassVar[int]
    pid: int
    used_mem_bytes: int
    def __init__(self, pid: _Optional[int] = ..., used_mem_bytes: _Optional[int] = ...) -> None: ...

class GpuTelemetry(_message.Message):
    __slots__ = ("power_limit_default_w", "power_limit_min_w", "power_limit_max_w", "power_limit_enforced_w", "utilization_gpu_pct", "utilization_mem_pct", "mem_total_bytes", "mem_used_bytes", "mem_free_bytes", "clock_sm_mhz", "clock_mem_mhz", "fan_speed_pct", "performance_state", "throttle_reasons", "persistence_mode", "processes", "last_xid", "index")
    POWER_LIMIT_DEFAULT_W_FIELD_NUMBER: _ClassVar[int]
    POWER_LIMIT_MIN_W_FIELD_NUMBER: _ClassVar[int]
    POWER_LIMIT_MAX_W_FIELD_NUMBER: _ClassVar[int]
    POWER_LIMIT_ENFORCED_W_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_GPU_PCT_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_MEM_PCT_FIELD_NUMBER: _ClassVar[int]
    MEM_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEM_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEM_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CLOCK_SM_MHZ_FIELD_NUMBER: _ClassVar[int]
    CLOCK_MEM_MHZ_FIELD_NUMBER: _ClassVar[int]
    FAN_SPEED_PCT_FIELD_NUMBER: _ClassVar[int]
    PERFORMANCE_STATE_FIELD_NUMBER: _ClassVar[int]
    THROTTLE_REASONS_FIELD_NUMBER: _ClassVar[int]
    PERSISTENCE_MODE_FIELD_NUMBER: _ClassVar[int]
    PROCESSES_FIELD_NUMBER: _ClassVar[int]
    LAST_XID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    power_limit_default_w: float
    power_limit_min_w: float
    power_limit_max_w: float
    power_limit_enforced_w: float
    utilization_gpu_pct: float
    utilization_mem_pct: float
    mem_total_bytes: int
    mem_used_bytes: int
    mem_free_bytes: int
    clock_sm_mhz: int
    clock_mem_mhz: int
    fan_speed_pct: float
    performance_state: int
    throttle_reasons: _containers.RepeatedScalarFieldContainer[str]
    persistence_mode: bool
    processes: _containers.RepeatedCompositeFieldContainer[GpuProcess]
    last_xid: int
    index: int
    def __init__(self, power_limit_default_w: _Optional[float] = ..., power_limit_min_w: _Optional[float] = ..., power_limit_max_w: _Optional[float] = ..., power_limit_enforced_w: _Optional[float] = ..., utilization_gpu_pct: _Optional[float] = ..., utilization_mem_pct: _Optional[float] = ..., mem_total_bytes: _Optional[int] = ..., mem_used_bytes: _Optional[int] = ..., mem_free_bytes: _Optional[int] = ..., clock_sm_mhz: _Optional[int] = ..., clock_mem_mhz: _Optional[int] = ..., fan_speed_pct: _Optional[float] = ..., performance_state: _Optional[int] = ..., throttle_reasons: _Optional[_Iterable[str]] = ..., persistence_mode: _Optional[bool] = ..., processes: _Optional[_Iterable[_Union[GpuProcess, _Mapping]]] = ..., last_xid: _Optional[int] = ..., index: _Optional[int] = ...) -> None: ...

class AsicBoard(_message.Message):
    __slots__ = ("index", "hashrate_hs", "expected_hashrate_hs", "temp_board_c", "temp_chip_c", "chips", "expected_chips")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    HASHRATE_HS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_HASHRATE_HS_FIELD_NUMBER: _ClassVar[int]
    TEMP_BOARD_C_FIELD_NUMBER: _ClassVar[int]
    TEMP_CHIP_C_FIELD_NUMBER: _ClassVar[int]
    CHIPS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_CHIPS_FIELD_NUMBER: _ClassVar[int]
    index: int
    hashrate_hs: float
    expected_hashrate_hs: float
    temp_board_c: float
    temp_chip_c: float
    chips: int
    expected_chips: int
    def __init__(self, index: _Optional[int] = ..., hashrate_hs: _Optional[float] = ..., expected_hashrate_hs: _Optional[float] = ..., temp_board_c: _Optional[float] = ..., temp_chip_c: _Optional[float] = ..., chips: _Optional[int] = ..., expected_chips: _Optional[int] = ...) -> None: ...

class PoolStatus(_message.Message):
    __slots__ = ("url", "user", "status", "active", "accepted", "rejected")
    URL_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    url: str
    user: str
    status: str
    active: bool
    accepted: int
    rejected: int
    def __init__(self, url: _Optional[str] = ..., user: _Optional[str] = ..., status: _Optional[str] = ..., active: _Optional[bool] = ..., accepted: _Optional[int] = ..., rejected: _Optional[int] = ...) -> None: ...

class AsicTelemetry(_message.Message):
    __slots__ = ("expected_hashrate_hs", "boards", "fans_rpm", "pools", "uptime_s", "errors", "is_mining", "firmware_family", "algorithm", "env_temp_c")
    EXPECTED_HASHRATE_HS_FIELD_NUMBER: _ClassVar[int]
    BOARDS_FIELD_NUMBER: _ClassVar[int]
    FANS_RPM_FIELD_NUMBER: _ClassVar[int]
    POOLS_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    IS_MINING_FIELD_NUMBER: _ClassVar[int]
    FIRMWARE_FAMILY_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    ENV_TEMP_C_FIELD_NUMBER: _ClassVar[int]
    expected_hashrate_hs: float
    boards: _containers.RepeatedCompositeFieldContainer[AsicBoard]
    fans_rpm: _containers.RepeatedScalarFieldContainer[int]
    pools: _containers.RepeatedCompositeFieldContainer[PoolStatus]
    uptime_s: int
    errors: _containers.RepeatedScalarFieldContainer[str]
    is_mining: bool
    firmware_family: str
    algorithm: str
    env_temp_c: float
    def __init__(self, expected_hashrate_hs: _Optional[float] = ..., boards: _Optional[_Iterable[_Union[AsicBoard, _Mapping]]] = ..., fans_rpm: _Optional[_Iterable[int]] = ..., pools: _Optional[_Iterable[_Union[PoolStatus, _Mapping]]] = ..., uptime_s: _Optional[int] = ..., errors: _Optional[_Iterable[str]] = ..., is_mining: _Optional[bool] = ..., firmware_family: _Optional[str] = ..., algorithm: _Optional[str] = ..., env_temp_c: _Optional[float] = ...) -> None: ...

class TempSensor(_message.Message):
    __slots__ = ("name", "temp_c")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TEMP_C_FIELD_NUMBER: _ClassVar[int]
    name: str
    temp_c: float
    def __init__(self, name: _Optional[str] = ..., temp_c: _Optional[float] = ...) -> None: ...

class HostTelemetry(_message.Message):
    __slots__ = ("cpu_count", "cpu_util_pct", "load_avg_1m", "load_avg_5m", "load_avg_15m", "mem_total_bytes", "mem_used_bytes", "mem_available_bytes", "temps", "uptime_s")
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    CPU_UTIL_PCT_FIELD_NUMBER: _ClassVar[int]
    LOAD_AVG_1M_FIELD_NUMBER: _ClassVar[int]
    LOAD_AVG_5M_FIELD_NUMBER: _ClassVar[int]
    LOAD_AVG_15M_FIELD_NUMBER: _ClassVar[int]
    MEM_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEM_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEM_AVAILABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    TEMPS_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    cpu_count: int
    cpu_util_pct: float
    load_avg_1m: float
    load_avg_5m: float
    load_avg_15m: float
    mem_total_bytes: int
    mem_used_bytes: int
    mem_available_bytes: int
    temps: _containers.RepeatedCompositeFieldContainer[TempSensor]
    uptime_s: int
    def __init__(self, cpu_count: _Optional[int] = ..., cpu_util_pct: _Optional[float] = ..., load_avg_1m: _Optional[float] = ..., load_avg_5m: _Optional[float] = ..., load_avg_15m: _Optional[float] = ..., mem_total_bytes: _Optional[int] = ..., mem_used_bytes: _Optional[int] = ..., mem_available_bytes: _Optional[int] = ..., temps: _Optional[_Iterable[_Union[TempSensor, _Mapping]]] = ..., uptime_s: _Optional[int] = ...) -> None: ...

class DeviceTelemetry(_message.Message):
    __slots__ = ("device_id", "kind", "time", "health", "power_w", "power_limit_w", "energy_j", "temp_c", "utilization_pct", "hashrate_hs", "power_source", "gpu", "asic", "host", "workload", "error")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    POWER_W_FIELD_NUMBER: _ClassVar[int]
    POWER_LIMIT_W_FIELD_NUMBER: _ClassVar[int]
    ENERGY_J_FIELD_NUMBER: _ClassVar[int]
    TEMP_C_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_PCT_FIELD_NUMBER: _ClassVar[int]
    HASHRATE_HS_FIELD_NUMBER: _ClassVar[int]
    POWER_SOURCE_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    ASIC_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    kind: DeviceKind
    time: _timestamp_pb2.Timestamp
    health: Health
    power_w: float
    power_limit_w: float
    energy_j: float
    temp_c: float
    utilization_pct: float
    hashrate_hs: float
    power_source: PowerSource
    gpu: GpuTelemetry
    asic: AsicTelemetry
    host: HostTelemetry
    workload: WorkloadStatus
    error: str
    def __init__(self, device_id: _Optional[str] = ..., kind: _Optional[_Union[DeviceKind, str]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., health: _Optional[_Union[Health, _Mapping]] = ..., power_w: _Optional[float] = ..., power_limit_w: _Optional[float] = ..., energy_j: _Optional[float] = ..., temp_c: _Optional[float] = ..., utilization_pct: _Optional[float] = ..., hashrate_hs: _Optional[float] = ..., power_source: _Optional[_Union[PowerSource, str]] = ..., gpu: _Optional[_Union[GpuTelemetry, _Mapping]] = ..., asic: _Optional[_Union[AsicTelemetry, _Mapping]] = ..., host: _Optional[_Union[HostTelemetry, _Mapping]] = ..., workload: _Optional[_Union[WorkloadStatus, _Mapping]] = ..., error: _Optional[str] = ...) -> None: ...

class GetTelemetryRequest(_message.Message):
    __slots__ = ("device_ids", "max_age_ms")
    DEVICE_IDS_FIELD_NUMBER: _ClassVar[int]
    MAX_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    device_ids: _containers.RepeatedScalarFieldContainer[str]
    max_age_ms: int
    def __init__(self, device_ids: _Optional[_Iterable[str]] = ..., max_age_ms: _Optional[int] = ...) -> None: ...

class RigPower(_message.Message):
    __slots__ = ("total_w", "measured_w", "estimated_w", "unknown_device_ids", "time")
    TOTAL_W_FIELD_NUMBER: _ClassVar[int]
    MEASURED_W_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_W_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_DEVICE_IDS_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    total_w: float
    measured_w: float
    estimated_w: float
    unknown_device_ids: _containers.RepeatedScalarFieldContainer[str]
    time: _timestamp_pb2.Timestamp
    def __init__(self, total_w: _Optional[float] = ..., measured_w: _Optional[float] = ..., estimated_w: _Optional[float] = ..., unknown_device_ids: _Optional[_Iterable[str]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetTelemetryResponse(_message.Message):
    __slots__ = ("devices", "rig_power")
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    RIG_POWER_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[DeviceTelemetry]
    rig_power: RigPower
    def __init__(self, devices: _Optional[_Iterable[_Union[DeviceTelemetry, _Mapping]]] = ..., rig_power: _Optional[_Union[RigPower, _Mapping]] = ...) -> None: ...

class StreamTelemetryRequest(_message.Message):
    __slots__ = ("device_ids", "interval_ms")
    DEVICE_IDS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    device_ids: _containers.RepeatedScalarFieldContainer[str]
    interval_ms: int
    def __init__(self, device_ids: _Optional[_Iterable[str]] = ..., interval_ms: _Optional[int] = ...) -> None: ...

class StreamTelemetryResponse(_message.Message):
    __slots__ = ("devices", "sequence", "dropped_count", "rig_power", "sent_time", "interval_ms")
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    DROPPED_COUNT_FIELD_NUMBER: _ClassVar[int]
    RIG_POWER_FIELD_NUMBER: _ClassVar[int]
    SENT_TIME_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[DeviceTelemetry]
    sequence: int
    dropped_count: int
    rig_power: RigPower
    sent_time: _timestamp_pb2.Timestamp
    interval_ms: int
    def __init__(self, devices: _Optional[_Iterable[_Union[DeviceTelemetry, _Mapping]]] = ..., sequence: _Optional[int] = ..., dropped_count: _Optional[int] = ..., rig_power: _Optional[_Union[RigPower, _Mapping]] = ..., sent_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., interval_ms: _Optional[int] = ...) -> None: ...

class Lease(_message.Message):
    __slots__ = ("lease_id", "holder", "fencing_token", "expire_time")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    holder: str
    fencing_token: int
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, lease_id: _Optional[str] = ..., holder: _Optional[str] = ..., fencing_token: _Optional[int] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AcquireLeaseRequest(_message.Message):
    __slots__ = ("holder", "ttl_s", "preempt")
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    PREEMPT_FIELD_NUMBER: _ClassVar[int]
    holder: str
    ttl_s: int
    preempt: bool
    def __init__(self, holder: _Optional[str] = ..., ttl_s: _Optional[int] = ..., preempt: _Optional[bool] = ...) -> None: ...

class AcquireLeaseResponse(_message.Message):
    __slots__ = ("lease",)
    LEASE_FIELD_NUMBER: _ClassVar[int]
    lease: Lease
    def __init__(self, lease: _Optional[_Union[Lease, _Mapping]] = ...) -> None: ...

class RenewLeaseRequest(_message.Message):
    __slots__ = ("lease_id", "ttl_s")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    ttl_s: int
    def __init__(self, lease_id: _Optional[str] = ..., ttl_s: _Optional[int] = ...) -> None: ...

class RenewLeaseResponse(_message.Message):
    __slots__ = ("lease",)
    LEASE_FIELD_NUMBER: _ClassVar[int]
    lease: Lease
    def __init__(self, lease: _Optional[_Union[Lease, _Mapping]] = ...) -> None: ...

class ReleaseLeaseRequest(_message.Message):
    __slots__ = ("lease_id",)
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    def __init__(self, lease_id: _Optional[str] = ...) -> None: ...

class ReleaseLeaseResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HashingSpec(_message.Message):
    __slots__ = ("algorithm", "pool_urls", "user", "password", "intensity")
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    POOL_URLS_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    INTENSITY_FIELD_NUMBER: _ClassVar[int]
    algorithm: str
    pool_urls: _containers.RepeatedScalarFieldContainer[str]
    user: str
    password: str
    intensity: float
    def __init__(self, algorithm: _Optional[str] = ..., pool_urls: _Optional[_Iterable[str]] = ..., user: _Optional[str] = ..., password: _Optional[str] = ..., intensity: _Optional[float] = ...) -> None: ...

class InferenceSpec(_message.Message):
    __slots__ = ("profile", "model")
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    profile: str
    model: str
    def __init__(self, profile: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class Workload(_message.Message):
    __slots__ = ("kind", "hashing", "inference")
    KIND_FIELD_NUMBER: _ClassVar[int]
    HASHING_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_FIELD_NUMBER: _ClassVar[int]
    kind: WorkloadKind
    hashing: HashingSpec
    inference: InferenceSpec
    def __init__(self, kind: _Optional[_Union[WorkloadKind, str]] = ..., hashing: _Optional[_Union[HashingSpec, _Mapping]] = ..., inference: _Optional[_Union[InferenceSpec, _Mapping]] = ...) -> None: ...

class WorkloadStatus(_message.Message):
    __slots__ = ("kind", "state", "detail", "hashrate_hs", "shares_accepted", "shares_rejected", "pool_url", "intensity", "endpoint", "profile", "pid")
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    HASHRATE_HS_FIELD_NUMBER: _ClassVar[int]
    SHARES_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    SHARES_REJECTED_FIELD_NUMBER: _ClassVar[int]
    POOL_URL_FIELD_NUMBER: _ClassVar[int]
    INTENSITY_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    kind: WorkloadKind
    state: WorkloadState
    detail: str
    hashrate_hs: float
    shares_accepted: int
    shares_rejected: int
    pool_url: str
    intensity: float
    endpoint: str
    profile: str
    pid: int
    def __init__(self, kind: _Optional[_Union[WorkloadKind, str]] = ..., state: _Optional[_Union[WorkloadState, str]] = ..., detail: _Optional[str] = ..., hashrate_hs: _Optional[float] = ..., shares_accepted: _Optional[int] = ..., shares_rejected: _Optional[int] = ..., pool_url: _Optional[str] = ..., intensity: _Optional[float] = ..., endpoint: _Optional[str] = ..., profile: _Optional[str] = ..., pid: _Optional[int] = ...) -> None: ...

class PhaseRecord(_message.Message):
    __slots__ = ("phase", "start_time", "duration_ms", "detail", "device_id")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    phase: SwitchPhase
    start_time: _timestamp_pb2.Timestamp
    duration_ms: int
    detail: str
    device_id: str
    def __init__(self, phase: _Optional[_Union[SwitchPhase, str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration_ms: _Optional[int] = ..., detail: _Optional[str] = ..., device_id: _Optional[str] = ...) -> None: ...

class DeviceOutcome(_message.Message):
    __slots__ = ("device_id", "state", "error")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    state: OperationState
    error: str
    def __init__(self, device_id: _Optional[str] = ..., state: _Optional[_Union[OperationState, str]] = ..., error: _Optional[str] = ...) -> None: ...

class Operation(_message.Message):
    __slots__ = ("operation_id", "state", "device_ids", "phases", "error", "create_time", "end_time", "kind", "outcomes", "request_id", "detail")
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_IDS_FIELD_NUMBER: _ClassVar[int]
    PHASES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    state: OperationState
    device_ids: _containers.RepeatedScalarFieldContainer[str]
    phases: _containers.RepeatedCompositeFieldContainer[PhaseRecord]
    error: str
    create_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    kind: str
    outcomes: _containers.RepeatedCompositeFieldContainer[DeviceOutcome]
    request_id: str
    detail: str
    def __init__(self, operation_id: _Optional[str] = ..., state: _Optional[_Union[OperationState, str]] = ..., device_ids: _Optional[_Iterable[str]] = ..., phases: _Optional[_Iterable[_Union[PhaseRecord, _Mapping]]] = ..., error: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[str] = ..., outcomes: _Optional[_Iterable[_Union[DeviceOutcome, _Mapping]]] = ..., request_id: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class SetWorkloadRequest(_message.Message):
    __slots__ = ("device_ids", "workload", "fencing_token", "request_id")
    DEVICE_IDS_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    device_ids: _containers.RepeatedScalarFieldContainer[str]
    workload: Workload
    fencing_token: int
    request_id: str
    def __init__(self, device_ids: _Optional[_Iterable[str]] = ..., workload: _Optional[_Union[Workload, _Mapping]] = ..., fencing_token: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class SetWorkloadResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: Operation
    def __init__(self, operation: _Optional[_Union[Operation, _Mapping]] = ...) -> None: ...

class GetOperationRequest(_message.Message):
    __slots__ = ("operation_id",)
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    def __init__(self, operation_id: _Optional[str] = ...) -> None: ...

class GetOperationResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: Operation
    def __init__(self, operation: _Optional[_Union[Operation, _Mapping]] = ...) -> None: ...

class WatchOperationRequest(_message.Message):
    __slots__ = ("operation_id",)
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    def __init__(self, operation_id: _Optional[str] = ...) -> None: ...

class WatchOperationResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: Operation
    def __init__(self, operation: _Optional[_Union[Operation, _Mapping]] = ...) -> None: ...

class ListOperationsRequest(_message.Message):
    __slots__ = ("limit", "running_only")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    RUNNING_ONLY_FIELD_NUMBER: _ClassVar[int]
    limit: int
    running_only: bool
    def __init__(self, limit: _Optional[int] = ..., running_only: _Optional[bool] = ...) -> None: ...

class ListOperationsResponse(_message.Message):
    __slots__ = ("operations",)
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    operations: _containers.RepeatedCompositeFieldContainer[Operation]
    def __init__(self, operations: _Optional[_Iterable[_Union[Operation, _Mapping]]] = ...) -> None: ...

class SetPowerLimitRequest(_message.Message):
    __slots__ = ("device_id", "power_limit_w", "fencing_token")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    POWER_LIMIT_W_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    power_limit_w: float
    fencing_token: int
    def __init__(self, device_id: _Optional[str] = ..., power_limit_w: _Optional[float] = ..., fencing_token: _Optional[int] = ...) -> None: ...

class SetPowerLimitResponse(_message.Message):
    __slots__ = ("power_limit_w", "requested_w", "detail")
    POWER_LIMIT_W_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_W_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    power_limit_w: float
    requested_w: float
    detail: str
    def __init__(self, power_limit_w: _Optional[float] = ..., requested_w: _Optional[float] = ..., detail: _Optional[str] = ...) -> None: ...

class Curtailment(_message.Message):
    __slots__ = ("rig_power_target_w", "deadline_time", "expire_time", "reason", "operation_id", "state", "rig_power_before_w", "source", "below_target_after_s", "shortfall_w", "dispatched_after_s")
    RIG_POWER_TARGET_W_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RIG_POWER_BEFORE_W_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    BELOW_TARGET_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    SHORTFALL_W_FIELD_NUMBER: _ClassVar[int]
    DISPATCHED_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    rig_power_target_w: float
    deadline_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    reason: str
    operation_id: str
    state: str
    rig_power_before_w: float
    source: str
    below_target_after_s: float
    shortfall_w: float
    dispatched_after_s: float
    def __init__(self, rig_power_target_w: _Optional[float] = ..., deadline_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ..., operation_id: _Optional[str] = ..., state: _Optional[str] = ..., rig_power_before_w: _Optional[float] = ..., source: _Optional[str] = ..., below_target_after_s: _Optional[float] = ..., shortfall_w: _Optional[float] = ..., dispatched_after_s: _Optional[float] = ...) -> None: ...

class CurtailRequest(_message.Message):
    __slots__ = ("rig_power_target_w", "deadline_s", "expiry_s", "fencing_token", "reason")
    RIG_POWER_TARGET_W_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    EXPIRY_S_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    rig_power_target_w: float
    deadline_s: int
    expiry_s: int
    fencing_token: int
    reason: str
    def __init__(self, rig_power_target_w: _Optional[float] = ..., deadline_s: _Optional[int] = ..., expiry_s: _Optional[int] = ..., fencing_token: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class CurtailResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: Operation
    def __init__(self, operation: _Optional[_Union[Operation, _Mapping]] = ...) -> None: ...

class CancelCurtailmentRequest(_message.Message):
    __slots__ = ("fencing_token",)
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    fencing_token: int
    def __init__(self, fencing_token: _Optional[int] = ...) -> None: ...

class CancelCurtailmentResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: Operation
    def __init__(self, operation: _Optional[_Union[Operation, _Mapping]] = ...) -> None: ...

class DeviceActionRequest(_message.Message):
    __slots__ = ("device_id", "action", "pool_index", "fencing_token")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    POOL_INDEX_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    action: DeviceActionKind
    pool_index: int
    fencing_token: int
    def __init__(self, device_id: _Optional[str] = ..., action: _Optional[_Union[DeviceActionKind, str]] = ..., pool_index: _Optional[int] = ..., fencing_token: _Optional[int] = ...) -> None: ...

class DeviceActionResponse(_message.Message):
    __slots__ = ("detail",)
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    detail: str
    def __init__(self, detail: _Optional[str] = ...) -> None: ...

class RunDiagnosticsRequest(_message.Message):
    __slots__ = ("device_ids", "level")
    DEVICE_IDS_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    device_ids: _containers.RepeatedScalarFieldContainer[str]
    level: DiagnosticLevel
    def __init__(self, device_ids: _Optional[_Iterable[str]] = ..., level: _Optional[_Union[DiagnosticLevel, str]] = ...) -> None: ...

class RunDiagnosticsResponse(_message.Message):
    __slots__ = ("device_id", "test_name", "result", "detail", "duration_ms", "tests_done", "tests_total", "level")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    TEST_NAME_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    TESTS_DONE_FIELD_NUMBER: _ClassVar[int]
    TESTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    test_name: str
    result: DiagnosticResult
    detail: str
    duration_ms: int
    tests_done: int
    tests_total: int
    level: DiagnosticLevel
    def __init__(self, device_id: _Optional[str] = ..., test_name: _Optional[str] = ..., result: _Optional[_Union[DiagnosticResult, str]] = ..., detail: _Optional[str] = ..., duration_ms: _Optional[int] = ..., tests_done: _Optional[int] = ..., tests_total: _Optional[int] = ..., level: _Optional[_Union[DiagnosticLevel, str]] = ...) -> None: ...
