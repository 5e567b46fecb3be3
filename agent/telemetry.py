"""One sampler reads every device at a fixed interval; requests and streams read its results.

Devices are read concurrently, each bounded by a timeout, so one hung miner or lost GPU delays
nobody: its reading says why it failed and the others carry on. A device whose previous read is
still hanging is not read again (no thread pile-up). Each stream has its own bounded queue that
drops the oldest readings when its reader is slow, and counts them.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TypeVar

import structlog

from agent import convert
from agent.api import pb
from hal.device import Device, DeviceInfo
from hal.errors import HalError

log = structlog.get_logger("rigd.telemetry")
T = TypeVar("T")

WorkloadStatusFn = Callable[[str], "pb.WorkloadStatus | None"]


class Subscription:
    def __init__(self, device_ids: frozenset[str], interval_s: float, queue_max: int) -> None:
        self.device_ids = device_ids
        self.interval_s = interval_s
        self.queue: collections.deque[list[pb.DeviceTelemetry]] = collections.deque(
            maxlen=queue_max
        )
        self.dropped = 0
        self.sequence = 0
        self.closed = False
        self.next_due = 0.0
        self.cond = threading.Condition()

    def push(self, readings: list[pb.DeviceTelemetry]) -> None:
        with self.cond:
            if len(self.queue) == self.queue.maxlen:
                self.dropped += 1
            self.queue.append(readings)
            self.cond.notify()

    def get(self, timeout_s: float) -> list[pb.DeviceTelemetry] | None:
        with self.cond:
            if not self.queue and not self.closed:
                self.cond.wait(timeout_s)
            if not self.queue:
                return None
            self.sequence += 1
            return self.queue.popleft()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


def _reading(device: Device) -> pb.DeviceTelemetry:
    return convert.telemetry(device.telemetry())


class TelemetryCollector:
    def __init__(
        self,
        devices: Iterable[Device],
        interval_s: float,
        device_timeout_s: float,
        workload_status: WorkloadStatusFn | None = None,
    ) -> None:
        self.devices = {d.id: d for d in devices}
        self.interval_s = interval_s
        self.device_timeout_s = device_timeout_s
        self._workload_status = workload_status
        self._pool = ThreadPoolExecutor(
            max_workers=min(64, max(4, 2 * len(self.devices))), thread_name_prefix="telemetry"
        )
        self._inflight: dict[str, Future[pb.DeviceTelemetry]] = {}
        self._info_inflight: dict[str, Future[DeviceInfo]] = {}
        self._info_cache: dict[str, DeviceInfo] = {}
        self._latest: dict[str, pb.DeviceTelemetry] = {}
        self._latest_at = 0.0
        self._lock = threading.Lock()
        self._sample_lock = threading.Lock()
        self._subs: set[Subscription] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- sampling -------------------------------------------------------------------------

    def _read_all(
        self, read: Callable[[Device], T], inflight: dict[str, Future[T]]
    ) -> dict[str, T | str]:
        """read(device) for every device at once, each within the timeout; a failure becomes
        the one-line reason. A device whose previous read still hangs is not read again."""
        futures: dict[str, Future[T]] = {}
        results: dict[str, T | str] = {}
        for device_id, device in self.devices.items():
            previous = inflight.get(device_id)
            if previous is not None and not previous.done():
                results[device_id] = "timeout: previous read still running"
                continue
            futures[device_id] = inflight[device_id] = self._pool.submit(read, device)
        deadline = time.monotonic() + self.device_timeout_s
        for device_id, future in futures.items():
            try:
                results[device_id] = future.result(max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                results[device_id] = f"timeout: no answer within {self.device_timeout_s:g} s"
            except HalError as exc:
                results[device_id] = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # a backend bug is reported, not fatal
                log.exception("device_read_failed", device_id=device_id)
                results[device_id] = f"internal error: {type(exc).__name__}: {exc}"
        return results

    def infos(self) -> dict[str, DeviceInfo | str]:
        """Inventory facts, read like telemetry; the last good answer stands in for a device
        that is slow or unreachable now (a reason string when there never was one)."""
        results = self._read_all(lambda device: device.info(), self._info_inflight)
        for device_id, result in results.items():
            if isinstance(result, DeviceInfo):
                self._info_cache[device_id] = result
            elif device_id in self._info_cache:
                results[device_id] = self._info_cache[device_id]
        return results

    def sample(self) -> dict[str, pb.DeviceTelemetry]:
        """Read every device now (concurrently, each within the timeout)."""
        with self._sample_lock:
            started = time.time()
            readings: dict[str, pb.DeviceTelemetry] = {}
            for device_id, result in self._read_all(_reading, self._inflight).items():
                readings[device_id] = (
                    convert.failed_telemetry(device_id, self.devices[device_id].kind, result,
                                             started)
                    if isinstance(result, str) else result
                )
            if self._workload_status is not None:
                for device_id, reading in readings.items():
                    status = self._workload_status(device_id)
                    if status is not None:
                        reading.workload.CopyFrom(status)
                        if not reading.HasField("hashrate_hs") and status.HasField("hashrate_hs"):
                            reading.hashrate_hs = status.hashrate_hs
            with self._lock:
                self._latest = readings
                self._latest_at = time.monotonic()
            return readings

    def latest(self, device_ids: Iterable[str] = (), max_age_s: float | None = None) -> list[
        pb.DeviceTelemetry
    ]:
        """Readings no older than max_age_s, in device order.

        The default allows two sampling intervals: the sampler refreshes every interval, so a
        request never pays for a synchronous read unless the sampler is stuck.
        """
        wanted = list(device_ids) or list(self.devices)
        unknown = [d for d in wanted if d not in self.devices]
        if unknown:
            raise KeyError(", ".join(unknown))
        max_age = 2 * self.interval_s if max_age_s is None else max_age_s
        with self._lock:
            fresh = time.monotonic() - self._latest_at <= max_age
            readings = self._latest
        if not fresh or any(d not in readings for d in wanted):
            readings = self.sample()
        return [readings[d] for d in wanted]

    # -- streaming ------------------------------------------------------------------------

    def subscribe(
        self, device_ids: Iterable[str], interval_s: float, queue_max: int
    ) -> Subscription:
        ids = frozenset(device_ids)
        unknown = ids - self.devices.keys()
        if unknown:
            raise KeyError(", ".join(sorted(unknown)))
        sub = Subscription(ids, max(interval_s, self.interval_s), queue_max)
        with self._lock:
            self._subs.add(sub)
            latest = dict(self._latest)
        if latest:  # the first message goes out at once, not an interval later
            sub.push(self._select(latest, sub.device_ids))
            sub.next_due = time.monotonic() + sub.interval_s
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.discard(sub)
        sub.close()

    def _select(
        self, readings: dict[str, pb.DeviceTelemetry], ids: frozenset[str]
    ) -> list[pb.DeviceTelemetry]:
        return [r for d, r in readings.items() if not ids or d in ids]

    def _run(self) -> None:
        while not self._stop.is_set():
            tick = time.monotonic()
            readings = self.sample()
            with self._lock:
                subs = list(self._subs)
            now = time.monotonic()
            for sub in subs:
                if now + 0.001 >= sub.next_due:
                    sub.push(self._select(readings, sub.device_ids))
                    sub.next_due = max(sub.next_due + sub.interval_s, now)
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - tick)))

    def start(self) -> None:
        self.sample()
        self._thread = threading.Thread(target=self._run, name="telemetry-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            subs = list(self._subs)
            self._subs.clear()
        for sub in subs:
            sub.close()
        if self._thread is not None:
            self._thread.join(timeout=self.device_timeout_s + 1)
        self._pool.shutdown(wait=False, cancel_futures=True)
