"""The one place that writes power to devices.

Power writes to a device are serialized. The operator's desired state (SetPowerLimit) and a
curtailment's caps are kept apart and the lower applies: a curtailment never overwrites what the
operator asked for, and an operator's change during one is kept and applied when it ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from agent.runtime.changes import DeviceChanges
from agent.runtime.journal import Journal
from hal.device import Device, DeviceKind

T = TypeVar("T")


class PowerWriter:
    """Serialized power writes per device, and the operator's ASIC limits kept while a
    curtailment holds a miner (GPUs keep theirs in the HAL's desired state)."""

    def __init__(self, journal: Journal, changes: DeviceChanges) -> None:
        """`changes` is told after every write, so the next reading of the device is taken
        afresh (a curtailment that follows a restore must not record a setting from before it)."""
        self.journal = journal
        self.changes = changes
        self._locks: dict[str, asyncio.Lock] = {}
        self.held: dict[str, str] = {}  # device -> the curtailment holding it (its op id)
        self.pending: dict[str, float] = {
            k: float(v) for k, v in (journal.get("operator_power_limits") or {}).items()}

    def lock(self, device_id: str) -> asyncio.Lock:
        return self._locks.setdefault(device_id, asyncio.Lock())

    async def write(self, device: Device, fn: Callable[..., T], *args: Any) -> T:
        """A blocking power call on the device, one at a time, off the event loop."""
        async with self.lock(device.id):
            try:
                return await asyncio.to_thread(fn, *args)
            finally:
                self.changes.mark(device.id)

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
