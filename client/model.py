"""What the client's calls return, beside the shared dataclasses (the HAL's `Telemetry`,
`DeviceInfo`, `Health`; rigapi.model's `Reading`, `Operation`, `RigPower`, `CurtailmentStatus`,
`DiagnosticOutcome`, `WorkloadSpec`): the few answers that are a message of their own."""

from __future__ import annotations

from dataclasses import dataclass

from hal.device import DeviceInfo, DeviceKind, Health
from hal.registry import BackendStatus
from rigapi.model import CurtailmentStatus, Reading, RigPower, WorkloadSpec


@dataclass(frozen=True, slots=True)
class Device:
    """One device of a rig's inventory: its facts, what it can do, its health, and the workload
    rigd means it to run (None: none set)."""

    info: DeviceInfo
    capabilities: frozenset[str]  # hal.device.Capability values; a newer rigd's kept as text
    health: Health
    workload: WorkloadSpec | None = None

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def kind(self) -> DeviceKind:
        return self.info.kind


@dataclass(frozen=True, slots=True)
class Inventory:
    rig_id: str
    agent_version: str
    devices: tuple[Device, ...]
    backends: tuple[BackendStatus, ...]
    curtailment: CurtailmentStatus | None = None  # while one is in force

    def device(self, device_id: str) -> Device:
        return next(d for d in self.devices if d.id == device_id)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """GetTelemetry's answer: the latest reading of each device asked for, in rigd's order, and
    the rig's power when every device was asked for."""

    readings: tuple[Reading, ...]
    rig_power: RigPower | None = None

    def by_id(self) -> dict[str, Reading]:
        return {r.device_id: r for r in self.readings}


@dataclass(frozen=True, slots=True)
class StreamUpdate:
    """One message of a telemetry stream that survives restarts.

    `readings` holds only readings newer than any this stream delivered for their device (a
    reading never goes back in time). `sequence` and `dropped_count` are rigd's for the
    current connection; `dropped_total` adds the drops of the connections before it.
    `blind_s` is set on the first update after the stream broke: how long the stream saw
    nothing new of the rig (the gap's span), with `gap` saying why."""

    readings: tuple[Reading, ...]
    rig_power: RigPower | None
    sequence: int
    dropped_count: int
    dropped_total: int
    reconnects: int = 0
    blind_s: float | None = None
    gap: Gap | None = None


@dataclass(frozen=True, slots=True)
class Gap:
    """A time a telemetry stream was blind: from the newest reading it delivered before a break
    to the newest of the first update after it (rigd's clock)."""

    last_unix_s: float  # the newest reading before the break (the stream's start if none)
    resumed_unix_s: float
    error: str  # what broke it
    attempts: int  # connections tried until one delivered again

    @property
    def blind_s(self) -> float:
        return self.resumed_unix_s - self.last_unix_s


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """A lease as rigd reports it (AcquireLease, RenewLease)."""

    lease_id: str
    holder: str  # the holder text given, with the identity rigd knows the caller by
    fencing_token: int
    expire_unix_s: float


@dataclass(frozen=True, slots=True)
class PowerLimit:
    """SetPowerLimit's answer: the limit read back from the device after the write."""

    device_id: str
    power_limit_w: float
    requested_w: float
    detail: str = ""
