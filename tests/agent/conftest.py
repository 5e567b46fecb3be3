"""A real rigd in a subprocess, on a Unix socket in a temp dir and a free loopback TCP port."""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from agent.demo.pool import LocalPool, PoolThread
from agent.edges.unixfront import MAX_SOCKET_PATH_BYTES
from hal.sim.nvml import SimControl
from rigapi import pb, pb_grpc
from tests.ports import free_port

OPERATOR_TOKEN = "op-secret-token"
TEST_DRAIN_S = 0.1  # [server] drain_s of a test rigd
DRAIN_OBSERVED_S = 1.0  # ... of one whose test watches NOT_SERVING arrive during the drain
ADMIN_TOKEN = "admin-secret-token"


@dataclass
class RigdProcess:
    proc: subprocess.Popen[str]
    socket_path: str
    tcp_address: str
    audit_path: Path
    log_path: Path
    config_path: Path

    def restart(self) -> RigdProcess:
        """A new rigd on the same configuration and state (after this one ended)."""
        return launch_rigd(self.config_path, self.socket_path, self.tcp_address,
                           self.audit_path, self.log_path)

    def stub(self, tcp: bool = False) -> pb_grpc.RigAgentStub:
        target = self.tcp_address if tcp else f"unix:{self.socket_path}"
        return pb_grpc.RigAgentStub(grpc.insecure_channel(target))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


def write_config(path: Path, socket_path: str, port: int, audit: Path, extra: str = "",
                 backends: tuple[str, ...] = ("host",),
                 settings: dict[str, dict[str, object]] | None = None) -> None:
    """A test rig's configuration; `settings` adds or replaces keys of [server], [telemetry]..."""
    op = hashlib.sha256(OPERATOR_TOKEN.encode()).hexdigest()
    admin = hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()
    sections: dict[str, dict[str, object]] = {
        # A short drain: every test's rigd stops through it. The tests of the drain itself
        # (NOT_SERVING seen while rigd still listens) set DRAIN_OBSERVED_S.
        "server": {"unix_socket": socket_path, "tcp_address": f"127.0.0.1:{port}",
                   "drain_s": TEST_DRAIN_S},
        "auth": {"anonymous_role": "viewer"},
        "audit": {"path": str(audit)},
        "telemetry": {"interval_s": 0.2},
        "workloads": {"state_dir": str(Path(socket_path).parent / "state")},
        "hal": {"backends": list(backends)},
    }
    for section, values in (settings or {}).items():
        sections.setdefault(section, {}).update(values)
    lines = ['rig_id = "test-rig"']
    for section, values in sections.items():
        if section == "hal":
            continue  # last, so that [hal.<backend>] tables in `extra` follow it
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    for name, role, digest in (("controller", "operator", op), ("boss", "admin", admin)):
        lines += ["[[auth.tokens]]", f'name = "{name}"', f'role = "{role}"', f'sha256 = "{digest}"']
    lines.append("[hal]")
    lines += [f"{key} = {json.dumps(value)}" for key, value in sections["hal"].items()]
    path.write_text("\n".join(lines) + "\n" + extra + "\n")


def short_dir(tmp: Path) -> Path:
    """A directory of a short path for `tmp`'s sockets (a symlink would not shorten the path
    the kernel is given): under the system's temporary directory, removed when the tests end."""
    directory = Path(tempfile.gettempdir()) / f"rigd-{abs(hash(str(tmp))) % 10**8:08d}"
    if not directory.exists():
        directory.mkdir()
        atexit.register(shutil.rmtree, directory, True)
    return directory


def start_rigd(tmp: Path, extra_config: str = "", args: tuple[str, ...] = (),
               backends: tuple[str, ...] = ("host",),
               settings: dict[str, dict[str, object]] | None = None) -> RigdProcess:
    socket_path = str(tmp / "rigd.sock")
    if len(os.fsencode(socket_path)) > MAX_SOCKET_PATH_BYTES:  # a deep pytest directory
        socket_path = str(short_dir(tmp) / "rigd.sock")
    port = free_port()
    audit = tmp / "audit.jsonl"
    config = tmp / "rigd.toml"
    write_config(config, socket_path, port, audit, extra_config, backends, settings)
    return launch_rigd(config, socket_path, f"127.0.0.1:{port}", audit, tmp / "rigd.log", args)


def launch_rigd(config: Path, socket_path: str, tcp_address: str, audit: Path, log_path: Path,
                args: tuple[str, ...] = ()) -> RigdProcess:
    """rigd on a written configuration, once it answers GetInventory."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.main", "--config", str(config), *args],
        stdout=subprocess.DEVNULL, stderr=open(log_path, "a"), text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    rigd = RigdProcess(proc, socket_path, tcp_address, audit, log_path, config)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"rigd exited {proc.returncode}: {log_path.read_text()}")
        if os.path.exists(socket_path):
            try:
                rigd.stub().GetInventory(pb.GetInventoryRequest(), timeout=2)
                return rigd
            except grpc.RpcError:
                pass
        time.sleep(0.1)
    rigd.stop()
    raise RuntimeError("rigd did not start within 60 s")


@pytest.fixture(scope="module")
def pool() -> Iterator[PoolThread]:
    """A local Stratum pool whose shares a CPU finds within seconds."""
    pool = LocalPool(difficulty=0.002).start_in_thread()
    yield pool
    pool.stop()


def simulated_gpus(tmp: Path, count: int) -> tuple[SimControl, list[str], str]:
    """`count` simulated GPUs whose hashing runs on the machine's best OpenCL device: the
    simulator's control, the GPU ids, and their configuration (its first line lands in [hal],
    which ends the file write_config makes)."""
    from agent.demo.rig import _best_opencl_device
    from hal.sim.nvml import demo_setup

    options = demo_setup(tmp / "nvml", count=count)
    sim = SimControl(Path(options["sim_state_path"]), Path(options["library_path"]))
    gpus = [f"gpu/{g.uuid}" for g in sim.read().gpus]
    facet = _best_opencl_device()
    assert facet is not None, "the tests need an OpenCL device (PoCL)"
    nvml = "\n".join(f'{key} = "{value}"' for key, value in options.items())
    return sim, gpus, ("compute_facets = { " + ", ".join(f'"{g}" = "{facet}"' for g in gpus)
                       + f" }}\n[hal.nvml]\n{nvml}\nwatch_xid = false\n")


@pytest.fixture
def rigd(tmp_path: Path) -> Iterator[RigdProcess]:
    process = start_rigd(tmp_path)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def shared_rigd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RigdProcess]:
    """One rigd for a module's read-only tests: those whose calls change nothing in it (reads,
    streams, refused or invalid requests) and that read nothing another test's calls change
    (its audit file, its log, its leases). A test that does either takes `rigd`."""
    process = start_rigd(tmp_path_factory.mktemp("shared-rigd"))
    yield process
    process.stop()


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


# ---- a throwaway PKI (mTLS to rigd, TLS and signatures to an OpenADR VTN) ------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA (ca.pem), a server certificate for localhost and 127.0.0.1 (server.pem)
    and two client certificates (ctrl-a.pem, stranger.pem), made as `rigctl certs init` makes
    them."""
    from agent.core import certs

    pki = tmp_path_factory.mktemp("pki")
    certs.init(pki, certs.server_names(["localhost"]), ["ctrl-a", "stranger"], days=1, ca_days=1)
    return pki
