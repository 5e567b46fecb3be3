"""Errors said by the party that caused them, through a real rigd over simulated miner firmware:
a firmware that says no, a miner that hangs, a miner that refuses the connection, each a status
whose ErrorInfo names the party, the device and what the firmware said; and health in the
inventory as the latest attempt left it, as telemetry says it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from hal.sim.asic import AntminerSim, CgminerSim, Fault, SimFleet
from rigapi import pb
from rigapi.status import error_info
from tests.agent.conftest import RigdProcess, start_rigd
from tests.agent.test_asic_rigd import asic_section


@pytest.fixture
def fleet() -> Iterator[SimFleet]:
    """A cgminer 4.11.1 (replayed from the live capture) and a mining Antminer S19 Pro."""
    with SimFleet([CgminerSim(), AntminerSim(warmup_s=0.1)]) as sims:
        yield sims


@pytest.fixture
def rigd(tmp_path: Path, fleet: SimFleet) -> Iterator[RigdProcess]:
    cgminer, antminer = fleet.miners
    # The cgminer is driven as the cgminer-based Avalon firmware is (switchpool, ascset): the
    # family whose DeviceAction reaches its RPC.
    options: dict[str, Any] = {"miners": [
        {"address": cgminer.address, "family": "avalon", "simulated": True},
        antminer.discover_entry(),
    ]}
    process = start_rigd(tmp_path, asic_section(options), backends=("host", "asic"))
    yield process
    process.stop()


def pool_switch(rigd: RigdProcess, device_id: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        rigd.stub().DeviceAction(pb.DeviceActionRequest(
            device_id=device_id, action=pb.DEVICE_ACTION_KIND_POOL_SWITCH, pool_index=5),
            timeout=30)
    return info.value


def test_each_device_error_names_its_party_the_device_and_what_the_firmware_said(
        rigd: RigdProcess, fleet: SimFleet) -> None:
    device_id = f"asic/{fleet.addresses[0]}"

    said = pool_switch(rigd, device_id)  # cgminer: "Invalid pool id 99 - range is 0 - 1"
    assert said.code() == grpc.StatusCode.FAILED_PRECONDITION, said
    info = error_info(said)
    assert info is not None and info.domain == "rig.v1"
    assert info.reason == "FIRMWARE_REFUSED" and info.metadata["party"] == "firmware"
    assert info.metadata["device_id"] == device_id
    assert info.metadata["firmware_says"] == "Invalid pool id 99 - range is 0 - 1"

    fleet.set_fault(0, Fault.HANG)  # the miner takes the connection and never answers
    started = time.monotonic()
    hung = pool_switch(rigd, device_id)
    assert time.monotonic() - started < 15, "rigd answers within the device's budget"
    assert hung.code() == grpc.StatusCode.UNAVAILABLE, hung
    info = error_info(hung)
    assert info is not None and info.reason == "DEVICE_TIMEOUT"
    assert info.metadata["party"] == "device" and info.metadata["device_id"] == device_id
    assert "firmware_says" not in info.metadata
    fleet.set_fault(0, Fault.NONE)

    fleet.power_off(0)  # its port closes: connections are refused
    refused = pool_switch(rigd, device_id)
    assert refused.code() == grpc.StatusCode.UNAVAILABLE, refused
    info = error_info(refused)
    assert info is not None and info.reason == "DEVICE_UNREACHABLE"
    assert info.metadata["party"] == "device" and info.metadata["device_id"] == device_id
    assert "refused" in (refused.details() or "")

    # rigd itself answers as ever: its own statuses say the caller, not a device, is at fault
    with pytest.raises(grpc.RpcError) as unknown:
        rigd.stub().DeviceAction(pb.DeviceActionRequest(
            device_id="asic/nowhere:1", action=pb.DEVICE_ACTION_KIND_SLEEP), timeout=10)
    info = error_info(unknown.value)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert info is not None and info.metadata["party"] == "caller"


def test_inventory_health_is_the_latest_attempt_as_telemetry_says(
        rigd: RigdProcess, fleet: SimFleet) -> None:
    device_id = f"asic/{fleet.addresses[1]}"
    stub = rigd.stub()

    def inventory_health() -> pb.Health:
        devices = stub.GetInventory(pb.GetInventoryRequest(), timeout=30).devices
        return next(d.health for d in devices if d.id == device_id)

    deadline = time.monotonic() + 30
    while inventory_health().state != pb.HEALTH_STATE_HEALTHY:  # warming up: not mining yet
        assert time.monotonic() < deadline, inventory_health()
        time.sleep(0.1)
    fleet.power_off(1)
    off_ns = time.time_ns()
    deadline = time.monotonic() + 30
    while True:  # a reading begun after the miner went off
        reading = next(r for r in stub.GetTelemetry(pb.GetTelemetryRequest(
            device_ids=[device_id], max_age_ms=1), timeout=30).devices)
        if reading.time.ToNanoseconds() > off_ns:
            break
        assert time.monotonic() < deadline, "no reading after the miner went off"
        time.sleep(0.05)
    assert reading.health.state == pb.HEALTH_STATE_UNHEALTHY
    health = inventory_health()
    assert health.state == pb.HEALTH_STATE_UNHEALTHY, health
    assert "refused" in health.reason, health.reason
