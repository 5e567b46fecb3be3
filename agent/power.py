"""What the rig draws, and the one place that writes power to devices.

Every device contributes measured power where it reports it (NVML, most miner firmwares) and an
estimate where it does not: the HAL's model table for stock Antminers, a configured figure for
the host and for OpenCL devices (scaled by the hashing duty). The rig's total keeps the measured
and the estimated parts apart, and names the devices it knows nothing about.

Power writes to a device are serialized. The operator's desired state (SetPowerLimit) and a
curtailment's caps are kept apart and the lower applies: a curtailment never overwrites what the
operator asked for, and an operator's change during one is kept and applied when it ends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from agent.journal import Journal
from agent.model import Reading, WorkloadKind, WorkloadState, WorkloadStatus
from hal.device import Device, DeviceKind, PowerSource

log = structlog.get_logger("rigd.power")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RigPower:
    total_w: float
    measured_w: float
    estimated_w: float
    unknown_device_ids: tuple[str, ...] = ()
    time_unix_s: float = field(default_factory=time.time)


def rig_power(readings: Iterable[Reading]) -> RigPower:
    measured = estimated = 0.0
    unknown = []
    for reading in readings:
        t = reading.telemetry
        if t.power_w is None:
            unknown.append(t.device_id)
        elif t.power_source == PowerSource.ESTIMATED:
            estimated += t.power_w
        else:
            measured += t.power_w
    return RigPower(measured + estimated, measured, estimated, tuple(unknown))


class PowerModel:
    """Estimates for devices without a sensor: the configured host figure, and for an OpenCL
    device its configured full-duty figure times the share of time its kernel runs."""

    def __init__(self, host_w: float, opencl_w: Mapping[str, float]) -> None:
        self.host_w = host_w
        self.opencl_w = dict(opencl_w)

    def estimate(self, reading: Reading, kind: DeviceKind) -> Reading:
        t = reading.telemetry
        if t.power_w is not None or reading.error:
            return reading
        watts: float | None = None
        if kind == DeviceKind.HOST and self.host_w:
            watts = self.host_w
        elif kind == DeviceKind.OPENCL and t.device_id in self.opencl_w:
            watts = self.opencl_w[t.device_id] * _duty(reading.workload)
        if watts is None:
            return reading
        return dataclasses.replace(reading, telemetry=dataclasses.replace(
            t, power_w=round(watts, 1), power_source=PowerSource.ESTIMATED))


def _duty(status: WorkloadStatus | None) -> float:
    if status is None or status.kind != WorkloadKind.HASHING \
            or status.state != WorkloadState.RUNNING:
        return 0.0
    return status.intensity if status.intensity is not None else 1.0


class PowerWriter:
    """Serialized power writes per device, and the operator's ASIC limits kept while a
    curtailment holds a miner (GPUs keep theirs in the HAL's desired state)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._locks: dict[str, asyncio.Lock] = {}
        self.held: dict[str, str] = {}  # device -> the curtailment holding it (its op id)
        self.pending: dict[str, float] = {
            k: float(v) for k, v in (journal.get("operator_power_limits") or {}).items()}
        # told after every write, so the next reading of the device is taken afresh (a
        # curtailment that follows a restore must not record a setting from before it)
        self.changed: Callable[[str], None] = lambda device_id: None

    def lock(self, device_id: str) -> asyncio.Lock:
        return self._locks.setdefault(device_id, asyncio.Lock())

    async def write(self, device: Device, fn: Callable[..., T], *args: Any) -> T:
        """A blocking power call on the device, one at a time, off the event loop."""
        async with self.lock(device.id):
            try:
                return await asyncio.to_thread(fn, *args)
            finally:
                self.changed(device.id)

    async def set_operator_limit(self, device: Device, watts: float) -> str:
        """The operator's limit: applied now, under the curtailment's cap where one holds the
        device (a GPU), or kept and applied when the curtailment ends (a miner it sleeps or
        turned down). Returns what happened, for the caller."""
        if device.kind == DeviceKind.GPU or device.id not in self.held:
            await self.write(device, device.set_power_limit, watts)
            cap = getattr(device, "power_cap_w", None)
            if cap is not None and cap < watts:
                return f"capped at {cap:g} W by curtailment {self.held.get(device.id, '')}"
            return ""
        check = getattr(device, "power_limit_range_w", None)
        if check is not None:  # refuse what the miner would refuse, now, not at the restore
            low_high = await asyncio.to_thread(check)
            if low_high is not None and not low_high[0] <= watts <= low_high[1]:
                from hal.errors import InvalidArgument

                raise InvalidArgument(f"{device.id}: {watts:g} W is outside the range this "
                                      f"miner accepts, {low_high[0]:g}-{low_high[1]:g} W")
        self.pending[device.id] = watts
        self.journal.update(operator_power_limits=dict(self.pending))
        return (f"kept: curtailment {self.held[device.id]} holds this miner; "
                f"{watts:g} W applies when it ends")

    def take_pending(self, device_id: str) -> float | None:
        watts = self.pending.pop(device_id, None)
        if watts is not None:
            self.journal.update(operator_power_limits=dict(self.pending))
        return watts
