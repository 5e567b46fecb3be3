"""The agent's own working data: plain dataclasses beside the HAL's.

The sampler, the switcher, curtailment, metrics and the CLI all read these; protobuf exists only
at the gRPC edge (agent/convert.py), so no consumer does `HasField` arithmetic.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

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
