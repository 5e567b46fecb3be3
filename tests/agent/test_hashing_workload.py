"""rigd runs a configured hashing workload for real: PoCL kernel, Stratum client, local pool."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.demo.pool import LocalPool, PoolThread
from rigapi import pb
from tests.agent.conftest import start_rigd
from tests.agent.test_daemon import assert_one_clean_error, run_rigd


@pytest.fixture
def pool() -> Iterator[PoolThread]:
    handle = LocalPool(difficulty=0.002).start_in_thread()
    yield handle
    handle.stop()


def hashing_config(pool_port: int, device: str = "auto") -> str:
    return f"""
[[hashing]]
device = "{device}"
pools = ["stratum+tcp://127.0.0.1:{pool_port}"]
user = "rig.test"
intensity = 0.5
"""


def test_configured_hashing_reports_hashrate_and_accepted_shares(
    tmp_path: Path, pool: PoolThread
) -> None:
    rigd = start_rigd(tmp_path, hashing_config(pool.port), backends=("host", "opencl"))
    try:
        stub = rigd.stub()
        deadline = time.monotonic() + 90
        status = pb.WorkloadStatus()
        while time.monotonic() < deadline:
            readings = stub.GetTelemetry(pb.GetTelemetryRequest(), timeout=10).devices
            mining = [r for r in readings if r.workload.kind == pb.WORKLOAD_KIND_HASHING]
            assert len(mining) <= 1
            if not mining:  # the kernel probe and the worker's start come first
                time.sleep(0.5)
                continue
            status = mining[0].workload
            if status.shares_accepted >= 2:
                break
            time.sleep(0.5)
        assert status.state == pb.WORKLOAD_STATE_RUNNING
        assert status.shares_accepted >= 2, status
        assert status.hashrate_hs > 1e5
        assert status.pool_url.endswith(f":{pool.port}")
        assert mining[0].hashrate_hs == status.hashrate_hs
        worker = pool.stats().workers["rig.test"]
        assert worker.accepted >= status.shares_accepted
        assert worker.rejected == 0
    finally:
        assert rigd.stop() == 0


def test_hashing_on_a_device_rigd_did_not_find_is_a_startup_error(
    tmp_path: Path, pool: PoolThread
) -> None:
    config = tmp_path / "rigd.toml"
    config.write_text(f'[server]\nunix_socket = "{tmp_path}/r.sock"\n[hal]\nbackends = ["host"]\n'
                      + hashing_config(pool.port, device="opencl/nope/0"))
    assert_one_clean_error(run_rigd("--config", str(config)),
                           "is not a device rigd found with an OpenCL",
                           after_discovery=True)
    assert not (tmp_path / "r.sock").exists()


def test_hashing_table_is_validated(tmp_path: Path) -> None:
    config = tmp_path / "rigd.toml"
    config.write_text('[[hashing]]\ndevice = "auto"\npools = []\n')
    assert_one_clean_error(run_rigd("--config", str(config)), "hashing.pools is empty")
    config.write_text('[[hashing]]\ndevice = "auto"\npools = ["stratum+tcp://127.0.0.1:1"]\n'
                      'intensity = 2\n')
    assert_one_clean_error(run_rigd("--config", str(config)), "intensity must be within 0 .. 1")
    config.write_text('[[hashing]]\ndevice = "auto"\npools = ["stratum+tcp://127.0.0.1:1"]\n'
                      'intensity = 0\n')
    assert_one_clean_error(run_rigd("--config", str(config)), "intensity must be in (0, 1]")
    # An unknown key in a [[hashing]] table is an error naming it, never silently ignored.
    config.write_text('[[hashing]]\ndevice = "auto"\npools = ["stratum+tcp://127.0.0.1:1"]\n'
                      'intesity = 0.5\n')
    result = run_rigd("--config", str(config))
    assert_one_clean_error(result, "unknown key 'intesity'")
    assert "did you mean 'intensity'" in result.stderr
