"""What each device draws while at work, learned from every reading, and which miners rigd has
just woken.

A miner that is waking, or a device whose workload is starting, draws little for a while and
then its full load: a curtailment plans from what it will draw, so it needs the full figure. It
is the device's latest reading while at work (a miner mining, a workload running), not taken
while a curtailment holds the device (turned down, its draw is not its full one). A miner asleep
by its operator's hand is not waking: only one rigd woke counts as waking, until it mines or
WAKE_S have passed.
"""

from __future__ import annotations

import time

from rigapi.model import Reading, WorkloadState

WAKE_S = 300.0  # a miner woken this long ago and still not mining is not counted as waking


class WorkingDraw:
    def __init__(self) -> None:
        self._w: dict[str, float] = {}
        self._held: set[str] = set()
        self._waking: dict[str, float] = {}  # device -> monotonic time rigd woke it

    def observe(self, reading: Reading) -> Reading:
        """Learn from a reading (the sampler's enrich chain); returns it unchanged."""
        t = reading.telemetry
        if t.power_w is None or reading.error or t.device_id in self._held:
            return reading
        if t.asic is not None:
            at_work = t.asic.is_mining is True
        else:
            at_work = reading.workload is not None \
                and reading.workload.state == WorkloadState.RUNNING
        if at_work:
            self._w[t.device_id] = t.power_w
            self._waking.pop(t.device_id, None)
        return reading

    def woken(self, device_id: str) -> None:
        """rigd has just woken the miner: it is waking until it mines (or WAKE_S pass)."""
        self._waking[device_id] = time.monotonic()

    def waking(self, device_id: str) -> bool:
        since = self._waking.get(device_id)
        return since is not None and time.monotonic() - since < WAKE_S

    def of(self, device_id: str) -> float | None:
        return self._w.get(device_id)

    def hold(self, device_id: str) -> None:
        """A curtailment turns the device down: its readings no longer tell its full draw."""
        self._held.add(device_id)

    def release(self, device_id: str, full_w: float | None) -> None:
        """Put back: its draw before the curtailment is what it is about to draw again."""
        self._held.discard(device_id)
        if full_w is not None:
            self._w[device_id] = max(full_w, self._w.get(device_id, 0.0))
