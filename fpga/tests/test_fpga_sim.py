"""Simulate the SHA-256d core under Verilator (three configurations) and Icarus (every FOLD,
short runs), driving it with the host driver and checking it against hashlib.

Each test runs one cocotb test from tb_sha256d.py; the models are compiled once per session
(conftest.sim_builds) and shared.
"""

from __future__ import annotations

import random

import pytest
import sha256d_model as model
from simbuild import SimBuilds

from hal.sha256d_sim import FOLDS, SimConfig

# Three Verilator builds keep the C++ compile inside the suite's budget: fully unrolled with a
# 4-entry FIFO (far fewer slots than the 121 nonces in flight), a folded core with a tiny FIFO,
# and the smallest core without the debug port.
VERILATOR_CONFIGS = [
    SimConfig(fold=1, fifo_log2=2, debug=1),
    SimConfig(fold=4, fifo_log2=2, debug=1),
    SimConfig(fold=64, fifo_log2=3, debug=0),
]
CONFIG_IDS = [c.key for c in VERILATOR_CONFIGS]
# Clocks from a nonce's issue to its compare (fpga/README.md).
LATENCY = {1: 121, 2: 124, 4: 124, 8: 125, 16: 125, 32: 125, 64: 125}

# Known-answer ranges shrink with FOLD so the slow cores simulate about as many clocks.
KAT_HALF_WIDTH = {1: 2048, 4: 512, 64: 32}

SIM_TIMEOUT_S = 600  # the first test of a configuration also pays for its build

pytestmark = pytest.mark.timeout(SIM_TIMEOUT_S)


def random_header(seed: int) -> bytes:
    return random.Random(seed).randbytes(80)


