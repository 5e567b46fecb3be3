"""Issue 12's real-firmware defects, each on a reply written in the firmware's exact bytes
(tests/asic/data/recorded/, see its README): what rigd must read from each."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from hal.asic import FAMILIES, identify
from hal.asic.transport import Reply, RpcClient, parse_reply
from hal.errors import DeviceLost, NotSupported, PermissionDenied, Timeout
from hal.sim.asic import CgminerSim, Fault, SimFleet

RECORDED = Path(__file__).with_name("data") / "recorded"


def _reply(name: str, command: str) -> Reply:
    raw = (RECORDED / name).read_bytes()
    return Reply(command, parse_reply(raw, command), raw)


def test_1_whatsminer_invalid_escape_in_firmware_version() -> None:
    raw = (RECORDED / "whatsminer_m20s_summary_bad_escape.raw").read_bytes()
    assert b"\"\\'20200917.22.REL\\'\"" in raw  # the bytes the M20S sends
    t = FAMILIES["whatsminer"].parse_telemetry("asic/x", {"summary": _reply(
        "whatsminer_m20s_summary_bad_escape.raw", "summary")})
    assert t.hashrate_hs == pytest.approx(68208361.79e6)  # "HS RT"
    assert t.power_w == 3356 and t.power_limit_w == 3500
    summary = _reply("whatsminer_m20s_summary_bad_escape.raw", "summary")
    assert summary.section("SUMMARY")[0]["Firmware Version"] == "'20200917.22.REL'"


def test_2_raw_newline_inside_a_string() -> None:
    raw = (RECORDED / "strongu_u1plus_devs_newline.raw").read_bytes()
    assert b"2020\n\"" in raw
    devs = _reply("strongu_u1plus_devs_newline.raw", "devs")
    assert devs.section("DEVS")[0]["Last Share Time"] == "Wed Sep 16 09:13:27 2020\n"
    t = FAMILIES["cgminer"].parse_telemetry("asic/x", {
        "devs": devs, "summary": _reply("strongu_u1plus_summary.raw", "summary")})
    assert t.hashrate_hs == pytest.approx(12329646.36e6)
    assert t.asic is not None and t.asic.boards[0].hashrate_hs == pytest.approx(4109882.12e6)


def test_3_avalon_1047_hashrate_from_ghsavg() -> None:
    t = FAMILIES["avalon"].parse_telemetry("asic/x", {
        "stats": _reply("avalon_1047_estats.raw", "stats")})
    assert t.hashrate_hs == pytest.approx(36531.27e9)  # GHSavg: no GHSspd on the 1047
    assert t.asic is not None
    assert [b.hashrate_hs for b in t.asic.boards] == pytest.approx(
        [12210.42e9, 12150.87e9, 12169.98e9])
    assert t.power_w == 2284  # 5th of the six PS fields (the 6th is a voltage)
    assert t.power_limit_w == 2550  # MPO
    assert t.asic.env_temp_c == 30  # Temp
    assert [b.chips for b in t.asic.boards] == [120, 120, 120]  # TA[360] over 3 boards


def test_4_avalon_ps_all_zero_is_unknown_power() -> None:
    t = FAMILIES["avalon"].parse_telemetry("asic/x", {
        "stats": _reply("avalon_1066_stats_ps_zero.raw", "stats")})
    assert t.asic is not None and t.asic.is_mining is True
    assert t.hashrate_hs == pytest.approx(50114.10e9)
    assert t.power_w is None and t.power_source is None  # unknown, not 0 W


def test_5_avalon_controller_reads_every_module() -> None:
    stats = _reply("avalon_9xx_auc_stats.raw", "stats")
    assert len(stats.section("STATS")) == 10
    t = FAMILIES["avalon"].parse_telemetry("asic/x", {
        "stats": stats, "summary": _reply("avalon_9xx_auc_summary.raw", "summary")})
    assert t.hashrate_hs == pytest.approx(473712336.85e6)  # summary MHS 5s
    assert t.asic is not None
    assert t.asic.expected_hashrate_hs == pytest.approx((21745.89 + 21 * 21532.0) * 1e9)
    assert len(t.asic.fans_rpm) == 22  # one fan per module, every module read
    assert t.temp_c == 89


def test_6_scrypt_antminer_reports_mhs_under_ghs_keys() -> None:
    t = FAMILIES["antminer"].parse_telemetry("asic/x", {
        "summary": _reply("antminer_l3plus_summary.raw", "summary"),
        "stats": _reply("antminer_l3plus_stats.raw", "stats")})
    assert t.hashrate_hs == pytest.approx(504.56e6)  # MH/s, not GH/s
    assert t.asic is not None and t.asic.algorithm == "scrypt"
    assert [b.hashrate_hs for b in t.asic.boards] == pytest.approx(
        [126.23e6, 125.88e6, 126.41e6, 126.04e6])
    assert t.power_w == pytest.approx(800 / 504e6 * 504.56e6, abs=0.1)  # L3+ nameplate
    assert t.power_source == "estimated"


def test_6_sha256_antminer_says_so() -> None:
    d = Path(__file__).with_name("data") / "captures" / "antminer_s19pro_stock_bmminer_49.0.1.3"
    raw = (d / "rpc_stats.json").read_bytes()
    t = FAMILIES["antminer"].parse_telemetry("asic/x", {
        "stats": Reply("stats", parse_reply(raw), raw)})
    assert t.asic is not None and t.asic.algorithm == "sha256d"


def test_8_multi_command_whose_parts_all_fail_is_not_ok() -> None:
    reply = _reply("cgminer_multi_bogus+alsobogus.raw", "bogus+alsobogus")
    assert reply.ok is False
    with pytest.raises(NotSupported, match="Invalid command"):
        reply.raise_for_status()
    half = Reply("summary+bogus", {"summary": [{"STATUS": [{"STATUS": "S"}]}],
                                   "bogus": [{"STATUS": [{"STATUS": "E", "Code": 14,
                                                          "Msg": "Invalid command"}]}]})
    assert half.ok is False
    good = Reply("summary+devs", {"summary": [{"STATUS": [{"STATUS": "S"}]}],
                                  "devs": [{"STATUS": [{"STATUS": "S"}]}]})
    assert good.ok is True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_9_identify_says_refused() -> None:
    port = _free_port()
    with pytest.raises(DeviceLost, match=f"connection refused by 127.0.0.1:{port}"):
        asyncio.run(identify("127.0.0.1", port, timeout_s=1.0))


def test_9_identify_says_no_answer_within_the_timeout() -> None:
    fleet = SimFleet([CgminerSim()]).start()
    try:
        fleet.set_fault(0, Fault.HANG)
        with pytest.raises(Timeout) as info:
            asyncio.run(identify("127.0.0.1", fleet.miners[0].port, timeout_s=0.5))
        assert str(info.value) == f"no answer on {fleet.addresses[0]} within 0.5 s"
        assert "not recognised" not in str(info.value)
    finally:
        fleet.stop()


def test_11_firmware_refusals_name_the_miner() -> None:
    fleet = SimFleet([CgminerSim(read_only=True)]).start()
    try:
        host, port = fleet.addresses[0].split(":")
        client = RpcClient(host, int(port), timeout_s=2)
        with pytest.raises(PermissionDenied) as denied:
            asyncio.run(client.request("privileged"))
        assert str(denied.value).startswith(f"{fleet.addresses[0]}: privileged: Access denied")
        with pytest.raises(NotSupported) as unknown:
            asyncio.run(client.request("nosuchcommand"))
        assert str(unknown.value).startswith(f"{fleet.addresses[0]}: nosuchcommand:")
        assert "Error" not in str(unknown.value).split(":")[0]  # no class names
    finally:
        fleet.stop()
