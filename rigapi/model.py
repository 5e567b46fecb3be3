"""The agent's own working data: plain dataclasses beside the HAL's.

The sampler, the switcher, curtailment, metrics and the CLI all read these; protobuf exists only
at the gRPC edge (agent/edges/convert.py), so no consumer does `HasField` arithmetic.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
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
