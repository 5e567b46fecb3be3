"""rigd's RPC latency, alone and under a controller fleet's load.

1. Sequential unary latency: GetInventory and GetTelemetry over TCP loopback and the Unix socket,
   p50/p99, beside Health.Check (the cheapest call gRPC can make) on the same connection.
2. Load: N streams at 1 Hz plus M at 10 Hz for S seconds (from a separate client process), while
   this process loops Health.Check, GetTelemetry and SetPowerLimit (a mutating call, with an
   operator's token) one after another: each stream's delivered rate, each call's p50/p99,
   rigd's CPU and RSS. Baseline in the same run: an empty grpc.aio health server's Check p99,
   measured the same way just before; each p99 is given as a ratio to it.
3. A slow reader: one 10 Hz stream that reads nothing for R seconds, through rigapi.streams.fresh
   on gRPC's default channel and on small windows: rigd's RSS before and after, the age of the
   first message it gets, and the drops counted.

Targets (issue 21): unary p99 under 3x the empty server's, every stream within 5% of its rate;
health always answering; RSS growth < 50 MB; after the silence the first message is fresh.

    python bench/rpc.py [--calls 2000] [--streams 1000 --fast-streams 50 --load-s 30]
                        [--slow-s 60]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._machine import describe
from rigapi import FRESH_STREAM_OPTIONS, pb, pb_grpc
from rigapi.streams import fresh

STREAM_METHOD = "/rig.v1.RigAgent/StreamTelemetry"
OPERATOR_TOKEN = "bench-operator-token"
PROBES = ("Health.Check", "GetTelemetry", "SetPowerLimit")
BASELINE = "empty server Health.Check"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentiles(samples_s: list[float]) -> tuple[float, float]:
    ordered = sorted(samples_s)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return p50 * 1e3, p99 * 1e3


def _measure(call: Callable[[], object], calls: int) -> tuple[float, float]:
    for _ in range(50):  # warm the connection and the server's caches
        call()
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return _percentiles(samples)


def _wait_for(path: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("rigd did not start")
        time.sleep(0.1)


# ---- the stream client (a separate process) -----------------------------------------------------


async def _stream_client(target: str, streams: int, fast: int, seconds: float) -> dict[str, Any]:
    """Open the streams, count messages per stream over the measuring window (after a warm-up
    of 3 s), return the rates. Messages are counted as bytes, not parsed: the client's own CPU
    should go to receiving."""
    channels = [grpc.aio.insecure_channel(target) for _ in range(max(1, (streams + fast) // 100))]
    counts: list[int] = [0] * (streams + fast)
    warmup_s = 3.0
    started = time.monotonic()
    window_start = started + warmup_s
    window_end = started + seconds

    async def one(index: int, interval_ms: int) -> None:
        channel = channels[index % len(channels)]
        call = channel.unary_stream(STREAM_METHOD, request_serializer=None,
                                    response_deserializer=None)
        request = pb.StreamTelemetryRequest(interval_ms=interval_ms).SerializeToString()
        stream = call(request)
        try:
            async for _message in stream:
                now = time.monotonic()
                if now >= window_end:
                    break
                if now >= window_start:
                    counts[index] += 1
        finally:
            stream.cancel()

    tasks = [one(i, 1000) for i in range(streams)] + [one(streams + i, 100) for i in range(fast)]
    await asyncio.gather(*tasks)
    for channel in channels:
        await channel.close()
    window = seconds - warmup_s
    return {"slow_rates": [c / window for c in counts[:streams]],
            "fast_rates": [c / window for c in counts[streams:]]}


# ---- the server-side figures --------------------------------------------------------------------


class ProcessSampler:
    """CPU share and RSS of a process over an interval."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.rss_start = self.proc.memory_info().rss
        self.cpu_start = sum(self.proc.cpu_times()[:2])
        self.t_start = time.monotonic()

    def finish(self) -> tuple[float, int, int]:
        cpu = sum(self.proc.cpu_times()[:2]) - self.cpu_start
        return cpu / (time.monotonic() - self.t_start), self.rss_start, self.proc.memory_info().rss


def _probe_loop(target: str, empty: str, stop: threading.Event) -> dict[str, list[float]]:
    """One call after another until stopped: the empty server's Health.Check (the baseline,
    measured in the same loop, so under the same load of the machine), then rigd's
    Health.Check, GetTelemetry and SetPowerLimit (a mutating call, with an operator's token)."""
    channel, baseline = grpc.insecure_channel(target), grpc.insecure_channel(empty)
    stub = pb_grpc.RigAgentStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    base = health_pb2_grpc.HealthStub(baseline)
    gpu = next(d.id for d in stub.GetInventory(pb.GetInventoryRequest(), timeout=30).devices
               if d.id.startswith("gpu/"))
    token = [("authorization", f"Bearer {OPERATOR_TOKEN}")]
    watts = itertools.cycle([250.0, 300.0])
    calls: dict[str, Callable[[], object]] = {
        BASELINE: lambda: base.Check(health_pb2.HealthCheckRequest(), timeout=5),
        "Health.Check": lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=5),
        "GetTelemetry": lambda: stub.GetTelemetry(pb.GetTelemetryRequest(), timeout=5),
        "SetPowerLimit": lambda: stub.SetPowerLimit(pb.SetPowerLimitRequest(
            device_id=gpu, power_limit_w=next(watts)), metadata=token, timeout=5),
    }
    samples: dict[str, list[float]] = {name: [] for name in (*calls, "failures")}
    while not stop.is_set():
        for name, call in calls.items():
            start = time.perf_counter()
            try:
                call()
            except grpc.RpcError:
                samples["failures"].append(1.0)
                continue
            samples[name].append(time.perf_counter() - start)
        time.sleep(0.005)
    channel.close()
    baseline.close()
    return samples


