from google.protobuf import wrappers_pb2 as _wrappers_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SaveAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SAVE_ACTION_UNSPECIFIED: _ClassVar[SaveAction]
    SAVE_ACTION_SAVE: _ClassVar[SaveAction]
    SAVE_ACTION_SAVE_AND_APPLY: _ClassVar[SaveAction]
    SAVE_ACTION_SAVE_AND_FORCE_APPLY: _ClassVar[SaveAction]

class MinerStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MINER_STATUS_UNSPECIFIED: _ClassVar[MinerStatus]
    MINER_STATUS_NOT_STARTED: _ClassVar[MinerStatus]
    MINER_STATUS_NORMAL: _ClassVar[MinerStatus]
    MINER_STATUS_PAUSED: _ClassVar[MinerStatus]
    MINER_STATUS_SUSPENDED: _ClassVar[MinerStatus]
    MINER_STATUS_RESTRICTED: _ClassVar[MinerStatus]

class SensorLocation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SENSOR_LOCATION_UNSPECIFIED: _ClassVar[SensorLocation]
    SENSOR_LOCATION_CHIP: _ClassVar[SensorLocation]
    SENSOR_LOCATION_PCB: _ClassVar[SensorLocation]
SAVE_ACTION_UNSPECIFIED: SaveAction
SAVE_ACTION_SAVE: SaveAction
SAVE_ACTION_SAVE_AND_APPLY: SaveAction
SAVE_ACTION_SAVE_AND_FORCE_APPLY: SaveAction
MINER_STATUS_UNSPECIFIED: MinerStatus
MINER_STATUS_NOT_STARTED: MinerStatus
MINER_STATUS_NORMAL: MinerStatus
MINER_STATUS_PAUSED: MinerStatus
MINER_STATUS_SUSPENDED: MinerStatus
MINER_STATUS_RESTRICTED: MinerStatus
SENSOR_LOCATION_UNSPECIFIED: SensorLocation
SENSOR_LOCATION_CHIP: SensorLocation
SENSOR_LOCATION_PCB: SensorLocation

class MegaHashrate(_message.Message):
    __slots__ = ("megahash_per_second",)
    MEGAHASH_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    megahash_per_second: float
    def __init__(self, megahash_per_second: _Optional[float] = ...) -> None: ...

class GigaHashrate(_message.Message):
    __slots__ = ("gigahash_per_second",)
    GIGAHASH_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    gigahash_per_second: float
    def __init__(self, gigahash_per_second: _Optional[float] = ...) -> None: ...

class Power(_message.Message):
    __slots__ = ("watt",)
    WATT_FIELD_NUMBER: _ClassVar[int]
    watt: int
    def __init__(self, watt: _Optional[int] = ...) -> None: ...

class Temperature(_message.Message):
    __slots__ = ("degree_c",)
    DEGREE_C_FIELD_NUMBER: _ClassVar[int]
    degree_c: float
    def __init__(self, degree_c: _Optional[float] = ...) -> None: ...

class LoginRequest(_message.Message):
    __slots__ = ("username", "password")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    username: str
    password: str
    def __init__(self, username: _Optional[str] = ..., password: _Optional[str] = ...) -> None: ...

class LoginResponse(_message.Message):
    __slots__ = ("token", "timeout_s")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    token: str
    timeout_s: int
    def __init__(self, token: _Optional[str] = ..., timeout_s: _Optional[int] = ...) -> None: ...

class PauseMiningRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PauseMiningResponse(_message.Message):
    __slots__ = ("already_paused",)
    ALREADY_PAUSED_FIELD_NUMBER: _ClassVar[int]
    already_paused: bool
    def __init__(self, already_paused: _Optional[bool] = ...) -> None: ...

class ResumeMiningRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResumeMiningResponse(_message.Message):
    __slots__ = ("already_mining",)
    ALREADY_MINING_FIELD_NUMBER: _ClassVar[int]
    already_mining: bool
    def __init__(self, already_mining: _Optional[bool] = ...) -> None: ...

class RestartRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RestartResponse(_message.Message):
    __slots__ = ("already_running",)
    ALREADY_RUNNING_FIELD_NUMBER: _ClassVar[int]
    already_running: bool
    def __init__(self, already_running: _Optional[bool] = ...) -> None: ...

