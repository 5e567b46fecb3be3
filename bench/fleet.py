"""Fan-out GetTelemetry to 1,000 and 5,000 rigs on loopback: the client library's Fleet beside a
naive loop over the generated stubs, in the same run; then again with 10 % of the rigs hung.

The rigs: simulated rig.v1 endpoints (client.sim, 2,500 per process, each a real gRPC server on
its own port, two miners and a GPU each) and a few real rigd processes among them. The client
runs in a process of its own per measurement, so its CPU seconds and peak RSS are its own:

- client.Fleet: one channel per rig kept open, `--concurrency` in flight, `--deadline-s` per
  rig; connecting (a health check per rig, 10 s each), then the median of `--rounds`
  GetTelemetry fan-outs. Every answer is converted to dataclasses (Snapshot, Reading, RigPower).
  The simulated rigs answer from readings encoded at most once per interval (as rigd answers
  from its sampler's latest), so the figures are the client's.
- naive: `for stub in stubs: stub.GetTelemetry(request, timeout=deadline)`, the generated stubs
  over channels made once and kept (protobuf messages, no conversion); its first loop and one
  warm loop. With hung rigs it is stopped after `--naive-cap-s` and its whole loop extrapolated
  from its rate (it waits the full deadline on every hung rig, one after the other).

Targets (issue 22): warm fan-out to 1,000 rigs under 1 s, to 5,000 under 3 s.

    python bench/fleet.py [--sizes 1000,5000] [--rounds 3] [--deadline-s 1]
                          [--concurrency 256] [--real 2] [--naive-cap-s 30]

On a 2-core machine the simulated rigs share the cores with the client, so every request
queues behind the others at the simulated servers; far more in flight than the servers can
answer makes rigs miss their deadline there (a real fleet's rigs answer in parallel). The
default concurrency keeps the queue short.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._machine import describe

PER_PROCESS = 2500


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- the client side, in a process of its own ---------------------------------------------------


async def fleet_client(members: list[list[str]], args: argparse.Namespace) -> dict[str, Any]:
    from client import Fleet

    async with Fleet([tuple(m) for m in members], concurrency=args.concurrency,
                     deadline_s=args.deadline_s) as fleet:
        rounds = []
        for n in range(args.rounds + 1):
            cpu = time.process_time()
            # The first round opens every channel (a health check each) and is given time to:
            # thousands of TCP and HTTP/2 handshakes at once are not what the deadline is for.
            results = await (fleet.connect(deadline_s=max(10.0, args.deadline_s)) if n == 0
                             else fleet.telemetry())
            rounds.append({"wall_s": results.wall_s, "cpu_s": time.process_time() - cpu,
                           "answered": len(results.ok), "failed": len(results.failed)})
        return {"first": rounds[0], "warm": rounds[1:], "rss_mb": _peak_rss_mb()}


def naive_client(members: list[list[str]], args: argparse.Namespace) -> dict[str, Any]:
    import grpc

    from rigapi import pb, pb_grpc

    stubs = [pb_grpc.RigAgentStub(grpc.insecure_channel(address)) for _, address in members]
    request = pb.GetTelemetryRequest()
    rounds = []
    for _ in range(2):
        started, cpu = time.perf_counter(), time.process_time()
        answered = failed = done = 0
        for stub in stubs:
            try:
                stub.GetTelemetry(request, timeout=args.deadline_s)
                answered += 1
            except grpc.RpcError:
                failed += 1
            done += 1
            if time.perf_counter() - started > args.naive_cap_s:
                break
        wall = time.perf_counter() - started
        rounds.append({"wall_s": wall, "cpu_s": time.process_time() - cpu, "answered": answered,
                       "failed": failed, "done": done,
                       "extrapolated_s": wall * len(stubs) / done if done < len(stubs) else None})
    return {"first": rounds[0], "warm": rounds[1:], "rss_mb": _peak_rss_mb()}


def client_main(args: argparse.Namespace) -> int:
    from client.sim import raise_fd_limit

    raise_fd_limit()
    members = json.loads(Path(args.members).read_text())
    if args.client == "fleet":
        result = asyncio.run(fleet_client(members, args))
    else:
        result = naive_client(members, args)
    print(json.dumps(result))
    return 0


# ---- the rigs and the measurements --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_real_rigd(tmp: Path, index: int) -> tuple[subprocess.Popen[bytes], str]:
    here = tmp / f"rigd{index}"
    here.mkdir()
    port = free_port()
    config = here / "rigd.toml"
    config.write_text(f'rig_id = "bench-real-{index}"\n[server]\nunix_socket = "{here}/rigd.sock"\n'
                      f'tcp_address = "127.0.0.1:{port}"\ndrain_s = 0\n'
                      f'[workloads]\nstate_dir = "{here}/state"\n[hal]\nbackends = ["host"]\n')
    proc = subprocess.Popen([sys.executable, "-m", "agent.main", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, f"127.0.0.1:{port}"


def wait_ready(address: str, timeout_s: float = 60) -> None:
    import grpc

    from rigapi import pb, pb_grpc

    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        while True:
            try:
                pb_grpc.RigAgentStub(channel).GetInventory(pb.GetInventoryRequest(), timeout=2)
                return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"rigd at {address} did not start") from None
                time.sleep(0.2)


def measure(mode: str, members_file: Path, args: argparse.Namespace) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--client", mode, "--members", str(members_file),
            "--rounds", str(args.rounds), "--deadline-s", str(args.deadline_s),
            "--concurrency", str(args.concurrency), "--naive-cap-s", str(args.naive_cap_s)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True,
                         env={**os.environ, "GRPC_VERBOSITY": "ERROR"})
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def row(size: int, label: str, r: dict[str, Any], rss_mb: float) -> str:
    wall = f"{r['wall_s']:.3f}"
    if r.get("extrapolated_s"):
        wall = f"~{r['extrapolated_s']:.0f} (stopped at {r['done']} after {r['wall_s']:.0f} s)"
    return (f"{size:>6}  {label:<34}{wall:>12}  {r['cpu_s']:>8.2f}  {rss_mb:>7.0f}  "
            f"{r['answered']:>6}/{r['answered'] + r['failed']}")


def report(size: int, hung: bool, fleet: dict[str, Any], naive: dict[str, Any]) -> list[str]:
    tag = ", 10% hung" if hung else ""
    warm = fleet["warm"]
    median = dict(warm[len(warm) // 2]) if warm else fleet["first"]
    median["wall_s"] = statistics.median(r["wall_s"] for r in warm)
    median["cpu_s"] = statistics.median(r["cpu_s"] for r in warm)
    lines = [] if hung else [row(size, "client.Fleet connect", fleet["first"], fleet["rss_mb"])]
    lines += [row(size, f"client.Fleet warm (median){tag}", median, fleet["rss_mb"]),
             row(size, f"naive stub loop first{tag}", naive["first"], naive["rss_mb"]),
             row(size, f"naive stub loop warm{tag}", naive["warm"][0], naive["rss_mb"])]
    warm_naive = naive["warm"][0]
    naive_wall = warm_naive.get("extrapolated_s") or warm_naive["wall_s"]
    naive_cpu = warm_naive["cpu_s"] * size / warm_naive["done"]  # a stopped loop's, scaled
    lines.append(f"{'':>8}Fleet warm / naive warm: {median['wall_s'] / naive_wall:.3f}x wall, "
                 f"{median['cpu_s'] / max(naive_cpu, 1e-9):.2f}x client CPU")
    return lines


def run_size(size: int, args: argparse.Namespace, tmp: Path) -> list[str]:
    from client.sim import Fault, SimRigProcess

    here = tmp / f"n{size}"
    here.mkdir()
    real: list[tuple[subprocess.Popen[bytes], str]] = []
    simulated = size - args.real
    sims = [SimRigProcess(min(PER_PROCESS, simulated - first), first=first, gpus=1)
            for first in range(0, simulated, PER_PROCESS)]
    try:  # every process started is ended, even if a later one fails to start
        for i in range(args.real):
            real.append(start_real_rigd(here, i))
        for s in sims:
            s.start()
        for _, address in real:
            wait_ready(address)
        members = [[f"real-{i}", address] for i, (_, address) in enumerate(real)]
        members += [list(m) for s in sims for m in s.rigs]
        members_file = tmp / f"members-{size}.json"
        members_file.write_text(json.dumps(members))
        lines = report(size, False, measure("fleet", members_file, args),
                       measure("naive", members_file, args))
        for s in sims:  # every tenth simulated rig stops answering
            s.set_fault(range(0, len(s.rigs), 10), Fault.HANG)
        lines += report(size, True, measure("fleet", members_file, args),
                        measure("naive", members_file, args))
        return lines
    finally:
        for s in sims:
            s.stop()
        for proc, _ in real:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,5000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--deadline-s", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--real", type=int, default=2, help="real rigd among the rigs")
    parser.add_argument("--naive-cap-s", type=float, default=30.0)
    parser.add_argument("--client", choices=("fleet", "naive"), help=argparse.SUPPRESS)
    parser.add_argument("--members", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        return client_main(args)
    print(f"machine: {describe()}")
    print(f"deadline {args.deadline_s:g} s per rig, Fleet concurrency {args.concurrency}, "
          f"{args.real} real rigd among simulated rigs ({PER_PROCESS} per process)\n")
    print(f"{'rigs':>6}  {'mode':<34}{'wall s':>12}  {'CPU s':>8}  {'RSS MB':>7}  answered")
    with tempfile.TemporaryDirectory(prefix="rigd-bench-fleet-") as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            for line in run_size(size, args, Path(tmp)):
                print(line, flush=True)
    print("\ntargets: warm fan-out to 1,000 rigs under 1 s, to 5,000 under 3 s (client.Fleet)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
