"""One sampler reads the devices; requests and streams read its results.

Each device is read on a schedule of its own, and each read completes into the latest readings
by itself: a pass never waits for its slowest device. A pass is spread over the interval (of N
devices, the k-th is read k/N of an interval after the first), so thousands of miners are not
all asked in the same millisecond. A miner (a device with `async_io`) is read on rigd's own
event loop with telemetry_async(), holding no thread; every other device in a thread of the
sampler's pool, unaffected by the miners. Every read ends at the device timeout: a miner's is
cancelled then; a thread cannot be, so a device whose thread still hangs is not read again
until it returns. A device has at most one read in flight, which a request joins.

A device whose read failed is stale: its reading says why, and how long ago its last good
reading was (and when). It is tried again with backoff, one interval after the failure, then
two, four... at most MAX_BACKOFF_S, not every pass; meanwhile each of its passes re-issues the
stale reading without touching the device. A change to the device (a power write, a switch),
or a request for a fresher reading than the sampler has, reads it at once.

Each device is read at the configured interval, or faster while a stream that covers it asks for
a shorter one (never below MIN_INTERVAL_S). Each stream keeps only the newest readings it has
not sent (agent/runtime/subscriptions.py): while its reader is slow the older ones are replaced
and counted, so what it sends is the newest, with a true count of what it lost.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import math
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

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
MAX_BACKOFF_S = 30.0  # a failing device is tried at least this often
BATCH_S = 0.01  # reads due this close together start together
# Reads started in one turn of the event loop, at most: a loop with more to do than it can
# (a busy machine) turns more slowly, so reads start later rather than all time out.
READS_PER_TURN = 32
# The schedule's reads begun less than YOUTH_S ago and not ended, at most: on a machine too busy
# to finish them in time the passes stretch (fewer devices read per interval, each read
# good) rather than every read running past its deadline. A hung miner's read holds its place
# for YOUTH_S only. Reads a request or a change asks for are not held.
YOUNG_READS = 64
YOUTH_S = 0.5
# The first pass is spread over the interval, or this long where the interval is longer (a
# rig sampled hourly still has every reading within a second or two of its start).
FIRST_PASS_S = 1.0
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


@dataclass(slots=True)
class _Read:
    """A device's read in flight: its task settles the reading into the latest."""

    begun: float  # monotonic
    task: asyncio.Task[None] | None = None
    aging: asyncio.TimerHandle | None = None  # while it holds a place among the young reads


