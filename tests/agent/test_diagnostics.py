"""The level-2 rules and the level-1 checks that need no rigd: each verdict from a reading or a
file made to show it (the rig-level run is in test_observe.py)."""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from pathlib import Path

import pytest

from agent.config.settings import Config
from agent.runtime.diagnostics import checks, rig
from agent.runtime.diagnostics.checks import Facts, Result
from hal.device import (
    AsicBoard,
    AsicTelemetry,
    DeviceKind,
    GpuProcess,
    GpuTelemetry,
    Health,
    HealthState,
    PoolStatus,
    PowerSource,
    Telemetry,
)
from rigapi.model import IDLE, HashingSpec, Reading, WorkloadKind, WorkloadSpec, WorkloadState
from rigapi.model import WorkloadStatus as Status

GPU = DeviceKind.GPU
ASIC = DeviceKind.ASIC
IDLE_FACTS = Facts(IDLE)


def gpu(**fields: object) -> Telemetry:
    detail = {k: v for k, v in fields.items() if k in GpuTelemetry.__dataclass_fields__}
    common = {k: v for k, v in fields.items() if k not in detail}
    return Telemetry("gpu/GPU-1", GPU, gpu=GpuTelemetry(**detail), **common)


def miner(boards: tuple[AsicBoard, ...] = (), **fields: object) -> Telemetry:
    detail = {k: v for k, v in fields.items() if k in AsicTelemetry.__dataclass_fields__}
    common = {k: v for k, v in fields.items() if k not in detail}
    return Telemetry("asic/10.0.0.5:4028", ASIC, asic=AsicTelemetry(boards=boards, **detail),
                     **common)


@pytest.mark.parametrize(
    ("telemetry", "result", "fragment"),
    [
        (gpu(temp_c=60.0), Result.PASS, "60 °C"),
        (gpu(temp_c=88.0), Result.WARN, "at or above 85"),
        (gpu(temp_c=97.0), Result.FAIL, "at or above 95"),
        (gpu(temp_c=255.0), Result.FAIL, "broken sensor"),
        (gpu(temp_c=70.0, throttle_reasons=("hw_thermal_slowdown",)), Result.WARN,
         "hw_thermal_slowdown"),
        (gpu(), Result.SKIP, "no temperature"),
        (miner((AsicBoard(0, temp_chip_c=104.0), AsicBoard(1, temp_chip_c=70.0))), Result.FAIL,
         "board 0 chip 104 °C"),
    ],
)
def test_temperature(telemetry: Telemetry, result: Result, fragment: str) -> None:
    verdict = checks.temperature(telemetry.kind, telemetry)
    assert verdict[0] == result and fragment in verdict[1], verdict


@pytest.mark.parametrize(
    ("telemetry", "result", "fragment"),
    [
        (gpu(power_w=300.0, power_limit_w=400.0), Result.PASS, "300 W of a 400 W limit"),
        (gpu(power_w=440.0, power_limit_w=400.0), Result.WARN, "10% over"),
        (gpu(power_w=600.0, power_limit_w=400.0), Result.FAIL, "50% over"),
        (gpu(power_w=300.0, power_limit_w=900.0, power_limit_min_w=200.0,
             power_limit_max_w=700.0), Result.FAIL, "outside the board's 200 .. 700 W"),
        (miner(power_w=3000.0, power_source=PowerSource.ESTIMATED), Result.PASS, "estimated"),
        (gpu(), Result.SKIP, "no power reading"),
    ],
)
def test_power(telemetry: Telemetry, result: Result, fragment: str) -> None:
    verdict = checks.power(telemetry)
    assert verdict[0] == result and fragment in verdict[1], verdict


def test_fans_memory_and_xid() -> None:
    assert checks.fans(ASIC, miner(fans_rpm=(6000, 0), is_mining=True))[0] == Result.FAIL
    assert checks.fans(ASIC, miner(fans_rpm=(0, 0), is_mining=False))[0] == Result.PASS
    assert checks.fans(GPU, gpu(fan_speed_pct=0.0, temp_c=75.0))[0] == Result.WARN
    held = gpu(mem_total_bytes=80 << 30, mem_used_bytes=10 << 30, mem_free_bytes=70 << 30,
               processes=(GpuProcess(41, 2 << 30), GpuProcess(42, 8 << 30)))
    verdict = checks.memory(GPU, held, Facts(IDLE, workload_pids=frozenset({41})))
    assert verdict[0] == Result.WARN and "pid 42 (8192 MiB)" in verdict[1]
    assert checks.memory(GPU, held, Facts(IDLE, workload_pids=frozenset({41, 42})))[0] \
        == Result.PASS
    assert checks.xid(gpu(last_xid=13))[0] == Result.WARN


