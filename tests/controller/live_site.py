"""A live site on loopback for the controller's integration tests and benchmarks: three real rigd
processes (one with simulated GPUs whose hashing runs on PoCL and whose inference is the builtin
runtime; two with simulated miners of three firmware families each), a 3-member etcd cluster,
a local Stratum pool, and `rigsite run` replicas as subprocesses, with the journal read back."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from agent.demo.pool import LocalPool, PoolThread
from hal.sim.asic import SimFleet
from rigapi import pb
from tests.agent.conftest import OPERATOR_TOKEN, RigdProcess, simulated_gpus, start_rigd
from tests.agent.test_asic_rigd import asic_section
from tests.controller.etcd_cluster import EtcdCluster

FAMILIES = ("antminer", "luxos", "whatsminer")
ROOT = Path(__file__).resolve().parents[2]


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 60.0,
             every_s: float = 0.1, context: Callable[[], str] = str) -> Any:
    """check() until it returns something truthy, or fail saying what was awaited (and what
    `context()` tells of the state then)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}"
                                 + (f"; {context()}" if context is not str else ""))
        time.sleep(every_s)


@dataclass
class Rigs:
    """The three rigds, the pool and the simulators behind them."""

    tmp: Path
    pool: PoolThread
    fleets: list[SimFleet]
    rigds: dict[str, RigdProcess] = field(default_factory=dict)
    gpus: list[str] = field(default_factory=list)
    miners: dict[str, list[str]] = field(default_factory=dict)

    def stub(self, rig: str) -> Any:
        return self.rigds[rig].stub()

    def telemetry(self, rig: str) -> pb.GetTelemetryResponse:
        return self.stub(rig).GetTelemetry(pb.GetTelemetryRequest(max_age_ms=1), timeout=10)

    def site_power_w(self) -> float:
        return sum(self.telemetry(r).rig_power.total_w for r in self.rigds)

    def workload(self, rig: str, device: str) -> pb.WorkloadStatus:
        for d in self.telemetry(rig).devices:
            if d.device_id == device:
                return d.workload
        raise KeyError(device)

    def mining(self, rig: str, device: str) -> bool:
        for d in self.telemetry(rig).devices:
            if d.device_id == device:
                return bool(d.asic.is_mining)
        raise KeyError(device)

    def operations(self, rig: str) -> list[pb.Operation]:
        return list(self.stub(rig).ListOperations(pb.ListOperationsRequest(limit=1000),
                                                  timeout=10).operations)

    def stop(self) -> None:
        for rigd in self.rigds.values():
            with contextlib.suppress(Exception):
                rigd.stop()
        for fleet in self.fleets:
            fleet.stop()
        self.pool.stop()


def start_rigs(tmp: Path, gpu_count: int = 2, telemetry_s: float = 0.25) -> Rigs:
    pool = LocalPool(difficulty=0.002).start_in_thread()
    rigs = Rigs(tmp, pool, [])
    try:
        settings: dict[str, dict[str, object]] = {
            "telemetry": {"interval_s": telemetry_s},
            "pool": {"urls": [f"stratum+tcp://127.0.0.1:{pool.port}"], "user": "site.test"},
            "workloads": {"min_dwell_s": 0.0, "verify_timeout_s": 20.0,
                          "hashing_ready_timeout_s": 120.0},
        }
        gpu_dir = tmp / "rig-gpus"
        gpu_dir.mkdir()
        _, gpus, gpu_config = simulated_gpus(gpu_dir, gpu_count)
        rigs.gpus = gpus
        rigs.rigds["rig-gpus"] = start_rigd(
            gpu_dir, gpu_config, backends=("host", "nvml", "opencl"),
            settings={**settings, "workloads": {**settings["workloads"],
                                                "state_dir": str(gpu_dir / "state")}})
        for name in ("rig-miners-a", "rig-miners-b"):
            d = tmp / name
            d.mkdir()
            fleet = SimFleet.of(list(FAMILIES), warmup_s=0.1).start()
            rigs.fleets.append(fleet)
            rigs.rigds[name] = start_rigd(
                d, asic_section(fleet.discover_options()), backends=("host", "asic"),
                settings={**settings, "workloads": {**settings["workloads"],
                                                    "state_dir": str(d / "state")}})
            rigs.miners[name] = [f"asic/{a}" for a in fleet.addresses]
    except BaseException:
        rigs.stop()
        raise
    return rigs


