"""Real rigd processes for the client's tests: the host, three simulated miners (LuxOS,
Antminer, Whatsminer firmware servers) and inference profiles the host can run (a fake runtime
that starts at once, and one that takes seconds to stop), so that every RPC does real work."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from client import Endpoint
from hal.sim.asic import SimFleet
from tests.agent.conftest import OPERATOR_TOKEN, RigdProcess, start_rigd
from tests.agent.test_asic_rigd import asic_section

FAKE = Path(__file__).parents[1] / "agent" / "runtimes" / "fake_runtime.py"
HOST_W = 300.0


def rig_config(fleet: SimFleet, tmp: Path) -> str:
    fake = f'"{sys.executable}", "{FAKE}", "--port", "{{port}}"'
    return asic_section(fleet.discover_options()) + f"""
[inference.profiles.fake]
argv = [{fake}]
devices = ["host"]
grace_s = 2.0
[inference.profiles.slowstop]
argv = [{fake}, "--term-takes", "2.0", "--done-file", "{tmp}/slowstop.done"]
devices = ["host"]
grace_s = 5.0
"""


@dataclass
class RealRig:
    rigd: RigdProcess
    fleet: SimFleet
    tmp: Path

    @property
    def miners(self) -> list[str]:
        return [f"asic/{a}" for a in self.fleet.addresses]

    def endpoint(self, token: str = OPERATOR_TOKEN, tcp: bool = True) -> Endpoint:
        if tcp:
            return Endpoint(address=self.rigd.tcp_address, token=token)
        return Endpoint(socket=self.rigd.socket_path, token=token)

    def audit(self) -> list[dict[str, object]]:
        if not self.rigd.audit_path.exists():
            return []
        return [json.loads(line) for line in self.rigd.audit_path.read_text().splitlines()]


def start_rig(tmp: Path, fleet: SimFleet) -> RealRig:
    rigd = start_rigd(tmp, rig_config(fleet, tmp), backends=("host", "asic"), settings={
        "power": {"host_w": HOST_W},
        "workloads": {"state_dir": f"{tmp}/state", "min_dwell_s": 0.0},
    })
    return RealRig(rigd, fleet, tmp)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealRig]:
    """One rig for a module's tests (each leaves it as it found it)."""
    with SimFleet.of(["luxos", "antminer", "whatsminer"], warmup_s=0.1) as fleet:
        rig = start_rig(tmp_path_factory.mktemp("client-rig"), fleet)
        yield rig
        rig.rigd.stop()


@pytest.fixture
def own_rig(tmp_path: Path) -> Iterator[RealRig]:
    """A rig of the test's own (to restart, stop or break)."""
    with SimFleet.of(["luxos"], warmup_s=0.1) as fleet:
        rig = start_rig(tmp_path, fleet)
        yield rig
        rig.rigd.stop()


def wait_for(condition: Callable[[], object], timeout_s: float = 30.0, what: str = "") -> None:
    """Poll `condition` until it is true (never a bare sleep as synchronisation)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what or condition}"
        time.sleep(0.02)

