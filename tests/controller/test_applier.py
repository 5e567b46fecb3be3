"""What the live controller sends for a decision: within the switches-in-flight limits per rig
and per site, sheds before starts, nothing for a device whose operation still runs, the same
request id for the same intent; and the fleet rigd reports turned into the policy's view."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from client import Fleet
from client.model import Device, Inventory
from client.model import Snapshot as RigSnapshot
from controller.config import from_dict
from controller.journal import Journal, records
from controller.model import PolicyMemory, Workload
from controller.policy import PolicyConfig, decide
from controller.rigs import Applier, Facts, RigView, request_id, rig_state
from hal.device import AsicTelemetry, DeviceInfo, DeviceKind, Health, HealthState, Telemetry
from rigapi.model import Operation, Reading, RigPower, WorkloadKind, WorkloadState, WorkloadStatus
from tests.controller.fleet import miner, rig, snapshot

CONFIG = from_dict({"rigs": {"endpoints": ["unix:/x"], "max_switches_per_rig": 2,
                             "max_switches_per_site": 3},
                    "price": {"file": "/p.csv"}})


def test_limits_in_flight_sheds_first_and_busy_devices_left_alone(tmp_path: Path) -> None:
    rigs = [rig(*(miner(f"a{i}", j_per_th=30.0 + i) for i in range(3)), rig_id="ra"),
            rig(*(miner(f"b{i}", 25.0, Workload.ASLEEP) for i in range(3)), rig_id="rb")]
    # At 80 $/MWh the ra miners (strike 69-65 $/MWh) shed at once, the rb ones
    # (nameplate 29.5 J/TH: strike 71) stay asleep; at 60 $/MWh rb's wake and ra's hash.
    d, mem = decide(snapshot(300, 80.0, rigs), PolicyMemory.empty(),
                    PolicyConfig(high_strike_ratio=1.0, resume_windows=1))
    assert len(d.changed()) == 3
    journal = Journal(tmp_path, "a")
    applier = Applier(Fleet([]), CONFIG, journal, Facts(), leader_rev=7)
    views = [RigView("ra", running=(Operation("op-1", "set_workload", ["asic/a0"]),)),
             RigView("rb")]
    chosen = applier.plan(d, views, round_no=1)
    # a0's operation still runs at the rig: left alone; a1 and a2 (2 per rig at most)
    assert [c.device for c in chosen] == ["asic/a1", "asic/a2"]
    assert all(c.action == "sleep" for c in chosen)
    mixed = [rig(*(miner(f"a{i}", j_per_th=30.0 + i) for i in range(3)), rig_id="ra"),
             rig(*(miner(f"b{i}", 25.0, Workload.ASLEEP) for i in range(3)), rig_id="rb")]
    d2, _ = decide(snapshot(600, 500.0, mixed), mem, PolicyConfig(high_strike_ratio=1.0))
    # a1 and a2 now in flight: a0 waits for one of them (2 per rig at most), journaled
    for c in chosen:
        applier.in_flight[c.device] = c
    assert applier.plan(d2, [RigView("ra"), RigView("rb")], round_no=2) == []
    deferred = [r for r in records(tmp_path) if r.get("state") == "deferred"]
    assert [r["device"] for r in deferred] == ["asic/a0"]
    assert "switches in flight: 2 on the rig (at most 2)" in deferred[0]["error"]
    journal.close()


def test_sheds_go_before_starts_within_the_limit(tmp_path: Path) -> None:
    rigs = [rig(miner("up", 20.0, Workload.ASLEEP), miner("down", 40.0), rig_id="r")]
    memory = PolicyMemory.empty()
    # 60 $/MWh: "down" (40 J/TH, strike 52) sheds at once, "up" (nameplate 29.5: 71) wakes.
    d, _ = decide(snapshot(300, 60.0, rigs), memory,
                  PolicyConfig(high_strike_ratio=1.0, resume_windows=1))
    assert {d.device(i).desired for i in range(2)} == {Workload.HASHING, Workload.ASLEEP}
    config = dataclasses.replace(CONFIG, max_switches_per_rig=1)
    applier = Applier(Fleet([]), config, Journal(tmp_path, "a"), Facts(), leader_rev=1)
    (only,) = applier.plan(d, [RigView("r")], round_no=1)
    assert only.device == "asic/down" and only.action == "sleep"


def test_the_same_intent_gets_the_same_request_id() -> None:
    a = request_id("site", 7, 12, "gpu/x", "inference:vllm")
    assert a == request_id("site", 7, 12, "gpu/x", "inference:vllm")
    assert a != request_id("site", 8, 12, "gpu/x", "inference:vllm")  # another leader
    assert a != request_id("site", 7, 12, "gpu/x", "hashing")
    assert len(a) <= 128  # rigd's bound


def test_the_fleet_as_rigd_reports_it() -> None:
    """A miner's state from its firmware, a GPU's from its workload; the host is base power;
    a failed workload makes its device unhealthy, with why; a GPU's hashrate is remembered."""
    def device(id_: str, kind: DeviceKind, model: str) -> Device:
        return Device(DeviceInfo(id=id_, kind=kind, name=model, model=model), frozenset(),
                      Health(HealthState.HEALTHY))

    inventory = Inventory("r", "0.1", (device("host/h", DeviceKind.HOST, "EPYC"),
                                       device("asic/m", DeviceKind.ASIC, "S19"),
                                       device("gpu/g", DeviceKind.GPU, "H100"),
                                       device("gpu/f", DeviceKind.GPU, "H100")), ())
    readings = (
        Reading(Telemetry("host/h", DeviceKind.HOST, power_w=200.0)),
        Reading(Telemetry("asic/m", DeviceKind.ASIC, power_w=15.0,
                          asic=AsicTelemetry(is_mining=False, expected_hashrate_hs=95e12,
                                             algorithm="sha256d"))),
        Reading(Telemetry("gpu/g", DeviceKind.GPU, power_w=300.0, hashrate_hs=1e9),
                workload=WorkloadStatus(WorkloadKind.HASHING, WorkloadState.RUNNING)),
        Reading(Telemetry("gpu/f", DeviceKind.GPU, power_w=70.0),
                workload=WorkloadStatus(WorkloadKind.INFERENCE, WorkloadState.FAILED,
                                        detail="runtime exited 1", profile="vllm")))
    view = RigView("r", inventory, RigSnapshot(readings, RigPower(585.0, 585.0, 0.0)))
    facts = Facts()
    state = rig_state(view, facts, set())
    by_id = {d.device_id: d for d in state.devices}
    assert set(by_id) == {"asic/m", "gpu/g", "gpu/f"}
    assert state.base_power_w == 585.0 - 385.0  # the host and what no device accounts for
    assert by_id["asic/m"].workload == Workload.ASLEEP
    assert by_id["asic/m"].rated_hashrate_hs == 95e12
    assert by_id["gpu/g"].workload == Workload.HASHING and facts.hashrate_hs["gpu/g"] == 1e9
    assert not by_id["gpu/f"].healthy and by_id["gpu/f"].health_reason == "runtime exited 1"
    unreachable = rig_state(RigView("gone", error="Unreachable: connection refused"), facts,
                            set())
    assert not unreachable.reachable and "connection refused" in unreachable.error
