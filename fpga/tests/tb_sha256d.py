"""cocotb testbench for sha256d_top, driven through its CSR bus.

Run by test_fpga_sim.py through cocotb_tools.runner; each pytest test selects
one cocotb test here and passes its arguments as JSON in SHA256D_TB_ARGS.
Every result is checked against the hashlib golden model in sha256d_model.py.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import cocotb
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge
from sha256d_model import Job

CLOCK_NS = 10

# CSR byte addresses (fpga/README.md).
ID = 0x00
CONFIG = 0x04
LATENCY = 0x08
CTRL = 0x0C
STATUS = 0x10
JOB_TAG = 0x14
TARGET = 0x18
NONCE_FIRST = 0x1C
NONCE_LAST = 0x20
MIDSTATE0 = 0x24
TAIL0 = 0x44
DONE_LO = 0x50
DONE_HI = 0x54
NONCE_NEXT = 0x58
RESULT_TAG = 0x5C
RESULT_NONCE = 0x60

CTRL_START = 1 << 0
CTRL_FLUSH = 1 << 1
CTRL_POP = 1 << 2
CTRL_FIFO_CLEAR = 1 << 3

ST_BUSY = 1 << 0
ST_DONE = 1 << 1
ST_RESULT_VALID = 1 << 2
ST_FIFO_FULL = 1 << 3
ST_THROTTLED = 1 << 4
ST_RANGE_ERROR = 1 << 5
ST_OVERFLOW = 1 << 6

CORE_ID = 0x53324431
EVERYTHING = 0xFFFFFFFF  # target that every hash passes


def tb_args() -> dict[str, Any]:
    args: dict[str, Any] = json.loads(os.environ.get("SHA256D_TB_ARGS", "{}"))
    return args


class Bench:
    """CSR driver plus monitors. Every coroutine returns just after a rising edge."""

    def __init__(self, dut: Any) -> None:
        self.dut = dut
        self.digests: list[tuple[int, int]] = []  # (nonce, 256-bit digest) from dbg_*
        self.push_times_ns: list[float] = []  # when result_count went up (FIFO pushes)
        self.fold = 0
        self.fifo_depth = 0
        self.tag_bits = 0
        self.debug = False
        self.latency = 0

    async def setup(self) -> None:
        dut = self.dut
        Clock(dut.clk, CLOCK_NS, unit="ns").start()
        dut.rst.value = 1
        dut.csr_addr.value = 0
        dut.csr_wdata.value = 0
        dut.csr_wen.value = 0
        dut.csr_ren.value = 0
        await ClockCycles(dut.clk, 3)
        dut.rst.value = 0
        await RisingEdge(dut.clk)
        config = await self.read(CONFIG)
        self.fold = config & 0xFF
        self.fifo_depth = 1 << ((config >> 8) & 0xFF)
        self.tag_bits = (config >> 16) & 0xFF
        self.debug = bool((config >> 24) & 1)
        self.latency = await self.read(LATENCY)
        cocotb.start_soon(self._watch())

    async def _watch(self) -> None:
        dut = self.dut
        last_count = 0
        while True:
            await RisingEdge(dut.clk)
            await ReadOnly()
            if self.debug and int(dut.dbg_valid.value):
                self.digests.append((int(dut.dbg_nonce.value), int(dut.dbg_digest.value)))
            count = int(dut.core.result_count.value)
            if count > last_count:
                self.push_times_ns.append(get_sim_time(unit="ns"))
            last_count = count

    async def write(self, addr: int, value: int) -> float:
        """Write one register; returns the time of the edge that took the write."""
        dut = self.dut
        dut.csr_addr.value = addr
        dut.csr_wdata.value = value & 0xFFFFFFFF
        dut.csr_wen.value = 1
        await RisingEdge(dut.clk)
        taken_ns = get_sim_time(unit="ns")
        dut.csr_wen.value = 0
        return taken_ns

    async def read(self, addr: int) -> int:
        dut = self.dut
        dut.csr_addr.value = addr
        dut.csr_ren.value = 1
        await RisingEdge(dut.clk)
        dut.csr_ren.value = 0
        await RisingEdge(dut.clk)
        return int(dut.csr_rdata.value)  # loaded on the previous edge, stable now

    async def status(self) -> int:
        return await self.read(STATUS)

    async def nonces_done(self) -> int:
        return (await self.read(DONE_HI)) << 32 | await self.read(DONE_LO)

    async def load_job(self, job: Job, first: int, last: int, target: int, tag: int) -> None:
        for i, word in enumerate(job.midstate):
            await self.write(MIDSTATE0 + 4 * i, word)
        for i, word in enumerate(job.tail):
            await self.write(TAIL0 + 4 * i, word)
        await self.write(NONCE_FIRST, first)
        await self.write(NONCE_LAST, last)
        await self.write(TARGET, target)
        await self.write(JOB_TAG, tag)

    async def start(self) -> float:
        return await self.write(CTRL, CTRL_START)

    async def pop_one(self) -> tuple[int, int] | None:
        head = await self.read(RESULT_TAG)
        if not head >> 31:
            return None
        nonce = await self.read(RESULT_NONCE)
        await self.write(CTRL, CTRL_POP)
        return head & ((1 << self.tag_bits) - 1), nonce

    async def drain(self) -> list[tuple[int, int]]:
        results = []
        while (entry := await self.pop_one()) is not None:
            results.append(entry)
        return results

    async def run_to_end(self, max_cycles: int) -> list[tuple[int, int]]:
        """Pop results while the job runs; return them once it is no longer busy."""
        results: list[tuple[int, int]] = []
        deadline_ns = get_sim_time(unit="ns") + max_cycles * CLOCK_NS
        poll_cycles = max(16, 4 * self.fold)
        while True:
            status = await self.status()
            if status & ST_RESULT_VALID:
                entry = await self.pop_one()
                assert entry is not None
                results.append(entry)
                continue
            if not status & ST_BUSY:
                return results
            assert get_sim_time(unit="ns") < deadline_ns, "job did not finish in time"
            await ClockCycles(self.dut.clk, poll_cycles)


def check_digests(bench: Bench, job: Job, nonces: list[int]) -> None:
    """Every hashed nonce produced exactly the model's digest, in issue order."""
    assert [n for n, _ in bench.digests] == nonces
    for nonce, digest in bench.digests:
        want = int.from_bytes(job.digest(nonce), "big")
        assert digest == want, f"nonce {nonce}: digest {digest:064x} != model {want:064x}"


