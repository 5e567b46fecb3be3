"""The SHA-256d kernel on a real PoCL device against known answers and hashlib."""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Callable

import pyopencl as cl
import pytest

from agent.core.job import hash_value, sha256d
from agent.runtime.workloads.hashing import kernel as kernel_module
from agent.runtime.workloads.hashing.kernel import (
    VECTOR_WIDTHS,
    Sha256dKernel,
    default_cl_device,
    default_vector_width,
    kernel_args,
    list_cl_devices,
    select_cl_device,
)
from hal.errors import InvalidArgument
from hal.sha256 import midstate

from .conftest import (
    GENESIS_HASH_DISPLAY,
    GENESIS_HEADER76,
    GENESIS_NONCE,
    GENESIS_TARGET,
)

KernelFor = Callable[[int], Sha256dKernel]


def hashlib_hits(header76: bytes, start: int, count: int, target: int) -> list[int]:
    return [
        n
        for n in range(start, start + count)
        if hash_value(header76 + n.to_bytes(4, "little")) <= target
    ]


def target_for_hit_rate(hits: float, nonces: int) -> int:
    """A target that about `hits` of `nonces` random headers' hashes meet."""
    return int((1 << 256) * hits / nonces)


def test_genesis_header_is_what_the_tests_think() -> None:
    header = GENESIS_HEADER76 + GENESIS_NONCE.to_bytes(4, "little")
    assert sha256d(header)[::-1].hex() == GENESIS_HASH_DISPLAY


def test_midstate_is_sha256_of_one_padded_block() -> None:
    message = b"abc"
    block = message + b"\x80" + bytes(64 - len(message) - 9) + struct.pack(">Q", 8 * len(message))
    state = midstate(block)
    assert b"".join(w.to_bytes(4, "big") for w in state) == hashlib.sha256(message).digest()


@pytest.mark.parametrize("width", VECTOR_WIDTHS)
def test_finds_genesis_nonce_in_a_2_20_range(kernel_for: KernelFor, width: int) -> None:
    kernel = kernel_for(width)
    start = GENESIS_NONCE - 300_001  # not aligned to any vector width
    assert kernel.scan(GENESIS_HEADER76, start, 1 << 20, GENESIS_TARGET) == [GENESIS_NONCE]


@pytest.mark.parametrize("width", VECTOR_WIDTHS)
def test_genesis_nonce_at_both_ends_of_a_range(kernel_for: KernelFor, width: int) -> None:
    kernel = kernel_for(width)
    first = kernel.scan(GENESIS_HEADER76, GENESIS_NONCE, 1000, GENESIS_TARGET)
    last = kernel.scan(GENESIS_HEADER76, GENESIS_NONCE - 999, 1000, GENESIS_TARGET)
    alone = kernel.scan(GENESIS_HEADER76, GENESIS_NONCE, 1, GENESIS_TARGET)
    assert (first, last, alone) == ([GENESIS_NONCE], [GENESIS_NONCE], [GENESIS_NONCE])
    assert kernel.scan(GENESIS_HEADER76, GENESIS_NONCE + 1, 1000, GENESIS_TARGET) == []
    assert kernel.scan(GENESIS_HEADER76, GENESIS_NONCE - 1000, 1000, GENESIS_TARGET) == []


def test_accepts_an_80_byte_header_and_ignores_its_nonce(kernel_for: KernelFor) -> None:
    header80 = GENESIS_HEADER76 + b"\xff\xff\xff\xff"
    kernel = kernel_for(default_vector_width(default_cl_device()))
    assert kernel.scan(header80, GENESIS_NONCE - 5, 10, GENESIS_TARGET) == [GENESIS_NONCE]


@pytest.mark.parametrize("width", VECTOR_WIDTHS)
def test_nonce_zero_is_a_valid_find(kernel_for: KernelFor, width: int) -> None:
    header = random.Random(width).randbytes(76)
    target = hash_value(header + (0).to_bytes(4, "little"))  # nonce 0 meets it exactly
    found = kernel_for(width).scan(header, 0, 4096, target)
    assert found[:1] == [0]
    assert found == hashlib_hits(header, 0, 4096, target)


@pytest.mark.parametrize("width", [1, 16])
def test_last_nonce_of_the_nonce_space_is_found(kernel_for: KernelFor, width: int) -> None:
    header = random.Random(100 + width).randbytes(76)
    last = (1 << 32) - 1
    target = hash_value(header + last.to_bytes(4, "little"))
    found = kernel_for(width).scan(header, last - 4095, 4096, target)
    assert found[-1:] == [last]
    assert found == hashlib_hits(header, last - 4095, 4096, target)


@pytest.mark.parametrize("width", VECTOR_WIDTHS)
def test_found_set_equals_hashlib_on_random_headers(kernel_for: KernelFor, width: int) -> None:
    rng = random.Random(7 * width)
    count = 1 << 16
    target = target_for_hit_rate(40, count)
    for _ in range(2):
        header = rng.randbytes(76)
        start = rng.randrange(0, (1 << 32) - count)
        expected = hashlib_hits(header, start, count, target)
        assert len(expected) > 10  # the test means something
        assert kernel_for(width).scan(header, start, count, target) == expected


