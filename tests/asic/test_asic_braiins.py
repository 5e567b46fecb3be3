"""Braiins OS through its public gRPC API against the simulator: reads, power target, token
sessions, refusals, the RPC fallback for firmware without gRPC, and the committed generated
code for hal/asic/bos_v1.proto."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

import hal.asic
from hal.asic import BraiinsMiner
from hal.asic import bos_v1_pb2 as pb
from hal.errors import DeviceLost, InvalidArgument, PermissionDenied
from hal.sim.asic import BraiinsSim, SimFleet

REPO = Path(__file__).resolve().parents[2]
WARMUP_S = 0.3


def _braiins(fleet: SimFleet, **overrides: object) -> BraiinsMiner:
    options = fleet.discover_options()
    options["miners"][0].update(overrides)
    (miner,) = hal.asic.discover(options)
    assert isinstance(miner, BraiinsMiner)
    return miner


@pytest.fixture
def sim_fleet() -> Any:
    started: list[SimFleet] = []

    def start(**kwargs: Any) -> SimFleet:
        fleet = SimFleet([BraiinsSim(warmup_s=WARMUP_S, **kwargs)]).start()
        started.append(fleet)
        return fleet

    yield start
    for fleet in started:
        fleet.stop()


def test_generated_code_is_current(tmp_path: Path) -> None:
    from grpc_tools import protoc

    include = Path(protoc.__file__).parent / "_proto"
    args = ["grpc_tools.protoc", f"-I{REPO / 'hal/asic'}", f"-I{include}",
            f"--python_out={tmp_path}", f"--pyi_out={tmp_path}",
            str(REPO / "hal/asic/bos_v1.proto")]
    assert protoc.main(args) == 0
    for name in ("bos_v1_pb2.py", "bos_v1_pb2.pyi"):
        assert (tmp_path / name).read_text() == (REPO / "hal/asic" / name).read_text(), name


def test_reads_come_from_grpc(sim_fleet: Any) -> None:
    fleet = sim_fleet()
    sim = fleet.miners[0]
    miner = _braiins(fleet)
    t = miner.telemetry()
    assert t.asic is not None
    # The v25_11 captures: 121015.4 GH/s (GetMinerStats last_5s), 2472 W, target 3031 W.
    assert t.hashrate_hs == pytest.approx(121015.4090279137e9)
    assert sum(b.hashrate_hs or 0 for b in t.asic.boards) == pytest.approx(t.hashrate_hs)
    assert (t.power_w, t.power_limit_w, t.power_source) == (2472, 3031, "measured")
    assert [(b.index, b.chips, b.temp_board_c, b.temp_chip_c) for b in t.asic.boards] == [
        (1, 110, 56.5, 71.5), (2, 110, 54.5, 69.5), (3, 110, 56.0, 71.0)]
    assert t.asic.fans_rpm == (5879, 5819, 5909, 5909)
    assert [(p.url, p.active, p.accepted) for p in t.asic.pools] == [
        ("stratum+tcp://example.pool.com:3333", True, 5048),
        ("stratum+tcp://example.pool2.com:3333", False, 0)]
    assert t.asic.is_mining is True and t.asic.uptime_s and t.asic.uptime_s >= 20359
    assert sim.requests == []  # nothing over the cgminer RPC
    assert {"Login", "GetMinerStats", "GetHashboards", "GetCoolingState",
            "GetActivePerformanceMode", "GetPoolGroups", "GetMinerDetails"} <= set(sim.grpc_calls)
    info = miner.info()
    assert (info.model, info.serial) == ("Antminer S19 XP", "YNAHEAUBCJCBA03GL")
    assert info.firmware_version == "2025-11-21-0-eb658dcd-25.11-plus" and info.simulated


def test_discovery_identifies_braiins_from_its_rpc(sim_fleet: Any) -> None:
    fleet = sim_fleet()
    options = fleet.discover_options()
    del options["miners"][0]["family"]
    (miner,) = hal.asic.discover(options)
    assert isinstance(miner, BraiinsMiner)
    assert miner.telemetry().power_w == 2472


def test_power_target(sim_fleet: Any) -> None:
    fleet = sim_fleet()
    sim = fleet.miners[0]
    miner = _braiins(fleet)
    before = miner.telemetry()
    assert miner.power_limit_range_w() == (1000, 4000)  # GetConstraints
    miner.set_power_limit(2000)
    after = miner.telemetry()
    assert (after.power_limit_w, after.power_w) == (2000, 2000)
    assert after.hashrate_hs == pytest.approx(before.hashrate_hs * 2000 / 2472)
    assert sim.saved_target_w == 2000  # saved, not only in force
    for watts in (500, 4001, 2000.5):
        with pytest.raises(InvalidArgument, match=r"1000-4000 W|whole watts"):
            miner.set_power_limit(watts)
    assert sim.grpc_calls.count("SetPowerTarget") == 1  # refused before anything was sent
    # The firmware's own refusal (client check bypassed) is InvalidArgument too.
    with pytest.raises(InvalidArgument, match="out of range"):
        hal.asic.base.run_sync(lambda: miner.async_set_power_limit(5000), 5)
    assert miner.telemetry().power_limit_w == 2000


def test_sleep_is_pause_and_wake_resumes(sim_fleet: Any) -> None:
    fleet = sim_fleet()
    sim = fleet.miners[0]
    miner = _braiins(fleet)
    miner.sleep()
    asleep = miner.telemetry()
    assert sim.paused and asleep.hashrate_hs == 0 and asleep.asic is not None
    assert asleep.asic.is_mining is False and asleep.health.state == "degraded"
    assert asleep.power_w == 30  # control board and fans
    miner.restart()  # bosminer restarts (and, like the firmware, mines after its warm-up)
    miner.sleep()
    miner.wake()
    deadline = time.monotonic() + 10
    while (miner.telemetry().hashrate_hs or 0) == 0:
        assert time.monotonic() < deadline, "hashing did not resume"
        time.sleep(0.05)
    assert not sim.paused
    assert [c for c in sim.grpc_calls if c in ("PauseMining", "ResumeMining", "Restart")] == [
        "PauseMining", "Restart", "PauseMining", "ResumeMining"]


def _wait_hashrate(miner: BraiinsMiner, hashing: bool) -> None:
    deadline = time.monotonic() + 10
    while ((miner.telemetry().hashrate_hs or 0) > 0) is not hashing:
        assert time.monotonic() < deadline, f"hashing never became {hashing}"
        time.sleep(0.05)


def test_every_sleep_pauses_again_after_a_wake(sim_fleet: Any) -> None:
    """Issue 19: the simulator answered an empty PauseMining from its read cache after the
    first wake, so every later sleep "succeeded" and changed nothing."""
    fleet = sim_fleet()
    sim = fleet.miners[0]
    miner = _braiins(fleet)
    full = miner.telemetry().power_w
    for _round in range(3):
        miner.sleep()
        asleep = miner.telemetry()
        assert sim.paused and asleep.hashrate_hs == 0 and asleep.power_w == 30
        miner.wake()
        _wait_hashrate(miner, True)
        assert miner.telemetry().power_w == full
    assert sim.grpc_calls.count("PauseMining") == 3


def test_wrong_password_is_refused_and_changes_nothing(sim_fleet: Any) -> None:
    fleet = sim_fleet()
    miner = _braiins(fleet, password="not-root")
    with pytest.raises(PermissionDenied, match="refused the login of 'root'"):
        miner.sleep()
    with pytest.raises(PermissionDenied):
        miner.telemetry()
    assert not fleet.miners[0].paused


def test_a_forgotten_or_forged_token_is_renewed_once(sim_fleet: Any) -> None:
    fleet = sim_fleet()
    sim = fleet.miners[0]
    miner = _braiins(fleet)
    miner.telemetry()
    assert sim.grpc_calls.count("Login") == 1
    miner.telemetry()
    assert sim.grpc_calls.count("Login") == 1  # a fresh token is reused
    sim.expire_sessions()  # the miner forgets it: six concurrent reads fail, one login
    assert miner.telemetry().power_w == 2472
    assert sim.grpc_calls.count("Login") == 2
    miner.token = "forged"
    miner.sleep()
    assert sim.paused and sim.grpc_calls.count("Login") == 3


def test_reads_resume_over_grpc_as_soon_as_the_miner_is_back(sim_fleet: Any) -> None:
    """The gRPC channel kept between polls is dropped when the miner goes away, so the first
    poll after it returns connects at once (no reconnect backoff) and over gRPC (an outage
    is not mistaken for firmware without gRPC)."""
    fleet = sim_fleet()
    sim = fleet.miners[0]
    miner = _braiins(fleet)
    assert miner.telemetry().power_w == 2472
    fleet.power_off(0)
    with pytest.raises(DeviceLost, match="connection refused"):
        miner.telemetry()
    fleet.power_on(0)
    calls = len(sim.grpc_calls)
    assert miner.telemetry().power_w == 2472
    assert len(sim.grpc_calls) > calls and sim.requests == []


def test_the_simulator_refuses_calls_without_a_token(sim_fleet: Any) -> None:
    """The simulator's auth is real: a call with no token or a made-up one is UNAUTHENTICATED
    and changes nothing (raw gRPC, not rigd's client)."""
    sim = sim_fleet().miners[0]

    async def pause(metadata: tuple[tuple[str, str], ...]) -> grpc.StatusCode:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{sim.grpc_port}") as channel:
            method = channel.unary_unary(
                "/braiins.bos.v1.ActionsService/PauseMining",
                request_serializer=pb.PauseMiningRequest.SerializeToString,
                response_deserializer=pb.PauseMiningResponse.FromString)
            try:
                await method(pb.PauseMiningRequest(), metadata=metadata, timeout=5)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

    assert asyncio.run(pause(())) == grpc.StatusCode.UNAUTHENTICATED
    assert asyncio.run(pause((("authorization", "0123456789abcdef"),))) \
        == grpc.StatusCode.UNAUTHENTICATED
    assert not sim.paused


def test_without_grpc_reads_fall_back_to_rpc(sim_fleet: Any) -> None:
    """Firmware older than the gRPC API (or its port closed): the same figures over the
    cgminer-compatible RPC; control needs gRPC and says which port refused."""
    with_grpc = _braiins(sim_fleet()).telemetry()
    fleet = sim_fleet(grpc=False)
    sim = fleet.miners[0]
    miner = _braiins(fleet, grpc_port=_closed_port())
    t = miner.telemetry()
    assert t.asic is not None and with_grpc.asic is not None
    assert t.hashrate_hs == pytest.approx(with_grpc.hashrate_hs)
    assert (t.power_w, t.power_limit_w) == (with_grpc.power_w, with_grpc.power_limit_w)
    assert t.asic.fans_rpm == with_grpc.asic.fans_rpm
    assert [(b.index, b.temp_board_c, b.temp_chip_c) for b in t.asic.boards] == [
        (b.index, b.temp_board_c, b.temp_chip_c) for b in with_grpc.asic.boards]
    assert sim.requests == ["summary+devs+temps+fans+tunerstatus+pools"]
    refused = f"connection refused by 127.0.0.1:{miner.config.grpc_port}"
    with pytest.raises(DeviceLost, match=refused):
        miner.sleep()


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_standard_ports_fleet_gives_each_miner_its_own_address() -> None:
    """Each miner on its own loopback address with the firmware's ports; an address where
    anything listens on a port a field client tries is not handed out."""
    import socket

    from hal.sim.asic.fleet import CLIENT_PORTS, loopback_hosts, ports_free

    with SimFleet.of(["braiins", "antminer"], standard_ports=True, warmup_s=WARMUP_S) as fleet:
        braiins, antminer = fleet.miners
        assert isinstance(braiins, BraiinsSim)
        assert braiins.host != antminer.host and braiins.host.startswith("127.")
        assert (braiins.port, braiins.grpc_port, antminer.port) == (4028, 50051, 4028)
        assert antminer.web_port == 80
        assert not ports_free(braiins.host, CLIENT_PORTS)
    (host,) = loopback_hosts(1)
    with socket.socket() as squatter:
        squatter.bind((host, CLIENT_PORTS[-1]))
        squatter.listen()
        assert not ports_free(host, CLIENT_PORTS)
    assert ports_free(host, CLIENT_PORTS)


def test_no_simulator_borrows_the_clients_protocol_code() -> None:
    """hal/sim/asic imports nothing from hal.asic: a bug in the client's parsing, token
    derivation or message definitions can then never be shared by the simulator it meets."""
    import ast

    for path in sorted((REPO / "hal/sim/asic").glob("*.py")):
        tree = ast.parse(path.read_text())
        imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import)
                     for a in n.names]
        assert not [m for m in imported if m == "hal.asic" or m.startswith("hal.asic.")], path
