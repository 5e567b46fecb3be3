"""StratumClient against a real LocalPool on loopback."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from stratum_helpers import TEST_DIFFICULTY, find_bad_nonce, find_share, url, wait_until

from agent.core.job import Job, Share, target_for_difficulty
from agent.core.pool_url import parse_pool_url
from agent.demo.pool import PoolThread
from agent.runtime.workloads.hashing.stratum import StratumClient, backoff_delay_s
from hal.errors import InvalidArgument
from tests.ports import free_port

StartPool = Callable[..., PoolThread]
MakeClient = Callable[..., StratumClient]


def next_job(client: StratumClient, timeout_s: float = 10.0) -> Job:
    job = client.get_job(timeout_s)
    assert job is not None, "no job from the client"
    return job


def test_subscribe_authorize_and_jobs(start_pool: StartPool, make_client: MakeClient) -> None:
    pool = start_pool()
    client = make_client([url(pool.port)])
    first, second = next_job(client), next_job(client)
    status = client.status()
    assert status.authorized
    assert status.pool_url == url(pool.port)
    assert status.version_mask == 0x1FFFE000
    assert first.target == target_for_difficulty(TEST_DIFFICULTY)
    assert first.source == url(pool.port)
    assert first.job_id == second.job_id
    assert first.extranonce2 != second.extranonce2  # fresh work on every call
    assert len(first.extranonce2) == 4
    assert first.header[36:68] != second.header[36:68]  # so a different merkle root
    assert first.header[4:36] == second.header[4:36]  # same prevhash
    version = int.from_bytes(second.header[:4], "little")
    assert version & ~0x1FFFE000 == 0x20000000  # rolled only inside the mask
    assert client.generation == first.generation


def test_shares_are_accepted(start_pool: StartPool, make_client: MakeClient) -> None:
    pool = start_pool()
    client = make_client([url(pool.port)], user="rig1.gpu0")
    for _ in range(2):
        client.submit(find_share(next_job(client)))  # the 2nd job rolls version bits
    wait_until(lambda: client.stats().accepted == 2, what="2 accepted shares")
    assert client.stats().rejected == 0
    worker = pool.stats().workers["rig1.gpu0"]
    assert (worker.accepted, worker.rejected) == (2, 0)
    assert worker.hashrate_hs > 0


def test_invalid_share_is_never_sent(start_pool: StartPool, make_client: MakeClient) -> None:
    pool = start_pool()
    client = make_client([url(pool.port)])
    job = next_job(client)
    client.submit(Share(job, find_bad_nonce(job)))
    assert client.stats().rejected_by_reason == {"local:above target": 1}
    client.submit(find_share(job))  # a good one afterwards proves the pool would have heard
    wait_until(lambda: client.stats().accepted == 1)
    worker = pool.stats().workers["rig1.worker"]
    assert (worker.accepted, worker.rejected) == (1, 0)


def test_stale_share_after_clean_jobs(start_pool: StartPool, make_client: MakeClient) -> None:
    pool = start_pool()
    client = make_client([url(pool.port)])
    job = next_job(client)
    share = find_share(job)
    pool.new_block(clean=True)
    wait_until(lambda: client.generation > job.generation, what="a generation bump")
    assert next_job(client).job_id != job.job_id
    client.submit(share)
    wait_until(lambda: client.stats().rejected == 1)
    assert client.stats().rejected_by_reason == {"stale": 1}
    assert pool.stats().workers["rig1.worker"].rejected_by_reason == {"stale": 1}


def test_new_block_without_clean_keeps_the_generation(start_pool: StartPool,
                                                      make_client: MakeClient) -> None:
    pool = start_pool()
    client = make_client([url(pool.port)])
    job = next_job(client)
    new_job_id = pool.new_block(clean=False)
    wait_until(lambda: next_job(client).job_id == new_job_id)
    assert client.generation == job.generation
    client.submit(find_share(job))  # the older job is still valid
    wait_until(lambda: client.stats().accepted == 1)


def test_duplicate_share_is_rejected(start_pool: StartPool, make_client: MakeClient) -> None:
    pool = start_pool()
    client = make_client([url(pool.port)])
    share = find_share(next_job(client))
    client.submit(share)
    client.submit(share)
    wait_until(lambda: client.stats().accepted + client.stats().rejected == 2)
    assert client.stats().accepted == 1
    assert client.stats().rejected_by_reason == {"duplicate": 1}


def test_set_difficulty_changes_the_target(start_pool: StartPool,
                                           make_client: MakeClient) -> None:
    pool = start_pool()
    client = make_client([url(pool.port)])
    next_job(client)
    pool.set_difficulty(0.5)
    wait_until(lambda: next_job(client).target == target_for_difficulty(0.5))


def test_reconnects_after_the_pool_restarts(start_pool: StartPool,
                                            make_client: MakeClient) -> None:
    pool = start_pool()
    port = pool.port
    client = make_client([url(port)])
    job = next_job(client)
    pool.stop()
    wait_until(lambda: client.get_job(0) is None, what="work withdrawn")
    assert client.generation > job.generation
    restarted = start_pool(port=port)
    new_job = next_job(client)
    assert client.status().sessions_started >= 2
    client.submit(find_share(job))  # from the dead session: dropped, not sent
    client.submit(find_share(new_job))
    wait_until(lambda: client.stats().accepted == 1)
    assert client.stats().rejected_by_reason == {"local:stale session": 1}
    assert restarted.stats().workers["rig1.worker"].accepted == 1


def test_fails_over_to_the_second_pool(start_pool: StartPool, make_client: MakeClient) -> None:
    dead_port = free_port()
    backup = start_pool()
    client = make_client([url(dead_port), url(backup.port)])
    job = next_job(client)
    assert job.source == url(backup.port)
    client.submit(find_share(job))
    wait_until(lambda: client.stats().accepted == 1)
    assert backup.stats().workers["rig1.worker"].accepted == 1


def test_prefers_the_first_pool_again_after_it_returns(start_pool: StartPool,
                                                       make_client: MakeClient) -> None:
    primary_port = free_port()
    backup = start_pool()
    client = make_client([url(primary_port), url(backup.port)])
    assert next_job(client).source == url(backup.port)
    start_pool(port=primary_port)
    backup.stop()  # the backup's session ends: the next round starts at the primary
    wait_until(lambda: (j := client.get_job(0.1)) is not None and j.source == url(primary_port))


def test_client_reconnect_is_honoured(start_pool: StartPool, make_client: MakeClient) -> None:
    pool = start_pool()
    client = make_client([url(pool.port)])
    job = next_job(client)
    pool.send_reconnect()
    wait_until(lambda: client.status().sessions_started == 2, what="a second session")
    assert next_job(client).generation > job.generation


def test_client_reconnect_to_another_port(start_pool: StartPool,
                                          make_client: MakeClient) -> None:
    first, second = start_pool(), start_pool()
    client = make_client([url(first.port)])
    next_job(client)
    first.send_reconnect("127.0.0.1", second.port, 0)
    wait_until(lambda: (j := client.get_job(0.1)) is not None and j.source == url(second.port))


def test_client_reconnect_to_a_foreign_host_is_refused(start_pool: StartPool,
                                                       make_client: MakeClient) -> None:
    pool = start_pool()
    client = make_client([url(pool.port)])
    next_job(client)
    pool.send_reconnect("pool.example.com", 3333, 0)
    wait_until(lambda: client.status().sessions_started == 2)
    assert next_job(client).source == url(pool.port)  # back to the configured pool


@pytest.mark.parametrize(
    "bad_url",
    ["tcp://127.0.0.1:3333", "stratum+tcp://127.0.0.1", "stratum+tcp://:3333",
     "stratum+tcp://127.0.0.1:99999", "stratum+tcp://user@host:3333", "stratum+tcp://a b:1"],
)
def test_bad_pool_urls_are_refused(bad_url: str) -> None:
    with pytest.raises(InvalidArgument, match="pool URL"):
        StratumClient([bad_url], "user")


def test_pool_url_parsing() -> None:
    assert parse_pool_url("stratum+tcp://127.0.0.1:3333").port == 3333
    assert parse_pool_url("stratum+tcp://[::1]:3334").host == "::1"
    assert parse_pool_url("stratum+tcp://[::1]:3334").url == "stratum+tcp://[::1]:3334"


def test_backoff_grows_is_capped_and_jittered() -> None:
    delays = [[backoff_delay_s(n, 1.0, 60.0) for _ in range(200)] for n in range(1, 10)]
    for failures, samples in enumerate(delays, start=1):
        base = min(60.0, 2.0 ** (failures - 1))
        assert all(base / 2 <= d <= base for d in samples)
        assert len(set(samples)) > 100  # jittered, not in lock step
    assert max(delays[-1]) <= 60.0
    assert backoff_delay_s(10_000, 1.0, 60.0) <= 60.0


def test_submit_without_a_running_client_is_counted_not_raised() -> None:
    client = StratumClient([url(free_port())], "user")
    job = Job("j", bytes(80), target=2**256 - 1)
    client.submit(Share(job, 0))
    client.start()
    client.stop()
    assert not client.running
    client.submit(Share(job, 0))
    assert client.stats().rejected_by_reason == {"local:not running": 2}
    assert client.get_job(0.05) is None
