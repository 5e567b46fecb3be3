"""Version rolling (BIP 310) against pools that know it and pools that do not: "auto" negotiates
where the pool answers and falls back without it where the pool hangs up on `mining.configure`
(ckpool 0.9.4), remembering that per pool for a backoff, then asking again (a pool that dropped
it once, restarting, gets version rolling back); False never asks; True always asks."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from stratum_helpers import wait_until

from agent.demo.pool import PoolThread
from agent.runtime.workloads.hashing.stratum import StratumClient
from hal.errors import InvalidArgument

StartPool = Callable[..., PoolThread]
MakeClient = Callable[..., StratumClient]


def _url(pool: PoolThread) -> str:
    return f"stratum+tcp://127.0.0.1:{pool.port}"


def test_auto_falls_back_when_the_pool_drops_configure(start_pool: StartPool,
                                                        make_client: MakeClient) -> None:
    pool = start_pool(drop_configure=True)
    client = make_client([_url(pool)])
    job = client.get_job(timeout_s=20)
    assert job is not None  # mining, where the old client looped forever with no job
    assert client.status().version_mask == 0 and client.status().authorized
    assert client.configure_refused() == [_url(pool)]
    seen = pool.methods_seen()
    assert seen.count("mining.configure") == 1  # asked once, remembered for this pool
    assert seen[-2:] == ["mining.subscribe", "mining.authorize"]


def test_auto_asks_again_after_a_backoff_and_rolls_once_the_pool_answers(
        start_pool: StartPool, make_client: MakeClient) -> None:
    pool = start_pool(drop_configure=True)  # dropped once: a restart, a proxy's reset
    client = make_client([_url(pool)])
    assert client.get_job(timeout_s=20) is not None
    assert client.configure_refused() == [_url(pool)]
    pool.pool.drop_configure = False  # the pool is itself again
    deadline = time.monotonic() + 20
    while client.status().version_mask != 0x1FFFE000:  # each new session may ask again
        assert time.monotonic() < deadline, "configure never asked again"
        pool.send_reconnect()
        wait_until(lambda: client.status().authorized, 10, "the next session")
        time.sleep(0.05)
    assert client.configure_refused() == [], "an answer clears the verdict"
    assert client.get_job(timeout_s=20) is not None


def test_auto_asks_a_pool_that_keeps_dropping_it_ever_more_rarely(
        start_pool: StartPool, make_client: MakeClient) -> None:
    """Not on every reconnect: after 1, 2, 4 ... times twice the reconnect backoff's cap."""
    pool = start_pool(drop_configure=True)
    client = make_client([_url(pool)], backoff_max_s=0.2)
    assert client.get_job(timeout_s=20) is not None
    ended = time.monotonic() + 3.0
    while time.monotonic() < ended:  # a session every few tens of milliseconds
        pool.send_reconnect()
        wait_until(lambda: client.status().authorized, 10, "the next session")
        time.sleep(0.02)
    seen = pool.methods_seen()
    sessions, asked = seen.count("mining.subscribe"), seen.count("mining.configure")
    assert sessions >= 15, f"only {sessions} sessions"
    assert 2 <= asked <= 6, f"configure asked {asked} times in {sessions} sessions"
    assert client.configure_refused() == [_url(pool)]


def test_auto_negotiates_where_the_pool_answers(start_pool: StartPool,
                                                make_client: MakeClient) -> None:
    pool = start_pool(version_mask=0x1FFFE000)
    client = make_client([_url(pool)])
    assert client.get_job(timeout_s=20) is not None
    wait_until(lambda: client.status().version_mask == 0x1FFFE000, 10, "the negotiated mask")
    assert client.configure_refused() == []
    assert pool.methods_seen()[0] == "mining.configure"


def test_off_never_sends_configure(start_pool: StartPool, make_client: MakeClient) -> None:
    pool = start_pool()
    client = make_client([_url(pool)], version_rolling=False)
    assert client.get_job(timeout_s=20) is not None
    assert "mining.configure" not in pool.methods_seen()
    assert client.status().version_mask == 0


def test_forced_keeps_asking(start_pool: StartPool, make_client: MakeClient) -> None:
    pool = start_pool(drop_configure=True)
    client = make_client([_url(pool)], version_rolling=True)
    wait_until(lambda: pool.methods_seen().count("mining.configure") >= 2, 20,
               "a second configure")
    assert client.configure_refused() == []
    assert client.get_job(timeout_s=0.1) is None  # the operator insisted; the pool refuses


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_bad_setting_is_refused(value: object) -> None:
    with pytest.raises(InvalidArgument, match="version_rolling"):
        StratumClient(["stratum+tcp://127.0.0.1:3333"], "w",
                      version_rolling=value)  # type: ignore[arg-type]
