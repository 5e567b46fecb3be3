"""Host driver for the rigd SHA-256d search core (hal/sha256d_rtl) over its CSR map
(fpga/README.md).

The core walks a nonce range of one block header and reports every nonce whose last digest word
passes the target's top word; it stops the second hash there, so the host re-checks every
reported nonce against the full 256-bit target with hashlib (`search` does). The driver needs
only a `RegisterAccess`: 32-bit reads and writes at byte addresses. The simulated core gives one
(hal/sha256d_cocotb.py); an MMIO window or an OpenCL control kernel on a real card would be
another.

    core = Sha256dCore(registers)
    report = core.search(header, 0, 0xFFFF, target)    # program, start, wait, re-check
    report.nonces                                      # those that meet the full target
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Protocol

from hal.errors import InvalidArgument, ProtocolError, Timeout, Unavailable
from hal.sha256 import MASK, HeaderPrecompute, sha256d_value

CORE_ID = 0x53324432  # "S2D2": this CSR map
NONCE_LIMIT = 1 << 32
TARGET_LIMIT = 1 << 256


class RegisterAccess(Protocol):
    """The core's CSR bus: 32-bit registers at byte addresses."""

    def read32(self, address: int) -> int: ...

    def write32(self, address: int, value: int) -> None: ...


class Reg(IntEnum):
    """Register byte addresses (fpga/README.md, CSR map)."""

    ID = 0x00
    CONFIG = 0x04
    LATENCY = 0x08
    CTRL = 0x0C
    STATUS = 0x10
    JOB_TAG = 0x14
    TARGET = 0x18
    NONCE_FIRST = 0x1C
    NONCE_LAST = 0x20
    MIDSTATE0 = 0x24  # .. 0x40, H0..H7
    TAIL0 = 0x44  # .. 0x4C, header bytes 64..75 as big-endian words
    DONE_LO = 0x50
    DONE_HI = 0x54
    NONCE_NEXT = 0x58
    RESULT_TAG = 0x5C
    RESULT_NONCE = 0x60
    REPLAYS = 0x64
    PRE0 = 0x80  # .. 0xBC, HeaderPrecompute.words()


class Ctrl(IntFlag):
    START = 1 << 0
    FLUSH = 1 << 1
    POP = 1 << 2
    FIFO_CLEAR = 1 << 3
    CLEAR_FLAG = 1 << 4


class Status(IntFlag):
    BUSY = 1 << 0
    DONE = 1 << 1
    RESULT_VALID = 1 << 2
    FIFO_FULL = 1 << 3
    THROTTLED = 1 << 4
    RANGE_ERROR = 1 << 5
    JOB_WRITE_IGNORED = 1 << 6


RESULT_PRESENT = 1 << 31  # RESULT_TAG bit 31: the FIFO head is a result


def fifo_count(status_word: int) -> int:
    """Entries in the result FIFO, from a STATUS word."""
    return status_word >> 16


def target_word(target: int) -> int:
    """The 32-bit TARGET for a 256-bit target: its top word. Every hash that meets the target
    passes it; the host drops those that pass the word but not the whole target."""
    if not 0 <= target < TARGET_LIMIT:
        raise InvalidArgument(f"target {target:#x} is not a 256-bit number")
    return target >> 224


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """What CONFIG and LATENCY say about this build of the core."""

    fold: int  # rounds per stage: one nonce every `fold` clocks
    fifo_depth: int
    tag_bits: int
    debug_port: bool
    latency_clocks: int  # from a nonce's issue to its compare

    @classmethod
    def from_registers(cls, config: int, latency: int) -> CoreConfig:
        return cls(
            fold=config & 0xFF,
            fifo_depth=1 << ((config >> 8) & 0xFF),
            tag_bits=(config >> 16) & 0xFF,
            debug_port=bool((config >> 24) & 1),
            latency_clocks=latency,
        )

    @property
    def nonces_per_clock(self) -> float:
        return 1.0 / self.fold


@dataclass(frozen=True, slots=True)
class Job:
    """One search: a header (its nonce field is ignored), an inclusive nonce range, a target."""

    header: bytes  # 76 or 80 bytes
    nonce_first: int
    nonce_last: int
    target: int  # 256-bit; the core compares its top word
    tag: int = 0

    def __post_init__(self) -> None:
        if len(self.header) not in (76, 80):
            raise InvalidArgument(f"block header must be 76 or 80 bytes, got {len(self.header)}")
        for name in ("nonce_first", "nonce_last"):
            value = getattr(self, name)
            if not 0 <= value < NONCE_LIMIT:
                raise InvalidArgument(f"{name} {value} is not a 32-bit nonce")
        if self.nonce_last < self.nonce_first:
            raise InvalidArgument(f"nonce_last {self.nonce_last} < nonce_first {self.nonce_first}")
        target_word(self.target)

    @property
    def nonce_count(self) -> int:
        return self.nonce_last - self.nonce_first + 1

    def header_with(self, nonce: int) -> bytes:
        return self.header[:76] + struct.pack("<I", nonce)

    def register_writes(self) -> list[tuple[int, int]]:
        """(address, value) of every job register, in the order they are written."""
        pre = HeaderPrecompute.from_header(self.header)
        tail = struct.unpack(">3I", self.header[64:76])
        writes: list[tuple[int, int]] = [
            (Reg.JOB_TAG, self.tag),
            (Reg.TARGET, target_word(self.target)),
            (Reg.NONCE_FIRST, self.nonce_first),
            (Reg.NONCE_LAST, self.nonce_last),
        ]
        writes += [(Reg.MIDSTATE0 + 4 * i, w) for i, w in enumerate(pre.midstate)]
        writes += [(Reg.TAIL0 + 4 * i, w) for i, w in enumerate(tail)]
        writes += [(Reg.PRE0 + 4 * i, w) for i, w in enumerate(pre.words())]
        return writes