class RealHashrate(_message.Message):
    __slots__ = ("last_5s", "last_15s", "last_30s", "last_1m", "last_5m", "last_15m", "last_30m", "last_1h", "last_24h", "since_restart")
    LAST_5S_FIELD_NUMBER: _ClassVar[int]
    LAST_15S_FIELD_NUMBER: _ClassVar[int]
    LAST_30S_FIELD_NUMBER: _ClassVar[int]
    LAST_1M_FIELD_NUMBER: _ClassVar[int]
    LAST_5M_FIELD_NUMBER: _ClassVar[int]
    LAST_15M_FIELD_NUMBER: _ClassVar[int]
    LAST_30M_FIELD_NUMBER: _ClassVar[int]
    LAST_1H_FIELD_NUMBER: _ClassVar[int]
    LAST_24H_FIELD_NUMBER: _ClassVar[int]
    SINCE_RESTART_FIELD_NUMBER: _ClassVar[int]
    last_5s: GigaHashrate
    last_15s: GigaHashrate
    last_30s: GigaHashrate
    last_1m: GigaHashrate
    last_5m: GigaHashrate
    last_15m: GigaHashrate
    last_30m: GigaHashrate
    last_1h: GigaHashrate
    last_24h: GigaHashrate
    since_restart: GigaHashrate
    def __init__(self, last_5s: _Optional[_Union[GigaHashrate, _Mapping]] = ..., last_15s: _Optional[_Union[GigaHashrate, _Mapping]] = ..., last_30s: _Optional[_Union[GigaHashrate, _Mapping]] = ..., last_1m: _Optional[_Union[GigaHashrate, _Mapping]] = ..., last_5m: _Optional[_Union[GigaHashrate, _Mapping]] = ..., last_15m: _Optional[_Union[GigaHashrate, _Mapping]] = ..., last_30m: _Optional[_Union[GigaHashrate, _Mapping]] = ..., last_1h: _Optional[_Union[GigaHashrate, _Mapping]] = ..., last_24h: _Optional[_Union[GigaHashrate, _Mapping]] = ..., since_restart: _Optional[_Union[GigaHashrate, _Mapping]] = ...) -> None: ...

class WorkSolverStats(_message.Message):
    __slots__ = ("real_hashrate", "nominal_hashrate", "error_hashrate")
    REAL_HASHRATE_FIELD_NUMBER: _ClassVar[int]
    NOMINAL_HASHRATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_HASHRATE_FIELD_NUMBER: _ClassVar[int]
    real_hashrate: RealHashrate
    nominal_hashrate: GigaHashrate
    error_hashrate: MegaHashrate
    def __init__(self, real_hashrate: _Optional[_Union[RealHashrate, _Mapping]] = ..., nominal_hashrate: _Optional[_Union[GigaHashrate, _Mapping]] = ..., error_hashrate: _Optional[_Union[MegaHashrate, _Mapping]] = ...) -> None: ...

class MinerIdentity(_message.Message):
    __slots__ = ("name", "miner_model")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MINER_MODEL_FIELD_NUMBER: _ClassVar[int]
    name: str
    miner_model: str
    def __init__(self, name: _Optional[str] = ..., miner_model: _Optional[str] = ...) -> None: ...

class BosVersion(_message.Message):
    __slots__ = ("current", "major", "bos_plus")
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    MAJOR_FIELD_NUMBER: _ClassVar[int]
    BOS_PLUS_FIELD_NUMBER: _ClassVar[int]
    current: str
    major: str
    bos_plus: bool
    def __init__(self, current: _Optional[str] = ..., major: _Optional[str] = ..., bos_plus: _Optional[bool] = ...) -> None: ...

class GetMinerDetailsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetMinerDetailsResponse(_message.Message):
    __slots__ = ("uid", "miner_identity", "bos_version", "hostname", "mac_address", "sticker_hashrate", "bosminer_uptime_s", "system_uptime_s", "status", "serial_number")
    UID_FIELD_NUMBER: _ClassVar[int]
    MINER_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    BOS_VERSION_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    MAC_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STICKER_HASHRATE_FIELD_NUMBER: _ClassVar[int]
    BOSMINER_UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SERIAL_NUMBER_FIELD_NUMBER: _ClassVar[int]
    uid: str
    miner_identity: MinerIdentity
    bos_version: BosVersion
    hostname: str
    mac_address: str
    sticker_hashrate: GigaHashrate
    bosminer_uptime_s: int
    system_uptime_s: int
    status: MinerStatus
    serial_number: str
    def __init__(self, uid: _Optional[str] = ..., miner_identity: _Optional[_Union[MinerIdentity, _Mapping]] = ..., bos_version: _Optional[_Union[BosVersion, _Mapping]] = ..., hostname: _Optional[str] = ..., mac_address: _Optional[str] = ..., sticker_hashrate: _Optional[_Union[GigaHashrate, _Mapping]] = ..., bosminer_uptime_s: _Optional[int] = ..., system_uptime_s: _Optional[int] = ..., status: _Optional[_Union[MinerStatus, str]] = ..., serial_number: _Optional[str] = ...) -> None: ...

