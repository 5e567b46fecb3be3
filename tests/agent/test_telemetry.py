"""The sampler: streams get their own interval; slow streams drop the oldest readings and count
them; a hung device delays nobody and is not read again while it hangs."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

import pytest

import hal.asic
from agent.runtime.changes import DeviceChanges
from agent.runtime.sampler import Sampler
from hal.asic.base import CONNECTIONS_PER_READ
from hal.device import Device, DeviceInfo, DeviceKind, HealthState, Telemetry
from hal.errors import DeviceLost
from hal.host import HostDevice
from hal.sim.asic import Fault, SimFleet

T = TypeVar("T")


def run(body: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(body())  # type: ignore[arg-type]


class CountingDevice(Device):
    """Counts its reads; answers at once."""

    kind = DeviceKind.OPENCL

    def __init__(self, device_id: str) -> None:
        self.id = device_id
        self.reads = 0

    def info(self) -> DeviceInfo:
        return DeviceInfo(self.id, self.kind, "counter")

    def telemetry(self) -> Telemetry:
        self.reads += 1
        return Telemetry(self.id, self.kind, utilization_pct=float(self.reads))


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


def sampler_of(devices: list[Any], interval_s: float, device_timeout_s: float) -> Sampler:
    """A sampler of its own change ledger that keeps readings as the devices give them."""
    return Sampler(devices, interval_s, device_timeout_s, DeviceChanges(), lambda r: r)


async def read_under_way(sampler: Sampler, slow: HangingDevice) -> asyncio.Future[Any]:
    """A sampler read that has reached the device and blocks there."""
    calls = slow.calls
    reading = asyncio.ensure_future(sampler.sample())
    while slow.calls == calls:
        await asyncio.sleep(0.01)
    return reading


class LostDevice(HangingDevice):
    def telemetry(self) -> Telemetry:
        raise DeviceLost("GPU fell off the bus")


def test_slow_stream_keeps_the_newest_and_counts_the_rest() -> None:
    async def body() -> None:
        sampler = sampler_of([HostDevice()], interval_s=0.1, device_timeout_s=1)
        await sampler.start()
        try:
            sub = sampler.subscribe([], interval_s=0.1)
            await asyncio.sleep(1.0)  # a reader that does not read
            assert sub.dropped >= 4
            first = await sub.get()
            assert sub.sequence == sub.produced and sub.dropped == sub.sequence - 1, \
                "every set produced is the one taken or counted as dropped"
            second = await sub.get()
            assert first is not None and second is not None
            (t1,) = (r.telemetry.timestamp_unix_s for r in first.values())
            (t2,) = (r.telemetry.timestamp_unix_s for r in second.values())
            assert t1 < t2
            assert time.time() - t2 < 0.5, "the newest readings are kept"
        finally:
            await sampler.stop()
        assert sub.closed and await sub.get() is None

    run(body)


def test_a_fast_stream_is_served_at_its_interval_for_its_devices_only() -> None:
    """interval_ms below the sampling interval is honoured, and only for the devices asked."""

    async def body() -> None:
        fast, slow = CountingDevice("opencl/fast"), CountingDevice("opencl/slow")
        sampler = sampler_of([fast, slow], interval_s=2.0, device_timeout_s=1)
        await sampler.start()
        try:
            sub = sampler.subscribe([fast.id], interval_s=0.1)
            fast_before, slow_before = fast.reads, slow.reads
            stamps = []
            for _ in range(8):
                readings = await sub.get()
                assert readings is not None and list(readings) == [fast.id]
                stamps.append(readings[fast.id].telemetry.timestamp_unix_s)
            assert fast.reads - fast_before >= 6, "the stream's device is read at its interval"
            assert slow.reads - slow_before <= 1, "other devices keep the configured interval"
            gaps = [b - a for a, b in itertools.pairwise(stamps[1:])]
            assert all(gap < 1.0 for gap in gaps), f"readings are fresh each time: {gaps}"
            sampler.unsubscribe(sub)
            await asyncio.sleep(0.5)
            after = fast.reads
            await asyncio.sleep(0.6)
            assert fast.reads - after <= 1, "the device slows down once the stream is gone"
        finally:
            await sampler.stop()

    run(body)


def test_hung_device_times_out_without_delaying_others_or_piling_threads() -> None:
    async def body() -> None:
        hanging = HangingDevice()
        host = HostDevice()
        sampler = sampler_of([host, hanging], interval_s=1, device_timeout_s=0.3)
        try:
            started = time.monotonic()
            readings = await sampler.sample()
            assert time.monotonic() - started < 1.0
            assert readings[hanging.id].telemetry.power_w is None
            assert "timeout" in readings[hanging.id].error
            assert readings[hanging.id].telemetry.health.state == HealthState.UNHEALTHY
            assert readings[host.id].error == "" and readings[host.id].telemetry.host is not None
            await sampler.sample()
            assert hanging.calls == 1, "a device still hanging is not read again"
            assert "still running" in (await sampler.sample())[hanging.id].error
            hanging.release.set()
            deadline = time.monotonic() + 10
            while (await sampler.sample())[hanging.id].error:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
        finally:
            hanging.release.set()
            await sampler.stop()

    run(body)


def test_a_read_under_way_is_joined_not_reported_as_a_failure() -> None:
    """A request that arrives while the sampler reads a device waits for that same read."""

    async def body() -> None:
        slow = HangingDevice()
        sampler = sampler_of([slow], interval_s=1, device_timeout_s=5)
        try:
            first = await read_under_way(sampler, slow)
            second = asyncio.ensure_future(sampler.sample())
            await asyncio.sleep(0.05)
            slow.release.set()
            a, b = await first, await second
            assert a[slow.id].error == "" and b[slow.id].error == ""
            assert slow.calls == 1
        finally:
            slow.release.set()
            await sampler.stop()

    run(body)


def test_lost_device_is_reported_unhealthy_with_its_reason() -> None:
    async def body() -> None:
        lost = LostDevice()
        sampler = sampler_of([lost, HostDevice()], interval_s=1, device_timeout_s=1)
        try:
            reading = (await sampler.sample())[lost.id]
            assert reading.error == "GPU fell off the bus"
            assert reading.telemetry.health.reason == reading.error
        finally:
            await sampler.stop()

    run(body)


class HangingInfoDevice(HangingDevice):
    """Answers info() until `hang` is set, then blocks like a wedged miner."""

    def __init__(self) -> None:
        super().__init__()
        self.hang = threading.Event()

    def info(self) -> DeviceInfo:
        if self.hang.is_set():
            self.release.wait(10)
        return DeviceInfo(self.id, self.kind, "hangs sometimes", model="S19")


class NeverAnswers(HangingDevice):
    def info(self) -> DeviceInfo:
        self.release.wait(10)
        return DeviceInfo(self.id, self.kind, "x")


def test_inventory_facts_are_bounded_and_fall_back_to_the_last_answer() -> None:
    async def body() -> None:
        never = NeverAnswers()
        sometimes = HangingInfoDevice()
        sometimes.id = "asic/127.0.0.1:2"
        sampler = sampler_of([never, sometimes], interval_s=1, device_timeout_s=0.3)
        try:
            first = await sampler.infos()
            assert isinstance(first[never.id], str) and "timeout" in first[never.id]
            assert isinstance(first[sometimes.id], DeviceInfo)
            sometimes.hang.set()
            started = time.monotonic()
            second = await sampler.infos()
            assert time.monotonic() - started < 1.0
            assert second[sometimes.id] == first[sometimes.id], "the last good answer stands in"
            assert second[never.id] == "timeout: previous read still running"
        finally:
            never.release.set()
            sometimes.release.set()
            await sampler.stop()

    run(body)


def test_a_read_begun_before_a_change_does_not_count_after_it() -> None:
    """A power write or a switch invalidates the device's reading: a read under way when the
    device changed is neither joined nor kept as fresh, however lenient the request."""

    async def body() -> None:
        slow = HangingDevice()
        sampler = sampler_of([slow], interval_s=1, device_timeout_s=5)
        try:
            under_way = await read_under_way(sampler, slow)
            sampler.changes.mark(slow.id)  # e.g. its power limit was just written
            asked = asyncio.ensure_future(sampler.latest([slow.id], max_age_s=60))
            await asyncio.sleep(0.05)
            slow.release.set()
            await under_way
            await asked
            assert slow.calls == 2, "read again after the change, not joined"
            await sampler.latest([slow.id], max_age_s=60)
            assert slow.calls == 2, "and the new reading counts as fresh"

            sampler.changes.mark(slow.id)
            slow.release.clear()
            under_way = await read_under_way(sampler, slow)  # begun after the change
            slow.release.set()
            await under_way
            await sampler.latest([slow.id], max_age_s=60)
            assert slow.calls == 3, "a read begun after the change is fresh"
        finally:
            slow.release.set()
            await sampler.stop()

    run(body)


def test_a_read_that_ends_after_a_change_is_not_served_as_fresh_afterwards() -> None:
    """The read under way when the device changed ends first; a caller asking only then (however
    lenient its max age) is not served that reading: the device is read again."""

    async def body() -> None:
        slow = HangingDevice()
        sampler = sampler_of([slow], interval_s=1, device_timeout_s=5)
        try:
            under_way = await read_under_way(sampler, slow)
            sampler.changes.mark(slow.id)  # e.g. a switch stopped its workload
            slow.release.set()
            await under_way  # the old reading is the latest now, taken before the change
            await sampler.latest([slow.id], max_age_s=60)
            assert slow.calls == 2, "served the reading from before the change"
        finally:
            slow.release.set()
            await sampler.stop()

    run(body)


def test_a_fresh_reading_is_never_one_begun_before_it_was_asked_for() -> None:
    """GetTelemetry(max_age_ms=1) right after a fault must see the fault: a read begun before
    the request is waited for, then the device is read again."""

    async def body() -> None:
        slow = HangingDevice()
        sampler = sampler_of([slow], interval_s=1, device_timeout_s=5)
        try:
            before = await read_under_way(sampler, slow)
            fresh = asyncio.ensure_future(sampler.latest([slow.id], max_age_s=0.001))
            await asyncio.sleep(0.05)
            slow.release.set()
            await before
            reading = (await fresh)[slow.id]
            assert slow.calls == 2, "the device was read again after the request"
            assert reading.error == ""
        finally:
            slow.release.set()
            await sampler.stop()

    run(body)


# ---- miners: read on the sampler's own loop, each in its place in the pass ------------------


def simulated_miners(fleet: SimFleet, timeout_s: float) -> list[Device]:
    options = fleet.discover_options()
    for entry in options["miners"]:
        entry["timeout_s"] = timeout_s
    return hal.asic.discover(options)


@pytest.fixture
def mixed_fleet() -> Iterator[tuple[SimFleet, list[Device]]]:
    """Nine simulated miners of three families, the first three hung."""
    fleet = SimFleet.of(["luxos", "antminer", "whatsminer"] * 3, warmup_s=0.0).start()
    try:
        miners = simulated_miners(fleet, timeout_s=5.0)
        for index in range(3):
            fleet.set_fault(index, Fault.HANG)
        yield fleet, miners
    finally:
        fleet.stop()


def test_miners_are_read_on_the_loop_in_passes_that_wait_for_no_hung_one(
        mixed_fleet: tuple[SimFleet, list[Device]]) -> None:
    """Every healthy miner has a reading at most an interval (and its read) old whenever it is
    asked, though a third of the fleet hangs for four intervals per read; the reads of a pass
    are spread over the interval; a miner has one read in flight at most, and no thread
    reads it."""
    fleet, miners = mixed_fleet
    hung, healthy = miners[:3], miners[3:]
    interval_s = 0.3

    async def body() -> tuple[float, float]:
        sampler = sampler_of([HostDevice(), *miners], interval_s, device_timeout_s=1.2)
        threads_before = {t.name for t in threading.enumerate()}
        began = time.monotonic()
        await sampler.start()
        started_s = time.monotonic() - began
        try:
            first = [sampler.cached(m.id) for m in healthy]
            stamps = [r.telemetry.timestamp_unix_s for r in first if r is not None]
            assert len(stamps) == len(healthy)
            spread_s = max(stamps) - min(stamps)
            assert spread_s > interval_s / 3, "the first pass is spread over the interval"
            for _ in range(8):
                await asyncio.sleep(interval_s / 2)  # an observer, twice per interval
                readings = await sampler.latest(max_age_s=60)
                now = time.time()
                for miner in healthy:
                    reading = readings[miner.id]
                    assert reading.error == "" and reading.telemetry.hashrate_hs
                    assert now - reading.telemetry.timestamp_unix_s < interval_s + 0.25
                for miner in hung:
                    assert "timeout" in readings[miner.id].error
                assert all(s.open_connections <= CONNECTIONS_PER_READ
                           for s in fleet.miners[:3])
            threads = {t.name for t in threading.enumerate()} - threads_before
            assert len([t for t in threads if t.startswith("telemetry")]) <= 1, \
                f"threads read miners: {sorted(threads)}"  # one for the host, none held
            return started_s, spread_s
        finally:
            await sampler.stop()

    started_s, spread_s = run(body)
    print(f"\nstart {started_s:.2f} s (first pass spread over {spread_s:.2f} s of "
          f"{interval_s} s; hung reads end at 1.2 s)")


def test_a_failing_miner_is_stale_with_its_last_good_reading_and_tried_with_backoff(
        mixed_fleet: tuple[SimFleet, list[Device]]) -> None:
    fleet, miners = mixed_fleet
    sim, miner = fleet.miners[3], miners[3]  # healthy at first
    interval_s = 0.1

    async def body() -> None:
        sampler = sampler_of([miner], interval_s, device_timeout_s=0.2)
        await sampler.start()
        try:
            good = sampler.last_good(miner.id)
            assert good is not None and good.error == ""
            fleet.set_fault(3, Fault.HANG)
            tries_before = sim.connections
            await asyncio.sleep(3.0)  # 30 passes
            tries = sim.connections - tries_before
            # backoff of 1, 2, 4, 8, 16 intervals after 0.2 s failures: 5 or 6 tries
            assert 3 <= tries <= 8, f"tried {tries} times in 30 passes"
            reading = sampler.cached(miner.id)
            assert reading is not None
            stamp = datetime.fromtimestamp(good.telemetry.timestamp_unix_s, UTC)
            assert reading.error.startswith("timeout: no answer within 0.2 s; stale: "
                                            "last good reading 3 s ago at "
                                            f"{stamp.isoformat(timespec='seconds')[:19]}Z"), \
                reading.error
            assert sampler.last_good(miner.id) is good
            assert reading.telemetry.health.state == HealthState.UNHEALTHY
            assert reading.telemetry.timestamp_unix_s > good.telemetry.timestamp_unix_s
            # a change to the miner (a power write) reads it at once, backoff or not
            fleet.set_fault(3, Fault.NONE)
            changed = time.monotonic()
            sampler.changes.mark(miner.id)
            while sampler.cached(miner.id).error:  # type: ignore[union-attr]
                assert time.monotonic() - changed < 1.0, "not read at once after a change"
                await asyncio.sleep(0.01)
            assert sampler.last_good(miner.id) is sampler.cached(miner.id)
        finally:
            await sampler.stop()

    run(body)


def test_a_miner_never_read_says_so_and_inventory_does_not_wait_for_it(
        mixed_fleet: tuple[SimFleet, list[Device]]) -> None:
    _fleet, miners = mixed_fleet
    hung, healthy = miners[0], miners[4]

    async def body() -> None:
        sampler = sampler_of([hung, healthy], interval_s=0.1, device_timeout_s=0.2)
        await sampler.start()
        try:
            deadline = time.monotonic() + 5
            while "next try" not in sampler.cached(hung.id).error:  # type: ignore[union-attr]
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            assert sampler.cached(hung.id).error.startswith(  # type: ignore[union-attr]
                "timeout: no answer within 0.2 s; stale: never read, next try in ")
            started = time.monotonic()
            infos = await sampler.infos()
            assert time.monotonic() - started < 0.15, "a failing miner's info is not waited for"
            assert isinstance(infos[healthy.id], DeviceInfo) and infos[healthy.id].model
            assert infos[hung.id] == "timeout: no answer within 0.2 s"
        finally:
            await sampler.stop()

    run(body)


class SlowMiner(Device):
    """Reads on the loop and answers after `delay_s`. Across instances: the reads in flight
    (id -> when begun) and the most ever begun within half of YOUTH_S of each other and not
    ended. YOUNG_READS bounds the reads younger than YOUTH_S; a read that outlives its youth (a
    busy machine) holds no place, and half the youth leaves room for the time a read takes to
    begin after the sampler starts it."""

    kind = DeviceKind.ASIC
    async_io = True
    in_flight: ClassVar[dict[str, float]] = {}
    most = 0

    def __init__(self, index: int, delay_s: float) -> None:
        self.id = f"asic/127.0.0.1:{10000 + index}"
        self.delay_s = delay_s
        self.reads = 0

    def info(self) -> DeviceInfo:
        return DeviceInfo(self.id, self.kind, "slow")

    async def telemetry_async(self) -> Telemetry:
        from agent.runtime.sampler import YOUTH_S

        now = time.monotonic()
        young = sum(1 for begun in SlowMiner.in_flight.values() if now - begun < YOUTH_S / 2)
        SlowMiner.most = max(SlowMiner.most, young + 1)
        SlowMiner.in_flight[self.id] = now
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            del SlowMiner.in_flight[self.id]
        self.reads += 1
        return Telemetry(self.id, self.kind, hashrate_hs=1.0)


def test_more_reads_than_can_finish_stretch_the_passes_instead_of_all_timing_out() -> None:
    """300 miners that take 0.3 s each, every 0.1 s: far more than YOUNG_READS (64) at once
    would take. The schedule keeps 64 young reads at most: the passes stretch, and every
    read still ends well within its deadline (none fails)."""
    from agent.runtime.sampler import YOUNG_READS

    miners = [SlowMiner(i, delay_s=0.3) for i in range(300)]
    SlowMiner.in_flight, SlowMiner.most = {}, 0

    async def body() -> None:
        sampler = sampler_of(miners, interval_s=0.1, device_timeout_s=1.0)
        await sampler.start()
        try:
            deadline = time.monotonic() + 20
            while not all(m.reads >= 3 for m in miners):  # every miner read again, twice
                assert time.monotonic() < deadline, "the passes do not go round"
                await asyncio.sleep(0.05)
            readings = await sampler.latest(max_age_s=60)
            assert all(r.error == "" for r in readings.values())
            assert SlowMiner.most <= YOUNG_READS, SlowMiner.most
        finally:
            await sampler.stop()

    run(body)


def test_a_long_interval_still_reads_every_device_at_start_then_spreads_the_passes() -> None:
    """An hourly interval: start() returns with every device read within FIRST_PASS_S (not
    an hour spread), and the second pass takes each device at its own place in the interval."""
    from agent.runtime.sampler import FIRST_PASS_S

    devices = [CountingDevice(f"opencl/{k}") for k in range(4)]

    async def body() -> None:
        sampler = sampler_of(devices, interval_s=3600.0, device_timeout_s=1.0)
        begun = time.monotonic()
        await asyncio.wait_for(sampler.start(), timeout=30)
        try:
            assert time.monotonic() - begun < FIRST_PASS_S + 5  # a safety net: not an hour
            assert [d.reads for d in devices] == [1, 1, 1, 1]
            places = sorted(sampler._due.values())
            assert [round(b - a) for a, b in itertools.pairwise(places)] == [900, 900, 900]
        finally:
            await sampler.stop()

    run(body)