def test_full_found_buffer_is_rescanned_not_truncated(cl_device: cl.Device) -> None:
    kernel = Sha256dKernel(cl_device, capacity=3)
    header = random.Random(3).randbytes(76)
    count = 1 << 14
    target = target_for_hit_rate(60, count)
    expected = hashlib_hits(header, 12345, count, target)
    assert len(expected) > 3 * kernel.capacity
    assert kernel.scan(header, 12345, count, target) == expected


def test_hashes_done_counts_scanned_nonces(cl_device: cl.Device) -> None:
    kernel = Sha256dKernel(cl_device)
    kernel.scan(GENESIS_HEADER76, 0, 1000, GENESIS_TARGET)
    kernel.scan(GENESIS_HEADER76, 5000, 1 << 16, GENESIS_TARGET)
    assert kernel.hashes_done == 1000 + (1 << 16)


def test_job_constants_do_not_depend_on_the_nonce_field() -> None:
    a = kernel_args(GENESIS_HEADER76)
    b = kernel_args(GENESIS_HEADER76[:76])
    other = kernel_args(GENESIS_HEADER76[:75] + b"\x00")
    assert len(a) == 8 + 16 and a == b
    assert a != other


@pytest.mark.parametrize(
    ("header", "start", "count", "target", "message"),
    [
        (bytes(75), 0, 16, 1, "header must be 76 or 80 bytes"),
        (bytes(81), 0, 16, 1, "header must be 76 or 80 bytes"),
        (bytes(76), 0, 0, 1, "count must be >= 1"),
        (bytes(76), 0, -5, 1, "count must be >= 1"),
        (bytes(76), (1 << 32) - 10, 11, 1, r"passes 2\^32"),
        (bytes(76), 1 << 32, 1, 1, "start_nonce must be in"),
        (bytes(76), -1, 16, 1, "start_nonce must be in"),
        (bytes(76), 0, 16, -1, "target must be in"),
        (bytes(76), 0, 16, 1 << 256, "target must be in"),
    ],
)
def test_bad_scan_arguments_are_rejected(
    kernel_for: KernelFor, header: bytes, start: int, count: int, target: int, message: str
) -> None:
    kernel = kernel_for(16)
    before = kernel.hashes_done
    with pytest.raises(InvalidArgument, match=message):
        kernel.scan(header, start, count, target)
    assert kernel.hashes_done == before


def test_range_ending_exactly_at_2_32_is_allowed(kernel_for: KernelFor) -> None:
    header = random.Random(9).randbytes(76)
    target = target_for_hit_rate(8, 256)
    start = (1 << 32) - 256
    assert kernel_for(16).scan(header, start, 256, target) == hashlib_hits(
        header, start, 256, target
    )


@pytest.mark.parametrize("width", [0, 3, 32, -8])
def test_invalid_vector_width_is_rejected(cl_device: cl.Device, width: int) -> None:
    with pytest.raises(InvalidArgument, match="vector_width"):
        Sha256dKernel(cl_device, vector_width=width)


def test_invalid_tuning_arguments_are_rejected(cl_device: cl.Device) -> None:
    with pytest.raises(InvalidArgument, match="iterations"):
        Sha256dKernel(cl_device, iterations=3)
    with pytest.raises(InvalidArgument, match="local_size"):
        Sha256dKernel(cl_device, local_size=12)
    with pytest.raises(InvalidArgument, match="capacity"):
        Sha256dKernel(cl_device, capacity=0)


def test_default_device_prefers_debian_pocl_when_installed() -> None:
    devices = list_cl_devices()
    chosen = default_cl_device()
    if any("debian" in d.platform.version.lower() for d in devices):
        assert "debian" in chosen.platform.version.lower()
    assert chosen in devices


def test_select_device_by_index_name_and_default() -> None:
    default = default_cl_device()
    assert select_cl_device(None) == default
    assert select_cl_device("") == default
    assert select_cl_device("0:0") == cl.get_platforms()[0].get_devices()[0]
    assert select_cl_device(default.name.upper()) == default
    with pytest.raises(InvalidArgument, match="no OpenCL device"):
        select_cl_device("no-such-accelerator")
    with pytest.raises(InvalidArgument, match="no OpenCL device"):
        select_cl_device("9:9")


def test_a_kernel_that_reports_wrong_nonces_is_filtered_by_hashlib() -> None:
    """A kernel that reports every nonce it scans (a miscompiled or buggy vendor kernel): only
    the nonces hashlib confirms leave scan(), so no invalid share can ever be submitted."""
    source = kernel_module._kernel_source()
    lying = source.replace("BSWAP(last) <= target_top", "BSWAP(last) >= 0u").replace(
        "BSWAP(last) <= (u)target_top", "BSWAP(last) >= (u)0")
    assert lying != source
    device = default_cl_device()
    kernel = Sha256dKernel(device, vector_width=1, capacity=256, source=lying)
    start, count = GENESIS_NONCE - 700, 2048
    target = 1 << 248  # ~one nonce in 256 passes
    expected = hashlib_hits(GENESIS_HEADER76, start, count, target)
    assert 0 < len(expected) < count // 16
    assert kernel.scan(GENESIS_HEADER76, start, count, target) == expected
