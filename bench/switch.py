"""Switch timings: per phase, median of N, for hashing -> inference cold, hashing -> inference
from warm standby, and inference -> hashing, on a simulated GPU whose hashing runs on the best
OpenCL device and whose inference is the builtin runtime (all-MiniLM-L6-v2 on the CPU).

rigd's own overhead is printed apart: the switch's total minus what the workloads take by
themselves, measured standalone in the same run (the builtin runtime from spawn to /health 200,
the hashing worker from spawn to its first "running" status) and minus the old workload's drain
(the hashing worker finishing its kernel launch). Targets (issue 10): overhead under 100 ms per
switch; warm standby to ready under 1 s. References: vLLM cold starts take 34-60 s for small
models; its sleep mode wakes in 0.1-0.4 s.

    python bench/switch.py [--runs 10]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import grpc
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from agent.core.logs import configure_logging
from agent.demo.pool import LocalPool
from agent.demo.rig import _best_opencl_device
from agent.runtime.workloads.inference.runtime import PROBE_INTERVAL_S, free_port
from bench._machine import describe
from hal.sim.nvml import SimControl, demo_setup
from rigapi import pb, pb_grpc


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def standalone_runtime_start_s() -> float:
    """The builtin runtime alone: spawn to /health 200."""
    port = free_port("127.0.0.1")
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "agent.runtime.workloads.inference.builtin",
                             "--port", str(port)], stderr=subprocess.DEVNULL,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        with httpx.Client(trust_env=False) as client:
            while True:  # probed as rigd probes it
                try:
                    if client.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                        return time.monotonic() - started
                except httpx.HTTPError:
                    pass
                time.sleep(PROBE_INTERVAL_S)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def standalone_worker_start_s(facet: str, pool_url: str) -> float:
    """The hashing worker alone: spawn to its first "running" status line."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "agent.runtime.workloads.hashing.worker",
                             "--device", facet, "--pool", pool_url, "--user", "bench",
                             "--intensity", "0.2"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if json.loads(line).get("state") == "running":
                return time.monotonic() - started
        raise RuntimeError("the worker exited before mining")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run_switch(stub: pb_grpc.RigAgentStub, gpu: str, workload: pb.Workload) -> pb.Operation:
    op = stub.SetWorkload(pb.SetWorkloadRequest(device_ids=[gpu], workload=workload),
                          timeout=30).operation
    final = list(stub.WatchOperation(pb.WatchOperationRequest(operation_id=op.operation_id),
                                     timeout=600))[-1].operation
    if final.state != pb.OPERATION_STATE_SUCCEEDED:
        raise RuntimeError(f"switch failed: {final.error}")
    return final


