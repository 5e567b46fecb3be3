"""Issue 20's misreads of real firmware, each on a reply in the firmware's own shape
(tests/asic/data/recorded/, see its README), and the two control misreads on the simulators:
what rigd must read from each."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

import hal.asic
from hal.asic import FAMILIES, AntminerMiner, Miner, WhatsminerMiner
from hal.asic.transport import Reply, RpcClient, parse_reply
from hal.device import Telemetry

DATA = Path(__file__).with_name("data")
RECORDED = DATA / "recorded"


def _reply(name: str, command: str, directory: Path = RECORDED) -> Reply:
    raw = (directory / name).read_bytes()
    return Reply(command, parse_reply(raw, command), raw)


def _antminer(name: str) -> Telemetry:
    return FAMILIES["antminer"].parse_telemetry("asic/x", {"stats": _reply(name, "stats")})


def test_s9_chip_sensors_temp2_n_are_its_hottest_temperature() -> None:
    t = _antminer("antminer_s9_stats.raw")
    assert t.asic is not None
    assert [b.index for b in t.asic.boards] == [5, 6, 7]  # chains 6-8
    assert [b.temp_board_c for b in t.asic.boards] == [55, 57, 54]  # temp6..temp8
    assert [b.temp_chip_c for b in t.asic.boards] == [82, 87, 80]  # temp2_6..temp2_8
    assert t.temp_c == 87  # the firmware's own temp_max, not the PCB's 57
    assert t.hashrate_hs == pytest.approx(13488.21e9)
    assert t.asic.algorithm == "sha256d"


def test_s9_and_e3_fans_in_slots_5_to_8_are_read() -> None:
    s9 = _antminer("antminer_s9_stats.raw")
    e3 = _antminer("antminer_e3_stats.raw")
    assert s9.asic is not None and e3.asic is not None
    assert s9.asic.fans_rpm == (2880, 3120)  # fan_num 2, fan1..fan4 at 0, fan5 and fan6
    assert e3.asic.fans_rpm == (3840, 3720)


def test_a_counted_fan_that_stopped_reads_zero() -> None:
    raw = (RECORDED / "antminer_s9_stats.raw").read_bytes().replace(b'"fan6":3120',
                                                                      b'"fan6":0')
    t = FAMILIES["antminer"].parse_telemetry(
        "asic/x", {"stats": Reply("stats", parse_reply(raw), raw)})
    assert t.asic is not None and t.asic.fans_rpm == (2880, 0)  # fan_num still says 2


def test_e3_hashes_ethash_in_mhs() -> None:
    t = _antminer("antminer_e3_stats.raw")
    assert t.asic is not None
    assert t.asic.algorithm == "ethash"
    assert t.hashrate_hs == pytest.approx(191.62e6)  # "GHS 5s":"191.62" means MH/s
    assert sum(b.hashrate_hs or 0 for b in t.asic.boards) == pytest.approx(191.62e6)
    assert len(t.asic.boards) == 9
    assert t.temp_c == 69  # temp2_2
    assert t.power_w == pytest.approx(760 / 190e6 * 191.62e6, abs=0.1)  # E3 nameplate
    assert t.power_source == "estimated"


@pytest.mark.parametrize(("name", "sols"), [
    ("antminer_z11_stats.raw", 138.27e3),  # stock: "GHS 5s":"138.27", kSol/s
    ("antminer_z11_chipless_stats.raw", 146012.55),  # Chipless: "146012.55", Sol/s
])
def test_z11_hashes_equihash_in_solutions_per_second(name: str, sols: float) -> None:
    t = _antminer(name)
    assert t.asic is not None
    assert t.asic.algorithm == "equihash"
    assert t.hashrate_hs == pytest.approx(sols)
    boards = sum(b.hashrate_hs or 0 for b in t.asic.boards)  # chain rates in kSol/s
    assert boards == pytest.approx(sols, rel=1e-3)
    assert t.power_w == pytest.approx(1418 / 135e3 * sols, abs=0.1)  # Z11 nameplate


def test_avalon_1047_power_is_the_fifth_of_six_ps_fields() -> None:
    t = FAMILIES["avalon"].parse_telemetry("asic/x", {
        "stats": _reply("avalon_1047_stats_ps6.raw", "stats")})
    assert t.power_w == 2295  # PS[0 1213 1316 172 2295 1320]: 1320 is a voltage
    assert t.power_limit_w == 2300  # MPO
    assert t.hashrate_hs == pytest.approx(37104.58e9)  # GHSavg


def test_avalon_seven_ps_fields_still_read_the_wall_power() -> None:
    t = FAMILIES["avalon"].parse_telemetry("asic/x", {
        "stats": _reply("stats.json", "stats", DATA / "captures" / "avalon_asicrs")})
    assert t.power_w == 146  # PS[0 1221 4 0 0 2245 146], no WALLPOWER


def test_whatsminer_power_mode_reads_back_from_summary_or_status() -> None:
    summary = _reply("whatsminer_m50_summary_low_power.raw", "summary")
    status = _reply("whatsminer_m50_status_low_power.raw", "status")
    parse = WhatsminerMiner.parse_power_mode
    assert parse({"summary": summary}) == "low"  # "Power Mode":"Low"
    assert parse({"status": status}) == "low"  # "power_mode":"low"
    assert parse({"summary": summary, "status": status}) == "low"
    normal = _reply("summary.json", "summary", DATA / "captures" / "whatsminer_api_v2_asicrs")
    assert parse({"summary": normal}) == "normal"
    assert parse({}) is None


def _served(sim: Any, command: str) -> dict[str, Any]:
    host, port = sim.address.rsplit(":", 1)
    client = RpcClient(host, int(port), timeout_s=5)
    import asyncio

    if command == "status":
        return asyncio.run(client.send_json({"cmd": "status"})).data
    return asyncio.run(client.request(command)).data


def test_whatsminer_power_mode_set_is_read_back_and_served(fleet_factory: Any) -> None:
    fleet = fleet_factory(["whatsminer"])
    (miner,) = hal.asic.discover(fleet.discover_options())
    assert isinstance(miner, WhatsminerMiner)
    sim = fleet.miners[0]
    assert miner.power_mode() == "normal"
    miner.set_power_mode("low")
    assert miner.power_mode() == "low"
    # What any client reads from the simulator: both places the firmware says it.
    assert _served(sim, "summary")["SUMMARY"][0]["Power Mode"] == "Low"
    assert _served(sim, "status")["Msg"]["power_mode"] == "low"
    miner.set_power_mode("high")
    assert miner.power_mode() == "high"
    assert _served(sim, "summary")["SUMMARY"][0]["Power Mode"] == "High"


def _wait(miner: Miner, predicate: Any, timeout_s: float = 10.0) -> Telemetry:
    deadline = time.monotonic() + timeout_s
    while True:
        telemetry = miner.telemetry()
        if predicate(telemetry):
            return telemetry
        assert time.monotonic() < deadline, f"condition not reached: {telemetry}"
        time.sleep(0.05)


def test_antminer_wake_restores_the_mode_before_its_sleep(fleet_factory: Any) -> None:
    fleet = fleet_factory(["antminer"])
    sim = fleet.miners[0]
    (miner,) = hal.asic.discover(fleet.discover_options())
    assert isinstance(miner, AntminerMiner)
    full = miner.telemetry().hashrate_hs
    assert full
    miner.set_power_mode("low")
    low = _wait(miner, lambda t: t.hashrate_hs and t.hashrate_hs < 0.9 * full).hashrate_hs
    miner.sleep()
    assert miner.power_mode() == "sleep"
    miner.wake()
    assert miner.power_mode() == "low"  # not "normal": the operator's low mode stays
    assert sim.posted[-1]["miner-mode"] == 3
    assert _wait(miner, lambda t: (t.hashrate_hs or 0) > 0).hashrate_hs == pytest.approx(low)
    # A second sleep/wake keeps it, and a mode set by hand in between wins.
    miner.sleep()
    miner.sleep()  # asleep already: the mode before the first sleep is kept
    miner.wake()
    assert miner.power_mode() == "low"
    miner.sleep()
    miner.set_power_mode("normal")  # wakes it in normal mode, as the firmware does
    miner.wake()
    assert miner.power_mode() == "normal"


def test_antminer_wake_of_a_miner_asleep_before_we_met_it_is_normal(fleet_factory: Any) -> None:
    fleet = fleet_factory(["antminer"])
    (first,) = hal.asic.discover(fleet.discover_options())
    assert isinstance(first, AntminerMiner)
    first.sleep()
    (second,) = hal.asic.discover(fleet.discover_options())  # e.g. after a rigd restart
    assert isinstance(second, AntminerMiner)
    second.wake()
    assert second.power_mode() == "normal"
    assert json.dumps(fleet.miners[0].posted[-1]).count('"miner-mode": 0') == 1
