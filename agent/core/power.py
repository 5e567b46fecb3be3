"""What the rig draws.

Every device contributes measured power where it reports it (NVML, most miner firmwares) and an
estimate where it does not: the HAL's model table for stock Antminers, a configured figure for
the host and for OpenCL devices (scaled by the hashing duty). The rig's total keeps the measured
and the estimated parts apart, and names the devices it knows nothing about.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import TypeVar

import structlog

from hal.device import DeviceKind, PowerSource
from rigapi.model import Reading, RigPower, WorkloadKind, WorkloadState, WorkloadStatus

log = structlog.get_logger("rigd.power")
T = TypeVar("T")


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

    def estimate(self, reading: Reading) -> Reading:
        t = reading.telemetry
        kind = t.kind
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
