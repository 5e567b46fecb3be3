"""The host side of the core without a simulator: the golden model agrees with real blocks, the
precomputation the host writes to the core continues to hashlib's digest, and the driver's job
validation and register writes are what the CSR map says."""

from __future__ import annotations

import hashlib
import random
import struct

import pytest
import sha256d_model as model

from hal.errors import InvalidArgument
from hal.sha256 import MASK, HeaderPrecompute, K, round_step, small_s0, small_s1
from hal.sha256d_core import Job, Reg, target_word


def test_known_blocks() -> None:
    assert model.block_hash_hex(model.genesis_header()) == model.GENESIS_HASH
    assert model.block_hash_hex(model.block_125552_header()) == model.BLOCK_125552_HASH
    genesis = model.genesis_header()
    assert model.header_with(genesis, model.GENESIS_NONCE) == genesis
    assert model.value(genesis, model.GENESIS_NONCE) <= model.DIFFICULTY_1_TARGET
    assert model.top32(genesis, model.GENESIS_NONCE) == 0


def test_top_word_is_h7_byteswapped() -> None:
    header = random.Random(3).randbytes(80)
    for nonce in range(20):
        h7 = model.h7(header, nonce)
        assert model.top32(header, nonce) == int.from_bytes(h7.to_bytes(4, "big"), "little")


def schedule(block: bytes) -> list[int]:
    w = list(struct.unpack(">16I", block))
    for t in range(16, 64):
        w.append((small_s1(w[t - 2]) + w[t - 7] + small_s0(w[t - 15]) + w[t - 16]) & MASK)
    return w


@pytest.mark.parametrize("seed", range(5))
def test_precompute_continues_to_hashlib_first_digest(seed: int) -> None:
    """From the host's words the core runs rounds 3..63; doing that here gives sha256(header)."""
    header = random.Random(seed).randbytes(80)
    pre = HeaderPrecompute.from_header(header)
    second_block = header[64:] + b"\x80" + bytes(39) + struct.pack(">Q", 640)
    w = schedule(second_block)
    assert (pre.w16, pre.w17) == (w[16], w[17])
    assert w[18] == (pre.p18 + small_s0(w[3])) & MASK
    assert w[19] == (pre.p19 + w[3]) & MASK
    assert w[31] == (small_s1(w[29]) + w[24] + pre.p31) & MASK
    assert w[32] == (small_s1(w[30]) + w[25] + pre.p32) & MASK

    state = [(pre.pre_a3 + w[3]) & MASK, pre.a2, pre.a1, pre.a0,
             (pre.pre_e3 + w[3]) & MASK, pre.e2, pre.e1, 0]  # fmt: skip
    # Rounds 4..6 take h + K[t] + W[t] as one word from the host (r4..r6): h is e0..e2.
    for hkw in (pre.r4, pre.r5, pre.r6):
        state = round_step([*state[:7], 0], hkw)
    for t in range(7, 64):
        state = round_step(state, (K[t] + w[t]) & MASK)
    digest = struct.pack(">8I", *((m + s) & MASK for m, s in zip(pre.midstate, state, strict=True)))
    assert digest == hashlib.sha256(header).digest()


def test_job_register_writes_follow_the_csr_map() -> None:
    header = model.genesis_header()
    job = Job(header, 10, 20, model.DIFFICULTY_1_TARGET, tag=3)
    writes = dict(job.register_writes())
    pre = HeaderPrecompute.from_header(header)
    assert writes[Reg.JOB_TAG] == 3
    assert writes[Reg.TARGET] == 0  # the top word of the difficulty-1 target
    assert (writes[Reg.NONCE_FIRST], writes[Reg.NONCE_LAST]) == (10, 20)
    assert [writes[Reg.MIDSTATE0 + 4 * i] for i in range(8)] == list(pre.midstate)
    tail = list(struct.unpack(">3I", header[64:76]))
    assert [writes[Reg.TAIL0 + 4 * i] for i in range(3)] == tail
    assert [writes[Reg.PRE0 + 4 * i] for i in range(16)] == list(pre.words())
    assert len(writes) == 4 + 8 + 3 + 16


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"header": bytes(79)}, "76 or 80 bytes"),
        ({"nonce_first": -1}, "32-bit nonce"),
        ({"nonce_last": 1 << 32}, "32-bit nonce"),
        ({"nonce_first": 5, "nonce_last": 4}, "nonce_last 4 < nonce_first 5"),
        ({"target": 1 << 256}, "256-bit"),
    ],
)
def test_bad_jobs_refused(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {
        "header": bytes(80),
        "nonce_first": 0,
        "nonce_last": 9,
        "target": 0,
        **kwargs,
    }
    with pytest.raises(InvalidArgument, match=message):
        Job(**fields)  # type: ignore[arg-type]


def test_target_word_never_loses_a_hash_that_meets_the_target() -> None:
    rng = random.Random(4)
    for _ in range(200):
        target = rng.getrandbits(256)
        value = rng.randrange(0, target + 1)
        assert value >> 224 <= target_word(target)
