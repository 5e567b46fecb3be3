"""Devices changed in a way their latest reading does not show: a power write, a workload that
started or stopped. Whoever changes a device marks it here; the sampler reads the marks, so the
next request reads that device afresh (a read begun before the change does not count as fresh)
and streams get it at once."""

from __future__ import annotations

import asyncio
import time


class DeviceChanges:
    def __init__(self) -> None:
        self._at: dict[str, float] = {}  # device id -> monotonic time of its latest change
        self._pending: set[str] = set()  # marked since the sampler last took them
        self._event = asyncio.Event()

    def mark(self, device_id: str) -> None:
        self._at[device_id] = time.monotonic()
        self._pending.add(device_id)
        self._event.set()

    def changed_at(self, device_id: str) -> float:
        """Monotonic time of the device's latest change; -inf if it never changed."""
        return self._at.get(device_id, float("-inf"))

    def take(self) -> set[str]:
        """The devices marked since the last take."""
        pending, self._pending = self._pending, set()
        self._event.clear()
        return pending

    async def wait(self) -> None:
        """Until a device is marked (at once if one was since the last take)."""
        await self._event.wait()
