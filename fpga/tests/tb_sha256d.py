"""cocotb testbench for sha256d_top, driven by the host driver through its CSR bus.

Run by test_fpga_sim.py through cocotb_tools.runner; each pytest test selects one cocotb test
here and passes its arguments as JSON in SHA256D_TB_ARGS. The driver (hal/sha256d_core.py) runs
in a cocotb bridge thread over hal/sha256d_cocotb.py's register access; bus-level checks use the
same register access directly. With the debug port, every first digest and every H7 the core
computes is compared with hashlib (sha256d_model.py).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import cocotb
import sha256d_model as model
from cocotb.simtime import get_sim_time
from cocotb.task import bridge
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from hal.sha256d_cocotb import CocotbRegisters
from hal.sha256d_core import (
    CORE_ID,
    Counters,
    Ctrl,
    Job,
    Reg,
    Result,
    Sha256dCore,
    Status,
    fifo_count,
)
from hal.sha256d_sim import CLOCK_NS

EVERYTHING = (1 << 256) - 1  # a target every hash meets
T = TypeVar("T")


def tb_args() -> dict[str, Any]:
    args: dict[str, Any] = json.loads(os.environ.get("SHA256D_TB_ARGS", "{}"))
    return args


class Bench:
    """The driver, the bus, and monitors of the debug port and the FIFO."""

    def __init__(self, dut: Any) -> None:
        self.dut = dut
        self.bus = CocotbRegisters(dut)
        self.first_digests: list[tuple[int, int]] = []  # (nonce, first digest) from dbg_first_*
        self.h7s: list[tuple[int, int]] = []  # (nonce, H7) from dbg_*, one per compared nonce
        self.push_times_ns: list[float] = []  # when the FIFO count went up
        self.done_times_ns: list[float] = []  # when irq_done rose
        self.core: Sha256dCore

    async def setup(self, monitor: bool = True) -> None:
        await self.bus.reset()
        self.core = await self.call(self.bus.driver)
        if monitor:
            cocotb.start_soon(self._watch())

    async def call(self, func: Callable[..., T], *args: Any) -> T:
        """Run blocking driver code (it may touch the bus) from a coroutine."""
        result: T = await bridge(func)(*args)
        return result

    async def _watch(self) -> None:
        dut = self.dut
        last_count = 0
        last_done = 0
        while True:
            await RisingEdge(dut.clk)
            await ReadOnly()
            now_ns = get_sim_time(unit="ns")
            if int(dut.dbg_valid.value):
                self.h7s.append((int(dut.dbg_nonce.value), int(dut.dbg_h7.value)))
            if int(dut.dbg_first_valid.value):
                self.first_digests.append(
                    (int(dut.dbg_first_nonce.value), int(dut.dbg_first_digest.value))
                )
            count = int(dut.core.result_count.value)
            if count > last_count:
                self.push_times_ns.append(now_ns)
            last_count = count
            done = int(dut.irq_done.value)
            if done and not last_done:
                self.done_times_ns.append(now_ns)
            last_done = done

    @property
    def debug(self) -> bool:
        return self.core.config.debug_port

    @property
    def fold(self) -> int:
        return self.core.config.fold

    @property
    def latency(self) -> int:
        return self.core.config.latency_clocks

    async def status(self) -> Status:
        return Status(await self.bus.read(Reg.STATUS) & 0xFFFF)

    async def counters(self) -> Counters:
        return await self.call(self.core.counters)

    async def program(self, job: Job) -> None:
        await self.call(self.core.program, job)

    async def start(self) -> float:
        """START through the bus; returns the time of the edge that took it."""
        return await self.bus.write(Reg.CTRL, int(Ctrl.START))

    async def wait(self) -> list[Result]:
        return await self.call(self.core.wait)

    async def drain(self) -> list[Result]:
        return await self.call(self.core.pop_results)


def check_digests(bench: Bench, header: bytes, nonces: list[int]) -> None:
    """Each nonce was compared once, in order, with hashlib's H7; every first digest seen (a
    replayed or flushed nonce may enter the second hash more than once) is hashlib's."""
    assert [n for n, _ in bench.h7s] == nonces
    for nonce, h7 in bench.h7s:
        want = model.h7(header, nonce)
        assert h7 == want, f"nonce {nonce}: H7 {h7:08x} != hashlib {want:08x}"
    assert set(nonces) <= {n for n, _ in bench.first_digests}
    for nonce, digest in bench.first_digests:
        want = model.first_digest(header, nonce)
        assert digest == want, f"nonce {nonce}: first digest {digest:064x} != hashlib {want:064x}"