@cocotb.test()
async def csr_map(dut: Any) -> None:
    """Identity, configuration, read-back of job registers, unknown addresses."""
    args = tb_args()
    bench = Bench(dut)
    await bench.setup()
    assert await bench.read(ID) == CORE_ID
    assert bench.fold == args["fold"]
    assert bench.fifo_depth == 1 << args["fifo_log2"]
    assert bench.debug == bool(args["debug"])
    assert bench.tag_bits == 8
    assert bench.latency == 128
    assert await bench.status() == 0  # idle, nothing queued, no error

    values = {TARGET: 0x00000FFF, NONCE_FIRST: 0x12345678, NONCE_LAST: 0x9ABCDEF0}
    values.update({MIDSTATE0 + 4 * i: 0x01010101 * (i + 1) for i in range(8)})
    values.update({TAIL0 + 4 * i: 0xA0B0C0D0 + i for i in range(3)})
    for addr, value in values.items():
        await bench.write(addr, value)
    for addr, value in values.items():
        assert await bench.read(addr) == value, f"register 0x{addr:02x}"

    await bench.write(JOB_TAG, 0xFFFFFF5A)
    assert await bench.read(JOB_TAG) == 0x5A  # only TAG_BITS are kept
    await bench.write(ID, 0)  # read-only: ignored
    assert await bench.read(ID) == CORE_ID
    await bench.write(0xFC, 0xFFFFFFFF)  # unmapped: ignored, reads 0
    assert await bench.read(0xFC) == 0
    assert await bench.read(ID + 2) == CORE_ID  # byte address bits [1:0] are ignored