def test_miner_hashrate_boards_and_pools() -> None:
    healthy = (AsicBoard(0, hashrate_hs=40e12, chips=114, expected_chips=114),
               AsicBoard(1, hashrate_hs=40e12, chips=114, expected_chips=114))
    ok = miner(healthy, hashrate_hs=80e12, expected_hashrate_hs=82e12, is_mining=True)
    assert checks.hashrate(ok, IDLE_FACTS) == (Result.PASS, "80 TH/s, 98% of the expected "
                                                            "82 TH/s")
    slow = miner(healthy, hashrate_hs=30e12, expected_hashrate_hs=82e12, is_mining=True)
    assert checks.hashrate(slow, IDLE_FACTS)[0] == Result.FAIL
    chips = (healthy[0], AsicBoard(1, hashrate_hs=38e12, chips=100, expected_chips=114))
    verdict = checks.hashrate(miner(chips, hashrate_hs=78e12, is_mining=True), IDLE_FACTS)
    assert verdict == (Result.FAIL, "board 1: 100 of 114 chips")
    asleep = miner(healthy, is_mining=False)
    assert checks.hashrate(asleep, IDLE_FACTS)[0] == Result.WARN
    assert checks.hashrate(asleep, Facts(IDLE, curtailed="op-1"))[0] == Result.PASS
    dead = miner(pools=(PoolStatus("stratum+tcp://a:3333", status="Dead"),))
    assert checks.pool(dead)[0] == Result.FAIL
    rejecting = miner(pools=(PoolStatus("stratum+tcp://a:3333", status="Alive", active=True,
                                        accepted=90, rejected=10),))
    assert checks.pool(rejecting)[0] == Result.WARN


def test_telemetry_health_and_workload() -> None:
    lost = Telemetry("gpu/GPU-1", GPU, health=Health(HealthState.UNHEALTHY, "GPU is lost"))
    assert checks.telemetry(Reading(lost), 0.001, 2.0) == (
        Result.FAIL, "answered without any reading: GPU is lost")
    assert checks.telemetry(Reading(lost, error="timeout: no answer within 2 s"), 2.0, 2.0)[0] \
        == Result.FAIL
    assert checks.telemetry(Reading(gpu(temp_c=40.0)), 1.5, 2.0)[0] == Result.WARN
    assert checks.health(Reading(lost)) == (Result.FAIL, "GPU is lost")
    hashing = WorkloadSpec(WorkloadKind.HASHING, hashing=HashingSpec(("stratum+tcp://p:1",),
                                                                     "u", "x"))
    assert checks.workload(hashing, None, Facts(hashing))[0] == Result.FAIL
    assert checks.workload(hashing, None, Facts(hashing, curtailed="op-9"))[0] == Result.PASS
    failed = Status(WorkloadKind.HASHING, WorkloadState.FAILED, detail="exited; restart in 5 s")
    assert checks.workload(hashing, failed, Facts(hashing)) == (
        Result.FAIL, "hashing failed: exited; restart in 5 s")


def _certificate(path: Path, days: int) -> None:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(path) + ".key",
                    "-out", str(path), "-subj", "/CN=t", "-days", str(days)],
                   check=True, capture_output=True, timeout=30)


@pytest.mark.processes
def test_certificates_expiring_and_expired(tmp_path: Path) -> None:
    cert = tmp_path / "metrics.pem"
    _certificate(cert, 30)
    config = Config(metrics_cert_file=str(cert), metrics_key_file=str(cert) + ".key")
    assert rig.certificates(config)[0] == Result.PASS
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=20)
    assert rig.certificates(config, later)[0] == Result.WARN
    expired = rig.certificates(config, later + dt.timedelta(days=20))
    assert expired[0] == Result.FAIL and "expired" in expired[1]
    assert rig.certificates(Config())[0] == Result.SKIP


def test_state_dir_and_clock(tmp_path: Path) -> None:
    assert rig.state_dir(tmp_path / "state")[0] == Result.PASS
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert rig.state_dir(blocked / "state")[0] == Result.FAIL
    stepped = rig.clock(time.time() - time.monotonic() - 30.0)
    assert stepped[0] == Result.WARN and "stepped by +30" in stepped[1]
