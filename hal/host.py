"""The host itself, through psutil: works on any machine, so inventory is never empty."""

from __future__ import annotations

import os
import platform
import socket
import time
from collections.abc import Mapping
from typing import Any

import psutil

from hal.device import (
    Capability,
    Device,
    DeviceInfo,
    DeviceKind,
    HostTelemetry,
    Telemetry,
    TempSensor,
)
from hal.errors import InvalidArgument

_OPTIONS = frozenset({"hostname"})


class HostDevice(Device):
    kind = DeviceKind.HOST
    capabilities = frozenset({Capability.TELEMETRY})  # inference: the agent adds it

    def __init__(self, hostname: str | None = None) -> None:
        self.hostname = hostname or socket.gethostname()
        self.id = f"host/{self.hostname}"
        self._cpu_model = _cpu_model()
        # psutil's cpu_percent(None) measures since the previous call; prime it once.
        psutil.cpu_percent(None)

    def info(self) -> DeviceInfo:
        uname = platform.uname()
        return DeviceInfo(
            id=self.id,
            kind=self.kind,
            name=self.hostname,
            vendor=uname.system,
            model=self._cpu_model,
            firmware_version=uname.release,
            attributes={
                "cpu_count": str(psutil.cpu_count() or 0),
                "machine": uname.machine,
                "python": platform.python_version(),
            },
        )

    def workload_env(self) -> dict[str, str]:
        return {"CUDA_VISIBLE_DEVICES": ""}  # a runtime on the host computes on its CPUs

    def telemetry(self) -> Telemetry:
        vm = psutil.virtual_memory()
        try:
            load_1m, load_5m, load_15m = os.getloadavg()
        except OSError:
            load_1m = load_5m = load_15m = float("nan")
        temps = _temperatures()
        package = max((t.temp_c for t in temps), default=None)
        cpu_pct = psutil.cpu_percent(None)
        host = HostTelemetry(
            cpu_count=psutil.cpu_count(),
            cpu_util_pct=cpu_pct,
            load_avg_1m=load_1m,
            load_avg_5m=load_5m,
            load_avg_15m=load_15m,
            mem_total_bytes=vm.total,
            mem_used_bytes=vm.total - vm.available,
            mem_available_bytes=vm.available,
            temps=temps,
            uptime_s=int(time.time() - psutil.boot_time()),
        )
        return Telemetry(
            device_id=self.id,
            kind=self.kind,
            temp_c=package,
            utilization_pct=cpu_pct,
            host=host,
        )


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _temperatures() -> tuple[TempSensor, ...]:
    """Kernel-exposed sensors only; containers and VMs often have none (then: empty)."""
    reader = getattr(psutil, "sensors_temperatures", None)
    if reader is None:
        return ()
    try:
        groups = reader()
    except (OSError, RuntimeError):
        return ()
    sensors = []
    for chip, entries in sorted(groups.items()):
        for i, entry in enumerate(entries):
            if entry.current is None:
                continue
            label = entry.label or f"{chip}{i}"
            sensors.append(TempSensor(f"{chip}/{label}", float(entry.current)))
    return tuple(sensors)


def check_options(options: Mapping[str, Any]) -> None:
    unknown = set(options) - _OPTIONS
    if unknown:
        raise InvalidArgument(
            f"host backend: unknown option(s) {sorted(unknown)}; known: {sorted(_OPTIONS)}")
    hostname = options.get("hostname")
    if hostname is not None and (not isinstance(hostname, str) or not hostname):
        raise InvalidArgument("host backend: hostname must be a non-empty string")


def discover(options: Mapping[str, Any]) -> list[Device]:
    check_options(options)
    return [HostDevice(options.get("hostname"))]
