"""Power: every family's range checked before anything is sent, firmware range refusals as
InvalidArgument, nameplate estimates, low-power modes, and simulators that respond physically
(power moves to a new target over the response time; asleep they draw standby power)."""

from __future__ import annotations

import time

import pytest

import hal.asic
from hal.asic import Miner
from hal.asic.power import STANDBY_W, algorithm_of, estimate_power_w
from hal.errors import InvalidArgument
from hal.sim.asic import SimFleet, WhatsminerSim


def _miners(fleet: SimFleet) -> list[Miner]:
    devices = hal.asic.discover(fleet.discover_options())
    assert all(isinstance(d, Miner) for d in devices)
    return devices  # type: ignore[return-value]


def test_luxos_refuses_a_target_outside_its_profiles_and_changes_nothing(fleet_factory) -> None:
    fleet = fleet_factory(["luxos"])
    (miner,) = _miners(fleet)
    assert miner.power_limit_range_w() == (784, 4195)
    before = miner.telemetry().power_limit_w
    for watts in (900000, 100, 0.5):
        with pytest.raises(InvalidArgument, match="784-4195 W"):
            miner.set_power_limit(watts)
    assert fleet.miners[0].requests.count("profileset") == 0
    assert miner.telemetry().power_limit_w == before
    miner.set_power_limit(2000)  # fastest profile under 2000 W: 440MHz, 1916 W
    assert miner.telemetry().power_limit_w == 1916
    assert "440MHz" in miner.power_modes()


@pytest.mark.parametrize("watts", [1e6, 0.5, 2000.5, float("nan"), -3, True])
def test_whatsminer_never_truncates_or_sends_out_of_range(fleet_factory, watts: float) -> None:
    fleet = fleet_factory(["whatsminer"])
    (miner,) = _miners(fleet)
    with pytest.raises(InvalidArgument) as info:
        miner.set_power_limit(watts)
    assert miner.id in str(info.value)
    assert "get_token" not in fleet.miners[0].requests  # refused before any write
    assert fleet.miners[0].power_limit_w is None


def test_whatsminer_firmware_range_refusal_is_invalid_argument(fleet_factory) -> None:
    """The firmware's own refusal ("power_limit out of range") becomes InvalidArgument with
    the range, not a generic error (the client's check is bypassed to reach the firmware)."""
    fleet = fleet_factory(["whatsminer"])
    (miner,) = _miners(fleet)
    with pytest.raises(InvalidArgument, match="out of its range"):
        hal.asic.base.run_sync(lambda: miner.async_set_power_limit(100000), 5)


def test_power_target_moves_over_the_response_time() -> None:
    fleet = SimFleet([WhatsminerSim(warmup_s=0.1, response_s=1.0)]).start()
    try:
        (miner,) = _miners(fleet)
        assert miner.telemetry().power_w == 3200
        start = time.monotonic()
        miner.set_power_limit(2000)
        first = miner.telemetry()
        assert first.power_limit_w == 2000
        if time.monotonic() - start < 0.8:  # read before the ramp could end
            assert 2000 < (first.power_w or 0) <= 3200
        deadline = time.monotonic() + 10
        while (miner.telemetry().power_w or 0) > 2000 and time.monotonic() < deadline:
            time.sleep(0.05)
        settled = miner.telemetry()
        assert settled.power_w == 2000
        assert time.monotonic() - start >= 1.0  # not before the response time
        miner.set_power_limit(1000)  # below the model's range: the boards stop at 1600 W
        deadline = time.monotonic() + 10
        while (miner.telemetry().power_w or 0) > 1600 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert miner.telemetry().power_w == 1600
        assert miner.telemetry().power_limit_w == 1000  # what was set, as the firmware says
    finally:
        fleet.stop()


@pytest.mark.parametrize("family", ["antminer", "luxos", "whatsminer", "avalon"])
def test_asleep_hashes_nothing_and_draws_standby(fleet_factory, family: str) -> None:
    fleet = fleet_factory([family])
    (miner,) = _miners(fleet)
    miner.sleep()
    asleep = miner.telemetry()
    assert asleep.hashrate_hs == 0 and asleep.asic is not None
    assert asleep.asic.is_mining is False
    assert asleep.power_w is not None and 0 < asleep.power_w <= 200


def test_whatsminer_power_modes(fleet_factory) -> None:
    fleet = fleet_factory(["whatsminer"])
    (miner,) = _miners(fleet)
    assert miner.power_modes() == ("low", "normal", "high")
    miner.set_power_mode("low")
    assert miner.telemetry().power_w == pytest.approx(0.8 * 3200)
    with pytest.raises(InvalidArgument):
        miner.set_power_mode("turbo")


def test_nameplate_estimates() -> None:
    assert estimate_power_w("Antminer S19 Pro", 110e12) == pytest.approx(3250)
    assert estimate_power_w("Antminer S19j Pro", 50e12) == pytest.approx(1525)
    assert estimate_power_w("Antminer S21", 0.0) == STANDBY_W
    assert estimate_power_w("Antminer S99 Imaginary", 100e12) is None
    assert estimate_power_w("Antminer S19", None) is None
    assert algorithm_of("Antminer L3+") == "scrypt"
    assert algorithm_of("Antminer D3") == "x11"
    assert algorithm_of("Antminer S19 XP") == "sha256d"


def test_antminer_sleep_sends_a_coherent_configuration(fleet_factory) -> None:
    fleet = fleet_factory(["antminer"])
    sim = fleet.miners[0]
    (miner,) = _miners(fleet)
    miner.sleep()
    body = sim.posted[-1]
    assert body["miner-mode"] == 1
    assert "bitmain-work-mode" not in body  # no stale mode beside the new one
    assert body["pools"] == [{"url": p["url"], "user": p["user"], "pass": p["pass"]}
                             for p in sim.miner_conf["pools"]]
    assert sim.miner_conf["bitmain-work-mode"] == "1"  # what the firmware then reports
    assert miner.power_modes() == ("normal", "sleep", "low")
