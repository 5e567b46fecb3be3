"""One sampler reads the devices; requests and streams read its results.

Devices are read concurrently in threads (HAL calls block), each bounded by a timeout, so one hung
miner or lost GPU delays nobody: its reading says why it failed and the others carry on. A device
whose previous read still hangs is not read again (no thread pile-up).

Each device is read at the configured interval, or faster while a stream that covers it asks for
a shorter one (never below MIN_INTERVAL_S). Each stream keeps only the newest readings it has
not sent (agent/runtime/subscriptions.py): while its reader is slow the older ones are replaced
and counted, so what it sends is the newest, with a true count of what it lost.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import structlog

from agent.core.power import rig_power
from agent.runtime.changes import DeviceChanges
from agent.runtime.subscriptions import Subscription
from hal.device import Device, DeviceInfo, Health, HealthState, Telemetry
from hal.errors import HalError
from rigapi.model import Reading, RigPower

log = structlog.get_logger("rigd.telemetry")
T = TypeVar("T")

MIN_INTERVAL_S = 0.1  # the fastest a stream may ask for; documented in the API
Enrich = Callable[[Reading], Reading]
_Inflight = dict[str, tuple[Future[T], float]]  # device id -> (read, monotonic start)


def describe_error(exc: BaseException) -> str:
    """One line for an operator: what happened, never a Python class name."""
    if isinstance(exc, HalError):
        return str(exc)
    return f"internal error: {exc!r}"


def failed_reading(device: Device, error: str, at_unix_s: float) -> Reading:
    """A reading that failed as a whole: the device is reported, with why, and nothing else."""
    return Reading(
        Telemetry(device.id, device.kind, at_unix_s, Health(HealthState.UNHEALTHY, error)),
        error=error,
    )


class Sampler:
    def __init__(
        self,
        devices: Iterable[Device],
        interval_s: float,
        device_timeout_s: float,
        changes: DeviceChanges,
        enrich: Enrich,
    ) -> None:
        """`changes` says which devices were changed since their reading (read afresh);
        `enrich` adds what the agent knows of each reading (its workload, power estimates)."""
        self.devices = {d.id: d for d in devices}
        self.interval_s = interval_s
        self.device_timeout_s = device_timeout_s
        self.changes = changes
        self.enrich = enrich
        self._pool = ThreadPoolExecutor(
            max_workers=min(64, max(4, 2 * len(self.devices))), thread_name_prefix="telemetry"
        )
        self._inflight: _Inflight[Telemetry] = {}
        self._info_inflight: _Inflight[DeviceInfo] = {}
        self._info_cache: dict[str, DeviceInfo] = {}
        self._latest: dict[str, Reading] = {}
        self._read_at: dict[str, float] = {}  # monotonic time of each device's latest reading
        self._read_begun: dict[str, float] = {}  # ... and the time that read began
        self._due: dict[str, float] = dict.fromkeys(self.devices, 0.0)
        self._subs: set[Subscription] = set()
        # device id -> how many open streams ask for each interval (the shortest one applies)
        self._stream_intervals: dict[str, collections.Counter[float]] = {
            d: collections.Counter() for d in self.devices}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.samples_taken = 0

    # -- reading ---------------------------------------------------------------------------

    async def _read_all(
        self, ids: Iterable[str], read: Callable[[Device], T], inflight: _Inflight[T],
        begun_after: float | None = None,
    ) -> dict[str, T | str]:
        """read(device) for each id at once, each within the timeout; a failure becomes its
        one-line reason. A read already under way is joined, not repeated, if it began after
        `begun_after` (monotonic); an older one is waited for and then read again. One that has
        run past the timeout (a hung device) is not waited for and no new one starts."""
        ids = list(ids)
        if begun_after is not None:
            older = [inflight[d][0] for d in ids
                     if d in inflight and not inflight[d][0].done()
                     and inflight[d][1] < begun_after]
            if older:
                await asyncio.wait([asyncio.wrap_future(f) for f in older],
                                   timeout=self.device_timeout_s)
        waiting: dict[asyncio.Future[T], str] = {}
        results: dict[str, T | str] = {}
        now = time.monotonic()
        deadline = now + self.device_timeout_s
        for device_id in ids:
            previous = inflight.get(device_id)
            if previous is not None and not previous[0].done():
                future, started = previous
                if now - started >= self.device_timeout_s:
                    results[device_id] = "timeout: previous read still running"
                    continue
                deadline = min(deadline, started + self.device_timeout_s)
            else:
                future = self._pool.submit(read, self.devices[device_id])
                inflight[device_id] = (future, now)
            waiting[asyncio.wrap_future(future)] = device_id
        if waiting:
            done, pending = await asyncio.wait(waiting, timeout=max(0.0, deadline - now))
            for pending_future in pending:
                results[waiting[pending_future]] = (
                    f"timeout: no answer within {self.device_timeout_s:g} s")
            for done_future in done:
                device_id = waiting[done_future]
                exc = done_future.exception()
                if exc is None:
                    results[device_id] = done_future.result()
                    continue
                if not isinstance(exc, HalError):
                    log.error("device_read_failed", device_id=device_id, error=repr(exc))
                results[device_id] = describe_error(exc)
        return {d: results[d] for d in ids}  # in device order, whatever answered first

    async def infos(self) -> dict[str, DeviceInfo | str]:
        """Inventory facts, read like telemetry; the last good answer stands in for a device
        that is slow or unreachable now (a reason string when there never was one)."""
        results = await self._read_all(self.devices, lambda d: d.info(), self._info_inflight)
        for device_id, result in results.items():
            if isinstance(result, DeviceInfo):
                self._info_cache[device_id] = result
            elif device_id in self._info_cache:
                results[device_id] = self._info_cache[device_id]
        return results

    async def sample(self, ids: Iterable[str] | None = None, begun_after: float | None = None
                     ) -> dict[str, Reading]:
        """Read these devices (every device by default) now and make them the latest; a read
        under way that began before `begun_after` (monotonic) does not count as now."""
        wanted = list(self.devices if ids is None else ids)
        started = time.time()
        results = await self._read_all(wanted, lambda d: d.telemetry(), self._inflight,
                                       begun_after)
        now = time.monotonic()
        for device_id, result in results.items():
            reading = (failed_reading(self.devices[device_id], result, started)
                       if isinstance(result, str) else Reading(result))
            self._latest[device_id] = self.enrich(reading)
            self._read_at[device_id] = now
            self._read_begun[device_id] = (self._inflight[device_id][1]
                                           if device_id in self._inflight else now)
        self.samples_taken += 1
        return {d: self._latest[d] for d in wanted}

    async def latest(
        self, device_ids: Iterable[str] = (), max_age_s: float | None = None
    ) -> dict[str, Reading]:
        """Readings no older than max_age_s (default: two sampling intervals, so a request
        never pays for a synchronous read unless the sampler is stuck), in device order."""
        wanted = list(device_ids) or list(self.devices)
        max_age = 2 * self.interval_s if max_age_s is None else max_age_s
        now = time.monotonic()
        stale = [d for d in wanted if not self.fresh(d, max_age, now)]
        if stale:  # a read under way that began before one of them was changed is not joined
            changed = max(self.changes.changed_at(d) for d in stale)
            await self.sample(stale, begun_after=max(now - max_age, changed))
        return {d: self._latest[d] for d in wanted}

    async def rig_power(self, fresh: Iterable[str] = ()) -> RigPower:
        """What the rig draws now: every device at the sampler's own pace (readings at most two
        intervals old), the `fresh` ones read at most MIN_INTERVAL_S ago. The one way rigd
        totals the rig."""
        readings = await self.latest()
        fresh = list(fresh)
        if fresh:
            readings.update(await self.latest(fresh, max_age_s=MIN_INTERVAL_S))
        return rig_power(readings.values())

    def fresh(self, device_id: str, max_age_s: float, now: float | None = None) -> bool:
        """The device's latest reading is at most max_age_s old and began after the device's
        latest change (a reading from before a power write or a switch is never fresh)."""
        now = time.monotonic() if now is None else now
        return (device_id in self._read_at and now - self._read_at[device_id] <= max_age_s
                and self._read_begun[device_id] > self.changes.changed_at(device_id))

    def cached(self, device_id: str) -> Reading | None:
        return self._latest.get(device_id)

    # -- streaming -------------------------------------------------------------------------

    def subscribe(self, device_ids: Iterable[str], interval_s: float) -> Subscription:
        sub = Subscription(frozenset(device_ids), max(interval_s, MIN_INTERVAL_S))
        self._subs.add(sub)
        now = time.monotonic()
        current = {d: r for d, r in self._latest.items() if sub.covers(d)}
        if current:  # the first message goes out at once, not an interval later
            sub.push(current)
            sub.next_due = now + sub.interval_s
        for device_id in self.devices:
            if sub.covers(device_id):
                self._stream_intervals[device_id][sub.interval_s] += 1
                self._due[device_id] = min(self._due[device_id], now + sub.interval_s)
        self._wake.set()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.discard(sub)
            for device_id, intervals in self._stream_intervals.items():
                if sub.covers(device_id):
                    intervals[sub.interval_s] -= 1
                    if intervals[sub.interval_s] <= 0:
                        del intervals[sub.interval_s]
        sub.close()

    @property
    def stream_count(self) -> int:
        return len(self._subs)

    def _interval_of(self, device_id: str) -> float:
        """The configured interval, or the shortest of the streams that cover the device."""
        intervals = self._stream_intervals[device_id]
        return min(self.interval_s, min(intervals)) if intervals else self.interval_s

    async def _run(self) -> None:
        while True:
            for device_id in self.changes.take():  # changed: streams get it at once
                if device_id in self._due:
                    self._due[device_id] = 0.0
            now = time.monotonic()
            due = [d for d, at in self._due.items() if at <= now + 0.001]
            if due:
                tick = time.monotonic()
                await self.sample(due)
                for device_id in due:
                    self._due[device_id] = max(self._due[device_id] + self._interval_of(device_id),
                                               tick)
            now = time.monotonic()
            current = dict(self._latest)  # one snapshot for every stream due now
            for sub in list(self._subs):
                if now + 0.001 >= sub.next_due:
                    sub.push(current)
                    sub.next_due = max(sub.next_due + sub.interval_s, now)
            next_at = min([*self._due.values(), *(s.next_due for s in self._subs)])
            self._wake.clear()
            waits = [asyncio.ensure_future(self._wake.wait()),
                     asyncio.ensure_future(self.changes.wait())]
            try:
                await asyncio.wait(waits, timeout=max(0.0, next_at - time.monotonic()),
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waits:
                    waiter.cancel()

    async def start(self) -> None:
        await self.sample()
        for device_id in self.devices:
            self._due[device_id] = time.monotonic() + self.interval_s
        self._task = asyncio.create_task(self._run(), name="telemetry-sampler")

    async def stop(self) -> None:
        for sub in list(self._subs):
            self.unsubscribe(sub)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._pool.shutdown(wait=False, cancel_futures=True)
