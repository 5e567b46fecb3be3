"""Fixtures for the SHA-256d kernel and miner tests: one real PoCL device, one compiled kernel
per vector width for the whole session (a PoCL build takes a second or two), and a tiny
in-process JobSource (a test double of the job.py protocol, not of our own classes)."""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterator

import pyopencl as cl
import pytest

from agent.core.job import Job, Share, ShareStats, hash_value
from agent.runtime.workloads.hashing.kernel import Sha256dKernel, default_cl_device

GENESIS_MERKLE_DISPLAY = "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"
GENESIS_NONCE = 2083236893
GENESIS_HASH_DISPLAY = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
GENESIS_TARGET = 0xFFFF << 208  # from bits 0x1d00ffff
GENESIS_HEADER76 = (
    struct.pack("<I", 1)
    + bytes(32)
    + bytes.fromhex(GENESIS_MERKLE_DISPLAY)[::-1]
    + struct.pack("<II", 1231006505, 0x1D00FFFF)
)


@pytest.fixture(scope="session")
def cl_device() -> cl.Device:
    return default_cl_device()


@pytest.fixture(scope="session")
def kernel_for(cl_device: cl.Device) -> Iterator[Callable[[int], Sha256dKernel]]:
    built: dict[int, Sha256dKernel] = {}

    def get(width: int) -> Sha256dKernel:
        if width not in built:
            built[width] = Sha256dKernel(cl_device, vector_width=width)
        return built[width]

    yield get


class FixedJobSource:
    """Hands out jobs over one header and target; `switch()` moves to a new header and bumps
    the generation, like a pool's clean_jobs. Accepts a share iff it meets the current target
    of a current-generation job, as a pool would."""

    def __init__(self, header76: bytes, target: int) -> None:
        self._lock = threading.Lock()
        self._header = header76 + bytes(4)
        self._target = target
        self._generation = 0
        self._serial = 0
        self.jobs_issued: list[Job] = []
        self.shares: list[Share] = []
        self.stale_submissions = 0
        self._stats = ShareStats()

    @property
    def generation(self) -> int:
        with self._lock:
            return self._generation

    def switch(self, header76: bytes) -> None:
        with self._lock:
            self._header = header76 + bytes(4)
            self._generation += 1

    def get_job(self, timeout_s: float) -> Job | None:
        with self._lock:
            self._serial += 1
            job = Job(
                job_id=f"job{self._serial}",
                header=self._header,
                target=self._target,
                generation=self._generation,
                source="fixed",
            )
            self.jobs_issued.append(job)
            return job

    def submit(self, share: Share) -> None:
        with self._lock:
            self.shares.append(share)
            if share.job.generation != self._generation:
                self.stale_submissions += 1
                self._stats.rejected += 1
            elif hash_value(share.header) <= share.job.target:
                self._stats.accepted += 1
            else:
                self._stats.rejected += 1

    def stats(self) -> ShareStats:
        with self._lock:
            return ShareStats(accepted=self._stats.accepted, rejected=self._stats.rejected)


class EmptyJobSource(FixedJobSource):
    """A source that never has work (a pool not yet connected)."""

    def get_job(self, timeout_s: float) -> Job | None:
        threading.Event().wait(timeout_s)
        return None
