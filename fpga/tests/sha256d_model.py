"""Golden model of the SHA-256d search core, built on hashlib.

The midstate comes from a small pure-Python SHA-256 compression (hashlib does
not expose its internal state); every final digest is hashlib's
sha256(sha256(header)). The helpers mirror the core's conventions so a test
can compare register values and results one to one.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

SHA256_IV = (
    0x6A09E667,
    0xBB67AE85,
    0x3C6EF372,
    0xA54FF53A,
    0x510E527F,
    0x9B05688C,
    0x1F83D9AB,
    0x5BE0CD19,
)

SHA256_K = (
    0x428A2F98, 0x71374491, 0xB5C0FBCF, 0xE9B5DBA5, 0x3956C25B, 0x59F111F1, 0x923F82A4, 0xAB1C5ED5,
    0xD807AA98, 0x12835B01, 0x243185BE, 0x550C7DC3, 0x72BE5D74, 0x80DEB1FE, 0x9BDC06A7, 0xC19BF174,
    0xE49B69C1, 0xEFBE4786, 0x0FC19DC6, 0x240CA1CC, 0x2DE92C6F, 0x4A7484AA, 0x5CB0A9DC, 0x76F988DA,
    0x983E5152, 0xA831C66D, 0xB00327C8, 0xBF597FC7, 0xC6E00BF3, 0xD5A79147, 0x06CA6351, 0x14292967,
    0x27B70A85, 0x2E1B2138, 0x4D2C6DFC, 0x53380D13, 0x650A7354, 0x766A0ABB, 0x81C2C92E, 0x92722C85,
    0xA2BFE8A1, 0xA81A664B, 0xC24B8B70, 0xC76C51A3, 0xD192E819, 0xD6990624, 0xF40E3585, 0x106AA070,
    0x19A4C116, 0x1E376C08, 0x2748774C, 0x34B0BCB5, 0x391C0CB3, 0x4ED8AA4A, 0x5B9CCA4F, 0x682E6FF3,
    0x748F82EE, 0x78A5636F, 0x84C87814, 0x8CC70208, 0x90BEFFFA, 0xA4506CEB, 0xBEF9A3F7, 0xC67178F2,
)  # fmt: skip

MASK32 = 0xFFFFFFFF
HEADER_BYTES = 80


def _rotr(x: int, n: int) -> int:
    return ((x >> n) | (x << (32 - n))) & MASK32


def compress(state: tuple[int, ...], block: bytes) -> tuple[int, ...]:
    """One SHA-256 compression of a 64-byte block (FIPS 180-4, 6.2.2)."""
    if len(block) != 64 or len(state) != 8:
        raise ValueError("compress needs an 8-word state and a 64-byte block")
    w = list(struct.unpack(">16I", block))
    for t in range(16, 64):
        s0 = _rotr(w[t - 15], 7) ^ _rotr(w[t - 15], 18) ^ (w[t - 15] >> 3)
        s1 = _rotr(w[t - 2], 17) ^ _rotr(w[t - 2], 19) ^ (w[t - 2] >> 10)
        w.append((w[t - 16] + s0 + w[t - 7] + s1) & MASK32)
    a, b, c, d, e, f, g, h = state
    for t in range(64):
        big_s1 = _rotr(e, 6) ^ _rotr(e, 11) ^ _rotr(e, 25)
        ch = (e & f) ^ (~e & g)
        t1 = (h + big_s1 + ch + SHA256_K[t] + w[t]) & MASK32
        big_s0 = _rotr(a, 2) ^ _rotr(a, 13) ^ _rotr(a, 22)
        maj = (a & b) ^ (a & c) ^ (b & c)
        t2 = (big_s0 + maj) & MASK32
        a, b, c, d, e, f, g, h = (t1 + t2) & MASK32, a, b, c, (d + t1) & MASK32, e, f, g
    return tuple((x + y) & MASK32 for x, y in zip(state, (a, b, c, d, e, f, g, h), strict=True))


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
        midstate = compress(SHA256_IV, header[:64])
        tail = struct.unpack(">3I", header[64:76])
        return cls(midstate=midstate, tail=(tail[0], tail[1], tail[2]), prefix=bytes(header[:76]))

    def header(self, nonce: int) -> bytes:
        return self.prefix + struct.pack("<I", nonce & MASK32)

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