@cocotb.test()
async def csr_map(dut: Any) -> None:
    """Identity, configuration, write-only job registers, unmapped addresses."""
    args = tb_args()
    bench = Bench(dut)
    await bench.setup()
    config = bench.core.config
    assert await bench.bus.read(Reg.ID) == CORE_ID
    assert (config.fold, config.fifo_depth, config.debug_port) == (
        args["fold"],
        1 << args["fifo_log2"],
        bool(args["debug"]),
    )
    assert config.tag_bits == 8
    assert config.latency_clocks == args["latency"]
    assert await bench.status() == 0  # idle, nothing queued, no flag
    for reg in (Reg.DONE_LO, Reg.DONE_HI, Reg.NONCE_NEXT, Reg.RESULT_TAG, Reg.REPLAYS):
        assert await bench.bus.read(reg) == 0

    # Job registers are write-only: they read 0 after a write.
    for job_address in (Reg.TARGET, Reg.NONCE_FIRST, Reg.MIDSTATE0, Reg.TAIL0, Reg.PRE0 + 60):
        await bench.bus.write(job_address, 0x12345678)
        assert await bench.bus.read(job_address) == 0
    await bench.bus.write(Reg.ID, 0)  # read-only: ignored
    assert await bench.bus.read(Reg.ID) == CORE_ID
    await bench.bus.write(0xFC, 0xFFFFFFFF)  # unmapped: ignored, reads 0
    assert await bench.bus.read(0xFC) == 0
    assert await bench.bus.read(Reg.ID + 2) == CORE_ID  # byte address bits [1:0] are ignored
    assert await bench.status() == 0


@cocotb.test()
async def search(dut: Any) -> None:
    """A range through the driver: what it reports, keeps and drops equals hashlib's sets, and
    (with the debug port) every first digest and H7 equals hashlib's."""
    args = tb_args()
    bench = Bench(dut)
    await bench.setup()
    header = bytes.fromhex(args["header"])
    first, last, tag = args["first"], args["last"], args["tag"]
    target = int(args["target"], 16)
    report = await bench.call(bench.core.search, header, first, last, target, tag)

    passing = model.nonces_passing_word(header, first, last, target)
    meeting = model.nonces_meeting(header, first, last, target)
    assert list(report.nonces) == meeting
    assert list(report.above_target) == [n for n in passing if n not in meeting]
    assert report.wrong == ()
    for nonce in args.get("must_find", []):
        assert nonce in report.nonces, f"known-answer nonce {nonce} not found"
    for nonce in args.get("must_drop", []):
        assert nonce in report.above_target, f"nonce {nonce} should pass the word, fail the target"
    assert report.counters == Counters(last - first + 1, (last + 1) % model.NONCE_LIMIT, 0)
    assert await bench.status() == Status.DONE
    if bench.debug:
        check_digests(bench, header, list(range(first, last + 1)))
    dut._log.info(
        "range %d..%d: %d kept, %d dropped by the host",
        first,
        last,
        len(meeting),
        len(passing) - len(meeting),
    )


@cocotb.test()
async def latency_and_throughput(dut: Any) -> None:
    """Nonce k of a job is queued 1 + LATENCY + k*FOLD clocks after START."""
    args = tb_args()
    bench = Bench(dut)
    await bench.setup()
    count = min(8, bench.core.config.fifo_depth)  # no replay: every match finds room
    first = args["first"]
    await bench.program(Job(bytes.fromhex(args["header"]), first, first + count - 1, EVERYTHING, 3))
    bench.push_times_ns.clear()
    start_ns = await bench.start()
    await ClockCycles(dut.clk, bench.latency + count * bench.fold + 8)

    cycles = [round((t - start_ns) / CLOCK_NS) for t in bench.push_times_ns]
    assert cycles == [1 + bench.latency + k * bench.fold for k in range(count)]
    assert await bench.drain() == [Result(3, n) for n in range(first, first + count)]


