"""rigd's hardware abstraction layer: one `Device` interface over GPUs, FPGA cards, ASIC miners
and the host. Usable alone: `from hal import discover`. Never imports `agent`.

The names below load on first use (PEP 562): `import hal.device` costs only the dataclasses, so a
client that reads the HAL's value types (rigctl, the client library) does not pay for discovery
and logging.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hal.lazy import exports

if TYPE_CHECKING:
    from hal.device import (
        AsicBoard,
        AsicTelemetry,
        Capability,
        Device,
        DeviceInfo,
        DeviceKind,
        GpuProcess,
        GpuTelemetry,
        Health,
        HealthState,
        HostTelemetry,
        PoolStatus,
        PowerSource,
        Telemetry,
        TempSensor,
    )
    from hal.errors import (
        DeviceLost,
        HalError,
        InvalidArgument,
        NotSupported,
        PermissionDenied,
        ProtocolError,
        Timeout,
        Unavailable,
    )
    from hal.registry import BackendStatus, Discovery, discover, known_backends, register

_HOME = {
    **dict.fromkeys(
        ("AsicBoard", "AsicTelemetry", "Capability", "Device", "DeviceInfo", "DeviceKind",
         "GpuProcess", "GpuTelemetry", "Health", "HealthState", "HostTelemetry", "PoolStatus",
         "PowerSource", "Telemetry", "TempSensor"), "hal.device"),
    **dict.fromkeys(
        ("DeviceLost", "HalError", "InvalidArgument", "NotSupported", "PermissionDenied",
         "ProtocolError", "Timeout", "Unavailable"), "hal.errors"),
    **dict.fromkeys(("BackendStatus", "Discovery", "discover", "known_backends", "register"),
                    "hal.registry"),
}


__getattr__, __dir__ = exports("hal", _HOME, globals())


__all__ = [
    "AsicBoard",
    "AsicTelemetry",
    "BackendStatus",
    "Capability",
    "Device",
    "DeviceInfo",
    "DeviceKind",
    "DeviceLost",
    "Discovery",
    "GpuProcess",
    "GpuTelemetry",
    "HalError",
    "Health",
    "HealthState",
    "HostTelemetry",
    "InvalidArgument",
    "NotSupported",
    "PermissionDenied",
    "PoolStatus",
    "PowerSource",
    "ProtocolError",
    "Telemetry",
    "TempSensor",
    "Timeout",
    "Unavailable",
    "discover",
    "known_backends",
    "register",
]
