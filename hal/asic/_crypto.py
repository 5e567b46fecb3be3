"""Whatsminer API v2's two primitives: md5-crypt here (pure Python), AES-256-ECB from
`cryptography`.

md5-crypt is not in `cryptography` (nor in Python 3.13's stdlib); it is small and pinned in tests
against the C library's crypt(3). This is protocol compatibility, not security: the vendor's
scheme (ECB, no MAC) is weak by design.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

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


def aes256_ecb_encrypt(key: bytes, data: bytes) -> bytes:
    """`data` must be a whole number of 16-byte blocks (the caller pads with NULs)."""
    encryptor = Cipher(algorithms.AES256(key), modes.ECB()).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def aes256_ecb_decrypt(key: bytes, data: bytes) -> bytes:
    decryptor = Cipher(algorithms.AES256(key), modes.ECB()).decryptor()
    return decryptor.update(data) + decryptor.finalize()
