"""Unary RPC latency of a real rigd: GetInventory and GetTelemetry over TCP loopback and the Unix
socket, p50/p99 over N calls, beside the health Check RPC (the cheapest call gRPC can make) as
the baseline measured in the same run. Target: p99 under 2 ms.

    python bench/rpc.py [--calls 2000]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from agent.api import pb, pb_grpc
from bench._machine import describe


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--backends", default="host,opencl",
                        help="hal backends rigd discovers (default: %(default)s)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rigd-bench-") as tmp:
        sock, port = os.path.join(tmp, "rigd.sock"), _free_port()
        config = Path(tmp, "rigd.toml")
        backends = ", ".join(f'"{b}"' for b in args.backends.split(","))
        config.write_text(f'[server]\nunix_socket = "{sock}"\ntcp_address = "127.0.0.1:{port}"\n'
                          f'drain_s = 0\n[hal]\nbackends = [{backends}]\n')
        proc = subprocess.Popen([sys.executable, "-m", "agent.daemon", "--config", str(config)],
                                stderr=subprocess.DEVNULL)
        try:
            targets = {"tcp": f"127.0.0.1:{port}", "unix": f"unix:{sock}"}
            deadline = time.monotonic() + 60
            while not os.path.exists(sock) and time.monotonic() < deadline:
                time.sleep(0.1)
            print(f"machine: {describe()}")
            print(f"rigd backends: {args.backends}; {args.calls} calls each, sequential")
            print(f"{'rpc':<22}{'transport':<11}{'p50 ms':>9}{'p99 ms':>9}")
            for transport, target in targets.items():
                channel = grpc.insecure_channel(target)
                grpc.channel_ready_future(channel).result(timeout=30)
                stub = pb_grpc.RigAgentStub(channel)
                health = health_pb2_grpc.HealthStub(channel)
                n_devices = len(stub.GetInventory(pb.GetInventoryRequest()).devices)
                cases: dict[str, Callable[[], object]] = {
                    "Health.Check (base)": lambda h=health: h.Check(
                        health_pb2.HealthCheckRequest()),
                    "GetInventory": lambda s=stub: s.GetInventory(pb.GetInventoryRequest()),
                    "GetTelemetry": lambda s=stub: s.GetTelemetry(pb.GetTelemetryRequest()),
                }
                base_p99 = 0.0
                for name, call in cases.items():
                    p50, p99 = _measure(call, args.calls)
                    base_p99 = base_p99 or p99
                    ratio = f"  ({p99 / base_p99:.1f}x base p99)" if name[0] != "H" else ""
                    print(f"{name:<22}{transport:<11}{p50:>9.3f}{p99:>9.3f}{ratio}")
                channel.close()
            print(f"devices in each reply: {n_devices}; target: p99 < 2 ms")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