def _probe_for(target: str, empty: str, seconds: float) -> dict[str, list[float]]:
    stop = threading.Event()
    result: dict[str, dict[str, list[float]]] = {}
    prober = threading.Thread(
        target=lambda: result.update(probe=_probe_loop(target, empty, stop)))
    prober.start()
    time.sleep(seconds)
    stop.set()
    prober.join()
    return result["probe"]


def _empty_server() -> tuple[subprocess.Popen[bytes], str]:
    """An empty grpc.aio server with only the health service, in its own process."""
    port = _free_port()
    code = (
        "import asyncio, grpc\n"
        "from grpc_health.v1 import health_pb2_grpc\n"
        "from grpc_health.v1._async import HealthServicer\n"
        "async def main():\n"
        "    server = grpc.aio.server()\n"
        "    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(), server)\n"
        f"    server.add_insecure_port('127.0.0.1:{port}')\n"
        "    await server.start()\n"
        "    await server.wait_for_termination()\n"
        "asyncio.run(main())\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    target = f"127.0.0.1:{port}"
    channel = grpc.insecure_channel(target)
    grpc.channel_ready_future(channel).result(timeout=30)
    channel.close()
    return proc, target


def _summary(rates: list[float], target: float) -> str:
    if not rates:
        return "-"
    within = sum(1 for r in rates if abs(r - target) <= 0.05 * target)
    return (f"min {min(rates):.2f}  median {statistics.median(rates):.2f}  "
            f"max {max(rates):.2f} msg/s; {within} of {len(rates)} within 5% of {target:g}")


def _unary_latency(targets: dict[str, str], calls: int) -> None:
    print(f"\n1. sequential unary latency ({calls} calls each)")
    print(f"{'rpc':<22}{'transport':<11}{'p50 ms':>9}{'p99 ms':>9}")
    for transport, target in targets.items():
        channel = grpc.insecure_channel(target)
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = pb_grpc.RigAgentStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        cases: dict[str, Callable[[], object]] = {
            "Health.Check (base)": lambda h=health: h.Check(health_pb2.HealthCheckRequest()),
            "GetInventory": lambda s=stub: s.GetInventory(pb.GetInventoryRequest()),
            "GetTelemetry": lambda s=stub: s.GetTelemetry(pb.GetTelemetryRequest()),
        }
        base_p99 = 0.0
        for name, call in cases.items():
            p50, p99 = _measure(call, calls)
            base_p99 = base_p99 or p99
            ratio = f"  ({p99 / base_p99:.1f}x base p99)" if name[0] != "H" else ""
            print(f"{name:<22}{transport:<11}{p50:>9.3f}{p99:>9.3f}{ratio}")
        channel.close()


def _load(target: str, rigd_pid: int, args: argparse.Namespace) -> None:
    print(f"\n2. load: {args.streams} streams at 1 Hz + {args.fast_streams} at 10 Hz for "
          f"{args.load_s:g} s; Health.Check, GetTelemetry, SetPowerLimit in a loop beside them, "
          f"each p99 also as a ratio to an empty grpc.aio server's Health.Check p99 measured "
          f"in the same loop")
    empty_proc, empty = _empty_server()
    try:
        quiet = _probe_for(target, empty, args.quiet_s)  # the same loop, no streams open
        rigd = ProcessSampler(rigd_pid)
        client = subprocess.Popen(
            [sys.executable, __file__, "--worker", target, "--streams", str(args.streams),
             "--fast-streams", str(args.fast_streams), "--load-s", str(args.load_s)],
            stdout=subprocess.PIPE)
        time.sleep(3.0)  # the streams are opening: probe once they run
        profiler = None
        if args.profile:  # where rigd's time goes under this load (py-spy, from PyPI)
            py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
            profiler = subprocess.Popen(
                [py_spy, "record", "--pid", str(rigd_pid), "--duration",
                 str(max(1, int(args.load_s - 6))), "--format", "raw", "--output",
                 args.profile, "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        loaded = _probe_for(target, empty, max(1.0, args.load_s - 6))
        out, _ = client.communicate(timeout=args.load_s + 120)
        if profiler is not None:
            profiler.wait(timeout=60)
        cpu_share, rss_start, rss_end = rigd.finish()
    finally:
        empty_proc.terminate()
        empty_proc.wait(timeout=30)
    rates = json.loads(out)
    print(f"   1 Hz streams delivered:  {_summary(rates['slow_rates'], 1.0)}")
    print(f"   10 Hz streams delivered: {_summary(rates['fast_rates'], 10.0)}")
    print(f"   {'call':<27}{'no streams p50/p99 ms':>22}{'streams p50/p99 ms':>21}"
          f"{'p99 ratio':>11}")
    base_p99 = _percentiles(loaded[BASELINE])[1]
    for name in (BASELINE, *PROBES):
        q50, q99 = _percentiles(quiet[name])
        l50, l99 = _percentiles(loaded[name])
        print(f"   {name:<27}{q50:>12.2f} /{q99:>7.2f}{l50:>12.2f} /{l99:>7.2f}"
              f"{l99 / base_p99:>10.1f}x")
    print(f"   {len(quiet['failures']) + len(loaded['failures'])} calls failed; "
          f"{len(loaded['Health.Check'])} rounds under load, {len(quiet['Health.Check'])} "
          f"without streams; ratio: the p99 under load over the empty server's in the same loop")
    print(f"   rigd CPU {cpu_share * 100:.0f}% of one core; RSS {rss_start / 2**20:.1f} -> "
          f"{rss_end / 2**20:.1f} MiB ({(rss_end - rss_start) / 2**20:+.1f} MiB)")


def _slow_reader(target: str, rigd_pid: int, seconds: float) -> None:
    print(f"\n3. slow reader: one 10 Hz stream, read through rigapi.streams.fresh, silent for "
          f"{seconds:g} s")
    for label, options in (("gRPC default channel", []),
                           ("FRESH_STREAM_OPTIONS (rigctl)", FRESH_STREAM_OPTIONS)):
        rigd = ProcessSampler(rigd_pid)
        channel = grpc.insecure_channel(target, options=options)
        stream = pb_grpc.RigAgentStub(channel).StreamTelemetry(
            pb.StreamTelemetryRequest(interval_ms=100), timeout=seconds + 120)
        reader = fresh(stream)
        first = next(reader)
        size = first.ByteSize()
        time.sleep(seconds)
        _cpu, rss_start, rss_end = rigd.finish()
        message = next(reader)
        age_s = time.time() - min(d.time.ToNanoseconds() for d in message.devices) / 1e9
        stream.cancel()
        channel.close()
        print(f"   {label}: rigd RSS {rss_start / 2**20:.1f} -> {rss_end / 2**20:.1f} MiB "
              f"({(rss_end - rss_start) / 2**20:+.1f} MiB); messages of {size} B; the first "
              f"after the silence is {age_s * 1000:.0f} ms old (sequence {message.sequence}, "
              f"dropped_count {message.dropped_count} = {message.sequence} - 2 received)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--gpus", type=int, default=4, help="simulated GPUs in the rig")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--fast-streams", type=int, default=50)
    parser.add_argument("--load-s", type=float, default=30.0)
    parser.add_argument("--quiet-s", type=float, default=10.0,
                        help="the same probe loop, no streams open, before the load")
    parser.add_argument("--slow-s", type=float, default=60.0)
    parser.add_argument("--profile", metavar="FILE",
                        help="record rigd under load with py-spy (collapsed stacks) to FILE")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        rates = asyncio.run(_stream_client(args.worker, args.streams, args.fast_streams,
                                           args.load_s))
        print(json.dumps(rates))
        return 0

    from hal.sim.nvml import demo_setup

    with tempfile.TemporaryDirectory(prefix="rigd-bench-") as tmp:
        sock, port = os.path.join(tmp, "rigd.sock"), _free_port()
        nvml = demo_setup(Path(tmp) / "nvml", count=args.gpus)
        nvml_lines = "\n".join(f'{key} = "{value}"' for key, value in nvml.items())
        config = Path(tmp, "rigd.toml")
        digest = hashlib.sha256(OPERATOR_TOKEN.encode()).hexdigest()
        config.write_text(f'[server]\nunix_socket = "{sock}"\ntcp_address = "127.0.0.1:{port}"\n'
                          f'drain_s = 0\n[[auth.tokens]]\nname = "bench"\nrole = "operator"\n'
                          f'sha256 = "{digest}"\n[hal]\nbackends = ["host", "nvml"]\n'
                          f"[hal.nvml]\n{nvml_lines}\n")
        proc = subprocess.Popen([sys.executable, "-m", "agent.main", "--config", str(config)],
                                stderr=subprocess.DEVNULL)
        try:
            _wait_for(sock, proc)
            tcp = f"127.0.0.1:{port}"
            print(f"machine: {describe()}")
            print(f"rigd: host + {args.gpus} simulated GPUs, sampling at 1 Hz")
            _unary_latency({"tcp": tcp, "unix": f"unix:{sock}"}, args.calls)
            if args.streams or args.fast_streams:
                _load(tcp, proc.pid, args)
            if args.slow_s:
                _slow_reader(tcp, proc.pid, args.slow_s)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
