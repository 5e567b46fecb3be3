"""The one device interface every backend implements, and the value types it returns.

Units live in field names (`power_w`, `energy_j`, `mem_used_bytes`). A field a device cannot
give is None ("not applicable"), never zero and never an exception: one missing sensor must not
hide the others.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from hal.errors import NotSupported


class DeviceKind(enum.StrEnum):
    GPU = "gpu"
    FPGA = "fpga"
    ASIC = "asic"
    HOST = "host"
    OPENCL = "opencl"  # an OpenCL compute device that is not claimed as a GPU or FPGA card


class Capability(enum.StrEnum):
    TELEMETRY = "telemetry"
    SET_POWER_LIMIT = "set_power_limit"
    LOCK_CLOCKS = "lock_clocks"
    PERSISTENCE_MODE = "persistence_mode"
    SLEEP_WAKE = "sleep_wake"
    POOL_SWITCH = "pool_switch"
    RESTART = "restart"
    HASHING = "hashing"
    INFERENCE = "inference"
    PROGRAM_BITSTREAM = "program_bitstream"


class PowerSource(enum.StrEnum):
    """Where a device's `power_w` comes from: a sensor, or a model (nameplate, configured figure).

    Rig power accounting adds both but keeps them apart, so a controller knows how much of the
    total it can trust to the watt."""

    MEASURED = "measured"
    ESTIMATED = "estimated"


class HealthState(enum.StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Health:
    state: HealthState
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.state in (HealthState.HEALTHY, HealthState.DEGRADED)


HEALTHY = Health(HealthState.HEALTHY)


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """Static facts about a device: read once at discovery, shown in inventory."""

    id: str
    kind: DeviceKind
    name: str
    vendor: str = ""
    model: str = ""
    serial: str = ""
    firmware_version: str = ""
    driver_version: str = ""
    pci_bus_id: str = ""
    simulated: bool = False
    # Backend-specific facts, as text, for inventory display (e.g. "cuda_version", "bitstream").
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GpuProcess:
    pid: int
    used_mem_bytes: int | None


@dataclass(frozen=True, slots=True)
class GpuTelemetry:
    index: int | None = None  # NVML's index, what nvidia-smi -i takes
    power_limit_default_w: float | None = None
    power_limit_min_w: float | None = None
    power_limit_max_w: float | None = None
    power_limit_enforced_w: float | None = None
    utilization_gpu_pct: float | None = None
    utilization_mem_pct: float | None = None
    mem_total_bytes: int | None = None
    mem_used_bytes: int | None = None
    mem_free_bytes: int | None = None
    clock_sm_mhz: int | None = None
    clock_mem_mhz: int | None = None
    fan_speed_pct: float | None = None
    performance_state: int | None = None  # 0 = P0 (max performance) .. 15
    throttle_reasons: tuple[str, ...] = ()
    persistence_mode: bool | None = None
    processes: tuple[GpuProcess, ...] = ()
    last_xid: int | None = None


@dataclass(frozen=True, slots=True)
class AsicBoard:
    index: int
    hashrate_hs: float | None = None
    expected_hashrate_hs: float | None = None
    temp_board_c: float | None = None
    temp_chip_c: float | None = None
    chips: int | None = None
    expected_chips: int | None = None


@dataclass(frozen=True, slots=True)
class PoolStatus:
    url: str
    user: str = ""
    status: str = ""  # as the firmware says it ("Alive", "Dead", ...)
    active: bool | None = None
    accepted: int | None = None
    rejected: int | None = None


@dataclass(frozen=True, slots=True)
class AsicTelemetry:
    expected_hashrate_hs: float | None = None
    boards: tuple[AsicBoard, ...] = ()
    fans_rpm: tuple[int, ...] = ()
    pools: tuple[PoolStatus, ...] = ()
    uptime_s: int | None = None
    errors: tuple[str, ...] = ()
    is_mining: bool | None = None
    firmware_family: str = ""
    # What the miner hashes ("sha256d", "scrypt", "x11", "ethash", "equihash"): hashrate_hs
    # counts hashes of this per second (Equihash: solutions per second), never as SHA-256d.
    algorithm: str = ""
    env_temp_c: float | None = None  # intake / ambient, where the firmware reports it


@dataclass(frozen=True, slots=True)
class TempSensor:
    name: str
    temp_c: float


@dataclass(frozen=True, slots=True)
class HostTelemetry:
    cpu_count: int | None = None
    cpu_util_pct: float | None = None
    load_avg_1m: float | None = None
    load_avg_5m: float | None = None
    load_avg_15m: float | None = None
    mem_total_bytes: int | None = None
    mem_used_bytes: int | None = None
    mem_available_bytes: int | None = None
    temps: tuple[TempSensor, ...] = ()
    uptime_s: int | None = None


@dataclass(frozen=True, slots=True)
class Telemetry:
    """One reading of one device. Common fields first; kind-specific detail in one sub-record."""

    device_id: str
    kind: DeviceKind
    timestamp_unix_s: float = field(default_factory=time.time)
    health: Health = HEALTHY
    power_w: float | None = None
    # MEASURED or ESTIMATED when power_w is set; None when it is not.
    power_source: PowerSource | None = None
    power_limit_w: float | None = None
    energy_j: float | None = None
    temp_c: float | None = None
    utilization_pct: float | None = None
    hashrate_hs: float | None = None
    gpu: GpuTelemetry | None = None
    asic: AsicTelemetry | None = None
    host: HostTelemetry | None = None

    def __post_init__(self) -> None:
        # A backend that reads a sensor need not say so; one that estimates must.
        if self.power_w is None:
            object.__setattr__(self, "power_source", None)
        elif self.power_source is None:
            object.__setattr__(self, "power_source", PowerSource.MEASURED)


class Device:
    """Base class for every device: the whole contract the agent calls.

    Subclasses set `id`, `kind` and `capabilities` in their constructor and implement `info()`
    and `telemetry()`. Every other call has a default here: the control calls raise NotSupported
    (a backend overrides what its device can do, and lists it in `capabilities`), so a caller
    never probes a device with getattr. Blocking calls must bound their own time (they raise
    Timeout).
    A device reached over the network (a miner) also reads natively on the caller's event
    loop: `async_io` True and its own `telemetry_async()` and `info_async()`.
    """

    id: str
    kind: DeviceKind
    capabilities: frozenset[Capability] = frozenset({Capability.TELEMETRY})
    # True when telemetry_async() and info_async() do their own non-blocking I/O on the calling
    # event loop (network devices); False: callers run the blocking calls in a thread.
    async_io: ClassVar[bool] = False
    # True where set_power_limit works by choosing one of power_modes() (LuxOS profiles): a
    # limit is then undone by its mode. Elsewhere (Whatsminer) the power mode and the power
    # limit are separate settings, each put back on its own.
    limit_sets_mode: ClassVar[bool] = False
    # The OpenCL device that computes for this one: a GPU's OpenCL view (joined by PCI bus id,
    # or named in the configuration), an OpenCL device itself. None: nothing to run kernels on.
    compute_facet: Device | None = None

    def info(self) -> DeviceInfo:
        raise NotImplementedError

    def telemetry(self) -> Telemetry:
        raise NotImplementedError

    async def telemetry_async(self) -> Telemetry:
        """telemetry() for an event loop. Default: the blocking call in a thread."""
        return await asyncio.to_thread(self.telemetry)

    async def info_async(self) -> DeviceInfo:
        """info() for an event loop. Default: the blocking call in a thread."""
        return await asyncio.to_thread(self.info)

    def health(self) -> Health:
        return HEALTHY

    # -- power ---------------------------------------------------------------------------------

    def set_power_limit(self, watts: float) -> None:
        """The operator's limit, kept by the device (or its desired state) until changed."""
        raise NotSupported(f"{self.id}: setting a power limit is not supported")

    def power_limit_range_w(self) -> tuple[float, float] | None:
        """(lowest, highest) limit the device accepts; None where it accepts any it is sent."""
        raise NotSupported(f"{self.id}: it has no power limit range")

    @property
    def power_cap_w(self) -> float | None:
        """A curtailment's temporary cap over the operator's limit (None: no cap)."""
        return None

    def set_power_cap(self, watts: float | None) -> None:
        """A temporary upper bound over the operator's limit: the device runs at the lower of
        the two and the operator's limit is never overwritten; None lifts it."""
        raise NotSupported(f"{self.id}: a power cap is not supported")

    def power_modes(self) -> tuple[str, ...]:
        """The firmware's named power modes or profiles ("low", "normal", ...)."""
        raise NotSupported(f"{self.id}: it has no named power modes")

    def power_mode(self) -> str | None:
        """The mode it runs in now; None where the firmware does not say."""
        raise NotSupported(f"{self.id}: it has no named power modes")

    def set_power_mode(self, mode: str) -> None:
        raise NotSupported(f"{self.id}: it has no named power modes")

    def mode_before_sleep(self) -> str | None:
        """The mode it ran in when this object last put it to sleep, which its wake brings
        back; None where it has no modes, or was not put to sleep here."""
        return None

    def sleep(self) -> None:
        raise NotSupported(f"{self.id}: sleep is not supported")

    def wake(self) -> None:
        raise NotSupported(f"{self.id}: wake is not supported")

    # -- firmware ------------------------------------------------------------------------------

    def restart(self) -> None:
        raise NotSupported(f"{self.id}: restart is not supported")

    def switch_pool(self, index: int) -> None:
        raise NotSupported(f"{self.id}: switching pools is not supported")

    # -- workloads -----------------------------------------------------------------------------

    def workload_env(self) -> dict[str, str]:
        """Environment a workload process needs to compute on this device (which GPU CUDA
        sees; on a simulated GPU, where its simulator is)."""
        return {}

    def close(self) -> None:
        """Release handles, threads and sockets. Safe to call twice."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id}>"
