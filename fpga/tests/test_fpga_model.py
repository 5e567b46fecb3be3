"""The golden model must itself be right: its compression agrees with hashlib
and it reproduces real block hashes."""

from __future__ import annotations

import hashlib
import random
import struct

import pytest
from sha256d_model import (
    BLOCK_125552_HASH,
    BLOCK_125552_NONCE,
    GENESIS_HASH,
    GENESIS_NONCE,
    Job,
    block_125552_header,
    block_hash_hex,
    compress,
    genesis_header,
)

from hal.sha256 import IV


@pytest.mark.parametrize("length", [0, 1, 55])
def test_compress_matches_hashlib_single_block(length: int) -> None:
    message = random.Random(length).randbytes(length)
    block = message + b"\x80" + bytes(55 - length) + struct.pack(">Q", 8 * length)
    assert struct.pack(">8I", *compress(IV, block)) == hashlib.sha256(message).digest()


def test_midstate_continues_to_hashlib_digest() -> None:
    header = random.Random(5).randbytes(80)
    job = Job.from_header(header)
    second = header[64:] + b"\x80" + bytes(39) + struct.pack(">Q", 640)
    first_hash = struct.pack(">8I", *compress(job.midstate, second))
    assert first_hash == hashlib.sha256(header).digest()
    assert job.digest(struct.unpack("<I", header[76:])[0]) == hashlib.sha256(first_hash).digest()


def test_known_blocks() -> None:
    assert block_hash_hex(genesis_header()) == GENESIS_HASH
    assert block_hash_hex(block_125552_header()) == BLOCK_125552_HASH
    assert Job.from_header(genesis_header()).header(GENESIS_NONCE) == genesis_header()
    assert (
        Job.from_header(block_125552_header()).header(BLOCK_125552_NONCE) == block_125552_header()
    )


def test_match_rule_is_top_word_of_little_endian_hash() -> None:
    job = Job.from_header(genesis_header())
    as_number = int.from_bytes(job.digest(GENESIS_NONCE), "little")
    assert job.top32(GENESIS_NONCE) == as_number >> 224 == 0
    assert job.matches(GENESIS_NONCE, 0)
    assert not job.matches(GENESIS_NONCE + 1, 0)
    words = job.digest_words(GENESIS_NONCE + 1)
    top = struct.unpack("<I", struct.pack(">I", words[7]))[0]
    assert job.top32(GENESIS_NONCE + 1) == top
    assert job.matches(GENESIS_NONCE + 1, top) and not job.matches(GENESIS_NONCE + 1, top - 1)


def test_bad_header_length_refused() -> None:
    with pytest.raises(ValueError, match="76 or 80 bytes"):
        Job.from_header(bytes(79))
    with pytest.raises(ValueError, match="64-byte block"):
        compress(IV, bytes(63))
