"""The API's working data: plain dataclasses beside the HAL's, shared by rigd and its clients.

Inside rigd the sampler, the switcher, curtailment and metrics read these; a controller's client
library returns the same types. Protobuf exists only at the gRPC edge (rigapi.convert), so no
consumer does `HasField` arithmetic.
"""

from __future__ import annotations

import enum
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from hal.device import Telemetry


class WorkloadKind(enum.StrEnum):
    IDLE = "idle"
    HASHING = "hashing"
    INFERENCE = "inference"


class WorkloadState(enum.StrEnum):
    STARTING = "starting"  # process started; not yet mining / not yet ready
    RUNNING = "running"  # hashing with a pool job / inference runtime ready
    STANDBY = "standby"  # inference runtime loaded and idle (warm standby), no device assigned
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"  # ended on its own; `detail` says why


@dataclass(frozen=True, slots=True)
class WorkloadStatus:
    """What a device's workload is doing now, with the workload's own counters."""

    kind: WorkloadKind
    state: WorkloadState
    detail: str = ""  # why it failed, what it waits for ("connecting to pool")
    hashrate_hs: float | None = None
    shares_accepted: int | None = None
    shares_rejected: int | None = None
    pool_url: str = ""
    intensity: float | None = None
    endpoint: str = ""  # inference: the runtime's base URL once ready
    profile: str = ""  # inference: the runtime profile
    pid: int | None = None  # the workload's process (group leader)


@dataclass(frozen=True, slots=True)
class Reading:
    """One device's latest reading as the agent serves it: the HAL's telemetry (a reading that
    failed as a whole is an UNHEALTHY Telemetry with nothing else), why it failed, and the
    device's workload."""

    telemetry: Telemetry
    error: str = ""
    workload: WorkloadStatus | None = None

    @property
    def device_id(self) -> str:
        return self.telemetry.device_id


@dataclass(frozen=True, slots=True)
class HashingSpec:
    """Where and how hard a device hashes; resolved from the request and the configuration."""

    pool_urls: tuple[str, ...]
    user: str
    password: str
    intensity: float = 1.0
    version_rolling: str = "auto"  # auto | on | off


@dataclass(frozen=True, slots=True)
class InferenceSpec:
    profile: str
    model: str = ""  # "" = the profile's model


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """What a device should run: the journal keeps one per device."""

    kind: WorkloadKind
    hashing: HashingSpec | None = None
    inference: InferenceSpec | None = None

    def describe(self) -> str:
        if self.inference is not None:
            return f"inference ({self.inference.profile})"
        return str(self.kind)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: dict[str, Any]) -> WorkloadSpec:
        hashing = data.get("hashing")
        inference = data.get("inference")
        return WorkloadSpec(
            kind=WorkloadKind(data["kind"]),
            hashing=HashingSpec(**{**hashing, "pool_urls": tuple(hashing["pool_urls"])})
            if hashing else None,
            inference=InferenceSpec(**inference) if inference else None,
        )


IDLE = WorkloadSpec(WorkloadKind.IDLE)


# ---- operations ---------------------------------------------------------------------------------


class OperationState(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"  # the switch failed and the previous workload runs again


class Phase(enum.StrEnum):
    REQUESTED = "requested"
    DRAINING = "draining"
    STOPPING = "stopping"
    VERIFYING = "verifying"
    CONFIGURING = "configuring"
    STARTING = "starting"
    READY = "ready"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    SHEDDING = "shedding"
    CONFIRMED = "confirmed"


@dataclass(slots=True)
class PhaseRecord:
    phase: Phase
    device_id: str
    start_unix_s: float
    duration_s: float | None = None  # None while the phase runs
    detail: str = ""
    _started: float = field(default_factory=time.monotonic, repr=False)


@dataclass(slots=True)
class DeviceOutcome:
    device_id: str
    state: OperationState = OperationState.RUNNING
    error: str = ""


@dataclass(slots=True)
class Operation:
    operation_id: str
    kind: str  # "set_workload", "curtail", "restore"
    device_ids: list[str]
    state: OperationState = OperationState.RUNNING
    phases: list[PhaseRecord] = field(default_factory=list)
    outcomes: dict[str, DeviceOutcome] = field(default_factory=dict)
    error: str = ""
    create_unix_s: float = field(default_factory=time.time)
    end_unix_s: float | None = None
    request_id: str = ""
    fingerprint: str = ""  # what the request asked, to refuse a reused request_id
    detail: str = ""  # e.g. a curtailment's target and outcome in watts
    version: int = 0  # grows with every change, so watchers miss none

    def snapshot(self) -> Operation:
        """A copy that later changes do not reach (what a watcher is given)."""
        return replace(self, device_ids=list(self.device_ids),
                       phases=[replace(p) for p in self.phases],
                       outcomes={k: replace(v) for k, v in self.outcomes.items()})

    @property
    def done(self) -> bool:
        return self.state != OperationState.RUNNING


# ---- power and curtailment ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RigPower:
    total_w: float
    measured_w: float
    estimated_w: float
    unknown_device_ids: tuple[str, ...] = ()
    time_unix_s: float = field(default_factory=time.time)


class CurtailmentState(enum.StrEnum):
    SHEDDING = "shedding"  # acting, not yet below target
    CONFIRMED = "confirmed"  # the rig read below target
    TARGET_NOT_MET = "target_not_met"  # shed as far as it may, still above; still watching


@dataclass(frozen=True, slots=True)
class CurtailmentStatus:
    """A curtailment in force, as GetInventory and the VEN report it."""

    rig_power_target_w: float
    deadline_unix_s: float
    expire_unix_s: float
    reason: str
    operation_id: str
    state: CurtailmentState
    rig_power_before_w: float
    source: str  # who asked: an identity, or "openadr:<event id>"
    below_target_after_s: float | None = None
    shortfall_w: float | None = None
    dispatched_after_s: float | None = None  # command -> last device command of round one


# ---- diagnostics --------------------------------------------------------------------------------


class DiagnosticResult(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class DiagnosticOutcome:
    """One test's verdict in a RunDiagnostics run."""

    device_id: str  # "" for a rig-wide test
    test: str
    level: int
    result: DiagnosticResult
    detail: str
    duration_s: float
    done: int
    total: int
