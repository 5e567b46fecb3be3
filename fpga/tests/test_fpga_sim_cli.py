"""`rigctl fpga sim-run` through the installed entry point: a job on the simulated core through
the host driver, every reported nonce checked with hashlib. The model is the session's FOLD=64
Verilator build (same configuration, same directory), so the command only re-verilates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sha256d_model as model
from simbuild import SimBuilds

from hal.sha256d_sim import SimConfig

CONFIG = SimConfig(fold=64, fifo_log2=3, debug=0)  # one of test_fpga_sim's Verilator builds
RIGCTL = Path(sys.executable).parent / "rigctl"

pytestmark = pytest.mark.timeout(600)


def sim_run(sim_builds: SimBuilds, *args: str) -> subprocess.CompletedProcess[str]:
    sim_builds.get("verilator", CONFIG)  # built (or waited for) before the command reuses it
    argv = [str(RIGCTL), "fpga", "sim-run", "--fold", str(CONFIG.fold)]
    argv += ["--fifo-log2", str(CONFIG.fifo_log2), "--build-dir", str(sim_builds.root), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)


def sim_run_json(sim_builds: SimBuilds, *args: str) -> dict[str, Any]:
    proc = sim_run(sim_builds, *args, "--json")
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def test_sim_run_finds_the_genesis_nonce(sim_builds: SimBuilds) -> None:
    first = model.GENESIS_NONCE - 16
    report = sim_run_json(sim_builds, "--first", str(first), "--count", "32")
    assert report["nonces"] == [model.GENESIS_NONCE]
    assert report["above_target"] == [] and report["wrong"] == []
    assert (report["nonce_first"], report["nonce_last"]) == (first, first + 31)
    assert report["nonces_done"] == 32 and report["replays"] == 0
    assert report["target"] == f"{model.DIFFICULTY_1_TARGET:064x}"


def test_sim_run_drops_a_nonce_above_the_full_target(sim_builds: SimBuilds) -> None:
    """Target 0: the genesis hash's top word passes (it is 0), the hash does not."""
    text = sim_run(
        sim_builds, "--first", str(model.GENESIS_NONCE - 4), "--count", "8", "--target", "0"
    )
    assert text.returncode == 0, text.stderr
    assert "found          : none" in text.stdout
    assert f"dropped        : {model.GENESIS_NONCE} " in text.stdout
    assert "compared       : 8 nonces" in text.stdout


def test_sim_run_of_another_header(sim_builds: SimBuilds) -> None:
    header = model.block_125552_header()
    first = model.BLOCK_125552_NONCE - 3
    report = sim_run_json(
        sim_builds, "--header", header[:76].hex(), "--first", str(first), "--count", "6"
    )
    assert report["nonces"] == [model.BLOCK_125552_NONCE]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--first", "4294967295", "--count", "2"], "runs past nonce 0xFFFFFFFF"),
        (["--header", "abcd"], "76 or 80 bytes"),
        (["--target", "1" + "0" * 64], "256-bit"),
    ],
)
def test_sim_run_refuses_bad_jobs_in_one_line(
    sim_builds: SimBuilds, args: list[str], fragment: str
) -> None:
    proc = sim_run(sim_builds, *args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert fragment in proc.stderr
