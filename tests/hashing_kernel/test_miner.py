"""The miner loop on the real PoCL kernel against an in-process JobSource."""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable

import pyopencl as cl
import pytest

from agent.core.job import Job, hash_value
from agent.runtime.workloads.hashing.miner import HashingWorkload
from hal.errors import InvalidArgument

from .conftest import EmptyJobSource, FixedJobSource

EASY_TARGET = int((1 << 256) / (1 << 16))  # about one share per 65536 hashes


def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.fixture
def headers() -> tuple[bytes, bytes]:
    rng = random.Random(42)
    return rng.randbytes(76), rng.randbytes(76)


def test_finds_checks_and_submits_shares(
    cl_device: cl.Device, headers: tuple[bytes, bytes]
) -> None:
    source = FixedJobSource(headers[0], EASY_TARGET)
    miner = HashingWorkload(source, cl_device, launch_s=0.1)
    miner.start()
    try:
        assert wait_until(lambda: len(source.shares) >= 20, timeout_s=30)
        running = miner.stats()
    finally:
        assert miner.stop(timeout_s=10)
    stats = miner.stats()
    assert running.running and running.hashrate_hs > 0
    assert not stats.running and stats.error is None
    nonces = [share.nonce for share in source.shares]
    assert len(set(nonces)) == len(nonces)
    assert all(hash_value(share.header) <= EASY_TARGET for share in source.shares)
    assert all(share.header[:76] == headers[0] for share in source.shares)
    assert stats.shares_submitted == len(source.shares) == stats.shares_accepted
    assert stats.shares_found == stats.shares_submitted + stats.shares_dropped_stale
    assert stats.shares_rejected == 0
    assert stats.hashes_done >= 20 * 1000  # ~65536 per share expected; loose on purpose
    assert stats.jobs_started == 1  # 2^32 nonces per job: nowhere near exhausted


def test_submitted_shares_are_exactly_hashlibs_over_the_scanned_nonces(
    cl_device: cl.Device, headers: tuple[bytes, bytes]
) -> None:
    """Launches of 2^16 from nonce 0: no range skipped, none scanned twice, no share lost."""
    source = FixedJobSource(headers[0], EASY_TARGET)
    miner = HashingWorkload(source, cl_device, batch_log2=16)
    miner.start()
    try:
        assert wait_until(lambda: len(source.shares) >= 8, timeout_s=30)
    finally:
        assert miner.stop(timeout_s=10)
    scanned = miner.stats().hashes_done
    assert scanned % (1 << 16) == 0
    midstate = hashlib.sha256(headers[0][:64])
    expected = []
    for nonce in range(scanned):
        first = midstate.copy()
        first.update(headers[0][64:76] + nonce.to_bytes(4, "little"))
        digest = hashlib.sha256(first.digest()).digest()
        if int.from_bytes(digest, "little") <= EASY_TARGET:
            expected.append(nonce)
    assert [share.nonce for share in source.shares] == expected


def test_abandons_stale_work_when_generation_changes(
    cl_device: cl.Device, headers: tuple[bytes, bytes]
) -> None:
    old_header, new_header = headers
    source = FixedJobSource(old_header, EASY_TARGET)
    miner = HashingWorkload(source, cl_device, launch_s=0.1)
    miner.start()
    try:
        assert wait_until(lambda: len(source.shares) >= 3, timeout_s=30)
        source.switch(new_header)
        # A job covers 2^32 nonces (about a minute here): only abandoning it gets new work.
        assert wait_until(
            lambda: any(s.job.generation == 1 for s in list(source.shares)), timeout_s=10
        )
    finally:
        assert miner.stop(timeout_s=10)
    stats = miner.stats()
    assert stats.jobs_abandoned == 1
    assert stats.jobs_started == 2
    assert source.jobs_issued[-1].generation == 1
    assert source.stale_submissions == 0
    first_new = next(i for i, s in enumerate(source.shares) if s.job.generation == 1)
    assert all(s.header[:76] == new_header for s in source.shares[first_new:])


def test_stop_ends_the_thread_promptly(cl_device: cl.Device, headers: tuple[bytes, bytes]) -> None:
    source = FixedJobSource(headers[0], EASY_TARGET)
    miner = HashingWorkload(source, cl_device, launch_s=0.2)
    miner.start()
    assert wait_until(lambda: miner.stats().hashes_done > 0, timeout_s=30)
    started = time.monotonic()
    assert miner.stop(timeout_s=10)
    stop_s = time.monotonic() - started
    assert not miner.running
    assert stop_s < 5  # one launch (~0.2 s) plus slack for a loaded machine
    done = miner.stats().hashes_done
    time.sleep(0.3)
    assert miner.stats().hashes_done == done
    assert miner.stats().hashrate_hs == 0.0