def set_workload(rigs: Rigs, rig: str, device: str, workload: pb.Workload,
                 timeout_s: float = 180.0) -> None:
    """Switch a device as an operator would (before the controller runs) and wait for it."""
    stub = rigs.stub(rig)
    metadata = [("authorization", f"Bearer {OPERATOR_TOKEN}")]
    op = stub.SetWorkload(pb.SetWorkloadRequest(device_ids=[device], workload=workload),
                          metadata=metadata, timeout=10).operation
    final = None
    for message in stub.WatchOperation(pb.WatchOperationRequest(operation_id=op.operation_id),
                                       timeout=timeout_s):
        final = message.operation
    assert final is not None and final.state == pb.OPERATION_STATE_SUCCEEDED, final


# ---- the controller's configuration and replicas ---------------------------------------------


def site_config(tmp: Path, rigs: Rigs, etcd: EtcdCluster | None, *, price_file: Path,
                interval_s: float = 0.5, extra: str = "", window_s: float = 2.0,
                lease_ttl_s: int = 3, **policy: Any) -> Path:
    token = tmp / "token"
    token.write_text(OPERATOR_TOKEN + "\n")
    token.chmod(0o600)
    endpoints = [f"{name}=unix:{rigd.socket_path}" for name, rigd in rigs.rigds.items()]
    knobs = {"window_s": window_s, "shed_windows": 2, "resume_windows": 2,
             "high_strike_ratio": 100.0, "min_dwell_s": 0.0, "give_back_windows": 2,
             "min_gain_ratio": 0.0, **policy}
    lines = [
        'site_id = "test-site"',
        f"interval_s = {interval_s}",
        "[rigs]",
        f"endpoints = {json.dumps(endpoints)}",
        f'token_file = "{token}"',
        "deadline_s = 5.0",
        "lease_ttl_s = 10",
        "hashing_intensity = 0.05",
        "[price]",
        'source = "file"',
        f'file = "{price_file}"',
        f"interval_s = {window_s}",
        "max_age_s = 30",
        "[policy]",
        *(f"{k} = {json.dumps(v)}" for k, v in knobs.items()),
        "[journal]",
        f'dir = "{tmp / "journal"}"',
    ]
    if etcd is not None:
        lines += ["[etcd]", f"endpoints = {json.dumps(etcd.endpoints)}",
                  f"lease_ttl_s = {lease_ttl_s}", "timeout_s = 1.0"]
    path = tmp / "site.toml"
    path.write_text("\n".join(lines) + "\n" + extra + "\n")
    return path


def write_prices(path: Path, start_unix_s: float, window_s: float,
                 prices: list[float | None]) -> None:
    """The price file: window k's price (its interval starting at start + k x window) is
    published when the window ends; a window without a price (None) has no row."""
    rows = ["time_s,usd_per_mwh"] + [f"{start_unix_s + k * window_s!r},{p!r}"
                                     for k, p in enumerate(prices) if p is not None]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(rows) + "\n")
    os.replace(tmp, path)


@dataclass
class Replica:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        return int(self.proc.returncode)


def start_replica(config: Path, name: str, tmp: Path, *args: str) -> Replica:
    log_path = tmp / f"rigsite-{name}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller", "run", "-c", str(config), "--replica", name, *args],
        stdout=subprocess.DEVNULL, stderr=open(log_path, "ab"),
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=ROOT)
    return Replica(name, proc, log_path)