def phase_ms(op: pb.Operation) -> dict[str, float]:
    out = {pb.SwitchPhase.Name(p.phase).removeprefix("SWITCH_PHASE_").lower(): p.duration_ms
           for p in op.phases}
    out["total"] = (op.end_time.ToNanoseconds() - op.create_time.ToNanoseconds()) / 1e6
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    configure_logging("warning", "console")
    facet = _best_opencl_device()
    if facet is None:
        print("no OpenCL device: nothing to measure")
        return 1
    pool = LocalPool(difficulty=0.002).start_in_thread()
    pool_url = f"stratum+tcp://127.0.0.1:{pool.port}"
    with tempfile.TemporaryDirectory(prefix="rigd-bench-switch-") as tmp:
        options = demo_setup(Path(tmp) / "nvml", count=1)
        sim = SimControl(Path(options["sim_state_path"]), Path(options["library_path"]))
        gpu = f"gpu/{sim.read().gpus[0].uuid}"
        nvml = "\n".join(f'{k} = "{v}"' for k, v in options.items())
        sock = f"{tmp}/rigd.sock"
        config = Path(tmp, "rigd.toml")
        config.write_text(f"""[server]
unix_socket = "{sock}"
drain_s = 0
[hal]
backends = ["host", "nvml", "opencl"]
compute_facets = {{ "{gpu}" = "{facet}" }}
[hal.nvml]
{nvml}
[pool]
urls = ["{pool_url}"]
[workloads]
state_dir = "{tmp}/state"
min_dwell_s = 0.0
[inference.profiles.builtin-cold]
argv = ["{{python}}", "-m", "agent.runtime.workloads.inference.builtin", "--port", "{{port}}"]
devices = ["gpu", "host"]
sleep_path = ""
wake_path = ""
warm_standby = false
ready_path = "/health"
env = {{ HF_HUB_OFFLINE = "1" }}
[[hashing]]
device = "{gpu}"
intensity = 0.2
""")
        proc = subprocess.Popen([sys.executable, "-m", "agent.main", "--config", str(config)],
                                stderr=subprocess.DEVNULL)
        try:
            while not os.path.exists(sock):
                time.sleep(0.1)
            stub = pb_grpc.RigAgentStub(grpc.insecure_channel(f"unix:{sock}"))
            while True:  # the kernel probe, then the seeded hashing
                t = stub.GetTelemetry(pb.GetTelemetryRequest(device_ids=[gpu], max_age_ms=1),
                                      timeout=10).devices[0]
                if t.workload.state == pb.WORKLOAD_STATE_RUNNING:
                    break
                time.sleep(0.2)
            hashing = pb.Workload(kind=pb.WORKLOAD_KIND_HASHING)
            cases = {
                "hashing -> inference, cold": pb.Workload(
                    kind=pb.WORKLOAD_KIND_INFERENCE,
                    inference=pb.InferenceSpec(profile="builtin-cold")),
                "hashing -> inference, warm standby": pb.Workload(
                    kind=pb.WORKLOAD_KIND_INFERENCE, inference=pb.InferenceSpec(profile="builtin")),
            }
            results: dict[str, list[dict[str, float]]] = defaultdict(list)
            runtime_s: list[float] = []
            worker_s: list[float] = []
            idle = pb.Workload(kind=pb.WORKLOAD_KIND_IDLE)
            cold, warm = cases.values()
            # Cold switches, each beside the same starts measured standalone (the device idle,
            # as it is while a switch starts the new workload), interleaved so that whatever
            # else the machine does weighs on both alike.
            for _ in range(args.runs):
                results["hashing -> inference, cold"].append(phase_ms(run_switch(stub, gpu, cold)))
                results["inference -> hashing"].append(phase_ms(run_switch(stub, gpu, hashing)))
                run_switch(stub, gpu, idle)
                runtime_s.append(standalone_runtime_start_s())
                worker_s.append(standalone_worker_start_s(facet, pool_url))
                run_switch(stub, gpu, hashing)
            # Warm: the first switch makes the standby, the next ones wake it.
            run_switch(stub, gpu, warm)
            run_switch(stub, gpu, hashing)
            for _ in range(args.runs):
                results["hashing -> inference, warm standby"].append(
                    phase_ms(run_switch(stub, gpu, warm)))
                run_switch(stub, gpu, hashing)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    pool.stop()

    print(f"machine: {describe()}")
    print(f"device: one simulated H100 (hashing on {facet}), builtin runtime on the CPU; "
          f"median of {args.runs} switches each")
    columns = ["requested", "draining", "stopping", "verifying", "configuring", "starting",
               "ready", "total"]
    print(f"\n{'switch (ms)':<36}" + "".join(f"{c:>12}" for c in columns))
    medians = {}
    for name, runs in results.items():
        medians[name] = {c: _median([r.get(c, 0.0) for r in runs]) for c in columns}
        print(f"{name:<36}" + "".join(f"{medians[name][c]:>12.1f}" for c in columns))
    runtime_ms, worker_ms = _median(runtime_s) * 1e3, _median(worker_s) * 1e3
    print(f"\nstandalone, same run: builtin runtime spawn -> /health 200: {runtime_ms:.0f} ms; "
          f"hashing worker spawn -> mining: {worker_ms:.0f} ms (medians of {len(runtime_s)})")
    print("\nrigd's own overhead (total - the old workload's drain - the new workload's own "
          "start measured standalone; noisy, as two process starts are subtracted):")
    cold, warm = medians["hashing -> inference, cold"], medians[
        "hashing -> inference, warm standby"]
    back = medians["inference -> hashing"]
    for name, m, own in (("hashing -> inference, cold", cold, runtime_ms),
                         ("inference -> hashing", back, worker_ms)):
        overhead = m["total"] - m["draining"] - own
        print(f"  {name:<34} {overhead:8.1f} ms   (target < 100 ms)")
    print(f"  {'hashing -> inference, warm standby':<34} {warm['total'] - warm['draining']:8.1f} "
          "ms to ready after the drain (target < 1000 ms; the wake is rigd plus the runtime's "
          "own /wake_up)")
    print("rigd's own phases alone (requested + stopping + verifying + configuring + starting):")
    for name, m in medians.items():
        own = sum(m[c] for c in ("requested", "stopping", "verifying", "configuring",
                                 "starting"))
        print(f"  {name:<34} {own:8.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
