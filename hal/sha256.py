"""SHA-256 internals that hashlib does not expose: the round step and the compression function.

Miners need them for midstates (the state after the header's first 64 bytes, which every nonce
shares) and for precomputing the nonce-independent rounds (`HeaderPrecompute`, what the FPGA
core and the OpenCL kernel take from the host). Checked against hashlib in tests.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

K = (
    0x428A2F98, 0x71374491, 0xB5C0FBCF, 0xE9B5DBA5, 0x3956C25B, 0x59F111F1, 0x923F82A4, 0xAB1C5ED5,
    0xD807AA98, 0x12835B01, 0x243185BE, 0x550C7DC3, 0x72BE5D74, 0x80DEB1FE, 0x9BDC06A7, 0xC19BF174,
    0xE49B69C1, 0xEFBE4786, 0x0FC19DC6, 0x240CA1CC, 0x2DE92C6F, 0x4A7484AA, 0x5CB0A9DC, 0x76F988DA,
    0x983E5152, 0xA831C66D, 0xB00327C8, 0xBF597FC7, 0xC6E00BF3, 0xD5A79147, 0x06CA6351, 0x14292967,
    0x27B70A85, 0x2E1B2138, 0x4D2C6DFC, 0x53380D13, 0x650A7354, 0x766A0ABB, 0x81C2C92E, 0x92722C85,
    0xA2BFE8A1, 0xA81A664B, 0xC24B8B70, 0xC76C51A3, 0xD192E819, 0xD6990624, 0xF40E3585, 0x106AA070,
    0x19A4C116, 0x1E376C08, 0x2748774C, 0x34B0BCB5, 0x391C0CB3, 0x4ED8AA4A, 0x5B9CCA4F, 0x682E6FF3,
    0x748F82EE, 0x78A5636F, 0x84C87814, 0x8CC70208, 0x90BEFFFA, 0xA4506CEB, 0xBEF9A3F7, 0xC67178F2,
)  # fmt: skip
IV = (
    0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19,
)  # fmt: skip
MASK = 0xFFFFFFFF
HEADER_BITS = 640  # an 80-byte block header's length, the last word of its padded second block


def rotr(x: int, n: int) -> int:
    return ((x >> n) | (x << (32 - n))) & MASK


def big_s0(x: int) -> int:
    return rotr(x, 2) ^ rotr(x, 13) ^ rotr(x, 22)


def big_s1(x: int) -> int:
    return rotr(x, 6) ^ rotr(x, 11) ^ rotr(x, 25)


def small_s0(x: int) -> int:
    return rotr(x, 7) ^ rotr(x, 18) ^ (x >> 3)


def small_s1(x: int) -> int:
    return rotr(x, 17) ^ rotr(x, 19) ^ (x >> 10)


def round_step(state: list[int], k_plus_w: int) -> list[int]:
    """One round (FIPS 180-4, 6.2.2 step 3) given K[t] + W[t]."""
    a, b, c, d, e, f, g, h = state
    t1 = (h + big_s1(e) + ((e & f) ^ (~e & g)) + k_plus_w) & MASK
    t2 = (big_s0(a) + ((a & b) ^ (a & c) ^ (b & c))) & MASK
    return [(t1 + t2) & MASK, a, b, c, (d + t1) & MASK, e, f, g]


def compress(state: tuple[int, ...], block: bytes) -> tuple[int, ...]:
    """One compression of a 64-byte block into an 8-word state."""
    if len(block) != 64 or len(state) != 8:
        raise ValueError("compress needs an 8-word state and a 64-byte block")
    w = list(struct.unpack(">16I", block))
    for t in range(16, 64):
        w.append((small_s1(w[t - 2]) + w[t - 7] + small_s0(w[t - 15]) + w[t - 16]) & MASK)
    working = list(state)
    for t in range(64):
        working = round_step(working, (K[t] + w[t]) & MASK)
    return tuple((s + v) & MASK for s, v in zip(state, working, strict=True))


def midstate(block64: bytes) -> tuple[int, ...]:
    """The state after the first 64-byte block of a message (e.g. of an 80-byte header)."""
    return compress(IV, block64)


def sha256d_value(header80: bytes) -> int:
    """The double SHA-256 of a block header as the 256-bit number a target is compared with."""
    return int.from_bytes(hashlib.sha256(hashlib.sha256(header80).digest()).digest(), "little")


@dataclass(frozen=True, slots=True)
class HeaderPrecompute:
    """What SHA-256d of an 80-byte header computes the same way for every nonce.

    The header's second block is W0..W2 (header bytes 64..75), W3 (the nonce) and padding, so
    rounds 0..2 and the nonce-free part of round 3 depend on the job only, as do some message
    schedule words and partial sums. Hardware that takes these from the host runs the first
    hash from round 3 (a3 = pre_a3 + W3, e3 = pre_e3 + W3) and skips their adders. The names
    follow the round and schedule indices of FIPS 180-4; `words()` gives them in the order the
    FPGA core's PRE registers and the OpenCL kernel's arguments take them.
    """

    midstate: tuple[int, ...]
    pre_a3: int  # a after round 3, less W3
    pre_e3: int  # e after round 3, less W3
    a0: int
    a1: int
    a2: int
    e1: int
    e2: int
    r4: int  # h + K + W of rounds 4, 5, 6 (h is e0, e1, e2; W4..W6 are padding)
    r5: int
    r6: int
    w16: int
    w17: int
    p18: int  # W18 = p18 + s0(W3)
    p19: int  # W19 = p19 + W3
    p31: int  # W31 = s1(W29) + W24 + p31
    p32: int  # W32 = s1(W30) + W25 + p32

    @classmethod
    def from_header(cls, header: bytes) -> HeaderPrecompute:
        if len(header) not in (76, 80):
            raise ValueError(f"block header must be 76 or 80 bytes, got {len(header)}")
        state0 = midstate(header[:64])
        w0, w1, w2 = struct.unpack(">3I", header[64:76])
        states = [list(state0)]
        for t, w in enumerate((w0, w1, w2)):
            states.append(round_step(states[-1], (K[t] + w) & MASK))
        a2, b2, c2, d2, e2, f2, g2, h2 = states[3]
        t1_partial = (h2 + big_s1(e2) + ((e2 & f2) ^ (~e2 & g2)) + K[3]) & MASK
        t2 = (big_s0(a2) + ((a2 & b2) ^ (a2 & c2) ^ (b2 & c2))) & MASK
        w16 = (small_s0(w1) + w0) & MASK
        w17 = (small_s1(HEADER_BITS) + small_s0(w2) + w1) & MASK
        return cls(
            midstate=state0,
            pre_a3=(t1_partial + t2) & MASK,
            pre_e3=(d2 + t1_partial) & MASK,
            a0=states[1][0],
            a1=states[2][0],
            a2=a2,
            e1=states[2][4],
            e2=e2,
            r4=(states[1][4] + K[4] + 0x80000000) & MASK,
            r5=(states[2][4] + K[5]) & MASK,
            r6=(e2 + K[6]) & MASK,
            w16=w16,
            w17=w17,
            p18=(small_s1(w16) + w2) & MASK,
            p19=(small_s1(w17) + small_s0(0x80000000)) & MASK,
            p31=(small_s0(w16) + HEADER_BITS) & MASK,
            p32=(small_s0(w17) + w16) & MASK,
        )

    def words(self) -> tuple[int, ...]:
        """The 16 precomputed words (midstate excluded), PRE_A3 first."""
        return (
            self.pre_a3, self.pre_e3, self.a0, self.a1, self.a2, self.e1, self.e2,
            self.r4, self.r5, self.r6, self.w16, self.w17, self.p18, self.p19, self.p31, self.p32,
        )  # fmt: skip
