"""A telemetry stream's side of the sampler: which devices it covers, how often, and its bounded
queue of readings (the oldest dropped and counted while its reader is slow)."""

from __future__ import annotations

import asyncio
import collections

from rigapi.model import Reading


class Subscription:
    def __init__(self, device_ids: frozenset[str], interval_s: float, queue_max: int) -> None:
        self.device_ids = device_ids
        self.interval_s = interval_s
        self.queue: collections.deque[dict[str, Reading]] = collections.deque(maxlen=queue_max)
        self.dropped = 0
        self.sequence = 0
        self.closed = False
        self.next_due = 0.0
        self._ready = asyncio.Event()

    def covers(self, device_id: str) -> bool:
        return not self.device_ids or device_id in self.device_ids

    def push(self, readings: dict[str, Reading]) -> None:
        if len(self.queue) == self.queue.maxlen:
            self.dropped += 1
        self.queue.append({d: r for d, r in readings.items() if self.covers(d)})
        self._ready.set()

    async def get(self) -> dict[str, Reading] | None:
        """The oldest queued readings, waiting for one; None once closed."""
        while not self.queue:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        self.sequence += 1
        return self.queue.popleft()

    def close(self) -> None:
        self.closed = True
        self._ready.set()
