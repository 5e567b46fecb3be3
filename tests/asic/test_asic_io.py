"""Miner I/O that cannot block other miners (issue 20): no shared place a hung miner can hold,
one reading in flight per miner (joined by every caller, never across a control), a reading
past its deadline abandoned with its connections closed, controls that never queue behind
readings, and readings on the caller's own event loop (Device.async_io, telemetry_async).

Timing bounds are generous safety nets; the figures are printed (-s) and bench/asic.py
measures them."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import hal.asic
from hal.asic import BraiinsMiner, LuxosMiner, Miner
from hal.device import Device, Telemetry
from hal.errors import Timeout
from hal.sim.asic import Fault, SimFleet

HUNG = 90  # more than the 64 places the shared I/O loop used to ration


def _miners(fleet: SimFleet, timeout_s: float) -> list[Miner]:
    options = fleet.discover_options()
    for entry in options["miners"]:
        entry["timeout_s"] = timeout_s
    devices = hal.asic.discover(options)
    assert all(isinstance(d, Miner) for d in devices)
    return devices  # type: ignore[return-value]


def _until(condition: Callable[[], bool], timeout_s: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not reached: {what}"
        time.sleep(0.02)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def hung_fleet() -> Iterator[tuple[SimFleet, list[Miner], Miner]]:
    """HUNG hung miners (stock Antminer and LuxOS) and one healthy LuxOS miner at the end."""
    families = ["antminer", "luxos"] * (HUNG // 2) + ["luxos"]
    fleet = SimFleet.of(families, warmup_s=0.2).start()
    try:
        miners = _miners(fleet, timeout_s=4.0)
        for index in range(HUNG):
            fleet.set_fault(index, Fault.HANG)
        yield fleet, miners[:HUNG], miners[HUNG]
    finally:
        fleet.stop()


def test_hung_miners_in_flight_do_not_delay_a_healthy_miners_reading_or_sleep(
        hung_fleet: tuple[SimFleet, list[Miner], Miner]) -> None:
    fleet, hung, healthy = hung_fleet
    assert healthy.async_io and all(m.async_io for m in hung)
    fds_before = _open_fds()
    with concurrent.futures.ThreadPoolExecutor(2 * HUNG) as pool:
        # Two blocking readings of every hung miner at once (threads, as a sampler has them).
        stuck = [pool.submit(m.telemetry) for m in hung for _twice in range(2)]
        _until(lambda: sum(s.open_connections for s in fleet.miners[:HUNG]) == HUNG,
               what="every hung miner's one reading in flight")
        assert all(m.reading_in_flight for m in hung)

        async def read_healthy() -> tuple[Telemetry, float]:
            start = time.perf_counter()
            reading = await healthy.telemetry_async()
            return reading, time.perf_counter() - start

        reading, read_s = asyncio.run(read_healthy())
        start = time.perf_counter()
        healthy.sleep()
        sleep_s = time.perf_counter() - start
        print(f"\nwith {HUNG} hung readings in flight: healthy telemetry_async {read_s:.3f} s, "
              f"sleep {sleep_s:.3f} s")
        assert reading.hashrate_hs and read_s < 1.0
        assert sleep_s < 1.0
        assert healthy.telemetry().hashrate_hs == 0  # asleep, read afresh after the control
        # Each hung miner had one reading in flight, which both its callers shared.
        assert sum(s.open_connections for s in fleet.miners[:HUNG]) == HUNG
        for future in stuck:
            with pytest.raises(Timeout):
                future.result(timeout=30)
    # Abandoned at their deadline, their connections closed on both ends.
    _until(lambda: sum(s.open_connections for s in fleet.miners[:HUNG]) == 0,
           what="the hung miners' connections closed")
    assert not any(m.reading_in_flight for m in hung)
    _until(lambda: _open_fds() <= fds_before + 2, what="no leaked file descriptors")


def test_hung_readings_on_the_same_loop_hold_no_place_in_line(
        hung_fleet: tuple[SimFleet, list[Miner], Miner]) -> None:
    """Requests are paced per event loop (at most 64 young ones at once, so thousands do not
    all run past their timeouts on one core); a hung miner's request leaves the line when it
    grows old, so HUNG hung readings on the agent's loop do not hold up a healthy one there."""
    fleet, hung, healthy = hung_fleet

    async def scenario() -> tuple[float, list[Any]]:
        stuck = [asyncio.ensure_future(m.telemetry_async()) for m in hung]
        while sum(s.open_connections for s in fleet.miners[:HUNG]) < HUNG:
            await asyncio.sleep(0.01)
        start = time.perf_counter()
        reading = await healthy.telemetry_async()
        took = time.perf_counter() - start
        assert reading.hashrate_hs
        return took, list(await asyncio.gather(*stuck, return_exceptions=True))

    took, results = asyncio.run(asyncio.wait_for(scenario(), 30))
    print(f"\nwith {HUNG} hung readings in flight on the same loop: healthy reading {took:.3f} s")
    assert took < 1.0
    assert all(isinstance(r, Timeout) for r in results)


