"""The embedded demo rig: a self-contained configuration that works on any machine.

It assembles the host, whatever real discovery finds, and the simulated devices of each backend
(each marked simulated in inventory), all on loopback.
"""

from __future__ import annotations

import dataclasses
import tempfile
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

    @classmethod
    def start(cls) -> DemoRig:
        tmp = tempfile.TemporaryDirectory(prefix="rigd-demo-")
        rig = cls(Path(tmp.name))
        rig._tmp = tmp
        return rig

    def apply(self, config: Config) -> tuple[Config, dict[str, Any]]:
        """The demo's configuration on top of the operator's (socket, logging, TCP stay theirs)."""
        config = dataclasses.replace(config, rig_id="demo-rig")
        return config, {}

    def attach_workloads(self, agent: Agent) -> None:
        """Start the demo's workloads once the agent is serving."""

    def stop(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
