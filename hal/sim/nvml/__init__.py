"""Build the simulated libnvidia-ml.so.1 and drive its state file.

The simulator (nvml_sim.c) reads a state file named by $RIGD_NVML_SIM_STATE. `SimControl` changes
that file through the library's own `rigdSimControl` entry point, so the parsing, locking and model
checkpoint logic exist once, in C, and every process sharing the file sees the same GPUs.

    lib = build_library(Path("/tmp/nvsim"))
    sim = SimControl(Path("/tmp/nvsim/state"), lib)
    sim.configure(["h100-sxm-80gb"] * 4)
    sim.attach_load(0, pid=os.getpid(), mem_bytes=20 << 30, util_pct=90)
    hal.nvml.discover({"library_path": str(lib), "sim_state_path": str(sim.state_path)})
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hal.errors import InvalidArgument, Unavailable

STATE_ENV = "RIGD_NVML_SIM_STATE"
# Set by rigd for a workload process on a simulated GPU (see attach_from_env).
LIBRARY_ENV = "RIGD_NVML_SIM_LIBRARY"
GPU_ENV = "RIGD_NVML_SIM_GPU"
LIBRARY_NAME = "libnvidia-ml.so.1"
SOURCE = Path(__file__).with_name("nvml_sim.c")
PROFILES = ("h100-sxm-80gb", "a100-sxm-80gb", "rtx-4090")
_CFLAGS = (
    "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-fvisibility=hidden", "-pthread",
    f"-Wl,-soname,{LIBRARY_NAME}",
)
_SEED_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def build_library(out_dir: Path, legacy_driver: bool = False) -> Path:
    """Compile the simulator into out_dir/libnvidia-ml.so.1; reuse it if unchanged.

    legacy_driver: imitate an R470 driver that lacks newer entry points (energy counter,
    ClocksEventReasons, ComputeRunningProcesses_v3), to exercise FunctionNotFound handling."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / LIBRARY_NAME
    stamp = out_dir / f"{LIBRARY_NAME}.sha256"
    flags = (*_CFLAGS, "-DRIGD_SIM_LEGACY_DRIVER") if legacy_driver else _CFLAGS
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(flags).encode()).hexdigest()
    if target.is_file() and stamp.is_file() and stamp.read_text().strip() == digest:
        return target
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise Unavailable("cannot build the NVML simulator: gcc not found (apt install gcc)")
    # Build beside the target and rename, so a concurrent loader never sees half a file.
    fd, tmp_name = tempfile.mkstemp(prefix=".libnvidia-ml.", suffix=".so", dir=out_dir)
    os.close(fd)
    argv = [gcc, *flags, "-o", tmp_name, str(SOURCE), "-lm"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        os.unlink(tmp_name)
        raise Unavailable(f"building the NVML simulator failed:\n{result.stderr}")
    os.replace(tmp_name, target)
    stamp.write_text(digest + "\n")
    return target


@dataclass(frozen=True, slots=True)
class SimGpu:
    profile: str
    uuid: str
    lost: bool
    power_limit_mw: int  # 0 = the profile default
    sm_lock_mhz: tuple[int, int]  # (0, 0) = not locked
    mem_lock_mhz: tuple[int, int]
    persistence: bool


@dataclass(frozen=True, slots=True)
class SimLoad:
    gpu: int
    pid: int
    mem_bytes: int
    util_pct: int


@dataclass(frozen=True, slots=True)
class SimState:
    """The state file as text records, parsed for assertions and diagnostics."""

    generation: int
    no_permission: bool
    gpus: tuple[SimGpu, ...]
    loads: tuple[SimLoad, ...]
    xids: tuple[tuple[int, int], ...] = field(default=())  # (gpu, code), oldest first


def _fields(tokens: list[str]) -> dict[str, str]:
    return dict(token.split("=", 1) for token in tokens if "=" in token)


def _pair(text: str) -> tuple[int, int]:
    low, high = text.split(",")
    return int(low), int(high)


def parse_state(text: str) -> SimState:
    generation, no_permission = 0, False
    gpus: list[SimGpu] = []
    loads: list[SimLoad] = []
    xids: list[tuple[int, int]] = []
    for line in text.splitlines():
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        kind, values = tokens[0], _fields(tokens[1:])
        if kind == "generation":
            generation = int(tokens[1])
        elif kind == "no_permission":
            no_permission = tokens[1] != "0"
        elif kind == "gpu":
            gpus.append(SimGpu(
                profile=values["profile"], uuid=values["uuid"], lost=values["lost"] != "0",
                power_limit_mw=int(values["power_limit_mw"]),
                sm_lock_mhz=_pair(values["sm_lock"]), mem_lock_mhz=_pair(values["mem_lock"]),
                persistence=values["persistence"] != "0",
            ))
        elif kind == "load":
            loads.append(SimLoad(int(values["gpu"]), int(values["pid"]),
                                 int(values["mem_bytes"]), int(values["util_pct"])))
        elif kind == "xid":
            xids.append((int(values["gpu"]), int(values["code"])))
    return SimState(generation, no_permission, tuple(gpus), tuple(loads), tuple(xids))


class SimControl:
    """Control channel of one simulated NVML driver: configure GPUs, attach load, inject faults."""

    def __init__(self, state_path: Path, library_path: Path) -> None:
        self.state_path = Path(state_path).absolute()
        self.library_path = Path(library_path).absolute()
        self._lib = ctypes.CDLL(str(self.library_path))
        self._control = self._lib.rigdSimControl
        self._control.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
        self._control.restype = ctypes.c_int

    def env(self) -> dict[str, str]:
        """Environment for a process that should see this simulated driver."""
        return {STATE_ENV: str(self.state_path)}

    def command(self, text: str) -> None:
        err = ctypes.create_string_buffer(512)
        rc = self._control(str(self.state_path).encode(), text.encode(), err, len(err))
        if rc != 0:
            message = err.value.decode(errors="replace") or f"NVML code {rc}"
            raise InvalidArgument(f"NVML simulator: {text.split()[0]}: {message}")

    def configure(
        self, profiles: list[str], seed: str = "rigd", tau_s: float | None = None
    ) -> None:
        """Start a fresh driver with these GPUs (profile keys from PROFILES), all at defaults."""
        unknown = [p for p in profiles if p not in PROFILES]
        if unknown or not profiles:
            raise InvalidArgument(f"profiles: a non-empty list of {PROFILES}; got {profiles}")
        if not _SEED_RE.match(seed):
            raise InvalidArgument("seed must be 1-64 characters of [A-Za-z0-9_.-]")
        text = f"configure profiles={','.join(profiles)} seed={seed}"
        if tau_s is not None:
            text += f" tau_s={_positive(tau_s, 'tau_s')}"
        self.command(text)

    def attach_load(self, gpu: int, pid: int, mem_bytes: int, util_pct: int) -> None:
        """A running process `pid` holds mem_bytes on `gpu` and keeps it util_pct busy.

        The load disappears by itself when the process exits, as a real context would."""
        self.command(
            f"attach gpu={_index(gpu)} pid={_index(pid)} mem_bytes={_index(mem_bytes)} "
            f"util_pct={_index(util_pct)}"
        )

    def detach_load(self, gpu: int, pid: int | None = None) -> None:
        self.command(f"detach gpu={_index(gpu)}" + ("" if pid is None else f" pid={_index(pid)}"))

    def set_lost(self, gpu: int, lost: bool = True, xid: int = 79) -> None:
        """GPU falls off the bus (every call answers GPU_IS_LOST, XID 79 raised) or comes back."""
        self.command(f"lost gpu={_index(gpu)} value={int(lost)} xid={_index(xid)}")

    def inject_xid(self, gpu: int, code: int) -> None:
        """Deliver XID `code` once to every event set registered for XID events on `gpu`."""
        self.command(f"xid gpu={_index(gpu)} code={_index(code)}")

    def set_no_permission(self, denied: bool = True) -> None:
        """Make every NVML setter answer NO_PERMISSION, as for a non-root process."""
        self.command(f"no_permission value={int(denied)}")

    def set_drop_power_writes(self, drop: bool = True) -> None:
        """Power-limit writes answer SUCCESS and change nothing, as some real drivers do
        (a caller that does not read the limit back believes a write that never happened)."""
        self.command(f"drop_power_writes value={int(drop)}")

    def driver_reload(self) -> None:
        """Forget power limits, locked clocks and persistence mode; restart the energy counter."""
        self.command("driver_reload")

    def set_time_constant(self, gpu: int, tau_s: float) -> None:
        self.command(f"tau gpu={_index(gpu)} tau_s={_positive(tau_s, 'tau_s')}")

    def read(self) -> SimState:
        return parse_state(self.state_path.read_text())


def workload_env(state_path: str | Path, library_path: str | Path, gpu_index: int
                 ) -> dict[str, str]:
    """Environment for a workload process that runs on simulated GPU `gpu_index`."""
    return {STATE_ENV: str(state_path), LIBRARY_ENV: str(library_path), GPU_ENV: str(gpu_index)}


def attach_from_env(mem_bytes: int, util_pct: int) -> bool:
    """In a workload process on a simulated GPU: hold `mem_bytes` there as this process, keeping
    it `util_pct` busy, as a real CUDA or OpenCL context would; NVML then lists the process and
    its memory until it exits (or detaches). False, and nothing done, on a real device."""
    state, library, gpu = (os.environ.get(k) for k in (STATE_ENV, LIBRARY_ENV, GPU_ENV))
    if not (state and library and gpu):
        return False
    control = SimControl(Path(state), Path(library))
    if mem_bytes:
        control.attach_load(int(gpu), os.getpid(), mem_bytes, max(0, min(100, util_pct)))
    else:
        control.detach_load(int(gpu), os.getpid())
    return True


def _index(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"expected a non-negative integer, got {value!r}")
    return value


def _positive(value: float, name: str) -> float:
    if not isinstance(value, (int, float)) or not 0 < value < 1e6:
        raise InvalidArgument(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def demo_setup(
    directory: Path, count: int = 4, profile: str = "h100-sxm-80gb"
) -> dict[str, Any]:
    """Build the simulator and configure `count` GPUs in `directory`.

    Returns the options for `hal.nvml.discover`; `SimControl(options["sim_state_path"],
    options["library_path"])` drives the same GPUs afterwards."""
    directory = Path(directory).absolute()
    library = build_library(directory / "lib")
    control = SimControl(directory / "nvml-sim.state", library)
    control.configure([profile] * count, seed=f"demo-{count}")
    return {
        "library_path": str(library),
        "sim_state_path": str(control.state_path),
        "state_dir": str(directory / "desired"),
    }


__all__ = [
    "GPU_ENV",
    "LIBRARY_ENV",
    "LIBRARY_NAME",
    "PROFILES",
    "STATE_ENV",
    "SimControl",
    "SimGpu",
    "SimLoad",
    "SimState",
    "attach_from_env",
    "build_library",
    "demo_setup",
    "parse_state",
    "workload_env",
]