class MinerPowerStats(_message.Message):
    __slots__ = ("approximated_consumption",)
    APPROXIMATED_CONSUMPTION_FIELD_NUMBER: _ClassVar[int]
    approximated_consumption: Power
    def __init__(self, approximated_consumption: _Optional[_Union[Power, _Mapping]] = ...) -> None: ...

class GetMinerStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetMinerStatsResponse(_message.Message):
    __slots__ = ("miner_stats", "power_stats")
    MINER_STATS_FIELD_NUMBER: _ClassVar[int]
    POWER_STATS_FIELD_NUMBER: _ClassVar[int]
    miner_stats: WorkSolverStats
    power_stats: MinerPowerStats
    def __init__(self, miner_stats: _Optional[_Union[WorkSolverStats, _Mapping]] = ..., power_stats: _Optional[_Union[MinerPowerStats, _Mapping]] = ...) -> None: ...

class TemperatureSensor(_message.Message):
    __slots__ = ("id", "location", "temperature")
    ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    id: int
    location: SensorLocation
    temperature: Temperature
    def __init__(self, id: _Optional[int] = ..., location: _Optional[_Union[SensorLocation, str]] = ..., temperature: _Optional[_Union[Temperature, _Mapping]] = ...) -> None: ...

class Hashboard(_message.Message):
    __slots__ = ("id", "enabled", "chips_count", "highest_chip_temp", "board_temp", "stats", "model", "lowest_inlet_temp", "highest_outlet_temp", "serial_number")
    ID_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    CHIPS_COUNT_FIELD_NUMBER: _ClassVar[int]
    HIGHEST_CHIP_TEMP_FIELD_NUMBER: _ClassVar[int]
    BOARD_TEMP_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LOWEST_INLET_TEMP_FIELD_NUMBER: _ClassVar[int]
    HIGHEST_OUTLET_TEMP_FIELD_NUMBER: _ClassVar[int]
    SERIAL_NUMBER_FIELD_NUMBER: _ClassVar[int]
    id: str
    enabled: bool
    chips_count: _wrappers_pb2.UInt32Value
    highest_chip_temp: TemperatureSensor
    board_temp: Temperature
    stats: WorkSolverStats
    model: str
    lowest_inlet_temp: Temperature
    highest_outlet_temp: Temperature
    serial_number: str
    def __init__(self, id: _Optional[str] = ..., enabled: _Optional[bool] = ..., chips_count: _Optional[_Union[_wrappers_pb2.UInt32Value, _Mapping]] = ..., highest_chip_temp: _Optional[_Union[TemperatureSensor, _Mapping]] = ..., board_temp: _Optional[_Union[Temperature, _Mapping]] = ..., stats: _Optional[_Union[WorkSolverStats, _Mapping]] = ..., model: _Optional[str] = ..., lowest_inlet_temp: _Optional[_Union[Temperature, _Mapping]] = ..., highest_outlet_temp: _Optional[_Union[Temperature, _Mapping]] = ..., serial_number: _Optional[str] = ...) -> None: ...

class GetHashboardsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetHashboardsResponse(_message.Message):
    __slots__ = ("hashboards",)
    HASHBOARDS_FIELD_NUMBER: _ClassVar[int]
    hashboards: _containers.RepeatedCompositeFieldContainer[Hashboard]
    def __init__(self, hashboards: _Optional[_Iterable[_Union[Hashboard, _Mapping]]] = ...) -> None: ...

class FanState(_message.Message):
    __slots__ = ("position", "rpm", "target_speed_ratio")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    RPM_FIELD_NUMBER: _ClassVar[int]
    TARGET_SPEED_RATIO_FIELD_NUMBER: _ClassVar[int]
    position: int
    rpm: int
    target_speed_ratio: float
    def __init__(self, position: _Optional[int] = ..., rpm: _Optional[int] = ..., target_speed_ratio: _Optional[float] = ...) -> None: ...

class GetCoolingStateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetCoolingStateResponse(_message.Message):
    __slots__ = ("fans", "highest_temperature")
    FANS_FIELD_NUMBER: _ClassVar[int]
    HIGHEST_TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    fans: _containers.RepeatedCompositeFieldContainer[FanState]
    highest_temperature: TemperatureSensor
    def __init__(self, fans: _Optional[_Iterable[_Union[FanState, _Mapping]]] = ..., highest_temperature: _Optional[_Union[TemperatureSensor, _Mapping]] = ...) -> None: ...