def fixture_args(seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    return {"header": random_header(seed).hex(), "first": rng.randrange(10_000, 1 << 31)}


def boundary_target(header: bytes, first: int, last: int, fraction: int) -> tuple[int, int]:
    """A target whose top word about one nonce in `fraction` passes, equal to the top word of
    one nonce in the range and zero below it: the core reports that nonce (its top word
    passes) and the host drops it (its hash is above the target). Returns (target, nonce)."""
    tops = sorted((model.top32(header, n), n) for n in range(first, last + 1))
    word, nonce = tops[(last - first + 1) // fraction]
    return word << 224, nonce


@pytest.mark.parametrize("config", VERILATOR_CONFIGS, ids=CONFIG_IDS)
def test_csr_map(sim_builds: SimBuilds, config: SimConfig) -> None:
    args = {
        "fold": config.fold,
        "fifo_log2": config.fifo_log2,
        "debug": config.debug,
        "latency": LATENCY[config.fold],
    }
    sim_builds.run("verilator", config, "csr_map", args)


@pytest.mark.parametrize("config", VERILATOR_CONFIGS, ids=CONFIG_IDS)
def test_genesis_block_found(sim_builds: SimBuilds, config: SimConfig) -> None:
    """Genesis header at difficulty 1, a range around nonce 2083236893."""
    half = KAT_HALF_WIDTH[config.fold]
    args = {
        "header": model.genesis_header().hex(),
        "first": model.GENESIS_NONCE - half,
        "last": model.GENESIS_NONCE + half - 1,
        "target": f"{model.DIFFICULTY_1_TARGET:x}",
        "tag": 0x42,
        "must_find": [model.GENESIS_NONCE],
    }
    sim_builds.run("verilator", config, "search", args)


@pytest.mark.parametrize("config", VERILATOR_CONFIGS, ids=CONFIG_IDS)
def test_block_125552_found_and_a_near_miss_dropped(
    sim_builds: SimBuilds, config: SimConfig
) -> None:
    """Block 125552 found from its midstate and precomputation. The target is its hash's top
    word with zeros below it, so the block's own nonce passes the core's word compare but not
    the full target: the host must drop it. With the next word up it must keep it."""
    header = model.block_125552_header()
    nonce = model.BLOCK_125552_NONCE
    half = KAT_HALF_WIDTH[config.fold] // 4
    word = model.top32(header, nonce)
    assert word == 0  # a real block: 64 leading zero bits
    common = {"header": header.hex(), "first": nonce - half, "last": nonce + half - 1}
    dropped = {**common, "target": f"{word << 224:x}", "tag": 0xA5, "must_drop": [nonce]}
    sim_builds.run("verilator", config, "search", dropped)
    kept = {**common, "target": f"{model.DIFFICULTY_1_TARGET:x}", "tag": 0xA6, "must_find": [nonce]}
    sim_builds.run("verilator", config, "search", kept)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("config", VERILATOR_CONFIGS, ids=CONFIG_IDS)
def test_random_headers_match_hashlib(sim_builds: SimBuilds, config: SimConfig, seed: int) -> None:
    """Random headers, about 1 nonce in 16 passing the target word and one of them dropped by
    the host's re-check: the reported, kept and dropped sets (and every digest) equal hashlib's."""
    rng = random.Random(seed)
    first = rng.randrange(0, (1 << 32) - 256)
    last = first + (128 if config.fold < 64 else 24) - 1
    header = random_header(seed)
    target, near_miss = boundary_target(header, first, last, 16)
    args = {
        "header": header.hex(),
        "first": first,
        "last": last,
        "target": f"{target:x}",
        "tag": seed,
        "must_drop": [near_miss],
    }
    sim_builds.run("verilator", config, "search", args)


def test_range_ending_at_max_nonce(sim_builds: SimBuilds) -> None:
    """The range may end at 0xFFFFFFFF: the counter wraps without running on."""
    header = random_header(77)
    target, _ = boundary_target(header, 0xFFFFFFFF - 40, 0xFFFFFFFF, 8)
    args = {
        "header": header.hex(),
        "first": 0xFFFFFFFF - 40,
        "last": 0xFFFFFFFF,
        "target": f"{target:x}",
        "tag": 1,
    }
    sim_builds.run("verilator", VERILATOR_CONFIGS[0], "search", args)


@pytest.mark.parametrize("config", VERILATOR_CONFIGS, ids=CONFIG_IDS)
def test_latency_and_throughput(sim_builds: SimBuilds, config: SimConfig) -> None:
    sim_builds.run("verilator", config, "latency_and_throughput", fixture_args(11))


@pytest.mark.parametrize("config", VERILATOR_CONFIGS[:2], ids=CONFIG_IDS[:2])
def test_small_fifo_keeps_full_rate(sim_builds: SimBuilds, config: SimConfig) -> None:
    args = {**fixture_args(19), "count": 512 // config.fold}
    sim_builds.run("verilator", config, "small_fifo_keeps_full_rate", args)


@pytest.mark.parametrize("config", VERILATOR_CONFIGS, ids=CONFIG_IDS)
def test_flush_midflight(sim_builds: SimBuilds, config: SimConfig) -> None:
    sim_builds.run("verilator", config, "flush_midflight", fixture_args(12))


@pytest.mark.parametrize("config", VERILATOR_CONFIGS, ids=CONFIG_IDS)
def test_replay_when_fifo_full(sim_builds: SimBuilds, config: SimConfig) -> None:
    sim_builds.run("verilator", config, "replay_when_fifo_full", fixture_args(13))


@pytest.mark.parametrize("config", VERILATOR_CONFIGS, ids=CONFIG_IDS)
def test_restart_and_refusals(sim_builds: SimBuilds, config: SimConfig) -> None:
    sim_builds.run("verilator", config, "restart_and_refusals", fixture_args(14))


@pytest.mark.parametrize("config", VERILATOR_CONFIGS, ids=CONFIG_IDS)
def test_reset_mid_job(sim_builds: SimBuilds, config: SimConfig) -> None:
    sim_builds.run("verilator", config, "reset_mid_job", fixture_args(18))


# Icarus: every FOLD, a handful of nonces, every digest compared.
@pytest.mark.parametrize("fold", FOLDS)
def test_icarus_every_fold(sim_builds: SimBuilds, fold: int) -> None:
    config = SimConfig(fold=fold, fifo_log2=3, debug=1)
    rng = random.Random(fold)
    first = rng.randrange(0, (1 << 32) - 8)
    header = random_header(100 + fold)
    target, _ = boundary_target(header, first, first + 5, 2)
    args = {
        "header": header.hex(),
        "first": first,
        "last": first + 5,
        "target": f"{target:x}",
        "tag": fold,
    }
    sim_builds.run("icarus", config, "search", args)


@pytest.mark.parametrize("fold", FOLDS)
def test_icarus_latency_every_fold(sim_builds: SimBuilds, fold: int) -> None:
    """The documented latency and one nonce per FOLD clocks, for every FOLD."""
    config = SimConfig(fold=fold, fifo_log2=3, debug=1)
    sim_builds.run("icarus", config, "latency_and_throughput", fixture_args(16 + fold))


def test_icarus_flush(sim_builds: SimBuilds) -> None:
    config = SimConfig(fold=32, fifo_log2=3, debug=1)
    sim_builds.run("icarus", config, "flush_midflight", fixture_args(15))


def test_icarus_replay(sim_builds: SimBuilds) -> None:
    config = SimConfig(fold=16, fifo_log2=3, debug=1)
    sim_builds.run("icarus", config, "replay_when_fifo_full", fixture_args(17))