@cocotb.test()
async def small_fifo_keeps_full_rate(dut: Any) -> None:
    """A FIFO smaller than the nonces in flight does not slow issue: with matches streaming
    (1 in 16) and the driver popping them, the last nonce is compared exactly
    LATENCY + (count - 1) * FOLD clocks after the first issue, and nothing is replayed."""
    args = tb_args()
    bench = Bench(dut)
    await bench.setup()
    header = bytes.fromhex(args["header"])
    first, count = args["first"], args["count"]
    target = (0x0FFFFFFF << 224) | ((1 << 224) - 1)
    await bench.program(Job(header, first, first + count - 1, target, 5))
    start_ns = await bench.start()
    results = await bench.wait()

    want = model.nonces_passing_word(header, first, first + count - 1, target)
    assert len(want) > bench.core.config.fifo_depth  # more matches than the FIFO holds
    assert results == [Result(5, n) for n in want]
    (done_ns,) = bench.done_times_ns
    # DONE rises on the edge that ends the last nonce's compare clock, as a push would.
    assert round((done_ns - start_ns) / CLOCK_NS) == 1 + bench.latency + (count - 1) * bench.fold
    assert (await bench.counters()).replays == 0


@cocotb.test()
async def flush_midflight(dut: Any) -> None:
    """FLUSH drops in-flight nonces and the rest of the range; nothing of it surfaces later."""
    args = tb_args()
    bench = Bench(dut)
    await bench.setup()
    header = bytes.fromhex(args["header"])
    first = args["first"]
    await bench.program(Job(header, first, first + 100_000, EVERYTHING, 7))
    await bench.start()
    # Let a few nonces finish (fewer than the FIFO holds) and more be in flight, then flush.
    await ClockCycles(dut.clk, bench.latency + bench.fold)
    await bench.call(bench.core.flush)
    assert await bench.status() & (Status.BUSY | Status.DONE) == 0
    counters = await bench.counters()
    assert 1 <= counters.nonces_done <= bench.core.config.fifo_depth
    assert counters.nonce_next - first > counters.nonces_done  # work was in flight when flushed
    compared_at_flush = len(bench.h7s)

    await ClockCycles(dut.clk, 2 * bench.latency + 10)
    assert await bench.counters() == counters
    assert len(bench.h7s) == compared_at_flush
    assert await bench.drain() == [Result(7, n) for n in range(first, first + counters.nonces_done)]

    # The core takes a new job straight after a flush and reports only its nonces.
    report = await bench.call(bench.core.search, header, first + 500, first + 502, EVERYTHING, 8)
    assert report.nonces == (first + 500, first + 501, first + 502)
    assert await bench.status() == Status.DONE


@cocotb.test()
async def replay_when_fifo_full(dut: Any) -> None:
    """A match that finds the FIFO full is replayed, not lost: issue pauses until the host pops,
    then the search resumes from that nonce. Results stay exact, in order, without repeats."""
    args = tb_args()
    bench = Bench(dut)
    await bench.setup()
    header = bytes.fromhex(args["header"])
    first = args["first"]
    depth = bench.core.config.fifo_depth
    total = depth + 12
    await bench.program(Job(header, first, first + total - 1, EVERYTHING, 9))
    await bench.start()
    await ClockCycles(dut.clk, 3 * bench.latency + total * bench.fold)

    status = await bench.bus.read(Reg.STATUS)
    assert Status(status & 0xFFFF) == Status.BUSY | Status.RESULT_VALID | Status.FIFO_FULL | (
        Status.THROTTLED
    )
    assert fifo_count(status) == depth
    assert await bench.counters() == Counters(depth, first + depth, 1)

    results = await bench.wait()
    assert results == [Result(9, n) for n in range(first, first + total)]
    assert await bench.status() == Status.DONE
    counters = await bench.counters()
    assert counters.nonces_done == total and counters.replays >= 1
    if bench.debug:
        check_digests(bench, header, list(range(first, first + total)))