def test_callers_on_any_thread_or_loop_share_one_reading(fleet_factory: Any) -> None:
    fleet: SimFleet = fleet_factory(["luxos"])
    (miner,) = _miners(fleet, timeout_s=5.0)
    sim = fleet.miners[0]
    fleet.set_fault(0, Fault.SLOW, slow_s=0.5)
    before = len(sim.requests)

    async def many() -> list[Telemetry]:
        return list(await asyncio.gather(*(miner.telemetry_async() for _ in range(5))))

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        blocking = [pool.submit(miner.telemetry) for _ in range(3)]
        on_loops = pool.submit(lambda: asyncio.run(many()))
        readings = [f.result(timeout=20) for f in blocking] + on_loops.result(timeout=20)
    assert len(sim.requests) - before == 1  # one multi-command: one reading for all eight
    assert len({id(r) for r in readings}) == 1


def test_a_caller_that_gives_up_does_not_cancel_the_reading_for_the_others(
        fleet_factory: Any) -> None:
    fleet: SimFleet = fleet_factory(["luxos"])
    (miner,) = _miners(fleet, timeout_s=5.0)
    fleet.set_fault(0, Fault.SLOW, slow_s=0.6)

    async def scenario() -> Telemetry:
        hasty = asyncio.ensure_future(asyncio.wait_for(miner.telemetry_async(), 0.1))
        patient = asyncio.ensure_future(miner.telemetry_async())
        with pytest.raises(asyncio.TimeoutError):
            await hasty
        return await patient

    assert asyncio.run(scenario()).hashrate_hs


def test_a_reading_its_last_caller_gave_up_on_is_abandoned_with_its_connection(
        fleet_factory: Any) -> None:
    """A reader with a shorter deadline than the miner's (rigd's sampler) cancels its wait:
    nobody else waits, so the reading ends then, its connection closed, not at the miner's
    own timeout; the next reading starts afresh."""
    fleet: SimFleet = fleet_factory(["luxos", "antminer"])
    miners = _miners(fleet, timeout_s=10.0)
    for index in range(2):
        fleet.set_fault(index, Fault.HANG)

    async def scenario() -> float:
        for miner in miners:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(miner.telemetry_async(), 0.3)
        gave_up = time.perf_counter()
        while any(s.open_connections for s in fleet.miners) or \
                any(m.reading_in_flight for m in miners):
            assert time.perf_counter() - gave_up < 5.0, "still open: not abandoned"
            await asyncio.sleep(0.01)
        closed_s = time.perf_counter() - gave_up
        fleet.set_fault(0, Fault.NONE)
        assert (await miners[0].telemetry_async()).hashrate_hs is not None
        return closed_s

    closed_s = asyncio.run(scenario())
    print(f"\nabandoned readings' connections closed {closed_s * 1000:.0f} ms after their "
          f"last caller gave up (the miners' own timeout: 10 s)")


def test_a_reading_begun_before_a_control_is_never_joined_after_it(fleet_factory: Any) -> None:
    fleet: SimFleet = fleet_factory(["luxos"])
    (miner,) = _miners(fleet, timeout_s=5.0)
    assert miner.telemetry().hashrate_hs
    fleet.set_fault(0, Fault.SLOW, slow_s=1.0)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        early = pool.submit(miner.telemetry)  # in flight across the sleep below
        _until(lambda: miner.reading_in_flight, what="the early reading in flight")
        time.sleep(0.1)  # let its request reach the (slow) miner before the fault clears
        fleet.set_fault(0, Fault.NONE)
        miner.sleep()
        assert miner.reading_in_flight  # the early one still runs
        after = miner.telemetry()
        assert early.result(timeout=10).hashrate_hs  # it saw the miner before the sleep
    assert after.hashrate_hs == 0  # a fresh reading, not the early one joined


