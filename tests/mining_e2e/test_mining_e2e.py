"""End to end on loopback: the Stratum client feeding the real SHA-256d kernel on PoCL, against
the local pool, which checks every share with hashlib."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from agent.core.job import Share, hash_value
from agent.demo.pool import LocalPool, PoolThread
from agent.runtime.workloads.hashing.kernel import Sha256dKernel, default_cl_device
from agent.runtime.workloads.hashing.miner import HashingWorkload
from agent.runtime.workloads.hashing.stratum import StratumClient

DIFFICULTY = 0.002  # ~8.6 M hashes a share: a fraction of a second on PoCL


def wait_for(predicate: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def kernel() -> Sha256dKernel:
    return Sha256dKernel(default_cl_device())


@pytest.fixture
def pool() -> Iterator[PoolThread]:
    handle = LocalPool(difficulty=DIFFICULTY).start_in_thread()
    yield handle
    handle.stop()


def client_for(*ports: int) -> StratumClient:
    return StratumClient([f"stratum+tcp://127.0.0.1:{p}" for p in ports], "e2e.rig",
                         backoff_initial_s=0.1, backoff_max_s=0.5, connect_timeout_s=2)


def accepted(pool: PoolThread) -> int:
    worker = pool.stats().workers.get("e2e.rig")
    return worker.accepted if worker else 0


def test_kernel_shares_are_accepted_and_hashrate_reported(pool: PoolThread) -> None:
    client = client_for(pool.port)
    client.start()
    miner = HashingWorkload(client, default_cl_device(), intensity=0.5)
    miner.start()
    try:
        wait_for(lambda: client.stats().accepted >= 3)
        stats = miner.stats()
        assert stats.hashrate_hs > 1e6
        assert stats.shares_rejected == 0
        assert accepted(pool) >= 3
        assert pool.stats().workers["e2e.rig"].rejected == 0
    finally:
        miner.stop()
        client.stop()


def test_a_share_found_before_clean_jobs_is_rejected_as_stale(
    pool: PoolThread, kernel: Sha256dKernel
) -> None:
    client = client_for(pool.port)
    client.start()
    try:
        job = client.get_job(timeout_s=10)
        assert job is not None
        nonces = kernel.scan(job.header[:76], 0, 1 << 26, job.target)
        assert nonces, "the kernel finds shares at this difficulty"
        assert all(hash_value(job.with_nonce(n)) <= job.target for n in nonces)
        generation = client.generation
        pool.new_block(clean=True)
        wait_for(lambda: client.generation > generation)
        client.submit(Share(job, nonces[0]))
        wait_for(lambda: client.stats().rejected >= 1, timeout_s=10)
        assert client.stats().rejected_by_reason.get("stale", 0) == 1
        assert pool.stats().workers["e2e.rig"].rejected_by_reason == {"stale": 1}
    finally:
        client.stop()


def test_mining_resumes_after_the_pool_is_killed_and_restarted(pool: PoolThread) -> None:
    port = pool.port
    client = client_for(port)
    client.start()
    miner = HashingWorkload(client, default_cl_device(), intensity=0.5)
    miner.start()
    restarted: PoolThread | None = None
    try:
        wait_for(lambda: client.stats().accepted >= 1)
        pool.stop()
        before = client.stats().accepted
        restarted = LocalPool(port=port, difficulty=DIFFICULTY).start_in_thread()
        wait_for(lambda: accepted(restarted) >= 2)
        assert client.stats().accepted >= before + 2
        assert miner.running
    finally:
        miner.stop()
        client.stop()
        if restarted is not None:
            restarted.stop()


def test_fails_over_to_the_second_pool(pool: PoolThread) -> None:
    down = LocalPool(difficulty=DIFFICULTY).start_in_thread()
    down_port = down.port
    down.stop()  # a pool that is gone: its port refuses connections
    client = client_for(down_port, pool.port)
    client.start()
    miner = HashingWorkload(client, default_cl_device(), intensity=0.5)
    miner.start()
    try:
        wait_for(lambda: accepted(pool) >= 2)
        assert client.status().pool_url == f"stratum+tcp://127.0.0.1:{pool.port}"
    finally:
        miner.stop()
        client.stop()
