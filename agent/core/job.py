"""What flows between a job source and a kernel: jobs in, shares out.

One nonce convention everywhere: `nonce` is the integer whose 4 little-endian bytes are header
bytes 76..80 (so header[76:80] == nonce.to_bytes(4, "little")).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol

DIFF1_TARGET = 0xFFFF * 2**208


def sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def hash_value(header: bytes) -> int:
    """The header's double SHA-256 as the integer compared against targets."""
    return int.from_bytes(sha256d(header), "little")


def target_for_difficulty(difficulty: float) -> int:
    if not difficulty > 0:
        raise ValueError(f"difficulty must be positive, got {difficulty!r}")
    return min(int(DIFF1_TARGET / difficulty), 2**256 - 1)


@dataclass(frozen=True, slots=True)
class Job:
    """One unit of work: an 80-byte header whose nonce field (bytes 76..80) the kernel fills."""

    job_id: str
    header: bytes  # 80 bytes; bytes 76..80 are ignored
    target: int  # a share is valid iff hash_value(header_with_nonce) <= target
    extranonce2: bytes = b""
    generation: int = 0  # the source's generation when issued; stale once the source moves on
    source: str = ""  # which pool / source issued it, for accounting

    def __post_init__(self) -> None:
        if len(self.header) != 80:
            raise ValueError(f"header must be 80 bytes, got {len(self.header)}")

    def with_nonce(self, nonce: int) -> bytes:
        return self.header[:76] + (nonce & 0xFFFFFFFF).to_bytes(4, "little")


@dataclass(frozen=True, slots=True)
class Share:
    job: Job
    nonce: int  # header little-endian nonce convention

    @property
    def header(self) -> bytes:
        return self.job.with_nonce(self.nonce)


@dataclass(slots=True)
class ShareStats:
    accepted: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)


class JobSource(Protocol):
    """Thread-safe: the miner loop runs in its own thread, the source wherever it likes."""

    @property
    def generation(self) -> int:
        """Increments whenever outstanding work becomes stale (new block, clean_jobs, reconnect)."""
        ...

    def get_job(self, timeout_s: float) -> Job | None:
        """Fresh work (a new extranonce2 each call), waiting up to timeout_s; None if none yet."""
        ...

    def submit(self, share: Share) -> None:
        """Queue a share that already passed the full-target check; never blocks on the network."""
        ...

    def stats(self) -> ShareStats: ...


# The genesis block's header and nonce: the known answer every kernel must find.
GENESIS_HEADER = bytes.fromhex(
    "01000000" + "00" * 32
    + "3ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a"
    + "29ab5f49" + "ffff001d" + "1dac2b7c"
)
GENESIS_NONCE = 2083236893
