"""The ways a simulated miner fails a fleet, each seen from outside by a real client call:
hang (accepts, never answers), refuse (nothing listens), slow (answers after N s) and ignore
(answers success to a control command, changes nothing), per family, and the fleet's
`--fault` command line that mixes them."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import hal.asic
from hal.asic import Miner
from hal.device import Capability
from hal.errors import DeviceLost, Timeout
from hal.sim.asic import Fault, SimFleet
from hal.sim.asic.fleet import fault_plan

REPO = Path(__file__).resolve().parents[2]
FAMILIES = ["antminer", "luxos", "whatsminer", "avalon", "braiins"]
# A control that changes what the miner draws, per family, and the mode its read-back shows.
MODES = {"antminer": "low", "whatsminer": "low", "luxos": "240MHz"}


def _miner(fleet: SimFleet, index: int = 0, **overrides: object) -> Miner:
    options = fleet.discover_options()
    entry = options["miners"][index]
    entry.update(overrides)
    (miner,) = hal.asic.discover({"miners": [entry]})
    assert isinstance(miner, Miner)
    return miner


@pytest.mark.parametrize("family", FAMILIES)
def test_ignore_answers_success_and_the_miner_keeps_hashing(fleet_factory: Any,
                                                            family: str) -> None:
    fleet: SimFleet = fleet_factory([family])
    miner = _miner(fleet)
    before = miner.telemetry()
    assert before.hashrate_hs and before.power_w
    fleet.set_fault(0, Fault.IGNORE)

    miner.sleep()  # no error: the firmware said it was done
    miner.wake()
    if Capability.SET_POWER_LIMIT in miner.capabilities:
        low, _high = miner.power_limit_range_w() or (1000.0, 0.0)
        miner.set_power_limit(max(low, 1600.0))
    if family in MODES:
        miner.set_power_mode(MODES[family])
    time.sleep(0.5)  # longer than the warm-up: a miner that had slept would still be cold
    after = miner.telemetry()
    assert after.hashrate_hs == pytest.approx(before.hashrate_hs)
    assert after.power_w == pytest.approx(before.power_w)
    assert after.asic is not None and after.asic.is_mining is True

    fleet.set_fault(0, Fault.NONE)  # the same commands now take effect
    miner.sleep()
    asleep = miner.telemetry()
    assert asleep.hashrate_hs == 0 and asleep.power_w is not None
    assert asleep.power_w < 0.1 * before.power_w


@pytest.mark.parametrize("family", FAMILIES)
def test_hang_times_out_reads_and_controls(fleet_factory: Any, family: str) -> None:
    fleet: SimFleet = fleet_factory([family])
    miner = _miner(fleet, timeout_s=0.5)
    fleet.set_fault(0, Fault.HANG)
    start = time.monotonic()
    with pytest.raises(Timeout):
        miner.telemetry()
    with pytest.raises(Timeout):
        miner.sleep()
    assert time.monotonic() - start < 10
    fleet.set_fault(0, Fault.NONE)
    assert miner.telemetry().hashrate_hs


@pytest.mark.parametrize("family", FAMILIES)
def test_refuse_closes_every_port_and_comes_back_on_the_same_ones(fleet_factory: Any,
                                                                  family: str) -> None:
    fleet: SimFleet = fleet_factory([family])
    miner = _miner(fleet, timeout_s=2.0)
    entry = fleet.discover_options()["miners"][0]
    fleet.set_fault(0, Fault.REFUSE)
    assert fleet.discover_options()["miners"][0] == entry  # the same ports, closed
    with pytest.raises(DeviceLost, match="refused"):
        miner.telemetry()
    with pytest.raises(DeviceLost, match="refused"):
        miner.sleep()
    fleet.set_fault(0, Fault.NONE)
    assert miner.telemetry().hashrate_hs


@pytest.mark.parametrize("family", FAMILIES)
def test_slow_answers_after_its_delay(fleet_factory: Any, family: str) -> None:
    fleet: SimFleet = fleet_factory([family])
    patient = _miner(fleet, timeout_s=5.0)
    hasty = _miner(fleet, timeout_s=0.3)
    fleet.set_fault(0, Fault.SLOW, slow_s=0.6)
    start = time.monotonic()
    assert patient.telemetry().hashrate_hs
    assert time.monotonic() - start >= 0.6
    with pytest.raises(Timeout):
        hasty.telemetry()


def test_fault_plan_picks_shares_evenly_and_indexes_exactly() -> None:
    plan = fault_plan(["hang:10%"], 100)
    assert sorted(plan) == list(range(0, 100, 10))
    assert set(plan.values()) == {(Fault.HANG, 0.0)}
    # A share goes to miners no earlier spec took; the same arguments, the same miners.
    mixed = fault_plan(["slow=2.5:1-2", "ignore:7", "hang:10%"], 100)
    assert {i: mixed[i] for i in (1, 2, 7)} == {1: (Fault.SLOW, 2.5), 2: (Fault.SLOW, 2.5),
                                                7: (Fault.IGNORE, 0.0)}
    hung = sorted(i for i, (f, _s) in mixed.items() if f is Fault.HANG)
    assert len(hung) == 10 and not {1, 2, 7} & set(hung)
    assert max(b - a for a, b in itertools.pairwise(hung)) <= 12  # spread out
    assert fault_plan(["slow=2.5:1-2", "ignore:7", "hang:10%"], 100) == mixed
    assert fault_plan(["hang:0%"], 10) == {} and len(fault_plan(["hang:100%"], 10)) == 10


@pytest.mark.parametrize(("spec", "message"), [
    ("hang", "KIND"), ("melt:10%", "unknown fault"), ("slow:1", "slow=SECONDS"),
    ("hang=3:1", "only slow"), ("hang:abc%", "percentage"), ("hang:150%", "0-100%"),
    ("hang:12", "outside the fleet"), ("hang:x", "not an index"), ("slow=0:1", "(0, 3600]"),
])
def test_fault_plan_refuses_a_bad_spec_by_name(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        fault_plan([spec], 10)
    assert repr(spec) in str(info.value)


def test_a_miner_has_one_fault() -> None:
    with pytest.raises(ValueError, match="miner 3 already has the fault hang"):
        fault_plan(["hang:3", "ignore:1-4"], 10)


def _fleet_process(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "hal.sim.asic.fleet", *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)


@pytest.mark.processes  # the simulated fleet as a command
def test_the_fleet_command_line_mixes_faults_per_miner() -> None:
    fleet = _fleet_process("--count", "5", "--families", "luxos", "--warmup-s", "0.2",
                           "--fault", "hang:0", "--fault", "refuse:1",
                           "--fault", "slow=0.5:2", "--fault", "ignore:3")
    try:
        assert fleet.stdout is not None
        options = json.loads(fleet.stdout.readline())
        entries = options["miners"]
        assert len(entries) == 5

        def miner(index: int, timeout_s: float = 3.0) -> Miner:
            (found,) = hal.asic.discover({"miners": [{**entries[index],
                                                      "timeout_s": timeout_s}]})
            assert isinstance(found, Miner)
            return found

        with pytest.raises(Timeout):
            miner(0, 0.5).telemetry()
        with pytest.raises(DeviceLost, match="refused"):
            miner(1).telemetry()
        start = time.monotonic()
        assert miner(2).telemetry().hashrate_hs
        assert time.monotonic() - start >= 0.5
        ignoring, healthy = miner(3), miner(4)
        for device in (ignoring, healthy):
            device.sleep()
        assert ignoring.telemetry().hashrate_hs  # said yes, still hashing
        assert healthy.telemetry().hashrate_hs == 0
    finally:
        assert fleet.stdin is not None
        fleet.stdin.close()
        fleet.wait(timeout=30)
    assert fleet.stderr is not None
    err = fleet.stderr.read()
    fleet.stderr.close()
    assert fleet.stdout is not None
    fleet.stdout.close()
    assert "RLIMIT_NOFILE soft limit" in err
    assert "faults" in err and "'hang': 1" in err


@pytest.mark.processes  # the simulated fleet as a command
def test_the_fleet_command_line_refuses_a_bad_fault() -> None:
    done = subprocess.run([sys.executable, "-m", "hal.sim.asic.fleet", "--count", "4",
                           "--fault", "hang:9"], capture_output=True, text=True, timeout=60,
                          cwd=REPO, check=False)
    assert done.returncode == 2
    assert "--fault 'hang:9': '9' is outside the fleet (0-3)" in done.stderr
    assert done.stdout == ""
