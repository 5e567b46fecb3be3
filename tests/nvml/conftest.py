"""Fixtures for the NVML backend's contract tests.

The real hal/nvml.py runs through the real pynvml against the simulated libnvidia-ml.so.1. pynvml
keeps one library and one symbol table per process, so every scenario runs in its own Python
subprocess (`SimRig.run`), which prints its findings as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hal.sim.nvml import SimControl, build_library

REPO = Path(__file__).resolve().parents[2]

# Available to every snippet: discover(), emit(), error_of(), wait_for(), SIM, OPTIONS, nvml.
_PRELUDE = '''
import dataclasses, json, os, sys, time
from pathlib import Path
import structlog
import hal.nvml as nvml
from hal import errors

# logs go to stderr so a log line from the XID watcher thread never splits a RESULT line
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
from hal.sim.nvml import SimControl

OPTIONS = json.loads(os.environ["NVML_TEST_OPTIONS"])

class _LazySim:
    """SimControl loads the library: only do that when a scenario uses it (the library-loading
    tests must see a process where nothing has loaded libnvidia-ml.so.1 yet)."""
    control = None

    def __getattr__(self, name):
        if _LazySim.control is None:
            _LazySim.control = SimControl(Path(OPTIONS["sim_state_path"]),
                                          Path(OPTIONS["library_path"]))
        return getattr(_LazySim.control, name)

SIM = _LazySim()

def discover(**extra):
    return nvml.discover({**OPTIONS, **extra})

def _plain(value):
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return str(value)

def emit(value):
    sys.stdout.write("RESULT " + json.dumps(value, default=_plain) + "\\n")
    sys.stdout.flush()

def error_of(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except errors.HalError as exc:
        return {"type": type(exc).__name__, "message": str(exc)}
    return None

def wait_for(predicate, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False
'''


@dataclass
class SimRig:
    """One simulated NVML driver (state file) plus the means to run scenarios against it."""

    control: SimControl
    directory: Path
    library: Path
    last_stderr: str = ""

    def options(self, **extra: Any) -> dict[str, Any]:
        return {
            "library_path": str(self.library),
            "sim_state_path": str(self.control.state_path),
            "state_dir": str(self.directory / "desired"),
            "xid_poll_ms": 20,
            **extra,
        }

    def run(self, body: str, env: dict[str, str] | None = None, timeout_s: float = 30,
            **option_overrides: Any) -> Any:
        """Run `body` in a fresh interpreter; return what it emit()ted (the last RESULT line)."""
        script = _PRELUDE + "\n" + textwrap.dedent(body)
        child_env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "NVML_TEST_OPTIONS": json.dumps(self.options(**option_overrides)),
            **(env or {}),
        }
        child_env.pop("RIGD_NVML_SIM_STATE", None)  # only the sim_state_path option sets it
        proc = subprocess.run(
            [sys.executable, "-c", script], cwd=REPO, env=child_env, capture_output=True,
            text=True, timeout=timeout_s, check=False,
        )
        if proc.returncode != 0:
            pytest.fail(f"scenario failed (exit {proc.returncode}):\n{proc.stderr}\n{proc.stdout}")
        results = [line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        assert results, f"scenario emitted nothing:\n{proc.stdout}\n{proc.stderr}"
        self.last_stderr = proc.stderr
        return json.loads(results[-1])

    def desired(self) -> dict[str, Any]:
        path = self.directory / "desired" / "nvml-desired.json"
        return json.loads(path.read_text()) if path.exists() else {}


@pytest.fixture(scope="session")
def nvml_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_library(tmp_path_factory.mktemp("nvml-sim-lib"))


def _make_rig(directory: Path, library: Path, profiles: list[str], tau_s: float | None = None
              ) -> SimRig:
    directory.mkdir(parents=True, exist_ok=True)
    control = SimControl(directory / "nvml.state", library)
    control.configure(profiles, seed=f"t{abs(hash(str(directory))) % 10**8}", tau_s=tau_s)
    return SimRig(control, directory, library)


@pytest.fixture(scope="session")
def legacy_nvml_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The simulator imitating an R470 driver (no energy counter, no newest symbols)."""
    return build_library(tmp_path_factory.mktemp("nvml-sim-legacy"), legacy_driver=True)


@pytest.fixture
def make_rig(tmp_path: Path, nvml_library: Path) -> Any:
    """make_rig(profiles, tau_s=None, library=None) -> SimRig, each in its own directory."""
    count = [0]

    def make(profiles: list[str], tau_s: float | None = None, library: Path | None = None
             ) -> SimRig:
        count[0] += 1
        return _make_rig(tmp_path / f"rig{count[0]}", library or nvml_library, profiles, tau_s)

    return make


@pytest.fixture
def rig(make_rig: Any) -> SimRig:
    """An H100, an A100 and an RTX 4090 (the 4090 has a fan; the SXM boards do not)."""
    rig: SimRig = make_rig(["h100-sxm-80gb", "a100-sxm-80gb", "rtx-4090"])
    return rig


@pytest.fixture
def workload() -> Any:
    """A real process standing for a GPU workload (the simulator reaps its load when it exits)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["sleep", "60"])
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()
