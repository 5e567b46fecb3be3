"""Golden model of the SHA-256d search core: hashlib and nothing else.

The tests compare what the core computes (every first digest, every H7, the nonces it reports
and those the host keeps) with what hashlib says of the same headers.
"""

from __future__ import annotations

import hashlib
import struct

NONCE_LIMIT = 1 << 32


def header_with(header: bytes, nonce: int) -> bytes:
    """The 80-byte header with `nonce` in bytes 76..79 (little-endian)."""
    return header[:76] + struct.pack("<I", nonce % NONCE_LIMIT)


def first_digest(header: bytes, nonce: int) -> int:
    """sha256(header) as the 256-bit word {H0, ..., H7} of the core's debug port."""
    return int.from_bytes(hashlib.sha256(header_with(header, nonce)).digest(), "big")


def digest(header: bytes, nonce: int) -> bytes:
    """sha256(sha256(header)) as hashlib returns it."""
    return hashlib.sha256(hashlib.sha256(header_with(header, nonce)).digest()).digest()


def h7(header: bytes, nonce: int) -> int:
    """The last word of the final digest (big-endian, as the core's H7)."""
    return int.from_bytes(digest(header, nonce)[28:], "big")


def value(header: bytes, nonce: int) -> int:
    """The hash as the 256-bit little-endian number a target is compared with."""
    return int.from_bytes(digest(header, nonce), "little")


def top32(header: bytes, nonce: int) -> int:
    """The top 32 bits of `value`: what the core compares with its TARGET word."""
    return value(header, nonce) >> 224


def nonces_meeting(header: bytes, first: int, last: int, target: int) -> list[int]:
    """Nonces in [first, last] whose hash is at most the 256-bit target."""
    return [n for n in range(first, last + 1) if value(header, n) <= target]


def nonces_passing_word(header: bytes, first: int, last: int, target: int) -> list[int]:
    """Nonces in [first, last] whose top word is at most the target's: what the core reports."""
    word = target >> 224
    return [n for n in range(first, last + 1) if top32(header, n) <= word]


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
# Bitcoin's difficulty-1 target: a block hash at most this has 32 leading zero bits and more.
DIFFICULTY_1_TARGET = 0xFFFF << 208
