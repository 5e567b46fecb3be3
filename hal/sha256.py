"""SHA-256 internals that hashlib does not expose: the round step and the compression function.

Miners need them for midstates (the state after the header's first 64 bytes, which every nonce
shares) and for precomputing the nonce-independent rounds. Checked against hashlib in tests.
"""

from __future__ import annotations

import struct

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
