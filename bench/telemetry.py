"""How long one full telemetry snapshot of 8 GPUs takes through hal.nvml (simulated NVML).

Goal: under 5 ms for 8 GPUs, so 1 Hz streaming leaves the cores to the workloads.
Baselines measured in the same run: the raw pynvml call cost times the number of NVML calls a
snapshot makes (the floor hal.nvml could reach), and the host backend's snapshot (psutil).

    .venv/bin/python bench/telemetry.py [--gpus 8] [--runs 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pynvml
import structlog

import hal.host
import hal.nvml
from bench._machine import describe
from hal.device import Device
from hal.sim.nvml import SimControl, build_library

TARGET_MS = 5.0


@dataclass(frozen=True)
class Figure:
    name: str
    median_ms: float
    p90_ms: float
    runs: int
    note: str = ""


def time_runs(fn: Callable[[], object], runs: int, warmup: int = 10) -> list[float]:
    """Wall-clock milliseconds of each call, after a few warm-up calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000.0)
    return samples


def figure(name: str, samples: list[float], note: str = "") -> Figure:
    ordered = sorted(samples)
    return Figure(name, statistics.median(ordered), ordered[int(len(ordered) * 0.9) - 1],
                  len(ordered), note)


def describe_machine() -> str:
    return f"{describe()}, nvidia-ml-py {version('nvidia-ml-py')}"


def simulated_gpus(directory: Path, count: int) -> list[Device]:
    """`count` simulated H100s, half of them busy (load attached to this process)."""
    library = build_library(directory / "lib")
    control = SimControl(directory / "nvml.state", library)
    control.configure(["h100-sxm-80gb"] * count, seed="bench")
    for index in range(0, count, 2):
        control.attach_load(index, pid=os.getpid(), mem_bytes=(10 + index) << 30, util_pct=80)
    return hal.nvml.discover({
        "library_path": str(library),
        "sim_state_path": str(control.state_path),
        "state_dir": str(directory / "desired"),
    })


def nvml_calls_per_snapshot(devices: list[Device]) -> int:
    """Count the NVML entry points one snapshot calls (pynvml resolves each call by name)."""
    original = pynvml._nvmlGetFunctionPointer
    count = 0

    def counting(name: str) -> object:
        nonlocal count
        count += 1
        return original(name)

    pynvml._nvmlGetFunctionPointer = counting
    try:
        for device in devices:
            device.telemetry()
    finally:
        pynvml._nvmlGetFunctionPointer = original
    return count


def measure_nvml_snapshot(devices: list[Device], runs: int) -> Figure:
    samples = time_runs(lambda: [d.telemetry() for d in devices], runs)
    return figure(f"hal.nvml snapshot, {len(devices)} GPUs", samples,
                  f"{statistics.median(samples) / len(devices):.3f} ms per GPU")


def measure_raw_call_floor(calls: int, runs: int) -> Figure:
    """One raw pynvml call (power usage) timed, scaled by the calls a snapshot makes."""
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    batch = 100
    per_call = time_runs(
        lambda: [pynvml.nvmlDeviceGetPowerUsage(handle) for _ in range(batch)], runs
    )
    scaled = [ms / batch * calls for ms in per_call]
    return figure(f"raw pynvml call x {calls}", scaled,
                  f"{statistics.median(per_call) / batch * 1000:.2f} us per call")


def measure_host_snapshot(runs: int) -> Figure:
    host = hal.host.discover({})[0]
    return figure("hal.host snapshot (psutil)", time_runs(host.telemetry, runs))


def _rigd_config(directory: Path, gpus: int) -> tuple[Path, str]:
    from hal.sim.nvml import demo_setup

    options = demo_setup(directory / "nvml", count=gpus)
    socket_path = str(directory / "rigd.sock")
    nvml = "\n".join(f'{key} = "{value}"' for key, value in options.items())
    config = directory / "rigd.toml"
    config.write_text(f'[server]\nunix_socket = "{socket_path}"\ndrain_s = 0\n'
                      f'[hal]\nbackends = ["host", "nvml"]\n[hal.nvml]\n{nvml}\n')
    return config, socket_path


def measure_rigd_cpu(directory: Path, gpus: int, seconds: float) -> tuple[float, float]:
    """rigd's CPU (% of one core) with its 1 Hz sampler alone, then while streaming 1 Hz."""
    import subprocess

    import grpc
    import psutil

    from rigapi import pb, pb_grpc

    config, socket_path = _rigd_config(directory, gpus)
    proc = subprocess.Popen([sys.executable, "-m", "agent.main", "--config", str(config)],
                            stderr=subprocess.DEVNULL)
    try:
        channel = grpc.insecure_channel(f"unix:{socket_path}")
        grpc.channel_ready_future(channel).result(timeout=60)
        stub = pb_grpc.RigAgentStub(channel)
        stub.GetInventory(pb.GetInventoryRequest(), timeout=30)
        rigd = psutil.Process(proc.pid)

        def cpu_pct(run: Callable[[], None]) -> float:
            before, start = rigd.cpu_times(), time.monotonic()
            run()
            after, wall = rigd.cpu_times(), time.monotonic() - start
            used = (after.user + after.system) - (before.user + before.system)
            return 100 * used / wall

        idle = cpu_pct(lambda: time.sleep(seconds))

        def stream() -> None:
            deadline = time.monotonic() + seconds
            request = pb.StreamTelemetryRequest(interval_ms=1000)
            for message in stub.StreamTelemetry(request, timeout=seconds + 30):
                assert len(message.devices) == gpus + 1
                if time.monotonic() >= deadline:
                    break

        streaming = cpu_pct(stream)
        channel.close()
        return idle, streaming
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def report(machine: str, figures: list[Figure]) -> None:
    print(f"machine: {machine}")
    print(f"{'measurement':<34} {'median ms':>10} {'p90 ms':>9} {'runs':>6}  note")
    for f in figures:
        print(f"{f.name:<34} {f.median_ms:>10.3f} {f.p90_ms:>9.3f} {f.runs:>6}  {f.note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--stream-seconds", type=float, default=60.0,
                        help="how long to measure rigd's CPU, idle and streaming (0 = skip)")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    with tempfile.TemporaryDirectory(prefix="rigd-bench-") as tmp:
        devices = simulated_gpus(Path(tmp), args.gpus)
        try:
            calls = nvml_calls_per_snapshot(devices)
            figures = [
                measure_nvml_snapshot(devices, args.runs),
                measure_raw_call_floor(calls, args.runs),
                measure_host_snapshot(args.runs),
            ]
        finally:
            for device in devices:
                device.close()
    report(describe_machine(), figures)
    snapshot = figures[0]
    verdict = "meets" if snapshot.median_ms < TARGET_MS else "MISSES"
    print(f"target: {args.gpus}-GPU snapshot under {TARGET_MS} ms -> {verdict} "
          f"({snapshot.median_ms:.3f} ms median; {calls} NVML calls per snapshot)")
    if args.stream_seconds > 0:
        with tempfile.TemporaryDirectory(prefix="rigd-bench-") as tmp:
            idle, streaming = measure_rigd_cpu(Path(tmp), args.gpus, args.stream_seconds)
        print(f"rigd CPU, host + {args.gpus} simulated GPUs, {args.stream_seconds:g} s each: "
              f"sampler alone {idle:.2f}% of one core (baseline), streaming 1 Hz "
              f"{streaming:.2f}% ({streaming / max(idle, 1e-9):.2f}x baseline); target < 2%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
