"""What each device is doing now, and the workloads rigd itself runs (hashing for now).

The switch state machine (SetWorkload) will live here; today the manager starts the hashing
workloads named in the configuration and reports their status into telemetry.
"""

from __future__ import annotations

import threading
from typing import Protocol

from agent.model import WorkloadStatus


class RunningWorkload(Protocol):
    def status(self) -> WorkloadStatus: ...

    def stop(self, timeout_s: float) -> None: ...


class WorkloadManager:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, RunningWorkload] = {}

    def attach(self, device_id: str, workload: RunningWorkload) -> None:
        with self._lock:
            if device_id in self._running:
                raise ValueError(f"{device_id} already runs a workload")
            self._running[device_id] = workload

    def status(self, device_id: str) -> WorkloadStatus | None:
        with self._lock:
            workload = self._running.get(device_id)
        return workload.status() if workload is not None else None

    def stop_all(self, timeout_s: float = 5.0) -> None:
        with self._lock:
            workloads = list(self._running.values())
            self._running.clear()
        for workload in workloads:
            workload.stop(timeout_s)