@cocotb.test()
async def search(dut: Any) -> None:
    """Search a range; the result set (and every digest, if observable) matches the model."""
    args = tb_args()
    bench = Bench(dut)
    await bench.setup()
    job = Job.from_header(bytes.fromhex(args["header"]))
    first, last, target, tag = args["first"], args["last"], args["target"], args["tag"]
    await bench.load_job(job, first, last, target, tag)
    await bench.start()
    results = await bench.run_to_end(max_cycles=(last - first + 1) * bench.fold * 8 + 4000)
    await ClockCycles(dut.clk, 2)

    want = job.match_set(first, last, target)
    assert [nonce for _, nonce in results] == want
    assert all(t == tag for t, _ in results)
    for nonce in args.get("must_find", []):
        assert nonce in [n for _, n in results], f"known-answer nonce {nonce} not reported"
    status = await bench.status()
    assert status & (ST_BUSY | ST_DONE | ST_OVERFLOW | ST_RANGE_ERROR) == ST_DONE
    assert await bench.nonces_done() == last - first + 1
    assert await bench.read(NONCE_NEXT) == (last + 1) & 0xFFFFFFFF
    if bench.debug:
        check_digests(bench, job, list(range(first, last + 1)))
    dut._log.info("range %d..%d target %08x: %d match(es)", first, last, target, len(want))


@cocotb.test()
async def latency_and_throughput(dut: Any) -> None:
    """Nonce k of a job reaches the FIFO 1 + LATENCY + k*FOLD clocks after START."""
    args = tb_args()
    bench = Bench(dut)
    await bench.setup()
    job = Job.from_header(bytes.fromhex(args["header"]))
    count = min(8, bench.fifo_depth)  # no throttling: every nonce has a slot
    first = args["first"]
    await bench.load_job(job, first, first + count - 1, EVERYTHING, 3)
    bench.push_times_ns.clear()
    start_ns = await bench.start()
    await ClockCycles(dut.clk, bench.latency + count * bench.fold + 8)

    cycles = [round((t - start_ns) / CLOCK_NS) for t in bench.push_times_ns]
    assert cycles == [1 + bench.latency + k * bench.fold for k in range(count)]
    results = await bench.drain()
    assert results == [(3, n) for n in range(first, first + count)]


@cocotb.test()
async def flush_midflight(dut: Any) -> None:
    """FLUSH drops in-flight nonces and the rest of the range; nothing of it surfaces later."""
    args = tb_args()
    bench = Bench(dut)
    await bench.setup()
    job = Job.from_header(bytes.fromhex(args["header"]))
    first = args["first"]
    await bench.load_job(job, first, first + 100_000, EVERYTHING, 7)
    await bench.start()
    # Let a few nonces finish and many more be in flight, then flush.
    await ClockCycles(dut.clk, bench.latency + 3 * bench.fold)
    await bench.write(CTRL, CTRL_FLUSH)
    status = await bench.status()
    assert status & (ST_BUSY | ST_DONE) == 0
    finished = await bench.nonces_done()
    issued_up_to = await bench.read(NONCE_NEXT)
    assert finished >= 1
    assert issued_up_to - first > finished  # work was in flight when flushed
    digests_at_flush = len(bench.digests)

    await ClockCycles(dut.clk, 2 * bench.latency + 10)
    assert await bench.nonces_done() == finished
    assert await bench.read(NONCE_NEXT) == issued_up_to
    assert len(bench.digests) == digests_at_flush
    results = await bench.drain()
    assert results == [(7, n) for n in range(first, first + finished)]

    # The core takes a new job straight after a flush and reports only its nonces.
    await bench.load_job(job, first + 500, first + 502, EVERYTHING, 8)
    await bench.start()
    results = await bench.run_to_end(max_cycles=4000)
    assert results == [(8, n) for n in range(first + 500, first + 503)]
    assert await bench.status() & ST_DONE


@cocotb.test()
async def backpressure(dut: Any) -> None:
    """A full FIFO pauses issue; nothing is lost or duplicated, and the search resumes."""
    args = tb_args()
    bench = Bench(dut)
    await bench.setup()
    job = Job.from_header(bytes.fromhex(args["header"]))
    first = args["first"]
    total = bench.fifo_depth + 12
    await bench.load_job(job, first, first + total - 1, EVERYTHING, 9)
    await bench.start()
    await ClockCycles(dut.clk, bench.latency + total * bench.fold + 2 * bench.latency)

    status = await bench.status()
    assert status & ST_FIFO_FULL
    assert status & ST_THROTTLED
    assert status & ST_BUSY
    assert not status & ST_OVERFLOW
    assert status >> 16 == bench.fifo_depth
    assert await bench.nonces_done() == bench.fifo_depth
    assert await bench.read(NONCE_NEXT) == first + bench.fifo_depth

    results = await bench.run_to_end(max_cycles=total * (bench.fold + 200) + 4000)
    assert results == [(9, n) for n in range(first, first + total)]
    status = await bench.status()
    assert status & (ST_DONE | ST_OVERFLOW | ST_THROTTLED | ST_BUSY) == ST_DONE


