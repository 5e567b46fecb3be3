"""Inside the simulator: the core's CSR bus as a `RegisterAccess` for the host driver.

The driver (hal/sha256d_core.py) is plain blocking code, as it would be over MMIO. cocotb runs it
in a bridge thread (`cocotb.task.bridge`); each register access resumes the simulation for the
clocks the bus takes. `run_job` is the cocotb test hal/sha256d_sim.py runs for one job.
"""

from __future__ import annotations

import json
import os
from typing import Any

import cocotb
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.task import bridge, resume
from cocotb.triggers import ClockCycles, First, RisingEdge

from hal.errors import HalError
from hal.sha256d_core import Ctrl, Reg, SearchReport, Sha256dCore, verify
from hal.sha256d_sim import CLOCK_NS, JOB_ENV, error_to_json, job_from_json, report_to_json

NEWS_WAIT_MAX_CLOCKS = 4096  # wait_for_news returns at the latest after this many clocks
JOB_TIMEOUT_S = 3600.0  # wall-clock bound of one simulated job


class CocotbRegisters:
    """sha256d_top's CSR ports driven from cocotb: async calls, and blocking ones for a driver
    running in a bridge thread. Every call returns just after a rising clock edge."""

    def __init__(self, dut: Any) -> None:
        self.dut = dut

    async def reset(self, clocks: int = 3) -> None:
        """Start the clock and hold rst for `clocks` clocks."""
        dut = self.dut
        Clock(dut.clk, CLOCK_NS, unit="ns").start()
        dut.rst.value = 1
        dut.csr_addr.value = 0
        dut.csr_wdata.value = 0
        dut.csr_wen.value = 0
        dut.csr_ren.value = 0
        await ClockCycles(dut.clk, clocks)
        dut.rst.value = 0
        await RisingEdge(dut.clk)

    async def write(self, address: int, value: int) -> float:
        """Write one register; returns the time (ns) of the edge that took the write."""
        dut = self.dut
        dut.csr_addr.value = address
        dut.csr_wdata.value = value & 0xFFFFFFFF
        dut.csr_wen.value = 1
        await RisingEdge(dut.clk)
        taken_ns: float = get_sim_time(unit="ns")
        dut.csr_wen.value = 0
        return taken_ns

    async def read(self, address: int) -> int:
        dut = self.dut
        dut.csr_addr.value = address
        dut.csr_ren.value = 1
        await RisingEdge(dut.clk)
        dut.csr_ren.value = 0
        await RisingEdge(dut.clk)
        return int(dut.csr_rdata.value)  # loaded on the previous edge, stable now

    async def news(self) -> None:
        """Until the core raises an interrupt (a result, the end of the job) or a while passes."""
        dut = self.dut
        await First(
            RisingEdge(dut.irq_result),
            RisingEdge(dut.irq_done),
            ClockCycles(dut.clk, NEWS_WAIT_MAX_CLOCKS),
        )
        await RisingEdge(dut.clk)

    def read32(self, address: int) -> int:
        value: int = resume(self.read)(address)
        return value

    def write32(self, address: int, value: int) -> None:
        resume(self.write)(address, value)

    def wait_for_news(self) -> None:
        resume(self.news)()

    def driver(self) -> Sha256dCore:
        """A host driver over this bus; call it only from a bridge thread."""
        return Sha256dCore(self, self.wait_for_news)


@cocotb.test()
async def run_job(dut: Any) -> None:
    """Run the job in $SHA256D_SIM_JOB through the driver and write the checked report (or the
    driver's error) as JSON for hal/sha256d_sim.py."""
    job, out = job_from_json(os.environ[JOB_ENV])
    registers = CocotbRegisters(dut)
    await registers.reset()

    def program() -> Sha256dCore:
        core = registers.driver()
        core.program(job)
        core.clear_results()
        return core

    def finish(core: Sha256dCore) -> SearchReport:
        return verify(job, core.wait(timeout_s=JOB_TIMEOUT_S), core.counters())

    try:
        core = await bridge(program)()
        start_ns = await registers.write(Reg.CTRL, int(Ctrl.START))
        report = await bridge(finish)(core)
    except HalError as exc:
        result = error_to_json(exc)
    else:
        clocks = round((get_sim_time(unit="ns") - start_ns) / CLOCK_NS)
        result = report_to_json(report, clocks)
    out.write_text(json.dumps(result), encoding="utf-8")
