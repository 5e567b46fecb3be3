"""The embedded demo rig: a self-contained configuration that works on any machine.

It assembles the host, whatever real discovery finds, and the simulated devices of each backend
(each marked simulated in inventory), all on loopback.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from agent.config import Config

if TYPE_CHECKING:
    from agent.daemon import Agent

log = structlog.get_logger("rigd.demo")


class DemoRig:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._stops: list[Callable[[], None]] = []
        self.backend_options: dict[str, Any] = {}

    @classmethod
    def start(cls) -> DemoRig:
        tmp = tempfile.TemporaryDirectory(prefix="rigd-demo-")
        rig = cls(Path(tmp.name))
        rig._tmp = tmp
        try:
            rig._start_gpus()
            rig._start_asics()
        except BaseException:
            rig.stop()
            raise
        return rig

    def _start_gpus(self) -> None:
        """Four simulated H100 SXM GPUs behind a simulated libnvidia-ml.so.1 (built with gcc)."""
        from hal.sim.nvml import demo_setup

        self.backend_options["nvml"] = demo_setup(self.workdir / "nvml", count=4)

    def _start_asics(self) -> None:
        """A stock Antminer S19 Pro, a LuxOS S19k Pro and a Whatsminer, on loopback ports."""
        from hal.sim.asic import start_demo_fleet

        fleet, options = start_demo_fleet(warmup_s=5.0)
        self._stops.append(fleet.stop)
        self.backend_options["asic"] = options
        log.info("demo_asics", addresses=[str(a) for a in fleet.addresses])

    def apply(self, config: Config) -> tuple[Config, dict[str, Any]]:
        """The demo's configuration on top of the operator's (socket, logging, TCP stay theirs)."""
        config = dataclasses.replace(config, rig_id="demo-rig")
        return config, dict(self.backend_options)

    def attach_workloads(self, agent: Agent) -> None:
        """Start the demo's workloads once the agent is serving."""

    def stop(self) -> None:
        while self._stops:
            self._stops.pop()()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
