"""Simulate the SHA-256d core under Verilator (three configurations) and Icarus
(every FOLD, short runs), checking it against the hashlib model.

Each test runs one cocotb test from tb_sha256d.py; the Verilator models are
compiled once per session (conftest.SimBuilds) and shared.
"""

from __future__ import annotations

import random

import pytest
from sha256d_model import (
    BLOCK_125552_NONCE,
    GENESIS_NONCE,
    block_125552_header,
    genesis_header,
)
from simbuild import FOLDS, CoreConfig, SimBuilds

# Three Verilator builds keep the C++ compile inside the suite's budget:
# fully unrolled with a deep FIFO, a folded core with a tiny FIFO (so
# back-pressure bites), and the smallest core without the digest port.
VERILATOR_CONFIGS = [
    CoreConfig(fold=1, fifo_log2=8, debug=1),
    CoreConfig(fold=4, fifo_log2=2, debug=1),
    CoreConfig(fold=64, fifo_log2=3, debug=0),
]
CONFIG_IDS = [c.key for c in VERILATOR_CONFIGS]

# Known-answer ranges shrink with FOLD so the slow cores simulate as many clocks.
KAT_HALF_WIDTH = {1: 2048, 4: 512, 64: 32}

SIM_TIMEOUT_S = 900  # the first test of a configuration also pays for its build

pytestmark = pytest.mark.timeout(SIM_TIMEOUT_S)


def random_header(seed: int) -> bytes:
    return random.Random(seed).randbytes(80)


def fixture_args(seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    return {
        "header": random_header(seed).hex(),
        "header2": random_header(seed + 1000).hex(),
        "first": rng.randrange(10_000, 1 << 31),
    }


@pytest.mark.parametrize("config", VERILATOR_CONFIGS, ids=CONFIG_IDS)
def test_csr_map(sim_builds: SimBuilds, config: CoreConfig) -> None:
    args = {"fold": config.fold, "fifo_log2": config.fifo_log2, "debug": config.debug}
    sim_builds.run("verilator", config, "csr_map", args)


@pytest.mark.parametrize("config", VERILATOR_CONFIGS, ids=CONFIG_IDS)
def test_genesis_block_found(sim_builds: SimBuilds, config: CoreConfig) -> None:
    """Genesis header, difficulty-1 filter (target 0), a range around nonce 2083236893."""
    half = KAT_HALF_WIDTH[config.fold]
    args = {
        "header": genesis_header().hex(),
        "first": GENESIS_NONCE - half,
        "last": GENESIS_NONCE + half - 1,
        "target": 0,
        "tag": 0x42,
        "must_find": [GENESIS_NONCE],
    }
    sim_builds.run("verilator", config, "search", args)


@pytest.mark.parametrize("config", VERILATOR_CONFIGS, ids=CONFIG_IDS)
def test_share_from_midstate(sim_builds: SimBuilds, config: CoreConfig) -> None:
    """Block 125552: the core gets only its midstate and tail and finds the share."""
    half = KAT_HALF_WIDTH[config.fold] // 4
    args = {
        "header": block_125552_header().hex(),
        "first": BLOCK_125552_NONCE - half,
        "last": BLOCK_125552_NONCE + half - 1,
        "target": 0,
        "tag": 0xA5,
        "must_find": [BLOCK_125552_NONCE],
    }
    sim_builds.run("verilator", config, "search", args)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("config", VERILATOR_CONFIGS, ids=CONFIG_IDS)
def test_random_headers_match_model(sim_builds: SimBuilds, config: CoreConfig, seed: int) -> None:
    """Random headers with an easy target (1 in 16 passes): same matches, same digests."""
    rng = random.Random(seed)
    first = rng.randrange(0, (1 << 32) - 256)
    count = 128 if config.fold < 64 else 24
    args = {
        "header": random_header(seed).hex(),
        "first": first,
        "last": first + count - 1,
        "target": 0x0FFFFFFF,
        "tag": seed,
    }
    sim_builds.run("verilator", config, "search", args)


def test_range_ending_at_max_nonce(sim_builds: SimBuilds) -> None:
    """The range may end at 0xFFFFFFFF: the counter wraps without running on."""
    config = VERILATOR_CONFIGS[0]
    args = {
        "header": random_header(77).hex(),
        "first": 0xFFFFFFFF - 40,
        "last": 0xFFFFFFFF,
        "target": 0x1FFFFFFF,
        "tag": 1,
    }
    sim_builds.run("verilator", config, "search", args)


@pytest.mark.parametrize("config", VERILATOR_CONFIGS, ids=CONFIG_IDS)
def test_latency_and_throughput(sim_builds: SimBuilds, config: CoreConfig) -> None:
    sim_builds.run("verilator", config, "latency_and_throughput", fixture_args(11))


@pytest.mark.parametrize("config", VERILATOR_CONFIGS, ids=CONFIG_IDS)
def test_flush_midflight(sim_builds: SimBuilds, config: CoreConfig) -> None:
    sim_builds.run("verilator", config, "flush_midflight", fixture_args(12))


@pytest.mark.parametrize("config", VERILATOR_CONFIGS, ids=CONFIG_IDS)
def test_backpressure_loses_nothing(sim_builds: SimBuilds, config: CoreConfig) -> None:
    sim_builds.run("verilator", config, "backpressure", fixture_args(13))


@pytest.mark.parametrize("config", VERILATOR_CONFIGS, ids=CONFIG_IDS)
def test_restart_and_bad_range(sim_builds: SimBuilds, config: CoreConfig) -> None:
    sim_builds.run("verilator", config, "restart_and_bad_range", fixture_args(14))


@pytest.mark.parametrize("config", VERILATOR_CONFIGS, ids=CONFIG_IDS)
def test_reset_mid_job(sim_builds: SimBuilds, config: CoreConfig) -> None:
    sim_builds.run("verilator", config, "reset_mid_job", fixture_args(18))


# Icarus: every FOLD, a handful of nonces, every digest compared.
@pytest.mark.parametrize("fold", FOLDS)
def test_icarus_every_fold(sim_builds: SimBuilds, fold: int) -> None:
    config = CoreConfig(fold=fold, fifo_log2=3, debug=1)
    rng = random.Random(fold)
    first = rng.randrange(0, (1 << 32) - 8)
    args = {
        "header": random_header(100 + fold).hex(),
        "first": first,
        "last": first + 5,
        "target": 0x3FFFFFFF,
        "tag": fold,
    }
    sim_builds.run("icarus", config, "search", args)


def test_icarus_flush(sim_builds: SimBuilds) -> None:
    sim_builds.run(
        "icarus", CoreConfig(fold=8, fifo_log2=3, debug=1), "flush_midflight", fixture_args(15)
    )


@pytest.mark.parametrize("fold", FOLDS)
def test_icarus_latency_every_fold(sim_builds: SimBuilds, fold: int) -> None:
    """The documented latency (128 clocks) and 1 nonce per FOLD clocks, for every FOLD."""
    config = CoreConfig(fold=fold, fifo_log2=3, debug=1)
    sim_builds.run("icarus", config, "latency_and_throughput", fixture_args(16 + fold))


def test_icarus_backpressure(sim_builds: SimBuilds) -> None:
    config = CoreConfig(fold=16, fifo_log2=3, debug=1)
    sim_builds.run("icarus", config, "backpressure", fixture_args(17))
