"""A hashing workload as rigd runs it: a Stratum client feeding the kernel on one OpenCL device,
reported into that device's telemetry."""

from __future__ import annotations

from collections.abc import Mapping

import structlog

from agent.config import HashingConfig
from agent.model import WorkloadKind, WorkloadState, WorkloadStatus
from agent.workloads.hashing.miner import HashingWorkload
from agent.workloads.hashing.stratum import StratumClient
from hal.device import Device
from hal.errors import InvalidArgument

log = structlog.get_logger("rigd.hashing")


class HashingRun:
    """Owns the client and the miner thread; `status()` is cheap enough for every sample."""

    def __init__(self, device_id: str, client: StratumClient, miner: HashingWorkload) -> None:
        self.device_id = device_id
        self.client = client
        self.miner = miner

    @classmethod
    def start(cls, config: HashingConfig, devices: Mapping[str, Device]) -> HashingRun:
        device_id = _pick_device(config.device, devices)
        cl_device = devices[device_id].cl_device  # type: ignore[attr-defined]
        client = StratumClient(list(config.pools), config.user, config.password)
        miner = HashingWorkload(client, cl_device, intensity=config.intensity)
        client.start()
        try:
            miner.start()  # builds the kernel: a device that cannot compile fails here
        except Exception:
            client.stop()
            raise
        log.info("hashing_started", device_id=device_id, pools=list(config.pools),
                 intensity=config.intensity)
        return cls(device_id, client, miner)

    def status(self) -> WorkloadStatus:
        stats = self.miner.stats()
        connection = self.client.status()
        detail = ""
        if stats.error:
            state, detail = WorkloadState.FAILED, stats.error
        elif not stats.running:
            state = WorkloadState.STOPPED
        elif connection.pool_url is None or not connection.authorized:
            state, detail = WorkloadState.STARTING, "connecting to pool"
        else:
            state = WorkloadState.RUNNING
        return WorkloadStatus(
            kind=WorkloadKind.HASHING,
            state=state,
            detail=detail,
            hashrate_hs=stats.hashrate_hs,
            shares_accepted=stats.shares_accepted,
            shares_rejected=stats.shares_rejected,
            pool_url=connection.pool_url or "",
            intensity=stats.intensity,
        )

    def stop(self, timeout_s: float) -> None:
        self.miner.stop(timeout_s)
        self.client.stop(timeout_s)
        log.info("hashing_stopped", device_id=self.device_id)


def _pick_device(wanted: str, devices: Mapping[str, Device]) -> str:
    """The configured device, or for "auto" the OpenCL device the kernel runs best on."""
    runnable = {i: d for i, d in devices.items() if hasattr(d, "cl_device")}
    if wanted != "auto":
        if wanted not in runnable:
            raise InvalidArgument(
                f"hashing device {wanted!r} is not an OpenCL device rigd found; "
                f"candidates: {', '.join(sorted(runnable)) or 'none'}"
            )
        return wanted
    if not runnable:
        raise InvalidArgument("hashing device 'auto': no OpenCL device found for the kernel")
    from agent.workloads.hashing.kernel import mining_rank

    return min(runnable, key=lambda device_id: mining_rank(runnable[device_id].cl_device))