def journal(tmp: Path) -> list[dict[str, Any]]:
    from controller.journal import records

    directory = tmp / "journal"
    return list(records(directory)) if directory.exists() else []


def leader_events(tmp: Path) -> list[dict[str, Any]]:
    return [r for r in journal(tmp) if r["type"] == "leader"]


def rigsite(*args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "controller", *args], capture_output=True,
                          text=True, timeout=timeout_s, cwd=ROOT)


@contextlib.contextmanager
def replicas(config: Path, tmp: Path, names: tuple[str, ...] = ("a", "b")
             ) -> Iterator[dict[str, Replica]]:
    started = {n: start_replica(config, n, tmp) for n in names}
    try:
        yield started
    finally:
        for r in started.values():
            r.stop()


def channel_ok(rigd: RigdProcess) -> bool:
    try:
        rigd.stub().GetInventory(pb.GetInventoryRequest(), timeout=2)
        return True
    except grpc.RpcError:
        return False


class PriceSchedule:
    """The price file as a grid of windows from `start`: window k's price is published at
    start + (k + 1) x window_s. A phase changes the windows not yet published; `stale_after`
    ends the file there (no later price is ever published)."""

    def __init__(self, path: Path, window_s: float, baseline: float, start_unix_s: float,
                 horizon: int = 5000) -> None:
        self.path = path
        self.window_s = window_s
        self.start = start_unix_s
        self.baseline = baseline
        self.prices: list[float | None] = [baseline] * horizon
        self.write()

    def write(self) -> None:
        write_prices(self.path, self.start, self.window_s, self.prices)

    def current(self) -> int:
        """The window running now (its price not yet published)."""
        return int((time.time() - self.start) // self.window_s)

    def published_s(self, k: int) -> float:
        return self.start + (k + 1) * self.window_s

    def phase(self, prices: list[float], *, then: float | None = None, stale: bool = False,
              lead: int = 1) -> int:
        """From the window `lead` after the current one: `prices`, then `then` (the baseline)
        for good, or nothing more with `stale`. Returns the first window of the phase."""
        first = self.current() + lead
        tail = [] if stale else [self.baseline if then is None else then] * 5000
        head = self.prices[:first]
        head += [None] * (first - len(head))  # windows with no price published
        self.prices = head + list(prices) + tail
        self.write()
        return first


class Load:
    """Clients sending embedding requests as a load balancer would: round-robin over the
    runtimes serving now (`targets()`, read again every half second), `clients` threads, each
    pausing `pause_s` between requests."""

    def __init__(self, targets: Callable[[], list[str]], clients: int, pause_s: float) -> None:
        import threading

        self.targets = targets
        self.urls: list[str] = list(targets())
        self.stop_flag = threading.Event()
        self.sent = 0
        self.errors = 0
        self.pause_s = pause_s
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(clients)]
        self.threads.append(threading.Thread(target=self._refresh, daemon=True))
        for t in self.threads:
            t.start()

    def _refresh(self) -> None:
        while not self.stop_flag.wait(0.5):
            try:
                self.urls = list(self.targets())
            except Exception:  # a rig restarting: keep the last list
                pass

    def _run(self, index: int) -> None:
        import httpx

        n = index
        with httpx.Client(trust_env=False, timeout=60) as client:
            while not self.stop_flag.is_set():
                urls = self.urls
                if not urls:
                    self.stop_flag.wait(0.1)
                    continue
                n += 1
                try:
                    reply = client.post(f"{urls[n % len(urls)]}/v1/embeddings",
                                        json={"input": "a request for the site's runtime"})
                    self.sent += 1
                    self.errors += reply.status_code != 200
                except httpx.HTTPError:
                    self.errors += 1
                if self.pause_s:
                    self.stop_flag.wait(self.pause_s)

    def stop(self) -> None:
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout=90)
