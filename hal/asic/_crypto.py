"""The two primitives Whatsminer API v2 needs, in pure Python: md5-crypt and AES-256-ECB.

Why here: the project has no crypto dependency, both are small, and both are checked in tests
against reference vectors (FIPS-197 for AES, the C library's crypt(3) for md5-crypt). Messages
are a few hundred bytes, so speed does not matter. This is protocol compatibility, not security:
the vendor's scheme (ECB, no MAC) is weak by design.
"""

from __future__ import annotations

import functools
import hashlib
import operator

# --- md5-crypt ($1$), as in FreeBSD/glibc crypt(3) -------------------------------------------

_ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _to64(value: int, count: int) -> str:
    out = []
    for _ in range(count):
        out.append(_ITOA64[value & 0x3F])
        value >>= 6
    return "".join(out)


def md5_crypt(password: str, salt: str) -> str:
    """`$1$<salt>$<hash>`; `salt` may be given with or without the `$1$` prefix."""
    if salt.startswith("$1$"):
        salt = salt[3:]
    salt = salt.split("$", 1)[0][:8]
    pw = password.encode()
    sb = salt.encode()
    magic = b"$1$"
    alt = hashlib.md5(pw + sb + pw).digest()
    ctx = hashlib.md5(pw + magic + sb)
    length = len(pw)
    while length > 0:
        ctx.update(alt[: min(16, length)])
        length -= 16
    i = len(pw)
    while i:
        ctx.update(b"\x00" if i & 1 else pw[:1])
        i >>= 1
    final = ctx.digest()
    for round_no in range(1000):
        step = hashlib.md5()
        step.update(pw if round_no & 1 else final)
        if round_no % 3:
            step.update(sb)
        if round_no % 7:
            step.update(pw)
        step.update(final if round_no & 1 else pw)
        final = step.digest()
    encoded = ""
    for a, b, c in ((0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)):
        encoded += _to64((final[a] << 16) | (final[b] << 8) | final[c], 4)
    encoded += _to64(final[11], 2)
    return f"$1${salt}${encoded}"


# --- AES (FIPS-197), 256-bit key, ECB ---------------------------------------------------------


def _build_sbox() -> tuple[list[int], list[int]]:
    sbox = [0] * 256
    inv = [0] * 256
    p = q = 1
    while True:
        # multiply p by 3, divide q by 3 in GF(2^8)
        p = p ^ ((p << 1) & 0xFF) ^ (0x1B if p & 0x80 else 0)
        q ^= q << 1
        q ^= q << 2
        q ^= q << 4
        q &= 0xFF
        if q & 0x80:
            q ^= 0x09
        x = q ^ _rotl8(q, 1) ^ _rotl8(q, 2) ^ _rotl8(q, 3) ^ _rotl8(q, 4)
        sbox[p] = (x ^ 0x63) & 0xFF
        if p == 1:
            break
    sbox[0] = 0x63
    for i, v in enumerate(sbox):
        inv[v] = i
    return sbox, inv


def _rotl8(x: int, shift: int) -> int:
    return ((x << shift) | (x >> (8 - shift))) & 0xFF


_SBOX, _INV_SBOX = _build_sbox()


def _xtime(a: int) -> int:
    return ((a << 1) ^ 0x1B) & 0xFF if a & 0x80 else a << 1


def _mul(a: int, b: int) -> int:
    result = 0
    while b:
        if b & 1:
            result ^= a
        a = _xtime(a)
        b >>= 1
    return result


def _expand_key(key: bytes) -> list[list[int]]:
    if len(key) != 32:
        raise ValueError("AES-256 needs a 32-byte key")
    nk, rounds = 8, 14
    words = [list(key[4 * i: 4 * i + 4]) for i in range(nk)]
    rcon = 1
    for i in range(nk, 4 * (rounds + 1)):
        temp = list(words[i - 1])
        if i % nk == 0:
            temp = temp[1:] + temp[:1]
            temp = [_SBOX[b] for b in temp]
            temp[0] ^= rcon
            rcon = _xtime(rcon)
        elif i % nk == 4:
            temp = [_SBOX[b] for b in temp]
        words.append([a ^ b for a, b in zip(words[i - nk], temp, strict=True)])
    return [functools.reduce(operator.iadd, words[4 * r: 4 * r + 4], []) for r in range(rounds + 1)]


def _encrypt_block(block: bytes, round_keys: list[list[int]]) -> bytes:
    s = [b ^ k for b, k in zip(block, round_keys[0], strict=True)]
    for rnd in range(1, 15):
        s = [_SBOX[b] for b in s]
        s = [s[(i + 4 * (i % 4)) % 16] for i in range(16)]  # ShiftRows (column-major state)
        if rnd != 14:
            mixed = []
            for c in range(4):
                a0, a1, a2, a3 = s[4 * c: 4 * c + 4]
                mixed += [
                    _mul(a0, 2) ^ _mul(a1, 3) ^ a2 ^ a3,
                    a0 ^ _mul(a1, 2) ^ _mul(a2, 3) ^ a3,
                    a0 ^ a1 ^ _mul(a2, 2) ^ _mul(a3, 3),
                    _mul(a0, 3) ^ a1 ^ a2 ^ _mul(a3, 2),
                ]
            s = mixed
        s = [b ^ k for b, k in zip(s, round_keys[rnd], strict=True)]
    return bytes(s)


def _decrypt_block(block: bytes, round_keys: list[list[int]]) -> bytes:
    s = [b ^ k for b, k in zip(block, round_keys[14], strict=True)]
    for rnd in range(13, -1, -1):
        s = [s[(i - 4 * (i % 4)) % 16] for i in range(16)]  # InvShiftRows
        s = [_INV_SBOX[b] for b in s]
        s = [b ^ k for b, k in zip(s, round_keys[rnd], strict=True)]
        if rnd != 0:
            mixed = []
            for c in range(4):
                a0, a1, a2, a3 = s[4 * c: 4 * c + 4]
                mixed += [
                    _mul(a0, 14) ^ _mul(a1, 11) ^ _mul(a2, 13) ^ _mul(a3, 9),
                    _mul(a0, 9) ^ _mul(a1, 14) ^ _mul(a2, 11) ^ _mul(a3, 13),
                    _mul(a0, 13) ^ _mul(a1, 9) ^ _mul(a2, 14) ^ _mul(a3, 11),
                    _mul(a0, 11) ^ _mul(a1, 13) ^ _mul(a2, 9) ^ _mul(a3, 14),
                ]
            s = mixed
    return bytes(s)


def aes256_ecb_encrypt(key: bytes, data: bytes) -> bytes:
    if len(data) % 16:
        raise ValueError("ECB input must be a multiple of 16 bytes")
    keys = _expand_key(key)
    return b"".join(_encrypt_block(data[i: i + 16], keys) for i in range(0, len(data), 16))


def aes256_ecb_decrypt(key: bytes, data: bytes) -> bytes:
    if len(data) % 16:
        raise ValueError("ECB input must be a multiple of 16 bytes")
    keys = _expand_key(key)
    return b"".join(_decrypt_block(data[i: i + 16], keys) for i in range(0, len(data), 16))
