"""rigd's RPC latency, alone and under a controller fleet's load.

1. Sequential unary latency: GetInventory and GetTelemetry over TCP loopback and the Unix socket,
   p50/p99, beside Health.Check (the cheapest call gRPC can make) on the same connection.
2. Load: N streams at 1 Hz plus M at 10 Hz for S seconds (from a separate client process), while
   this process loops unary GetTelemetry and Health.Check: delivered rate per stream, unary and
   health p50/p99, rigd's CPU and RSS. Baseline in the same run: an empty grpc.aio health
   server's Check p99, measured the same way.
3. A slow reader: one 10 Hz stream that reads nothing for R seconds: rigd's RSS before and after,
   and what the reader gets when it drains (stale messages in flight, drops counted).

Targets (issue 9): every stream at its interval; unary p99 < 5 ms; health always answering;
RSS growth < 50 MB.

    python bench/rpc.py [--calls 2000] [--streams 1000 --fast-streams 50 --load-s 30]
                        [--slow-s 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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

STREAM_METHOD = "/rig.v1.RigAgent/StreamTelemetry"


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


def _probe_loop(target: str, stop: threading.Event) -> dict[str, list[float]]:
    """Unary GetTelemetry and Health.Check, alternately, until stopped."""
    channel = grpc.insecure_channel(target)
    stub = pb_grpc.RigAgentStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    samples: dict[str, list[float]] = {"unary": [], "health": [], "health_failures": []}
    while not stop.is_set():
        for name, call in (("unary", lambda: stub.GetTelemetry(pb.GetTelemetryRequest(),
                                                               timeout=5)),
                           ("health", lambda: health.Check(health_pb2.HealthCheckRequest(),
                                                           timeout=5))):
            start = time.perf_counter()
            try:
                call()
            except grpc.RpcError:
                samples["health_failures"].append(1.0)
                continue
            samples[name].append(time.perf_counter() - start)
        time.sleep(0.005)
    channel.close()
    return samples


def _empty_health_server_p99(calls: int) -> tuple[float, float]:
    """Baseline: Health.Check against an empty grpc.aio server in its own process."""
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
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=30)
        health = health_pb2_grpc.HealthStub(channel)
        figures = _measure(lambda: health.Check(health_pb2.HealthCheckRequest()), calls)
        channel.close()
        return figures
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _summary(rates: list[float]) -> str:
    if not rates:
        return "-"
    return (f"min {min(rates):.2f}  median {statistics.median(rates):.2f}  "
            f"max {max(rates):.2f} msg/s")


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
          f"{args.load_s:g} s, unary GetTelemetry and Health.Check in a loop beside them")
    base_p50, base_p99 = _empty_health_server_p99(2000)
    rigd = ProcessSampler(rigd_pid)
    client = subprocess.Popen(
        [sys.executable, __file__, "--worker", target, "--streams", str(args.streams),
         "--fast-streams", str(args.fast_streams), "--load-s", str(args.load_s)],
        stdout=subprocess.PIPE)
    time.sleep(3.0)  # the streams are opening: probe once they run
    stop = threading.Event()
    result: dict[str, dict[str, list[float]]] = {}
    prober = threading.Thread(target=lambda: result.update(probe=_probe_loop(target, stop)))
    prober.start()
    out, _ = client.communicate(timeout=args.load_s + 120)
    stop.set()
    prober.join()
    cpu_share, rss_start, rss_end = rigd.finish()
    rates = json.loads(out)
    probe = result["probe"]
    u50, u99 = _percentiles(probe["unary"])
    h50, h99 = _percentiles(probe["health"])
    print(f"   1 Hz streams delivered:  {_summary(rates['slow_rates'])}")
    print(f"   10 Hz streams delivered: {_summary(rates['fast_rates'])}")
    print(f"   unary GetTelemetry: p50 {u50:.2f} ms, p99 {u99:.2f} ms "
          f"({len(probe['unary'])} calls)")
    print(f"   Health.Check:       p50 {h50:.2f} ms, p99 {h99:.2f} ms "
          f"({len(probe['health'])} calls, {len(probe['health_failures'])} failed)")
    print(f"   baseline, empty grpc.aio health server (idle): p50 {base_p50:.3f} ms, "
          f"p99 {base_p99:.3f} ms -> rigd's health p99 under load is {h99 / base_p99:.1f}x")
    print(f"   rigd CPU {cpu_share * 100:.0f}% of one core; RSS {rss_start / 2**20:.1f} -> "
          f"{rss_end / 2**20:.1f} MiB ({(rss_end - rss_start) / 2**20:+.1f} MiB)")


def _slow_reader(target: str, rigd_pid: int, seconds: float) -> None:
    print(f"\n3. slow reader: one 10 Hz stream that reads nothing for {seconds:g} s")
    for label, options in (("gRPC default channel", []),
                           ("FRESH_STREAM_OPTIONS (rigctl)", FRESH_STREAM_OPTIONS)):
        rigd = ProcessSampler(rigd_pid)
        channel = grpc.insecure_channel(target, options=options)
        stream = pb_grpc.RigAgentStub(channel).StreamTelemetry(
            pb.StreamTelemetryRequest(interval_ms=100), timeout=seconds + 120)
        size = next(stream).ByteSize()
        time.sleep(seconds)
        _cpu, rss_start, rss_end = rigd.finish()
        resumed = time.time()
        stale = 0
        for message in stream:
            if message.devices[0].time.ToNanoseconds() / 1e9 >= resumed:
                break
            stale += 1
        stream.cancel()
        channel.close()
        print(f"   {label}: rigd RSS {rss_start / 2**20:.1f} -> {rss_end / 2**20:.1f} MiB "
              f"({(rss_end - rss_start) / 2**20:+.1f} MiB); on draining {stale} stale messages "
              f"of {size} B ({stale * size / 1024:.0f} KiB held by the transport), then fresh "
              f"readings with dropped_count {message.dropped_count} of ~{round(seconds * 10)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--gpus", type=int, default=4, help="simulated GPUs in the rig")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--fast-streams", type=int, default=50)
    parser.add_argument("--load-s", type=float, default=30.0)
    parser.add_argument("--slow-s", type=float, default=60.0)
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
        config.write_text(f'[server]\nunix_socket = "{sock}"\ntcp_address = "127.0.0.1:{port}"\n'
                          f'drain_s = 0\n[hal]\nbackends = ["host", "nvml"]\n'
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
