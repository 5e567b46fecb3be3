"""rigd over simulated miner firmware: a misbehaving miner fails alone, within its timeout, and
rigd keeps serving everyone else's telemetry."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.api import pb
from hal.sim.asic import Fault, SimFleet
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
    # rigd itself is unharmed, and the miner reads fine again once it behaves.
    fleet.set_fault(0, Fault.NONE)
    time.sleep(1.6)  # a hung read may still hold its slot until its own timeout
    again = {r.device_id: r for r in stub.GetTelemetry(
        pb.GetTelemetryRequest(max_age_ms=1), timeout=30).devices}
    assert not again[bad].error
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