@cocotb.test()
async def restart_and_bad_range(dut: Any) -> None:
    """A refused START leaves the running job alone; a new START replaces it cleanly."""
    args = tb_args()
    bench = Bench(dut)
    await bench.setup()
    job = Job.from_header(bytes.fromhex(args["header"]))
    first = args["first"]
    await bench.load_job(job, first, first + 50_000, EVERYTHING, 1)
    await bench.start()

    await bench.write(NONCE_FIRST, 100)
    await bench.write(NONCE_LAST, 99)
    await bench.start()  # last < first: refused
    status = await bench.status()
    assert status & ST_RANGE_ERROR
    assert status & ST_BUSY  # the old job carries on
    await ClockCycles(dut.clk, bench.latency + 4 * bench.fold)
    assert await bench.nonces_done() >= 2

    job_b = Job.from_header(bytes.fromhex(args["header2"]))
    await bench.load_job(job_b, 5, 8, EVERYTHING, 2)
    await bench.start()
    assert not await bench.status() & ST_RANGE_ERROR
    results = await bench.run_to_end(max_cycles=8000)
    old = [n for t, n in results if t == 1]
    assert old == list(range(first, first + len(old)))  # a clean prefix of job A
    assert [(t, n) for t, n in results if t != 1] == [(2, n) for n in range(5, 9)]
    if bench.debug:
        new_digests = [(n, d) for n, d in bench.digests if n in range(5, 9)]
        assert new_digests == [(n, int.from_bytes(job_b.digest(n), "big")) for n in range(5, 9)]


@cocotb.test()
async def reset_mid_job(dut: Any) -> None:
    """rst stops a running job and empties the FIFO; the core then works normally."""
    args = tb_args()
    bench = Bench(dut)
    await bench.setup()
    job = Job.from_header(bytes.fromhex(args["header"]))
    first = args["first"]
    await bench.load_job(job, first, first + 10_000, EVERYTHING, 4)
    await bench.start()
    await ClockCycles(dut.clk, bench.latency + 8 * bench.fold)
    assert await bench.status() & ST_RESULT_VALID
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    assert await bench.status() == 0  # idle, FIFO empty, no flags
    assert await bench.nonces_done() == 0
    assert await bench.read(TARGET) == 0  # job registers are reset too
    digests_after_reset = len(bench.digests)
    await ClockCycles(dut.clk, 2 * bench.latency)
    assert await bench.status() == 0  # nothing left in the pipeline surfaces
    assert len(bench.digests) == digests_after_reset

    await bench.load_job(job, first, first + 2, EVERYTHING, 5)
    await bench.start()
    assert await bench.run_to_end(max_cycles=4000) == [(5, n) for n in range(first, first + 3)]


@cocotb.test()
async def sim_speed(dut: Any) -> None:
    """For bench/fpga.py: wall-clock speed of the simulation and nonces per clock.

    Runs a long job with target 0 (almost nothing queued) and writes, per
    repeat, the simulated clocks, nonces hashed and wall seconds to args["out"].
    """
    args = tb_args()
    bench = Bench(dut)
    await bench.setup()
    job = Job.from_header(bytes.fromhex(args["header"]))
    await bench.load_job(job, 0, 0xFFFFFFFF, 0, 1)
    await bench.start()
    await ClockCycles(dut.clk, 2 * bench.latency)  # pipeline full: steady state
    samples = []
    for _ in range(args["repeats"]):
        nonces_before = await bench.nonces_done()
        sim_before_ns = get_sim_time(unit="ns")
        wall_before = time.perf_counter()
        await ClockCycles(dut.clk, args["clocks"])
        wall_s = time.perf_counter() - wall_before
        nonces = await bench.nonces_done() - nonces_before
        clocks = round((get_sim_time(unit="ns") - sim_before_ns) / CLOCK_NS)
        samples.append(
            {"clocks": clocks, "nonces": nonces, "wall_s": wall_s, "run_clocks": args["clocks"]}
        )
    with open(args["out"], "w", encoding="utf-8") as out:
        json.dump({"fold": bench.fold, "samples": samples}, out)
