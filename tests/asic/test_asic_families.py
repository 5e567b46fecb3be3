"""Each family against its simulator: curtailment round trips, power targets, credentials,
sessions, and NotSupported where a firmware has no such control."""

from __future__ import annotations

import socket
import threading
import time

import pytest

import hal.asic
from hal.asic import AntminerMiner, Miner, MinerConfig
from hal.device import Capability
from hal.errors import DeviceLost, InvalidArgument, NotSupported, PermissionDenied
from hal.sim.asic import LuxosSim, SimFleet

WARMUP_S = 0.3


def _miners(fleet: SimFleet, **overrides: object) -> list[Miner]:
    options = fleet.discover_options()
    for entry in options["miners"]:
        entry.update(overrides)
    devices = hal.asic.discover(options)
    assert all(isinstance(d, Miner) for d in devices)
    return devices  # type: ignore[return-value]


def _wait_hashing(miner: Miner, timeout_s: float = 5.0) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        hashrate = miner.telemetry().hashrate_hs or 0.0
        if hashrate > 0:
            return hashrate
        time.sleep(0.05)
    raise AssertionError("hashrate did not come back")


@pytest.mark.parametrize("family", ["antminer", "luxos", "whatsminer", "avalon", "braiins"])
def test_curtailment_round_trip(fleet_factory, family: str) -> None:
    fleet = fleet_factory([family])
    (miner,) = _miners(fleet)
    before = miner.telemetry()
    assert before.hashrate_hs and before.hashrate_hs > 0 and before.asic.is_mining

    miner.sleep()
    asleep = miner.telemetry()
    assert asleep.hashrate_hs == 0 and asleep.asic.is_mining is False
    # Confirmed low from telemetry (stock Antminer: the nameplate estimate falls to standby).
    assert before.power_w and asleep.power_w is not None
    assert asleep.power_w < 0.05 * before.power_w
    expected_source = "estimated" if family == "antminer" else "measured"
    assert before.power_source == asleep.power_source == expected_source

    miner.wake()
    assert miner.telemetry().hashrate_hs == 0  # still warming up
    assert _wait_hashing(miner) == pytest.approx(before.hashrate_hs)
    assert miner.telemetry().power_w == before.power_w


def test_antminer_sends_back_the_full_config(fleet_factory) -> None:
    fleet = fleet_factory(["antminer"])
    sim = fleet.miners[0]
    pools_before = list(sim.miner_conf["pools"])
    (miner,) = _miners(fleet)
    miner.sleep()
    assert sim.miner_conf["miner-mode"] == 1
    assert sim.miner_conf["pools"] == pools_before  # nothing lost by the write
    assert sim.miner_conf["bitmain-fan-pwm"] == "100"


def test_antminer_low_power_mode_and_bad_mode(fleet_factory) -> None:
    fleet = fleet_factory(["antminer"])
    (miner,) = _miners(fleet)
    assert isinstance(miner, AntminerMiner)
    full = miner.telemetry().hashrate_hs
    hal.asic.base.run_sync(lambda: miner.set_mode("low"), 5)
    assert miner.telemetry().hashrate_hs == pytest.approx(0.7 * full, rel=1e-3)
    with pytest.raises(InvalidArgument):
        hal.asic.base.run_sync(lambda: miner.set_mode("turbo"), 5)


def test_antminer_wrong_password_is_permission_denied(fleet_factory) -> None:
    fleet = fleet_factory(["antminer"])
    (miner,) = _miners(fleet, password="wrong")
    with pytest.raises(PermissionDenied, match="digest"):
        miner.sleep()
    assert fleet.miners[0].state.sleeping is False


def test_whatsminer_power_limit_scales_power_and_hashrate(fleet_factory) -> None:
    fleet = fleet_factory(["whatsminer"])
    (miner,) = _miners(fleet)
    before = miner.telemetry()
    miner.set_power_limit(2000)
    after = miner.telemetry()
    assert after.power_limit_w == 2000 and after.power_w == 2000
    assert after.hashrate_hs == pytest.approx(before.hashrate_hs * 2000 / 3200, rel=1e-3)


def test_whatsminer_wrong_password_is_refused_and_changes_nothing(fleet_factory) -> None:
    fleet = fleet_factory(["whatsminer"])
    (miner,) = _miners(fleet, password="not-admin")
    with pytest.raises(PermissionDenied, match="token"):
        miner.sleep()
    assert miner.telemetry().asic.is_mining is True


def test_whatsminer_write_without_token_is_rejected(fleet_factory) -> None:
    import asyncio
    import json

    from hal.asic.transport import RpcClient

    fleet = fleet_factory(["whatsminer"])
    host, port = fleet.addresses[0].split(":")
    client = RpcClient(host, int(port), timeout_s=2)
    # A plaintext write is not a command the API accepts; an enc blob with no valid token fails.
    raw = asyncio.run(client.exchange(json.dumps({"enc": 1, "data": "AAAA"}).encode()))
    assert json.loads(raw)["Code"] == 135
    assert fleet.miners[0].state.sleeping is False


