"""A telemetry stream's side of the sampler: which devices it covers, how often, and the newest
readings not yet sent.

It keeps one set of readings, never a queue: a set the stream has not taken when the next one
comes is replaced by it and counted as dropped, so what a stream sends is always the newest, and
every set ever produced for it is either sent or counted. `sequence` numbers the sets in the
order they were produced (one per interval), so the set taken last has `sequence` =
sets sent so far + `dropped`.
"""

from __future__ import annotations

import asyncio

from rigapi.model import Reading


class Subscription:
    def __init__(self, device_ids: frozenset[str], interval_s: float) -> None:
        self.device_ids = device_ids
        self.interval_s = interval_s
        self.produced = 0  # reading sets produced for this stream
        self.dropped = 0  # ... replaced before the stream took them
        self.sequence = 0  # the number of the set taken last
        self.closed = False
        self.next_due = 0.0
        self._waiting: tuple[int, dict[str, Reading]] | None = None
        self._ready = asyncio.Event()

    def covers(self, device_id: str) -> bool:
        return not self.device_ids or device_id in self.device_ids

    def push(self, readings: dict[str, Reading]) -> None:
        """The newest readings (a dict nobody changes afterwards: it may be shared)."""
        self.produced += 1
        if self._waiting is not None:
            self.dropped += 1
        covered = readings if not self.device_ids else {
            d: r for d, r in readings.items() if d in self.device_ids}
        self._waiting = (self.produced, covered)
        self._ready.set()

    async def get(self) -> dict[str, Reading] | None:
        """The newest readings not yet taken, waiting for them; None once closed."""
        while self._waiting is None:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        self.sequence, readings = self._waiting
        self._waiting = None
        return readings

    def close(self) -> None:
        self.closed = True
        self._ready.set()
