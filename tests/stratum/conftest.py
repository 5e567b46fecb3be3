"""Fixtures for the Stratum tests: a real LocalPool, real clients, scripted hostile pools."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from stratum_helpers import TEST_DIFFICULTY, RawStratum, Script, ScriptedPool

from agent.demo.pool import LocalPool, PoolThread
from agent.runtime.workloads.hashing.stratum import StratumClient


@pytest.fixture
def start_pool() -> Iterator[Callable[..., PoolThread]]:
    pools: list[PoolThread] = []

    def start(port: int = 0, difficulty: float = TEST_DIFFICULTY, **kwargs: Any) -> PoolThread:
        pool = LocalPool("127.0.0.1", port, difficulty=difficulty, **kwargs).start_in_thread()
        pools.append(pool)
        return pool

    yield start
    for pool in pools:
        pool.stop()


@pytest.fixture
def make_client() -> Iterator[Callable[..., StratumClient]]:
    clients: list[StratumClient] = []

    def make(pools: list[str], user: str = "rig1.worker", **kwargs: Any) -> StratumClient:
        options: dict[str, Any] = {
            "backoff_initial_s": 0.05,
            "backoff_max_s": 0.2,
            "line_timeout_s": 5.0,
            "connect_timeout_s": 2.0,
        }
        options.update(kwargs)
        client = StratumClient(pools, user, "x", **options)
        client.start()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.stop()


@pytest.fixture
def raw_client() -> Iterator[Callable[[int], RawStratum]]:
    opened: list[RawStratum] = []

    def connect(port: int) -> RawStratum:
        client = RawStratum(port)
        opened.append(client)
        return client

    yield connect
    for client in opened:
        client.close()


@pytest.fixture
def scripted_pool() -> Iterator[Callable[[list[Script]], ScriptedPool]]:
    pools: list[ScriptedPool] = []

    def start(scripts: list[Script]) -> ScriptedPool:
        pool = ScriptedPool(scripts)
        pools.append(pool)
        return pool

    yield start
    for pool in pools:
        pool.stop()
