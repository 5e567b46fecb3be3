"""The runtime's parts: sampler, operations, leases, switcher, curtailment, power writes,
workloads and diagnostics. `Runtime` is the set of them, built in one place (agent/daemon.py,
the composition root) and read by the edges."""

from __future__ import annotations

from dataclasses import dataclass

from agent.runtime.curtail import Curtailer
from agent.runtime.diagnostics import Diagnostics
from agent.runtime.leases import LeaseManager
from agent.runtime.operations import Operations
from agent.runtime.powerwrite import PowerWriter
from agent.runtime.sampler import Sampler
from agent.runtime.switcher import Switcher
from agent.runtime.workloads.manager import WorkloadManager
from hal.registry import Discovery


@dataclass(frozen=True, slots=True)
class Runtime:
    discovery: Discovery
    operations: Operations
    manager: WorkloadManager
    sampler: Sampler
    power: PowerWriter
    curtailer: Curtailer
    switcher: Switcher
    leases: LeaseManager
    diagnostics: Diagnostics
