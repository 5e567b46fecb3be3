"""Throughput of the FPGA-style search kernel on PoCL, beside a hashlib baseline.

    python fpga/opencl/bench_search.py [--nonces 1048576] [--runs 5]

Prints the machine (CPU model, cores), then the median nonces/s over several runs for a single
work-item (how an FPGA single-task kernel is launched) and small NDRanges, each on every PoCL
platform that can build the kernel, and hashlib's double SHA-256 on one core as the baseline.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hal import opencl
from hal.bitstream import build_bitstream

HEADER = bytes.fromhex(
    "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b27ac7"
    "2c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a29ab5f49ffff001d1dac2b7c"
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def hashlib_rate(count: int) -> float:
    prefix = HEADER[:76]
    start = time.perf_counter()
    for nonce in range(count):
        hashlib.sha256(hashlib.sha256(prefix + nonce.to_bytes(4, "little")).digest()).digest()
    return count / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nonces", type=int, default=1 << 20)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical cores, {platform.platform()}")
    print(f"nonces per run: {args.nonces}, runs: {args.runs} (median reported)")
    rates = [hashlib_rate(args.nonces // 8) for _ in range(args.runs)]
    print(f"{'hashlib sha256d, 1 core (baseline)':<58} {statistics.median(rates) / 1e6:7.2f} MH/s")
    with tempfile.TemporaryDirectory() as tmp:
        for card in opencl.discover({"fpga_device_types": ["cpu"], "bitstream_dir": tmp}):
            assert isinstance(card, opencl.FpgaCard)
            out = Path(tmp) / card.id.replace("/", "_")
            try:
                build_bitstream(card, out)
            except Exception as exc:  # e.g. PyPI PoCL 3.0 on CPUs its LLVM does not know
                print(f"{card.id}: cannot build the kernel: {str(exc).splitlines()[0][:100]}")
                continue
            card.program(out / "sha256d-search.bin")
            units = card.cl_device.max_compute_units
            card.search(HEADER, 0, 4096)  # first launch compiles the work-group function
            for lanes in (1, units, 4 * units, 16 * units):
                runs = [card.search(HEADER, 0, args.nonces, lanes=lanes) for _ in range(args.runs)]
                median = statistics.median(r.hashrate_hs for r in runs)
                label = f"{card.id} lanes={lanes}"
                print(f"{label:<58} {median / 1e6:7.2f} MH/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