def test_waits_for_work_and_still_stops(cl_device: cl.Device, headers: tuple[bytes, bytes]) -> None:
    source = EmptyJobSource(headers[0], EASY_TARGET)
    miner = HashingWorkload(source, cl_device, job_wait_s=0.1)
    miner.start()
    time.sleep(0.3)
    assert miner.running
    assert miner.stop(timeout_s=5)
    stats = miner.stats()
    assert (stats.hashes_done, stats.jobs_started, stats.error) == (0, 0, None)


def test_restarts_after_stop(cl_device: cl.Device, headers: tuple[bytes, bytes]) -> None:
    source = FixedJobSource(headers[0], EASY_TARGET)
    miner = HashingWorkload(source, cl_device, launch_s=0.05)
    miner.start()
    with pytest.raises(InvalidArgument, match="already running"):
        miner.start()
    assert miner.stop(timeout_s=10)
    first = miner.stats().hashes_done
    miner.start()
    assert wait_until(lambda: miner.stats().hashes_done > first, timeout_s=30)
    assert miner.stop(timeout_s=10)


def test_low_intensity_idles_between_launches(
    cl_device: cl.Device, headers: tuple[bytes, bytes]
) -> None:
    """At intensity 0.05 the thread sleeps ~19x each launch's time: in the same wall time it
    makes far fewer launches than flat out. Compared by launches, not by speed."""
    source = FixedJobSource(headers[0], EASY_TARGET)
    miner = HashingWorkload(source, cl_device, batch_log2=16, intensity=0.05)
    miner.start()
    time.sleep(1.0)
    assert miner.stop(timeout_s=10)
    slow = miner.stats().hashes_done >> 16
    full = HashingWorkload(FixedJobSource(headers[0], EASY_TARGET), cl_device, batch_log2=16)
    full.start()
    time.sleep(1.0)
    assert full.stop(timeout_s=10)
    fast = full.stats().hashes_done >> 16
    assert slow >= 1
    assert fast > 3 * slow


def test_thread_failure_is_reported_not_swallowed(
    cl_device: cl.Device, headers: tuple[bytes, bytes]
) -> None:
    class BrokenSource(FixedJobSource):
        def get_job(self, timeout_s: float) -> Job | None:
            raise ConnectionError("pool went away")

    miner = HashingWorkload(BrokenSource(headers[0], EASY_TARGET), cl_device)
    miner.start()
    assert wait_until(lambda: not miner.running, timeout_s=5)
    assert miner.stats().error == "ConnectionError: pool went away"


@pytest.mark.parametrize("intensity", [0.0, -0.5, 1.5, float("nan")])
def test_bad_intensity_is_rejected(
    cl_device: cl.Device, headers: tuple[bytes, bytes], intensity: float
) -> None:
    source = FixedJobSource(headers[0], EASY_TARGET)
    with pytest.raises(InvalidArgument, match="intensity"):
        HashingWorkload(source, cl_device, intensity=intensity)
    miner = HashingWorkload(source, cl_device, intensity=0.5)
    with pytest.raises(InvalidArgument, match="intensity"):
        miner.set_intensity(intensity)
    assert miner.stats().intensity == 0.5


def test_bad_settings_are_rejected(cl_device: cl.Device, headers: tuple[bytes, bytes]) -> None:
    source = FixedJobSource(headers[0], EASY_TARGET)
    for batch_log2 in (15, 31):
        with pytest.raises(InvalidArgument, match="batch_log2"):
            HashingWorkload(source, cl_device, batch_log2=batch_log2)
    with pytest.raises(InvalidArgument, match="launch_s"):
        HashingWorkload(source, cl_device, launch_s=0)
    with pytest.raises(InvalidArgument, match="vector_width"):
        HashingWorkload(source, cl_device, vector_width=5).start()


def test_stats_before_start(cl_device: cl.Device, headers: tuple[bytes, bytes]) -> None:
    miner = HashingWorkload(FixedJobSource(headers[0], EASY_TARGET), cl_device)
    stats = miner.stats()
    assert (stats.running, stats.hashrate_hs, stats.hashes_done) == (False, 0.0, 0)
    assert miner.stop() is True