@dataclass(frozen=True, slots=True)
class Result:
    tag: int
    nonce: int


@dataclass(frozen=True, slots=True)
class Counters:
    nonces_done: int  # hashed and compared in this job
    nonce_next: int  # next nonce to issue
    replays: int  # times a match found the FIFO full and was hashed again (modulo 2^16)


@dataclass(frozen=True, slots=True)
class SearchReport:
    """A finished search after the host's re-check."""

    job: Job
    nonces: tuple[int, ...]  # reported and meeting the full target, in nonce order
    above_target: tuple[int, ...]  # reported (top word passes) but above the full target
    wrong: tuple[int, ...]  # reported although their top word fails: the core is broken
    counters: Counters


class Sha256dCore:
    """The core behind one `RegisterAccess`.

    `wait_for_news` is called when a poll found the core busy with nothing to read: it should
    block until there may be news (an interrupt, a timer, simulated clocks). By default the
    driver polls again at once.
    """

    def __init__(
        self, registers: RegisterAccess, wait_for_news: Callable[[], None] | None = None
    ) -> None:
        self._registers = registers
        self._wait_for_news = wait_for_news or (lambda: None)
        core_id = registers.read32(Reg.ID)
        if core_id != CORE_ID:
            raise ProtocolError(
                f"not a rigd SHA-256d core with this CSR map: ID reads {core_id:#010x}, "
                f"expected {CORE_ID:#010x}"
            )
        self.config = CoreConfig.from_registers(
            registers.read32(Reg.CONFIG), registers.read32(Reg.LATENCY)
        )

    def status(self) -> Status:
        return Status(self._registers.read32(Reg.STATUS) & 0xFFFF)

    def counters(self) -> Counters:
        read = self._registers.read32
        return Counters(
            nonces_done=(read(Reg.DONE_HI) & 1) << 32 | read(Reg.DONE_LO),
            nonce_next=read(Reg.NONCE_NEXT),
            replays=read(Reg.REPLAYS),
        )

    def program(self, job: Job) -> None:
        """Write a job; the core must be idle (job registers ignore writes while it is busy)."""
        if job.tag >> self.config.tag_bits:
            raise InvalidArgument(f"tag {job.tag} does not fit in {self.config.tag_bits} bits")
        if self.status() & Status.BUSY:
            raise Unavailable("the core is busy: flush() before programming another job")
        for address, value in job.register_writes():
            self._registers.write32(address, value & MASK)
        if self.status() & Status.JOB_WRITE_IGNORED:
            self._control(Ctrl.CLEAR_FLAG)
            raise Unavailable("job writes were ignored: the core was started while programming")

    def start(self) -> None:
        """Begin the programmed job; drops whatever the core had in flight."""
        self._control(Ctrl.START)
        if self.status() & Status.RANGE_ERROR:
            raise InvalidArgument("the core refused START: NONCE_LAST < NONCE_FIRST")

    def flush(self) -> None:
        """Stop: drop the nonces in flight and the rest of the range (queued results stay)."""
        self._control(Ctrl.FLUSH)

    def clear_results(self) -> None:
        self._control(Ctrl.FIFO_CLEAR)

    def pop_results(self) -> list[Result]:
        """Every result queued now, oldest first."""
        read = self._registers.read32
        results = []
        while (head := read(Reg.RESULT_TAG)) & RESULT_PRESENT:
            results.append(Result(head & ((1 << self.config.tag_bits) - 1), read(Reg.RESULT_NONCE)))
            self._control(Ctrl.POP)
        return results

    def wait(self, timeout_s: float | None = None) -> list[Result]:
        """Collect results until the job is over (not busy, FIFO empty)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        results: list[Result] = []
        while True:
            status = self.status()
            if status & Status.RESULT_VALID:
                results += self.pop_results()
                continue
            if not status & Status.BUSY:
                return results
            if deadline is not None and time.monotonic() > deadline:
                raise Timeout(f"the core is still busy after {timeout_s} s: {self.counters()}")
            self._wait_for_news()

    def search(
        self,
        header: bytes,
        nonce_first: int,
        nonce_last: int,
        target: int,
        tag: int = 0,
        timeout_s: float | None = None,
    ) -> SearchReport:
        """Run one job to its end and re-check every reported nonce with hashlib."""
        job = Job(header, nonce_first, nonce_last, target, tag)
        self.program(job)
        self.clear_results()
        self.start()
        results = self.wait(timeout_s)
        return verify(job, results, self.counters())

    def _control(self, bits: Ctrl) -> None:
        self._registers.write32(Reg.CTRL, int(bits))


def verify(job: Job, results: list[Result], counters: Counters) -> SearchReport:
    """Sort a job's reported nonces by what hashlib says of them."""
    kept, above, wrong = [], [], []
    word = target_word(job.target)
    for result in results:
        if result.tag != job.tag:
            raise ProtocolError(f"result {result} carries tag {result.tag}, the job's is {job.tag}")
        value = sha256d_value(job.header_with(result.nonce))
        if value <= job.target:
            kept.append(result.nonce)
        elif value >> 224 <= word:
            above.append(result.nonce)
        else:
            wrong.append(result.nonce)
    return SearchReport(job, tuple(kept), tuple(above), tuple(wrong), counters)