def test_whatsminer_write_needs_the_current_token(fleet_factory) -> None:
    import asyncio
    import json

    from hal.asic.transport import RpcClient
    from hal.asic.whatsminer import decrypt_payload, derive_token, encrypt_command

    fleet = fleet_factory(["whatsminer"])
    host, port = fleet.addresses[0].split(":")
    client = RpcClient(host, int(port), timeout_s=2)
    token = asyncio.run(client.send_json({"cmd": "get_token"})).data["Msg"]
    key, sign = derive_token("admin", token["salt"], token["newsalt"], token["time"])
    # Right key, wrong token: refused in plaintext.
    forged = encrypt_command(key, {"cmd": "power_off", "token": sign[:-1] + "x"})
    assert json.loads(asyncio.run(client.exchange(forged)))["Code"] == 135
    assert fleet.miners[0].state.sleeping is False
    # Right key and token: accepted, and the answer comes back encrypted with the same key.
    raw = asyncio.run(client.exchange(encrypt_command(key, {"cmd": "power_off", "token": sign})))
    answer = json.loads(decrypt_payload(key, json.loads(raw)["enc"]))
    assert answer["Code"] == 131 and fleet.miners[0].state.sleeping is True


def test_luxos_profile_power_target(fleet_factory) -> None:
    fleet = fleet_factory(["luxos"])
    (miner,) = _miners(fleet)
    before = miner.telemetry()
    miner.set_power_limit(900)  # profiles: 215MHz = 879 W fits, 240MHz = 978 W does not
    after = miner.telemetry()
    assert after.power_limit_w == 879
    assert after.power_w == pytest.approx(1051 * 879 / 1188, abs=1)
    assert after.hashrate_hs == pytest.approx(before.hashrate_hs * 44.4 / 59.8, rel=1e-3)
    with pytest.raises(InvalidArgument, match="784-4195 W"):
        miner.set_power_limit(100)


def test_luxos_session_expiry_is_renewed(fleet_factory) -> None:
    fleet = SimFleet([LuxosSim(warmup_s=WARMUP_S, session_ttl_s=0.2)]).start()
    try:
        (miner,) = _miners(fleet)
        sim = fleet.miners[0]
        miner.sleep()
        time.sleep(0.3)  # the miner forgets the session
        miner.wake()
        assert sim.requests.count("logon") == 2
        assert sim.state.sleeping is False
        sim.expire_session()
        miner.switch_pool(2)
        assert sim.active_pool == 2
    finally:
        fleet.stop()


def test_pool_switch(fleet_factory) -> None:
    fleet = fleet_factory(["whatsminer", "avalon"])
    whatsminer, avalon = _miners(fleet)
    whatsminer.switch_pool(1)
    assert fleet.miners[0].active_pool == 1
    assert avalon.capabilities >= {Capability.POOL_SWITCH}


_CALLS = {
    Capability.SLEEP_WAKE: lambda m: m.sleep(),
    Capability.SET_POWER_LIMIT: lambda m: m.set_power_limit(1000),
    Capability.POOL_SWITCH: lambda m: m.switch_pool(0),
    Capability.RESTART: lambda m: m.restart(),
}


@pytest.mark.parametrize("family", sorted(hal.asic.FAMILIES))
def test_controls_do_what_capabilities_say(family: str) -> None:
    """An undeclared control refuses before sending anything; a declared one goes to the
    miner (here a closed loopback port, so it fails as unreachable, never as NotSupported)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    miner = hal.asic.make_miner(family, MinerConfig("127.0.0.1", port, timeout_s=0.5,
                                                    web_port=port, grpc_port=port))
    declared = 0
    for capability, call in _CALLS.items():
        if capability not in miner.capabilities:
            with pytest.raises(NotSupported):
                call(miner)
        else:
            declared += 1
            with pytest.raises(DeviceLost, match=f"connection refused by 127.0.0.1:{port}"):
                call(miner)
    assert declared == _DECLARED[family]


_DECLARED = {"antminer": 2, "luxos": 4, "whatsminer": 4, "whatsminer_v3": 0, "avalon": 3,
             "braiins": 3, "cgminer": 0}


def test_info_marks_simulated_devices_and_telemetry_works_from_threads(fleet_factory) -> None:
    fleet = fleet_factory(["antminer", "luxos", "whatsminer"])
    miners = _miners(fleet)
    infos = [m.info() for m in miners]
    assert [i.model for i in infos] == ["Antminer S19 Pro", "Antminer S19k Pro", "Whatsminer"]
    assert all(i.simulated for i in infos)
    assert [m.id for m in miners] == [f"asic/{a}" for a in fleet.addresses]
    results: list[float] = []

    def poll() -> None:
        results.extend(m.telemetry().hashrate_hs or 0.0 for m in miners)

    threads = [threading.Thread(target=poll) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 12 and all(r > 0 for r in results)


# Reference vector (crypt(3) of glibc/libxcrypt): password "admin", salt "BQ5hoXV9",
# newsalt "abcd1234", time "5678". key = md5crypt("admin", "$1$BQ5hoXV9$") hash part,
# sign = md5crypt(key + time, "$1$abcd1234$") hash part, AES key = sha256(key).
TOKEN_VECTOR = ("RxmaDUO33TS7O26yeMHZ81", "1sPcG4NdiPdO1k4aSSPOD1")


def test_whatsminer_token_derivations_agree_with_the_reference_vector() -> None:
    """The client's pure-Python derivation and the simulator's crypt(3) one are separate code;
    both are pinned to the same vector, so a bug in either fails here."""
    import hashlib

    from hal.asic.whatsminer import derive_token
    from hal.sim.asic.whatsminer import firmware_token

    key_text, sign = TOKEN_VECTOR
    expected = (hashlib.sha256(key_text.encode()).digest(), sign)
    assert derive_token("admin", "BQ5hoXV9", "abcd1234", "5678") == expected
    assert firmware_token("admin", "BQ5hoXV9", "abcd1234", "5678") == expected
