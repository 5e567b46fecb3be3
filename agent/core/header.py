"""Block header from Stratum V1 `mining.notify` fields, and the submit encodings back.

Pure functions shared by the Stratum client and the local pool, so both sides agree on every
byte order (see /work/shared/notes/stratum.md):

- version, nbits, ntime arrive as big-endian hex of the integer and sit little-endian in the header;
  submit's ntime and nonce go back the same way (header bytes 8c04f25a <-> submit nonce "5af2048c").
- prevhash arrives as the header-order 32 bytes with each 4-byte word byte-reversed.
- coinbase = coinb1 ‖ extranonce1 ‖ extranonce2 ‖ coinb2; the merkle root folds in the branch.
- version rolling (BIP 310): nVersion = (job_version & ~mask) | (version_bits & mask).

Every parser raises ValueError with a message naming the field; nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.core.job import sha256d

_HEX = re.compile(r"\A(?:[0-9a-fA-F]{2})*\Z")
MAX_COINBASE_PART_BYTES = 16_384  # a real coinbase is a few hundred bytes
MAX_MERKLE_BRANCH = 32  # 2^32 transactions would not fit in a block
MAX_JOB_ID_CHARS = 128


def parse_hex(value: Any, field_name: str, length_bytes: int | None = None) -> bytes:
    """Hex string to bytes, with the field named in the error and an optional exact length."""
    if not isinstance(value, str) or not _HEX.match(value):
        raise ValueError(f"{field_name}: expected an even-length hex string, got {value!r:.80}")
    raw = bytes.fromhex(value)
    if length_bytes is not None and len(raw) != length_bytes:
        raise ValueError(f"{field_name}: expected {length_bytes} bytes, got {len(raw)}")
    return raw


def parse_u32_hex(value: Any, field_name: str) -> int:
    """An 8-digit big-endian hex integer (version, nbits, ntime, nonce, version bits)."""
    return int.from_bytes(parse_hex(value, field_name, 4), "big")


def u32_hex(value: int) -> str:
    """The submit/notify encoding of a 32-bit field: big-endian hex of the integer."""
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"not a 32-bit value: {value}")
    return f"{value:08x}"


def swap_words(data: bytes) -> bytes:
    """Byte-reverse every 4-byte word (ckpool's swap_256 without the word reordering)."""
    if len(data) % 4:
        raise ValueError(f"length {len(data)} is not a multiple of 4")
    return b"".join(data[i : i + 4][::-1] for i in range(0, len(data), 4))


def prevhash_from_stratum(prevhash_hex: Any) -> bytes:
    """Notify's prevhash field to the 32 header-order bytes."""
    return swap_words(parse_hex(prevhash_hex, "prevhash", 32))


def prevhash_to_stratum(header_prevhash: bytes) -> str:
    """The inverse, for a pool: header-order bytes to notify's prevhash field."""
    if len(header_prevhash) != 32:
        raise ValueError(f"prevhash must be 32 bytes, got {len(header_prevhash)}")
    return swap_words(header_prevhash).hex()


def display_hash(hash_bytes: bytes) -> str:
    """A hash as block explorers print it (byte-reversed hex)."""
    return hash_bytes[::-1].hex()


def block_hash(header: bytes) -> str:
    return display_hash(sha256d(header))


def build_coinbase(coinb1: bytes, extranonce1: bytes, extranonce2: bytes, coinb2: bytes) -> bytes:
    return coinb1 + extranonce1 + extranonce2 + coinb2


def merkle_root(coinbase: bytes, branch: Sequence[bytes]) -> bytes:
    """Header-order merkle root: the coinbase txid folded with each branch hash on the right."""
    root = sha256d(coinbase)
    for node in branch:
        if len(node) != 32:
            raise ValueError(f"merkle branch entries must be 32 bytes, got {len(node)}")
        root = sha256d(root + node)
    return root


def roll_version(job_version: int, version_bits: int, mask: int) -> int:
    """BIP 310: the job's version outside the mask, the miner's bits inside it."""
    return (job_version & ~mask & 0xFFFFFFFF) | (version_bits & mask)


def spread_bits(counter: int, mask: int) -> int:
    """Place the low bits of `counter` into the set bits of `mask` (a software pdep).

    Lets a source walk every version-bits value a negotiated mask allows, lowest bit first.
    """
    result = 0
    bit = 0
    for position in range(32):
        if mask >> position & 1:
            if counter >> bit & 1:
                result |= 1 << position
            bit += 1
    return result


@dataclass(frozen=True, slots=True)
class Notify:
    """A validated `mining.notify`: every field decoded once, so bad input fails here, early."""

    job_id: str
    prevhash: bytes  # header order (already word-swapped)
    coinb1: bytes
    coinb2: bytes
    merkle_branch: tuple[bytes, ...]
    version: int
    nbits: int
    ntime: int
    clean_jobs: bool

    @classmethod
    def from_params(cls, params: Any) -> Notify:
        if not isinstance(params, list) or len(params) < 9:
            raise ValueError(f"mining.notify: expected 9 params, got {params!r:.120}")
        job_id, prevhash, coinb1, coinb2, branch, version, nbits, ntime, clean = params[:9]
        if not isinstance(job_id, str) or not 0 < len(job_id) <= MAX_JOB_ID_CHARS:
            raise ValueError(f"job_id: expected a short non-empty string, got {job_id!r:.80}")
        if not isinstance(branch, list) or len(branch) > MAX_MERKLE_BRANCH:
            raise ValueError(f"merkle_branch: expected a list of <= {MAX_MERKLE_BRANCH} hashes")
        if not isinstance(clean, bool):
            raise ValueError(f"clean_jobs: expected a boolean, got {clean!r:.40}")
        coinb1_bytes = parse_hex(coinb1, "coinb1")
        coinb2_bytes = parse_hex(coinb2, "coinb2")
        if max(len(coinb1_bytes), len(coinb2_bytes)) > MAX_COINBASE_PART_BYTES:
            raise ValueError("coinb1/coinb2: longer than any real coinbase")
        return cls(
            job_id=job_id,
            prevhash=prevhash_from_stratum(prevhash),
            coinb1=coinb1_bytes,
            coinb2=coinb2_bytes,
            merkle_branch=tuple(
                parse_hex(node, f"merkle_branch[{i}]", 32) for i, node in enumerate(branch)
            ),
            version=parse_u32_hex(version, "version"),
            nbits=parse_u32_hex(nbits, "nbits"),
            ntime=parse_u32_hex(ntime, "ntime"),
            clean_jobs=clean,
        )

    def to_params(self) -> list[Any]:
        """The wire form (what a pool sends)."""
        return [
            self.job_id,
            prevhash_to_stratum(self.prevhash),
            self.coinb1.hex(),
            self.coinb2.hex(),
            [node.hex() for node in self.merkle_branch],
            u32_hex(self.version),
            u32_hex(self.nbits),
            u32_hex(self.ntime),
            self.clean_jobs,
        ]


def build_header(
    notify: Notify,
    extranonce1: bytes,
    extranonce2: bytes,
    *,
    version: int | None = None,
    ntime: int | None = None,
    nonce: int = 0,
) -> bytes:
    """The 80-byte header: version ‖ prevhash ‖ merkle_root ‖ ntime ‖ nbits ‖ nonce.

    `version` is the full (possibly rolled) nVersion; default the job's. `nonce` follows the
    project convention: header[76:80] == nonce.to_bytes(4, "little").
    """
    coinbase = build_coinbase(notify.coinb1, extranonce1, extranonce2, notify.coinb2)
    return b"".join(
        (
            (notify.version if version is None else version).to_bytes(4, "little"),
            notify.prevhash,
            merkle_root(coinbase, notify.merkle_branch),
            (notify.ntime if ntime is None else ntime).to_bytes(4, "little"),
            notify.nbits.to_bytes(4, "little"),
            nonce.to_bytes(4, "little"),
        )
    )


@dataclass(frozen=True, slots=True)
class SubmitFields:
    """The header-derived strings of a `mining.submit` (worker, job id and extranonce2 aside)."""

    ntime: str
    nonce: str
    version_bits: str | None  # only when version rolling was negotiated


def submit_fields(header: bytes, version_mask: int = 0) -> SubmitFields:
    """Read ntime, nonce and the rolled version bits back out of a solved header."""
    if len(header) != 80:
        raise ValueError(f"header must be 80 bytes, got {len(header)}")
    version = int.from_bytes(header[0:4], "little")
    return SubmitFields(
        ntime=u32_hex(int.from_bytes(header[68:72], "little")),
        nonce=u32_hex(int.from_bytes(header[76:80], "little")),
        version_bits=u32_hex(version & version_mask) if version_mask else None,
    )


def network_target(nbits: int) -> int:
    """Compact nbits to the full target: mantissa · 256^(exponent − 3)."""
    exponent, mantissa = nbits >> 24, nbits & 0x007FFFFF
    if exponent <= 3:
        return mantissa >> (8 * (3 - exponent))
    return mantissa << (8 * (exponent - 3))