def test_readings_run_on_the_callers_loop(fleet_factory: Any) -> None:
    """telemetry_async does its I/O on the calling loop: it works on a loop whose thread is
    busy with nothing else while the HAL's own loop is blocked."""
    fleet: SimFleet = fleet_factory(["luxos", "whatsminer", "avalon", "antminer", "braiins"])
    miners = _miners(fleet, timeout_s=5.0)
    from hal.asic import base

    blocked = threading.Event()
    release = threading.Event()

    def block() -> None:  # hold the HAL's I/O loop hostage
        blocked.set()
        release.wait(20)

    base._background_loop().call_soon_threadsafe(block)
    assert blocked.wait(5)
    try:
        async def read_all() -> list[Telemetry]:
            return list(await asyncio.gather(*(m.telemetry_async() for m in miners)))

        readings = asyncio.run(asyncio.wait_for(read_all(), 10))
    finally:
        release.set()
    assert all(r.hashrate_hs for r in readings)


def test_every_device_can_be_read_from_a_loop() -> None:
    """The default: a device without its own async I/O is read in a thread."""

    class Blocking(Device):
        id = "test/blocking"

        def telemetry(self) -> Telemetry:
            time.sleep(0.05)
            return Telemetry(device_id=self.id, kind=hal.device.DeviceKind.HOST)

    assert Blocking.async_io is False and Miner.async_io is True
    assert asyncio.run(Blocking().telemetry_async()).device_id == "test/blocking"


def test_braiins_keeps_a_channel_per_event_loop(fleet_factory: Any) -> None:
    """A grpc.aio channel belongs to its loop: readings on two loops of their own and
    controls on the HAL's loop, interleaved, all work."""
    fleet: SimFleet = fleet_factory(["braiins"])
    (miner,) = _miners(fleet, timeout_s=5.0)
    assert isinstance(miner, BraiinsMiner)
    errors: list[BaseException] = []

    def loop_reads() -> None:
        async def reads() -> None:
            for _ in range(10):
                assert (await miner.telemetry_async()).power_w
        try:
            asyncio.run(reads())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=loop_reads) for _ in range(2)]
    for thread in threads:
        thread.start()
    for _ in range(3):
        miner.sleep()
        miner.wake()
    for thread in threads:
        thread.join(30)
    assert errors == []
    miner.sleep()  # on the HAL's loop: the closed loops' channels are dropped
    assert len(miner._channels) == 1
    miner.close()
    assert miner._channels == {}


def test_a_hung_braiins_reading_closes_its_grpc_connection(fleet_factory: Any) -> None:
    """gRPC keeps a connection per miner between readings; one cut off at its deadline (the
    miner hangs) goes with it, on whichever loop it was read."""
    fleet: SimFleet = fleet_factory(["braiins"] * 5)
    miners = _miners(fleet, timeout_s=0.5)

    async def read_all() -> list[Any]:
        return list(await asyncio.gather(*(m.telemetry_async() for m in miners),
                                         return_exceptions=True))

    runner = asyncio.Runner()
    try:
        assert all(isinstance(r, Telemetry) for r in runner.run(read_all()))
        fds_connected = _open_fds()
        for index in range(5):
            fleet.set_fault(index, Fault.HANG)
        results = runner.run(read_all())
        assert all(isinstance(r, Timeout) for r in results), results
        _until(lambda: _open_fds() <= fds_connected - 5, what="the five connections closed")
    finally:
        runner.close()


def test_a_luxos_hung_read_leaves_controls_of_the_same_miner_free(fleet_factory: Any) -> None:
    """Even on the hung miner itself a control goes out at once (and meets the hang on its
    own connection) instead of waiting for the reading."""
    fleet: SimFleet = fleet_factory(["luxos"])
    (miner,) = _miners(fleet, timeout_s=3.0)
    assert isinstance(miner, LuxosMiner)
    sim = fleet.miners[0]
    fleet.set_fault(0, Fault.HANG)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        reading = pool.submit(miner.telemetry)
        _until(lambda: sim.open_connections == 1, what="the reading's connection")
        control = pool.submit(miner.sleep)
        _until(lambda: sim.open_connections == 2, timeout_s=1.0,
               what="the control's own connection, alongside the reading")
        for future in (reading, control):
            with pytest.raises(Timeout):
                future.result(timeout=30)