@dataclass(slots=True)
class _Failing:
    """A device whose latest read failed: why, how many times in a row, when to try again."""

    reason: str
    count: int
    retry_at: float  # monotonic
    begun: float  # monotonic start of the read that failed


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
        threaded = sum(1 for d in self.devices.values() if not d.async_io)
        self._pool = ThreadPoolExecutor(
            max_workers=min(64, max(4, 2 * threaded)), thread_name_prefix="telemetry")
        self._reads: dict[str, _Read] = {}
        self._threads: _Inflight[Telemetry] = {}  # a thread may outlive its read's deadline
        self._info_inflight: _Inflight[DeviceInfo] = {}
        self._info_reads: dict[str, asyncio.Task[DeviceInfo | str]] = {}
        self._info_cache: dict[str, DeviceInfo] = {}
        self._latest: dict[str, Reading] = {}
        self._last_good: dict[str, Reading] = {}
        self._failing: dict[str, _Failing] = {}
        self._read_at: dict[str, float] = {}  # monotonic time of each device's latest reading
        self._read_begun: dict[str, float] = {}  # ... and the time that read began
        self._due: dict[str, float] = dict.fromkeys(self.devices, 0.0)
        self._queue: list[tuple[float, str]] = []  # (due, device id); stale entries skipped
        self._place: dict[str, float] = {}  # a device's place in the pass after the first
        self._subs: set[Subscription] = set()
        self._pushes: set[asyncio.Task[None]] = set()  # stream messages waiting for reads
        # device id -> how many open streams ask for each interval (the shortest one applies)
        self._stream_intervals: dict[str, collections.Counter[float]] = {
            d: collections.Counter() for d in self.devices}
        self._wake = asyncio.Event()
        self._all_read = asyncio.Event()  # every device has a reading
        if not self.devices:
            self._all_read.set()
        self._task: asyncio.Task[None] | None = None
        self._young = 0  # scheduled reads holding a place (YOUNG_READS)
        self.samples_taken = 0
        self.reads = 0  # reads ended (answered, failed or abandoned), for benchmarks

    # -- one device's read -------------------------------------------------------------------

    def _start(self, device_id: str, scheduled: bool = False) -> _Read:
        read = _Read(time.monotonic())
        if scheduled:
            self._young += 1
            read.aging = asyncio.get_running_loop().call_later(YOUTH_S, self._grown, read)
        read.task = asyncio.create_task(self._read(device_id, read),
                                        name=f"read {device_id}")
        self._reads[device_id] = read
        return read

    def _grown(self, read: _Read) -> None:
        """The read ended or grew old: its place among the young reads is free."""
        if read.aging is not None:
            read.aging.cancel()
            read.aging = None
            self._young -= 1
            self._wake.set()

    async def _read(self, device_id: str, read: _Read) -> None:
        device = self.devices[device_id]
        started = time.time()
        result: Telemetry | str
        try:
            if device.async_io:
                async with asyncio.timeout(self.device_timeout_s):
                    result = await device.telemetry_async()
            else:
                result = await self._in_thread(device, read.begun)
        except TimeoutError:
            result = f"timeout: no answer within {self.device_timeout_s:g} s"
        except _StillRunning:
            result = "timeout: previous read still running"
        except Exception as exc:
            if not isinstance(exc, HalError):
                log.error("device_read_failed", device_id=device_id, error=repr(exc))
            result = describe_error(exc)
        finally:
            self._grown(read)
            if self._reads.get(device_id) is read:
                del self._reads[device_id]
        self.reads += 1
        self._settle(device_id, result, read.begun, started)
        if (self.changes.changed_at(device_id) >= read.begun and self._task is not None
                and not self._task.done() and device_id not in self._reads):
            self._start(device_id)  # changed while it was read: this reading is not fresh

    async def _in_thread(self, device: Device, begun: float) -> Telemetry:
        """device.telemetry() in the pool, within the timeout; a thread still hanging from an
        earlier read (past its timeout) is not joined and no new one starts."""
        previous = self._threads.get(device.id)
        if previous is not None and not previous[0].done():
            future, started = previous
            if begun - started >= self.device_timeout_s:
                raise _StillRunning
        else:
            future, started = self._pool.submit(device.telemetry), begun
            self._threads[device.id] = (future, started)
        remaining = max(0.0, started + self.device_timeout_s - time.monotonic())
        done, _pending = await asyncio.wait([asyncio.wrap_future(future)], timeout=remaining)
        if not done:
            raise TimeoutError
        return done.pop().result()

    def _settle(self, device_id: str, result: Telemetry | str, begun: float,
                started_unix_s: float) -> None:
        """A read's result becomes the device's latest reading; a failure also decides when the
        device is tried again."""
        now = time.monotonic()
        if isinstance(result, Telemetry):
            reading = self.enrich(Reading(result))
            self._last_good[device_id] = reading
            self._failing.pop(device_id, None)
        else:
            failing = self._failing.get(device_id)
            count = 1 if failing is None else failing.count + 1
            self._failing[device_id] = _Failing(result, count, now + self._backoff_s(count),
                                                begun)
            reading = self.enrich(failed_reading(self.devices[device_id],
                                                 self._stale_text(device_id, result),
                                                 started_unix_s))
        self._latest[device_id] = reading
        self._read_at[device_id] = now
        self._read_begun[device_id] = begun
        if len(self._latest) == len(self.devices):
            self._all_read.set()

    def _backoff_s(self, failures: int) -> float:
        """How long after its failure a device is tried again: an interval, doubled with each
        failure in a row, at most MAX_BACKOFF_S (or the interval where that is longer)."""
        return min(self.interval_s * 2 ** min(failures - 1, 16),
                   max(self.interval_s, MAX_BACKOFF_S))

    def _stale_text(self, device_id: str, reason: str, next_try_s: float | None = None
                    ) -> str:
        """The reason, and the device's last good reading: how long ago and when."""
        notes = []
        good = self._last_good.get(device_id)
        if good is not None:
            at = good.telemetry.timestamp_unix_s
            stamp = datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")
            notes.append(f"last good reading {max(0.0, time.time() - at):.0f} s ago at "
                         f"{stamp.replace('+00:00', 'Z')}")
        elif next_try_s is not None:
            notes.append("never read")
        if next_try_s is not None:
            notes.append(f"next try in {next_try_s:.0f} s")
        return f"{reason}; stale: {', '.join(notes)}" if notes else reason

    def _mark_stale(self, device_id: str, failing: _Failing, now: float) -> None:
        """A pass of a device that is waiting out its backoff: the failure again, as of now."""
        device = self.devices[device_id]
        text = self._stale_text(device_id, failing.reason, max(0.0, failing.retry_at - now))
        self._latest[device_id] = self.enrich(failed_reading(device, text, time.time()))
        self._read_at[device_id] = now
        self._read_begun[device_id] = failing.begun

    # -- reading on request ------------------------------------------------------------------

    async def _read_after(self, device_id: str, older: _Read, begun_after: float) -> None:
        """Wait out a read that began before `begun_after`, then read the device again (or join
        a read someone else started after it)."""
        if older.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(older.task)
        read = self._reads.get(device_id)
        if read is None or read.begun < begun_after:
            read = self._start(device_id)
        assert read.task is not None
        await asyncio.shield(read.task)

    async def _read_all(
        self, ids: Iterable[str], read: Callable[[Device], T], inflight: _Inflight[T],
    ) -> dict[str, T | str]:
        """read(device) in a thread for each id at once, each within the timeout; a failure
        becomes its one-line reason. A read already under way is joined; one that has run
        past the timeout (a hung device) is not waited for and no new one starts."""
        ids = list(ids)
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

    async def _info_read(self, device: Device) -> DeviceInfo | str:
        try:
            async with asyncio.timeout(self.device_timeout_s):
                return await device.info_async()
        except TimeoutError:
            return f"timeout: no answer within {self.device_timeout_s:g} s"
        except Exception as exc:
            if not isinstance(exc, HalError):
                log.error("device_info_failed", device_id=device.id, error=repr(exc))
            return describe_error(exc)
        finally:
            self._info_reads.pop(device.id, None)

    async def _infos_async(self, ids: list[str]) -> dict[str, DeviceInfo | str]:
        """Miners' inventory facts on the loop; one whose reads are failing is not asked
        (the last good answer, or the reason its reads fail, stands in at once)."""
        results: dict[str, DeviceInfo | str] = {}
        tasks: dict[str, asyncio.Task[DeviceInfo | str]] = {}
        for device_id in ids:
            failing = self._failing.get(device_id)
            if failing is not None:
                results[device_id] = failing.reason
                continue
            task = self._info_reads.get(device_id)
            if task is None:
                task = asyncio.create_task(self._info_read(self.devices[device_id]))
                self._info_reads[device_id] = task
            tasks[device_id] = task
        if tasks:
            await asyncio.wait([asyncio.shield(t) for t in tasks.values()])
            results.update({d: t.result() for d, t in tasks.items()})
        return results

    async def infos(self) -> dict[str, DeviceInfo | str]:
        """Inventory facts, read like telemetry; the last good answer stands in for a device
        that is slow or unreachable now (a reason string when there never was one)."""
        threaded = [d for d, device in self.devices.items() if not device.async_io]
        native = [d for d, device in self.devices.items() if device.async_io]
        found: dict[str, DeviceInfo | str] = {}
        for part in await asyncio.gather(
                self._read_all(threaded, lambda d: d.info(), self._info_inflight),
                self._infos_async(native)):
            found.update(part)
        results: dict[str, DeviceInfo | str] = {}
        for device_id in self.devices:
            result = found[device_id]
            if isinstance(result, DeviceInfo):
                self._info_cache[device_id] = result
            elif device_id in self._info_cache:
                result = self._info_cache[device_id]
            results[device_id] = result
        return results

    async def sample(self, ids: Iterable[str] | None = None, begun_after: float | None = None
                     ) -> dict[str, Reading]:
        """Read these devices (every device by default) now and make them the latest; a read
        under way that began before `begun_after` (monotonic) does not count as now, one that
        began after it is joined. Each read ends at the device timeout."""
        wanted = list(self.devices if ids is None else ids)
        waits: list[asyncio.Future[None]] = []
        for device_id in wanted:
            read = self._reads.get(device_id)
            if read is None:
                read = self._start(device_id)
            elif begun_after is not None and read.begun < begun_after:
                waits.append(asyncio.ensure_future(
                    self._read_after(device_id, read, begun_after)))
                continue
            assert read.task is not None
            waits.append(asyncio.shield(read.task))
        if waits:
            await asyncio.wait(waits)
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

    def last_good(self, device_id: str) -> Reading | None:
        """The device's latest reading that did not fail (None: none yet)."""
        return self._last_good.get(device_id)

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
                self._set_due(device_id, min(self._due[device_id], now + sub.interval_s))
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

    # -- the schedule ------------------------------------------------------------------------

    def _set_due(self, device_id: str, at: float) -> None:
        if self._due[device_id] != at:
            self._due[device_id] = at
            heapq.heappush(self._queue, (at, device_id))

    def _pass(self, device_id: str, now: float) -> bool:
        """The device's turn: read it, unless a read is in flight or it waits out a failure.
        Whether a read started."""
        if device_id in self._reads:
            return False
        failing = self._failing.get(device_id)
        if failing is not None and now < failing.retry_at:
            self._mark_stale(device_id, failing, now)
            return False
        self._start(device_id, scheduled=True)
        return True

    def _push(self, sub: Subscription, current: dict[str, Reading]) -> None:
        """The stream's readings (`current`: a snapshot of the latest, shared by the streams due
        now), once the reads begun for this message have ended (reads complete by themselves),
        or half its interval later whatever they do."""
        begun = sub.next_due - 2 * BATCH_S
        reads = [r.task for d, r in self._reads.items()
                 if r.begun >= begun and r.task is not None and sub.covers(d)]
        if not reads:
            sub.push(current)
            return

        async def after() -> None:
            await asyncio.wait(reads, timeout=min(sub.interval_s / 2, self.device_timeout_s))
            if sub in self._subs:
                sub.push(dict(self._latest))

        task = asyncio.create_task(after())
        self._pushes.add(task)
        task.add_done_callback(self._pushes.discard)

    async def _run(self) -> None:
        while True:
            for device_id in self.changes.take():
                # changed: read at once, failing or not (one in flight reads again when it
                # ends); its place in the pass stays
                if device_id in self.devices and device_id not in self._reads:
                    self._start(device_id)
            now = time.monotonic()
            started = 0
            while self._queue and self._queue[0][0] <= now + BATCH_S \
                    and started < READS_PER_TURN and self._young < YOUNG_READS:
                at, device_id = heapq.heappop(self._queue)
                if self._due.get(device_id) != at:
                    continue  # superseded by a later entry
                started += self._pass(device_id, now)
                step = self._interval_of(device_id)
                later = self._place.pop(device_id, at) + step
                if later <= now:  # fallen behind (a stalled loop): its next place in the pass
                    later += step * math.ceil((now - later) / step)
                self._set_due(device_id, later)
            if started:
                self.samples_taken += 1
            now = time.monotonic()
            due_subs = [sub for sub in self._subs if now + BATCH_S >= sub.next_due]
            current = dict(self._latest) if due_subs else {}  # one snapshot for them all
            for sub in due_subs:
                self._push(sub, current)
                sub.next_due = max(sub.next_due + sub.interval_s, now)
            if started == READS_PER_TURN:  # more due: after the loop's next turn
                await asyncio.sleep(0)
                continue
            due_at = self._queue[0][0] if self._queue else now + self.interval_s
            if self._young >= YOUNG_READS:  # until a place is free (_wake)
                due_at = max(due_at, now + YOUTH_S)
            next_at = min([due_at, *(s.next_due for s in self._subs)])
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
        """The first pass, spread over one interval (FIRST_PASS_S at most); returns once every
        device has a reading (each read ends at the device timeout)."""
        now = time.monotonic()
        count = max(1, len(self.devices))
        spread_s = min(self.interval_s, FIRST_PASS_S)
        for k, device_id in enumerate(self.devices):
            self._due[device_id] = now + k * spread_s / count
            self._place[device_id] = now + k * self.interval_s / count  # in the next passes
            heapq.heappush(self._queue, (self._due[device_id], device_id))
        self._task = asyncio.create_task(self._run(), name="telemetry-sampler")
        all_read = asyncio.ensure_future(self._all_read.wait())
        await asyncio.wait([all_read, self._task], return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            all_read.cancel()
            self._task.result()  # raises what ended it

    async def stop(self) -> None:
        for sub in list(self._subs):
            self.unsubscribe(sub)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        tasks: list[asyncio.Task[Any]] = [r.task for r in self._reads.values()
                                           if r.task is not None]
        tasks += self._info_reads.values()
        tasks += self._pushes
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._pool.shutdown(wait=False, cancel_futures=True)


class _StillRunning(Exception):
    """A device's earlier read still holds its thread, past its timeout."""
