"""Header builder against real blocks: notify fields in, the published block hash out.

Block 125552 (4 transactions, non-zero prevhash) is rebuilt from its public coinbase and txids,
split the way a pool would split it (coinb1 ‖ extranonce1 ‖ extranonce2 ‖ coinb2).
"""

from __future__ import annotations

import pytest
from stratum_helpers import (
    B125552_COINB1,
    B125552_COINB2,
    B125552_COINBASE_TXID,
    B125552_EXTRANONCE1,
    B125552_EXTRANONCE2,
    B125552_HASH,
    B125552_MERKLE,
    B125552_NBITS,
    B125552_NONCE,
    B125552_NTIME,
    B125552_PREV,
    B125552_TXIDS,
    B125552_VERSION,
    stratum_prevhash,
)

from agent.core.header import (
    Notify,
    block_hash,
    build_header,
    display_hash,
    merkle_root,
    network_target,
    parse_u32_hex,
    prevhash_from_stratum,
    prevhash_to_stratum,
    roll_version,
    spread_bits,
    submit_fields,
    swap_words,
)
from agent.core.job import DIFF1_TARGET, Job, hash_value, sha256d

# The genesis block: its whole coinbase, with the two extranonces carved out of the headline.
GENESIS_HASH = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
GENESIS_COINBASE = (
    "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff4d04"
    "ffff001d0104455468652054696d65732030332f4a616e2f32303039204368616e63656c6c6f72206f6e20"
    "6272696e6b206f66207365636f6e64206261696c6f757420666f722062616e6b73ffffffff0100f2052a01"
    "000000434104678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649f6bc3f4c"
    "ef38c4f35504e51ec112de5c384df7ba0b8d578a4c702b6bf11d5fac00000000"
)


def txid_bytes(txid: str) -> bytes:
    return bytes.fromhex(txid)[::-1]


def notify_125552(prevhash: str | None = None) -> Notify:
    tx1, tx2, tx3 = (txid_bytes(t) for t in B125552_TXIDS)
    branch = [tx1.hex(), sha256d(tx2 + tx3).hex()]
    return Notify.from_params([
        "125552",
        prevhash if prevhash is not None else stratum_prevhash(B125552_PREV),
        B125552_COINB1,
        B125552_COINB2,
        branch,
        f"{B125552_VERSION:08x}",
        f"{B125552_NBITS:08x}",
        f"{B125552_NTIME:08x}",
        True,
    ])


def test_block_125552_hash_from_notify_fields() -> None:
    notify = notify_125552()
    header = build_header(notify, bytes.fromhex(B125552_EXTRANONCE1),
                          bytes.fromhex(B125552_EXTRANONCE2), nonce=B125552_NONCE)
    assert len(header) == 80
    assert display_hash(header[36:68]) == B125552_MERKLE
    assert block_hash(header) == B125552_HASH
    assert hash_value(header) <= network_target(B125552_NBITS)


def test_block_125552_coinbase_is_the_real_one() -> None:
    coinbase = bytes.fromhex(
        B125552_COINB1 + B125552_EXTRANONCE1 + B125552_EXTRANONCE2 + B125552_COINB2
    )
    assert display_hash(sha256d(coinbase)) == B125552_COINBASE_TXID
    tx1, tx2, tx3 = (txid_bytes(t) for t in B125552_TXIDS)
    assert display_hash(merkle_root(coinbase, [tx1, sha256d(tx2 + tx3)])) == B125552_MERKLE


@pytest.mark.parametrize(
    "wrong_prevhash",
    [
        B125552_PREV,  # the displayed form, as if no swap were needed
        bytes.fromhex(B125552_PREV)[::-1].hex(),  # already header order
    ],
)
def test_other_prevhash_orders_give_another_block(wrong_prevhash: str) -> None:
    notify = notify_125552(prevhash=wrong_prevhash)
    header = build_header(notify, bytes.fromhex(B125552_EXTRANONCE1),
                          bytes.fromhex(B125552_EXTRANONCE2), nonce=B125552_NONCE)
    assert block_hash(header) != B125552_HASH


