"""rigd over simulated miner firmware: a misbehaving miner fails alone, within its timeout, and
rigd keeps serving everyone else's telemetry."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from hal.sim.asic import Fault, SimFleet
from rigapi import pb
from tests.agent.conftest import RigdProcess, start_rigd


def asic_section(options: dict[str, object]) -> str:
    """The fleet's discover options as a [hal.asic] TOML table (JSON values are valid TOML
    inline values for strings, numbers and booleans)."""
    entries = []
    for miner in options["miners"]:  # type: ignore[attr-defined]
        fields = ", ".join(f"{k} = {json.dumps(v)}" for k, v in miner.items())
        entries.append("{ " + fields + " }")
    return "[hal.asic]\ntimeout_s = 1.0\nminers = [\n  " + ",\n  ".join(entries) + ",\n]\n"


@pytest.fixture
def fleet() -> Iterator[SimFleet]:
    with SimFleet.of(["antminer", "luxos", "whatsminer"], warmup_s=0.1) as sims:
        yield sims


@pytest.fixture
def rigd_with_fleet(tmp_path: Path, fleet: SimFleet) -> Iterator[RigdProcess]:
    rigd = start_rigd(tmp_path, asic_section(fleet.discover_options()), backends=("host", "asic"))
    yield rigd
    rigd.stop()


@pytest.mark.parametrize("fault", [Fault.HANG, Fault.HUGE, Fault.HALF, Fault.GARBAGE, Fault.RESET])
def test_one_bad_miner_does_not_stop_the_others(
    rigd_with_fleet: RigdProcess, fleet: SimFleet, fault: Fault
) -> None:
    stub = rigd_with_fleet.stub()
    inventory = stub.GetInventory(pb.GetInventoryRequest(), timeout=10)
    asics = [d.id for d in inventory.devices if d.kind == pb.DEVICE_KIND_ASIC]
    assert len(asics) == 3 and all(
        d.simulated for d in inventory.devices if d.kind == pb.DEVICE_KIND_ASIC)
    bad = f"asic/{fleet.addresses[0]}"
    fleet.set_fault(0, fault)
    # Readings begun before the fault may still be the latest: wait for one stamped well after
    # it (a read of a healthy simulated miner takes milliseconds).
    after_fault_ns = time.time_ns() + 250_000_000
    deadline = time.monotonic() + 10
    while True:
        started = time.monotonic()
        readings = {r.device_id: r for r in stub.GetTelemetry(
            pb.GetTelemetryRequest(max_age_ms=1), timeout=30).devices}
        assert time.monotonic() - started < 10, "one poll is bounded by the device timeout"
        if readings[bad].time.ToNanoseconds() >= after_fault_ns:
            break
        assert time.monotonic() < deadline, "no reading taken after the fault"
        time.sleep(0.05)
    assert readings[bad].error, f"{fault}: the bad miner's reading says why it failed"
    assert readings[bad].health.state == pb.HEALTH_STATE_UNHEALTHY
    for good in asics:
        if good != bad:
            assert not readings[good].error, readings[good].error
            assert readings[good].hashrate_hs > 1e12
    # rigd itself is unharmed, and the miner reads fine again once it behaves (a hung read
    # may hold its slot until its own timeout, so poll).
    fleet.set_fault(0, Fault.NONE)
    deadline = time.monotonic() + 30
    while True:
        again = {r.device_id: r for r in stub.GetTelemetry(
            pb.GetTelemetryRequest(max_age_ms=1), timeout=30).devices}
        if not again[bad].error:
            break
        assert time.monotonic() < deadline, again[bad].error
        time.sleep(0.1)
    assert again[bad].hashrate_hs > 1e12


def test_inventory_answers_while_every_miner_hangs(
    rigd_with_fleet: RigdProcess, fleet: SimFleet
) -> None:
    stub = rigd_with_fleet.stub()
    before = stub.GetInventory(pb.GetInventoryRequest(), timeout=10)
    for index in range(3):
        fleet.set_fault(index, Fault.HANG)
    started = time.monotonic()
    after = stub.GetInventory(pb.GetInventoryRequest(), timeout=30)
    assert time.monotonic() - started < 10, "bounded by one device timeout, not three in a row"
    models = {d.id: d.model for d in before.devices if d.kind == pb.DEVICE_KIND_ASIC}
    assert {d.id: d.model for d in after.devices if d.kind == pb.DEVICE_KIND_ASIC} == models


def test_the_first_sigterm_stops_a_busy_rigd_whose_miners_all_hang(
    tmp_path: Path, fleet: SimFleet
) -> None:
    """Streams open, every miner hung mid-read: one SIGTERM, and rigd is gone within
    drain + grace + 2 s (the watchdog's bound), with exit code 0."""
    rigd = start_rigd(tmp_path, asic_section(fleet.discover_options()), backends=("host", "asic"),
                      settings={"server": {"drain_s": 0.5, "shutdown_grace_s": 1.0}})
    streams = [rigd.stub().StreamTelemetry(pb.StreamTelemetryRequest(interval_ms=100),
                                           timeout=60) for _ in range(10)]
    for stream in streams:
        next(stream)
    for index in range(3):
        fleet.set_fault(index, Fault.HANG)
    rigd.stub().GetTelemetry(pb.GetTelemetryRequest(max_age_ms=1), timeout=30)  # reads hang
    started = time.monotonic()
    rigd.proc.send_signal(signal.SIGTERM)
    assert rigd.proc.wait(timeout=60) == 0
    took = time.monotonic() - started
    assert took < 0.5 + 1.0 + 2.0 + 5.0, f"stopped after {took:.1f} s"
    for stream in streams:
        stream.cancel()
    log = rigd.log_path.read_text()
    assert log.count('"event": "signal"') == 1 and '"event": "shutting_down"' in log


@pytest.mark.parametrize("watts", [1e6, 0.5])
def test_a_power_limit_outside_the_firmware_range_is_invalid_and_names_it(
    rigd_with_fleet: RigdProcess, fleet: SimFleet, watts: float
) -> None:
    whatsminer = f"asic/{fleet.addresses[2]}"
    stub = rigd_with_fleet.stub()
    before = stub.GetTelemetry(pb.GetTelemetryRequest(device_ids=[whatsminer], max_age_ms=1),
                               timeout=10).devices[0].power_limit_w
    with pytest.raises(grpc.RpcError) as info:
        stub.SetPowerLimit(pb.SetPowerLimitRequest(device_id=whatsminer, power_limit_w=watts),
                           timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "range" in (info.value.details() or "") and "W" in (info.value.details() or "")
    after = stub.GetTelemetry(pb.GetTelemetryRequest(device_ids=[whatsminer], max_age_ms=1),
                              timeout=10).devices[0].power_limit_w
    assert after == before, "nothing was sent to the miner"
