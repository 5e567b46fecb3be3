"""Session cache of simulated core builds for the FPGA tests: each configuration is compiled
once per simulator by hal.sha256d_sim.build, then shared by every test that needs it. The
Verilator models can be compiled in the background from the start of the session."""

from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hal.sha256d_sim import SimConfig, build, run_test

if TYPE_CHECKING:  # cocotb is imported by hal.sha256d_sim.build, when a model is built
    from cocotb_tools.runner import Runner

TB_MODULE = "tb_sha256d"
TB_ARGS_ENV = "SHA256D_TB_ARGS"
# The tests' models: -O0 compiles in a quarter of the time and the tests run about as fast.
TEST_OPT_FAST = "-O0"
BUILD_WORKERS = 2


class SimBuilds:
    """Builds keyed by (simulator, configuration), made on first use or in the background."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._pool = ThreadPoolExecutor(max_workers=BUILD_WORKERS, thread_name_prefix="simbuild")
        self._builds: dict[tuple[str, SimConfig], Future[tuple[Runner, Path]]] = {}

    def _build(self, simulator: str, config: SimConfig) -> tuple[Runner, Path]:
        build_dir = self.root / f"{simulator}_{config.key}"
        return build(simulator, config, build_dir, TEST_OPT_FAST), build_dir

    def prebuild(self, simulator: str, configs: list[SimConfig]) -> None:
        """Start compiling these configurations now."""
        for config in configs:
            key = (simulator, config)
            if key not in self._builds:
                self._builds[key] = self._pool.submit(self._build, simulator, config)

    def get(self, simulator: str, config: SimConfig) -> tuple[Runner, Path]:
        self.prebuild(simulator, [config])
        return self._builds[(simulator, config)].result()

    def run(self, simulator: str, config: SimConfig, testcase: str, args: dict[str, Any]) -> None:
        """Run one cocotb test of tb_sha256d.py; a failing cocotb test fails the caller."""
        runner, build_dir = self.get(simulator, config)
        run_test(runner, build_dir, TB_MODULE, testcase, {TB_ARGS_ENV: json.dumps(args)})

    def close(self) -> None:
        """Wait for builds still running (a thread cannot be killed) and stop the pool."""
        self._pool.shutdown(wait=True, cancel_futures=True)
