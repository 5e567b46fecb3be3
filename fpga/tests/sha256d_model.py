"""Golden model of the SHA-256d search core, built on hashlib.

The midstate comes from hal.sha256's pure-Python compression (hashlib does
not expose its internal state); every final digest is hashlib's
sha256(sha256(header)). The helpers mirror the core's conventions so a test
can compare register values and results one to one.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from hal.sha256 import IV, MASK, compress

HEADER_BYTES = 80


@dataclass(frozen=True)
class Job:
    """What the host writes to the core for one header (see fpga/README.md)."""

    midstate: tuple[int, ...]  # H0..H7 after header bytes 0..63
    tail: tuple[int, int, int]  # header bytes 64..75 as big-endian words
    prefix: bytes  # header bytes 0..75, for hashlib

    @classmethod
    def from_header(cls, header: bytes) -> Job:
        if len(header) not in (76, HEADER_BYTES):
            raise ValueError(f"header must be 76 or 80 bytes, got {len(header)}")
        midstate = compress(IV, header[:64])
        tail = struct.unpack(">3I", header[64:76])
        return cls(midstate=midstate, tail=(tail[0], tail[1], tail[2]), prefix=bytes(header[:76]))

    def header(self, nonce: int) -> bytes:
        return self.prefix + struct.pack("<I", nonce & MASK)

    def digest(self, nonce: int) -> bytes:
        """sha256(sha256(header)) as hashlib returns it (32 bytes)."""
        return hashlib.sha256(hashlib.sha256(self.header(nonce)).digest()).digest()

    def digest_words(self, nonce: int) -> tuple[int, ...]:
        """The final digest as the core's H0..H7 words."""
        return struct.unpack(">8I", self.digest(nonce))

    def top32(self, nonce: int) -> int:
        """Top 32 bits of the hash read as Bitcoin's little-endian 256-bit number."""
        return int.from_bytes(self.digest(nonce)[28:32], "little")

    def matches(self, nonce: int, target: int) -> bool:
        return self.top32(nonce) <= target

    def match_set(self, first: int, last: int, target: int) -> list[int]:
        return [n for n in range(first, last + 1) if self.matches(n, target)]


def block_hash_hex(header: bytes) -> str:
    """The block hash as explorers print it (byte-reversed double SHA-256)."""
    return hashlib.sha256(hashlib.sha256(header).digest()).digest()[::-1].hex()


def genesis_header() -> bytes:
    """Bitcoin's genesis block header (nonce 2083236893)."""
    merkle = bytes.fromhex("4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b")[::-1]
    return (
        struct.pack("<I", 1)
        + bytes(32)
        + merkle
        + struct.pack("<III", 1231006505, 0x1D00FFFF, 2083236893)
    )


GENESIS_NONCE = 2083236893
GENESIS_HASH = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"


def block_125552_header() -> bytes:
    """Header of block 125552, the worked example of the Bitcoin wiki's hashing page."""
    prev = bytes.fromhex("00000000000008a3a41b85b8b29ad444def299fee21793cd8b9e567eab02cd81")[::-1]
    merkle = bytes.fromhex("2b12fcf1b09288fcaff797d71e950e71ae42b91e8bdb2304758dfcffc2b620e3")[::-1]
    return (
        struct.pack("<I", 1)
        + prev
        + merkle
        + struct.pack("<III", 1305998791, 440711666, 2504433986)
    )


BLOCK_125552_NONCE = 2504433986
BLOCK_125552_HASH = "00000000000000001e8d6829a8a21adc5d38d0a473b144b6765798e61f98bd1d"