def test_prevhash_word_swap_round_trip() -> None:
    on_the_wire = stratum_prevhash(B125552_PREV)
    header_order = prevhash_from_stratum(on_the_wire)
    assert header_order == bytes.fromhex(B125552_PREV)[::-1]
    assert header_order != bytes.fromhex(on_the_wire)
    assert prevhash_to_stratum(header_order) == on_the_wire
    assert swap_words(bytes.fromhex("0102030405060708")) == bytes.fromhex("0403020108070605")


def test_genesis_header() -> None:
    text_at = GENESIS_COINBASE.index("5468652054696d6573")  # "The Times"
    coinb1 = GENESIS_COINBASE[:text_at]
    extranonce1 = GENESIS_COINBASE[text_at : text_at + 8]
    extranonce2 = GENESIS_COINBASE[text_at + 8 : text_at + 16]
    coinb2 = GENESIS_COINBASE[text_at + 16 :]
    notify = Notify.from_params(
        ["0", "00" * 32, coinb1, coinb2, [], "00000001", "1d00ffff", "495fab29", True]
    )
    header = build_header(notify, bytes.fromhex(extranonce1), bytes.fromhex(extranonce2),
                          nonce=2083236893)
    assert block_hash(header) == GENESIS_HASH
    assert network_target(0x1D00FFFF) == DIFF1_TARGET


def test_submit_nonce_and_ntime_encoding() -> None:
    job = Job("j", bytes(68) + bytes.fromhex("c7f5d74d") + bytes(8), target=1)
    header = job.with_nonce(0x5AF2048C)
    assert header[76:80] == bytes.fromhex("8c04f25a")
    fields = submit_fields(header)
    assert fields.nonce == "5af2048c"
    assert fields.ntime == "4dd7f5c7"
    assert fields.version_bits is None
    assert job.with_nonce(parse_u32_hex(fields.nonce, "nonce")) == header


def test_submit_fields_of_the_real_block() -> None:
    header = build_header(notify_125552(), bytes.fromhex(B125552_EXTRANONCE1),
                          bytes.fromhex(B125552_EXTRANONCE2), nonce=B125552_NONCE)
    fields = submit_fields(header)
    assert fields.ntime == "4dd7f5c7"
    assert fields.nonce == f"{B125552_NONCE:08x}" == "9546a142"
    assert header[76:80].hex() == "42a14695"


def test_version_rolling_mask_arithmetic() -> None:
    mask = 0x1FFFE000
    assert roll_version(0x20000000, 0xFFFFFFFF, mask) == 0x3FFFE000
    assert roll_version(0x20000004, 0, mask) == 0x20000004
    assert roll_version(0x3FFFFFFF, 0, mask) == 0x20001FFF  # job bits under the mask replaced
    assert spread_bits(0b101, mask) == (1 << 13) | (1 << 15)
    assert spread_bits(0xFFFF, mask) == mask
    assert spread_bits(1 << 16, mask) == 0  # only 16 bits of room in this mask
    notify = notify_125552()
    version = roll_version(notify.version, spread_bits(5, mask), mask)
    header = build_header(notify, b"\0" * 4, b"\0" * 4, version=version)
    fields = submit_fields(header, mask)
    assert fields.version_bits == f"{spread_bits(5, mask):08x}" == "0000a000"
    assert int.from_bytes(header[:4], "little") == 0x0000A001


@pytest.mark.parametrize(
    ("index", "value", "field_name"),
    [
        (4, ["ab" * 31], "merkle_branch[0]"),  # a 31-byte branch hash
        (4, "not-a-list", "merkle_branch"),
        (1, "00" * 31, "prevhash"),
        (2, "abc", "coinb1"),  # odd length
        (3, "zz", "coinb2"),
        (5, 536870912, "version"),  # an int where hex belongs
        (6, "1d00ff", "nbits"),
        (7, None, "ntime"),
        (8, "true", "clean_jobs"),
        (0, "", "job_id"),
    ],
)
def test_notify_rejects_bad_fields(index: int, value: object, field_name: str) -> None:
    params = notify_125552().to_params()
    params[index] = value
    with pytest.raises(ValueError, match=field_name.replace("[", r"\[").replace("]", r"\]")):
        Notify.from_params(params)


def test_notify_wire_round_trip() -> None:
    notify = notify_125552()
    assert Notify.from_params(notify.to_params()) == notify
    with pytest.raises(ValueError, match="9 params"):
        Notify.from_params(notify.to_params()[:8])
