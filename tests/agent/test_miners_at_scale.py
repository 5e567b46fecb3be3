"""Hundreds of miners behind one rigd, many of them hung: every healthy miner is read in every
pass (the sampler does not wait for the hung ones), and a control on a healthy miner does not
queue behind the hung ones' reads."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from hal.sim.asic.fleet import FleetRun, fleet_process
from rigapi import pb
from tests.agent.conftest import OPERATOR_TOKEN, RigdProcess, bearer, start_rigd

MINERS = 200
HUNG = "hang:40%"  # 80 of the 200
INTERVAL_S = 1.0
DEVICE_TIMEOUT_S = 2.0  # a hung miner's read runs twice the interval before it is abandoned
# A reading served at a pass is at most one interval old, plus the read itself and the
# scheduling of a loaded 2-core machine: the bound only says "read in this pass, not skipped".
FRESH_SLACK_S = 0.5
PASSES = 4
SLEEP_SAFETY_S = 1.0  # the figure; a safety net only, the time is printed


def asic_table(fleet: FleetRun, timeout_s: float) -> str:
    lines = []
    for miner in fleet.options["miners"]:
        fields = ", ".join(f"{k} = {json.dumps(v)}" for k, v in miner.items())
        lines.append("{ " + fields + " }")
    return (f"[hal.asic]\ntimeout_s = {timeout_s}\nminers = [\n  " + ",\n  ".join(lines)
            + ",\n]\n")


@pytest.fixture(scope="module")
def fleet() -> Iterator[FleetRun]:
    with fleet_process(MINERS, faults=[HUNG], warmup_s=0.1) as run:
        yield run


@pytest.fixture(scope="module")
def big_rigd(tmp_path_factory: pytest.TempPathFactory, fleet: FleetRun
             ) -> Iterator[RigdProcess]:
    rigd = start_rigd(tmp_path_factory.mktemp("miners-at-scale"),
                      asic_table(fleet, DEVICE_TIMEOUT_S), backends=("host", "asic"),
                      settings={"telemetry": {"interval_s": INTERVAL_S,
                                              "device_timeout_s": DEVICE_TIMEOUT_S}})
    yield rigd
    rigd.stop()


def ids(fleet: FleetRun, indexes: list[int]) -> list[str]:
    return [f"asic/{fleet.options['miners'][i]['address']}" for i in indexes]


def served(rigd: RigdProcess, device_ids: list[str] | None = None, max_age_ms: int = 600_000
           ) -> dict[str, Any]:
    """The readings rigd holds (a lenient max age: what its sampler read, none read for us)."""
    response = rigd.stub().GetTelemetry(
        pb.GetTelemetryRequest(device_ids=device_ids or [], max_age_ms=max_age_ms), timeout=30)
    return {r.device_id: r for r in response.devices}


def wait_all_read(rigd: RigdProcess, healthy: list[str], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        readings = served(rigd)
        bad = [d for d in healthy if readings[d].error or readings[d].hashrate_hs <= 0]
        if not bad:
            return
        assert time.monotonic() < deadline, f"{len(bad)} healthy miners never read: " \
                                            f"{readings[bad[0]].error}"
        time.sleep(0.2)


def test_a_sleep_is_not_held_by_hung_reads(big_rigd: RigdProcess, fleet: FleetRun) -> None:
    """DeviceAction sleep and wake on a healthy miner, each sent while rigd reads every hung
    miner (a fresh reading asked of each), answer at once: the hung reads hold nothing they
    need. First in the module: rigd has just started, and reads every miner's controls
    (curtailment's limit ranges and modes) then too."""
    miners = fleet.options["miners"]
    luxos = [i for i in fleet.healthy() if miners[i]["family"] == "luxos"]
    target = ids(fleet, luxos[:1])[0]
    hung = ids(fleet, sorted(fleet.faults))
    stub = big_rigd.stub()
    took: list[float] = []
    overlapped = 0
    deadline = time.monotonic() + 60
    while overlapped < 2:
        forced: dict[str, Any] = {}

        def read_hung(out: dict[str, Any] = forced) -> None:
            out["readings"] = served(big_rigd, hung, max_age_ms=1)

        reader = threading.Thread(target=read_hung)
        reader.start()
        time.sleep(0.1)  # let the request reach rigd; checked below, not trusted
        action = pb.DEVICE_ACTION_KIND_SLEEP if len(took) % 2 == 0 \
            else pb.DEVICE_ACTION_KIND_WAKE
        sent = time.time_ns()
        try:
            stub.DeviceAction(pb.DeviceActionRequest(device_id=target, action=action),
                              metadata=bearer(OPERATOR_TOKEN), timeout=30)
        except grpc.RpcError as exc:
            raise AssertionError(f"{exc.code()}: {exc.details()}") from None
        done = time.time_ns()
        took.append((done - sent) / 1e9)
        reader.join(timeout=60)
        readings = forced["readings"]
        assert all("timeout" in r.error for r in readings.values())
        # hung reads that began before the action was sent and ran (to their timeout) past
        # its answer: a failed reading is stamped with the time its read began
        overlapping = [r for r in readings.values()
                       if r.time.ToNanoseconds() < sent
                       and r.time.ToNanoseconds() + DEVICE_TIMEOUT_S * 1e9 > done]
        overlapped += len(overlapping) >= len(hung) // 2
        assert time.monotonic() < deadline, "never sent an action while hung reads ran"
    if len(took) % 2:  # awake again for the tests after this one
        stub.DeviceAction(pb.DeviceActionRequest(device_id=target,
                                                 action=pb.DEVICE_ACTION_KIND_WAKE),
                          metadata=bearer(OPERATOR_TOKEN), timeout=30)
    print(f"\nsleep and wake of {target} while {len(hung)} hung miners were being read: "
          f"{', '.join(f'{t * 1000:.0f}' for t in took)} ms")
    assert max(took) < SLEEP_SAFETY_S, took


def test_every_healthy_miner_is_fresh_in_every_pass_among_hung_ones(
    big_rigd: RigdProcess, fleet: FleetRun
) -> None:
    healthy = ids(fleet, fleet.healthy())
    hung = ids(fleet, sorted(fleet.faults))
    assert len(healthy) == 120 and len(hung) == 80
    wait_all_read(big_rigd, healthy)
    worst_age_s = 0.0
    began = time.monotonic()
    for n in range(PASSES):
        # the observer looks once per interval (pacing, not synchronisation)
        time.sleep(max(0.0, began + (n + 1) * INTERVAL_S - time.monotonic()))
        readings = served(big_rigd)
        now_ns = time.time_ns()
        for device_id in healthy:
            reading = readings[device_id]
            assert not reading.error, f"pass {n}: {device_id}: {reading.error}"
            assert reading.hashrate_hs > 0
            age_s = (now_ns - reading.time.ToNanoseconds()) / 1e9
            worst_age_s = max(worst_age_s, age_s)
            assert age_s <= INTERVAL_S + FRESH_SLACK_S, (
                f"pass {n}: {device_id} last read {age_s:.2f} s ago (interval {INTERVAL_S} s)")
        for device_id in hung:
            assert readings[device_id].error, "a hung miner's reading says why it failed"
    print(f"\n{len(healthy)} healthy miners among {len(hung)} hung: every one read in each of "
          f"{PASSES} passes; the oldest reading served was {worst_age_s:.2f} s old "
          f"(interval {INTERVAL_S} s)")


def test_a_hung_miner_is_stale_with_its_reason_and_inventory_does_not_wait_for_it(
    big_rigd: RigdProcess, fleet: FleetRun
) -> None:
    """Each hung miner's reading says why it fails, that it never answered and when it is
    tried next (not every pass); GetInventory answers without waiting for any of them."""
    hung = ids(fleet, sorted(fleet.faults))
    seen: set[str] = set()
    deadline = time.monotonic() + 30
    while len(seen) < len(hung):
        readings = served(big_rigd, hung)
        for device_id in hung:
            error = readings[device_id].error
            assert error.startswith("timeout: no answer within 2 s"), error
            assert readings[device_id].health.state == pb.HEALTH_STATE_UNHEALTHY
            if "; stale: never read, next try in " in error:
                seen.add(device_id)
        assert time.monotonic() < deadline, f"{len(hung) - len(seen)} never marked stale"
        time.sleep(INTERVAL_S / 2)
    started = time.monotonic()
    inventory = big_rigd.stub().GetInventory(pb.GetInventoryRequest(), timeout=30)
    took = time.monotonic() - started
    devices = {d.id: d for d in inventory.devices}
    assert all(devices[d].health.reason.startswith("timeout") for d in hung)
    assert all(devices[d].model for d in ids(fleet, fleet.healthy()))
    print(f"\nGetInventory of {len(devices)} devices, {len(hung)} of them hung: {took:.3f} s")
    assert took < DEVICE_TIMEOUT_S, "a hung miner's inventory facts are not waited for"
