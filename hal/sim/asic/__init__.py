"""Simulated ASIC firmware servers on loopback that replay real captured responses.

One class per family (AntminerSim, LuxosSim, WhatsminerSim, AvalonSim, BraiinsSim, CgminerSim), a
`SimFleet` that runs many in one background loop, and `start_demo_fleet()` for the demo rig.
Each can fail as real miners do (`Fault`: hang, refuse, slow, ignore commands, malformed
replies); `hal.sim.asic.fleet.fleet_process(count, families, faults=["hang:10%"])` runs a fleet
with such faults in a process of its own (for benches and tests).
"""

from hal.sim.asic.antminer import AntminerSim
from hal.sim.asic.avalon import AvalonSim
from hal.sim.asic.braiins import BraiinsSim
from hal.sim.asic.cgminer import CgminerSim
from hal.sim.asic.fleet import SimFleet, start_demo_fleet
from hal.sim.asic.luxos import LuxosSim
from hal.sim.asic.server import Fault, FirmwareServer, MinerState
from hal.sim.asic.whatsminer import WhatsminerSim, WhatsminerV3Sim

__all__ = [
    "AntminerSim",
    "AvalonSim",
    "BraiinsSim",
    "CgminerSim",
    "Fault",
    "FirmwareServer",
    "LuxosSim",
    "MinerState",
    "SimFleet",
    "WhatsminerSim",
    "WhatsminerV3Sim",
    "start_demo_fleet",
]