class PowerTargetMode(_message.Message):
    __slots__ = ("power_target",)
    POWER_TARGET_FIELD_NUMBER: _ClassVar[int]
    power_target: Power
    def __init__(self, power_target: _Optional[_Union[Power, _Mapping]] = ...) -> None: ...

class TunerPerformanceMode(_message.Message):
    __slots__ = ("power_target",)
    POWER_TARGET_FIELD_NUMBER: _ClassVar[int]
    power_target: PowerTargetMode
    def __init__(self, power_target: _Optional[_Union[PowerTargetMode, _Mapping]] = ...) -> None: ...

class PerformanceMode(_message.Message):
    __slots__ = ("tuner_mode",)
    TUNER_MODE_FIELD_NUMBER: _ClassVar[int]
    tuner_mode: TunerPerformanceMode
    def __init__(self, tuner_mode: _Optional[_Union[TunerPerformanceMode, _Mapping]] = ...) -> None: ...

class GetPerformanceModeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetPowerTargetRequest(_message.Message):
    __slots__ = ("save_action", "power_target")
    SAVE_ACTION_FIELD_NUMBER: _ClassVar[int]
    POWER_TARGET_FIELD_NUMBER: _ClassVar[int]
    save_action: SaveAction
    power_target: Power
    def __init__(self, save_action: _Optional[_Union[SaveAction, str]] = ..., power_target: _Optional[_Union[Power, _Mapping]] = ...) -> None: ...

class SetPowerTargetResponse(_message.Message):
    __slots__ = ("power_target",)
    POWER_TARGET_FIELD_NUMBER: _ClassVar[int]
    power_target: Power
    def __init__(self, power_target: _Optional[_Union[Power, _Mapping]] = ...) -> None: ...

class PowerConstraints(_message.Message):
    __slots__ = ("default", "min", "max")
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    default: Power
    min: Power
    max: Power
    def __init__(self, default: _Optional[_Union[Power, _Mapping]] = ..., min: _Optional[_Union[Power, _Mapping]] = ..., max: _Optional[_Union[Power, _Mapping]] = ...) -> None: ...

class TunerConstraints(_message.Message):
    __slots__ = ("power_target",)
    POWER_TARGET_FIELD_NUMBER: _ClassVar[int]
    power_target: PowerConstraints
    def __init__(self, power_target: _Optional[_Union[PowerConstraints, _Mapping]] = ...) -> None: ...

class GetConstraintsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetConstraintsResponse(_message.Message):
    __slots__ = ("tuner_constraints",)
    TUNER_CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    tuner_constraints: TunerConstraints
    def __init__(self, tuner_constraints: _Optional[_Union[TunerConstraints, _Mapping]] = ...) -> None: ...

class PoolStats(_message.Message):
    __slots__ = ("accepted_shares", "rejected_shares", "stale_shares")
    ACCEPTED_SHARES_FIELD_NUMBER: _ClassVar[int]
    REJECTED_SHARES_FIELD_NUMBER: _ClassVar[int]
    STALE_SHARES_FIELD_NUMBER: _ClassVar[int]
    accepted_shares: int
    rejected_shares: int
    stale_shares: int
    def __init__(self, accepted_shares: _Optional[int] = ..., rejected_shares: _Optional[int] = ..., stale_shares: _Optional[int] = ...) -> None: ...

class Pool(_message.Message):
    __slots__ = ("uid", "url", "user", "enabled", "alive", "active", "stats")
    UID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    uid: str
    url: str
    user: str
    enabled: bool
    alive: bool
    active: bool
    stats: PoolStats
    def __init__(self, uid: _Optional[str] = ..., url: _Optional[str] = ..., user: _Optional[str] = ..., enabled: _Optional[bool] = ..., alive: _Optional[bool] = ..., active: _Optional[bool] = ..., stats: _Optional[_Union[PoolStats, _Mapping]] = ...) -> None: ...

class PoolGroup(_message.Message):
    __slots__ = ("name", "pools", "uid")
    NAME_FIELD_NUMBER: _ClassVar[int]
    POOLS_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    name: str
    pools: _containers.RepeatedCompositeFieldContainer[Pool]
    uid: str
    def __init__(self, name: _Optional[str] = ..., pools: _Optional[_Iterable[_Union[Pool, _Mapping]]] = ..., uid: _Optional[str] = ...) -> None: ...

class GetPoolGroupsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetPoolGroupsResponse(_message.Message):
    __slots__ = ("pool_groups",)
    POOL_GROUPS_FIELD_NUMBER: _ClassVar[int]
    pool_groups: _containers.RepeatedCompositeFieldContainer[PoolGroup]
    def __init__(self, pool_groups: _Optional[_Iterable[_Union[PoolGroup, _Mapping]]] = ...) -> None: ...
