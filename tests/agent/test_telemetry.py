"""The sampler: slow streams drop the oldest readings and count them; a hung device delays none."""

from __future__ import annotations

import threading
import time

from agent.telemetry import TelemetryCollector
from hal.device import Device, DeviceInfo, DeviceKind, Telemetry
from hal.errors import DeviceLost
from hal.host import HostDevice


class HangingDevice(Device):
    """A device whose reads block until released: what a wedged driver or miner looks like."""

    kind = DeviceKind.ASIC

    def __init__(self) -> None:
        self.id = "asic/127.0.0.1:1"
        self.release = threading.Event()
        self.calls = 0

    def info(self) -> DeviceInfo:
        return DeviceInfo(self.id, self.kind, "hangs")

    def telemetry(self) -> Telemetry:
        self.calls += 1
        self.release.wait(10)
        return Telemetry(self.id, self.kind)


class LostDevice(HangingDevice):
    def telemetry(self) -> Telemetry:
        raise DeviceLost("fell off the bus")


def test_slow_stream_drops_oldest_and_counts() -> None:
    collector = TelemetryCollector([HostDevice()], interval_s=0.1, device_timeout_s=1)
    collector.start()
    try:
        sub = collector.subscribe([], interval_s=0.1, queue_max=2)
        time.sleep(1.0)  # a reader that does not read
        assert sub.dropped >= 4
        first, second = sub.get(0.1), sub.get(0.1)
        assert first is not None and second is not None
        t1, t2 = first[0].time.ToNanoseconds(), second[0].time.ToNanoseconds()
        assert t1 < t2
        assert time.time_ns() - t2 < 0.5e9, "the newest readings are kept"
    finally:
        collector.stop()
    assert sub.closed


def test_hung_device_times_out_without_delaying_others_or_piling_threads() -> None:
    hanging = HangingDevice()
    collector = TelemetryCollector([HostDevice(), hanging], interval_s=1, device_timeout_s=0.3)
    try:
        started = time.monotonic()
        readings = collector.sample()
        assert time.monotonic() - started < 1.0
        assert not readings[hanging.id].HasField("power_w")
        assert "timeout" in readings[hanging.id].error
        host = next(r for k, r in readings.items() if k.startswith("host/"))
        assert host.error == "" and host.HasField("host")
        collector.sample()
        assert hanging.calls == 1, "a device still hanging is not read again"
        assert "still running" in collector.sample()[hanging.id].error
        hanging.release.set()
        time.sleep(0.1)
        assert collector.sample()[hanging.id].error == ""
    finally:
        hanging.release.set()
        collector.stop()


def test_lost_device_is_reported_unhealthy_with_its_reason() -> None:
    lost = LostDevice()
    collector = TelemetryCollector([lost, HostDevice()], interval_s=1, device_timeout_s=1)
    try:
        reading = collector.sample()[lost.id]
        assert reading.error == "DeviceLost: fell off the bus"
        assert reading.health.reason == reading.error
    finally:
        collector.stop()


class HangingInfoDevice(HangingDevice):
    """Answers info() until `hang` is set, then blocks like a wedged miner."""

    def __init__(self) -> None:
        super().__init__()
        self.hang = threading.Event()

    def info(self) -> DeviceInfo:
        if self.hang.is_set():
            self.release.wait(10)
        return DeviceInfo(self.id, self.kind, "hangs sometimes", model="S19")


def test_inventory_facts_are_bounded_and_fall_back_to_the_last_answer() -> None:
    never = HangingDevice()
    never.info = lambda: (never.release.wait(10), DeviceInfo(never.id, never.kind, "x"))[1]  # type: ignore[method-assign]
    sometimes = HangingInfoDevice()
    sometimes.id = "asic/127.0.0.1:2"
    collector = TelemetryCollector([never, sometimes], interval_s=1, device_timeout_s=0.3)
    try:
        first = collector.infos()
        assert isinstance(first[never.id], str) and "timeout" in first[never.id]
        assert isinstance(first[sometimes.id], DeviceInfo)
        sometimes.hang.set()
        started = time.monotonic()
        second = collector.infos()
        assert time.monotonic() - started < 1.0
        assert second[sometimes.id] == first[sometimes.id], "the last good answer stands in"
        assert second[never.id] == "timeout: previous read still running"
    finally:
        never.release.set()
        sometimes.release.set()
        collector.stop()
