"""SHA-256d hash rate of the OpenCL kernel on every OpenCL device, beside Python hashlib.

Each figure is the median of --runs runs of --seconds each (defaults 5 x 10 s). The kernel
runs its default vector width per device unless --widths lists others. Beside wall-clock MH/s
it prints MH per CPU-second x cores: on a shared machine the wall figure drops when other
processes take cores, the CPU-time one much less (PoCL's CPU devices only).

    .venv/bin/python -m bench.hashrate                      # the real figures (~2 min)
    .venv/bin/python -m bench.hashrate --seconds 2 --runs 3 --widths 1,2,4,8,16
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import time
from dataclasses import dataclass

import pyopencl as cl

from agent.runtime.workloads.hashing.kernel import (
    VECTOR_WIDTHS,
    Sha256dKernel,
    default_vector_width,
    describe_cl_device,
    list_cl_devices,
)
from bench._machine import describe
from hal.errors import Unavailable

LAUNCH = 1 << 24  # nonces per scan(): ~0.2 s on a 2-core AVX-512 CPU
DIFF1_TARGET = 0xFFFF << 208

REFERENCES = """references (other 2-core AVX-512 Xeon machines, /work/shared/notes/opencl.md):
  cpuminer 2.5.1 ~22 MH/s, cpuminer-opt SHA-NI 36.6, cpuminer-opt AVX-512 71,
  poclbm on PyPI PoCL 5.2, plain uint8 kernel on Debian PoCL 37-44"""


@dataclass(frozen=True)
class Run:
    wall_hs: float
    cpu_hs: float  # hashes per process CPU-second, times the core count


def kernel_run(kernel: Sha256dKernel, header: bytes, seconds: float, start: int) -> Run:
    done = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - wall0 < seconds:
        nonce = (start + done) % ((1 << 32) - LAUNCH)
        kernel.scan(header, nonce, LAUNCH, DIFF1_TARGET)
        done += LAUNCH
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return Run(done / wall, done / max(cpu, 1e-9) * (os.cpu_count() or 1))


def hashlib_run(header: bytes, seconds: float) -> Run:
    """One Python thread, midstate reused through hashlib's copy(): the best plain hashlib."""
    midstate = hashlib.sha256(header[:64])
    tail = header[64:76]
    target = DIFF1_TARGET
    done = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - wall0 < seconds:
        for nonce in range(done, done + 4096):
            first = midstate.copy()
            first.update(tail + nonce.to_bytes(4, "little"))
            if int.from_bytes(hashlib.sha256(first.digest()).digest(), "little") <= target:
                pass
        done += 4096
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return Run(done / wall, done / max(cpu, 1e-9))


def median_run(runs: list[Run]) -> Run:
    return Run(
        statistics.median(r.wall_hs for r in runs), statistics.median(r.cpu_hs for r in runs)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of one run")
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (median)")
    parser.add_argument("--widths", default="", help="vector widths to try, e.g. 1,2,4,8,16")
    args = parser.parse_args()
    widths = [int(w) for w in args.widths.split(",") if w]
    if any(w not in VECTOR_WIDTHS for w in widths):
        parser.error(f"widths must be among {VECTOR_WIDTHS}")

    print(f"machine: {describe()}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"runs: median of {args.runs} x {args.seconds:g} s\n")
    header = random.Random(2026).randbytes(76)

    baseline = median_run([hashlib_run(header, args.seconds) for _ in range(args.runs)])
    cores = os.cpu_count() or 1
    print(
        f"Python hashlib, 1 thread: {baseline.wall_hs / 1e6:.2f} MH/s "
        f"(x {cores} cores, if it scaled perfectly: {cores * baseline.wall_hs / 1e6:.2f})"
    )

    for device in list_cl_devices():
        name = describe_cl_device(device)
        for width in widths or [default_vector_width(device)]:
            label = f"{name}  {'uint' + str(width) if width > 1 else 'uint'}"
            try:
                kernel = Sha256dKernel(device, vector_width=width)
                kernel.scan(header, 0, LAUNCH, DIFF1_TARGET)  # PoCL compiles on first launch
            except (Unavailable, cl.Error) as exc:
                print(f"{label}: unavailable: {exc}")
                break
            runs = [
                kernel_run(kernel, header, args.seconds, i * (1 << 28)) for i in range(args.runs)
            ]
            best = median_run(runs)
            spread = ", ".join(f"{r.wall_hs / 1e6:.1f}" for r in runs)
            print(
                f"{label}: {best.wall_hs / 1e6:6.2f} MH/s wall "
                f"({best.cpu_hs / 1e6:.2f} MH per CPU-s x cores)  "
                f"= {best.wall_hs / baseline.wall_hs:.0f}x hashlib's thread, "
                f"{best.wall_hs / (cores * baseline.wall_hs):.1f}x its {cores} cores "
                f"[runs: {spread}]"
            )
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(REFERENCES)


if __name__ == "__main__":
    main()