@cocotb.test()
async def restart_and_refusals(dut: Any) -> None:
    """Job registers ignore writes while busy (and say so); START while busy restarts the job;
    a START with NONCE_LAST < NONCE_FIRST is refused; CLEAR_FLAG clears the flag."""
    args = tb_args()
    bench = Bench(dut)
    await bench.setup()
    header = bytes.fromhex(args["header"])
    first = args["first"]
    await bench.program(Job(header, first, first + 50_000, (1 << 224) - 1, 1))
    await bench.start()
    await ClockCycles(dut.clk, bench.latency + 4 * bench.fold)
    assert (await bench.counters()).nonces_done >= 4

    await bench.bus.write(Reg.NONCE_FIRST, 100)  # busy: ignored
    assert await bench.status() == Status.BUSY | Status.JOB_WRITE_IGNORED
    await bench.start()  # restart: the same job from NONCE_FIRST, in-flight work dropped
    counters = await bench.counters()
    assert counters.nonces_done == 0
    assert first < counters.nonce_next <= first + 8 // bench.fold + 1
    await bench.call(bench.core.flush)

    await bench.bus.write(Reg.CTRL, int(Ctrl.CLEAR_FLAG))
    assert await bench.status() == 0
    await bench.bus.write(Reg.NONCE_FIRST, 100)  # idle: taken
    await bench.bus.write(Reg.NONCE_LAST, 99)
    await bench.start()
    await ClockCycles(dut.clk, 4)
    assert await bench.status() == Status.RANGE_ERROR  # refused: nothing runs

    report = await bench.call(bench.core.search, header, 5, 8, EVERYTHING, 2)
    assert report.nonces == (5, 6, 7, 8)
    assert await bench.status() == Status.DONE  # the accepted START cleared RANGE_ERROR


@cocotb.test()
async def reset_mid_job(dut: Any) -> None:
    """rst stops a running job and empties the FIFO; the core then works normally."""
    args = tb_args()
    bench = Bench(dut)
    await bench.setup()
    header = bytes.fromhex(args["header"])
    first = args["first"]
    await bench.program(Job(header, first, first + 10_000, EVERYTHING, 4))
    await bench.start()
    await ClockCycles(dut.clk, bench.latency + 4 * bench.fold)
    assert await bench.status() & Status.RESULT_VALID
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    assert await bench.status() == 0  # idle, FIFO empty, no flags
    assert await bench.counters() == Counters(0, 0, 0)
    compared_after_reset = len(bench.h7s)
    await ClockCycles(dut.clk, 2 * bench.latency)
    assert await bench.status() == 0  # nothing left in the pipeline surfaces
    assert len(bench.h7s) == compared_after_reset

    report = await bench.call(bench.core.search, header, first, first + 2, EVERYTHING, 5)
    assert report.nonces == (first, first + 1, first + 2)


@cocotb.test()
async def sim_speed(dut: Any) -> None:
    """For bench/fpga.py: wall-clock speed of the simulation and nonces per clock.

    Runs a long job with target 0 (almost nothing queued) and writes, per repeat, the
    simulated clocks, nonces compared and wall seconds to args["out"].
    """
    args = tb_args()
    bench = Bench(dut)
    await bench.setup(monitor=False)  # cocotb's clock and the bus only
    header = bytes.fromhex(args["header"])
    await bench.program(Job(header, 0, 0xFFFFFFFF, (1 << 224) - 1, 1))
    await bench.start()
    await ClockCycles(dut.clk, 2 * bench.latency)  # pipeline full: steady state
    samples = []
    for _ in range(args["repeats"]):
        before = await bench.counters()
        sim_before_ns = get_sim_time(unit="ns")
        wall_before = time.perf_counter()
        await ClockCycles(dut.clk, args["clocks"])
        wall_s = time.perf_counter() - wall_before
        nonces = (await bench.counters()).nonces_done - before.nonces_done
        clocks = round((get_sim_time(unit="ns") - sim_before_ns) / CLOCK_NS)
        samples.append(
            {"clocks": clocks, "nonces": nonces, "wall_s": wall_s, "run_clocks": args["clocks"]}
        )
    with open(args["out"], "w", encoding="utf-8") as out:
        json.dump({"fold": bench.fold, "samples": samples}, out)
