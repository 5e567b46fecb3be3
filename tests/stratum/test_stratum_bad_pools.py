"""A hostile or broken pool: the client logs, drops the connection, retries, never crashes,
and never sends an invalid share. Each fake pool is a tiny asyncio TCP server on loopback whose
first connection misbehaves and whose later connections behave, so recovery is observable."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from stratum_helpers import (
    PoolConnection,
    Script,
    ScriptedPool,
    find_bad_nonce,
    find_share,
    url,
    wait_until,
)

from agent.core.header import Notify, roll_version
from agent.core.job import Job, Share
from agent.runtime.workloads.hashing.stratum import StratumClient

StartScripted = Callable[[list[Script]], ScriptedPool]
MakeClient = Callable[..., StratumClient]
EXTRANONCE1 = "f000000d"
DIFFICULTY = 0.00002  # every case mines the same job: keep its share search short


def notify_params(job_id: str = "good") -> list[Any]:
    return Notify(
        job_id=job_id,
        prevhash=bytes(range(28)) + bytes(4),
        coinb1=bytes.fromhex("01000000010000000000000000000000000000000000000000000000000000000000"
                             "000000ffffffff0f0304b00c"),
        coinb2=b"/fake/" + bytes.fromhex("ffffffff0100f2052a010000000000000000"),
        merkle_branch=(bytes(32), b"\x11" * 32),
        version=0x20000000,
        nbits=0x1D00FFFF,
        ntime=0x65000000,
        clean_jobs=True,
    ).to_params()


async def handshake(conn: PoolConnection, send_job: bool = True) -> None:
    """Answer configure/subscribe/authorize like a sane pool, then (optionally) send a job."""
    while True:
        message = await conn.read_message()
        if message is None:
            return
        method, request_id = message.get("method"), message.get("id")
        if method == "mining.configure":
            await conn.send({"id": request_id, "error": None,
                             "result": {"version-rolling": True,
                                        "version-rolling.mask": "1fffe000"}})
        elif method == "mining.subscribe":
            await conn.send({"id": request_id, "error": None,
                             "result": [[["mining.notify", "1"]], EXTRANONCE1, 4]})
        elif method == "mining.authorize":
            await conn.send({"id": request_id, "result": True, "error": None})
            await conn.send({"id": None, "method": "mining.set_difficulty",
                             "params": [DIFFICULTY]})
            if send_job:
                await conn.send({"id": None, "method": "mining.notify",
                                 "params": notify_params()})
            return


async def serve_well(conn: PoolConnection) -> None:
    await handshake(conn)
    while (message := await conn.read_message()) is not None:
        if message.get("method") == "mining.submit":
            await conn.send({"id": message.get("id"), "result": True, "error": None})


def then_send(bad: bytes, send_job: bool = False) -> Script:
    async def script(conn: PoolConnection) -> None:
        await handshake(conn, send_job=send_job)
        await conn.send_raw(bad)
        await conn.drain_until_closed()

    return script


def line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


def method_line(method: str, params: Any) -> bytes:
    return line({"id": None, "method": method, "params": params})


def notify_with(index: int, value: Any) -> bytes:
    params = notify_params()
    params[index] = value
    return method_line("mining.notify", params)


async def bad_subscribe_types(conn: PoolConnection) -> None:
    message = await conn.read_message()
    while message is not None and message.get("method") != "mining.subscribe":
        message = await conn.read_message()
    assert message is not None
    await conn.send({"id": message["id"], "error": None,
                     "result": [[], 12345, "four"]})  # extranonce1 an int, size a string
    await conn.drain_until_closed()


async def silent_mid_line(conn: PoolConnection) -> None:
    await conn.read_message()
    await conn.send_raw(b'{"id": 1, "result": {"version-rolling": tr')
    await conn.drain_until_closed()


async def eof_mid_line(conn: PoolConnection) -> None:
    while (message := await conn.read_message()) and message["method"] != "mining.authorize":
        pass
    await conn.send_raw(b'{"id": 1, "resu')
    conn.writer.close()


CASES: dict[str, tuple[Script, str]] = {
    "malformed JSON": (then_send(b"{this is not json\n"), "malformed JSON"),
    "not an object": (then_send(b"[1, 2, 3]\n"), "expected a JSON object"),
    "deeply nested JSON": (then_send(b"[" * 30_000 + b"]" * 30_000 + b"\n"), "malformed JSON"),
    "difficulty as a string": (then_send(method_line("mining.set_difficulty", ["1"])),
                               "bad difficulty"),
    "difficulty NaN": (then_send(b'{"id":null,"method":"mining.set_difficulty","params":[NaN]}\n'),
                       "bad difficulty"),
    "difficulty negative": (then_send(method_line("mining.set_difficulty", [-2])),
                            "bad difficulty"),
    "notify version as int": (then_send(notify_with(5, 536870912)), "version"),
    "notify params an object": (then_send(method_line("mining.notify", {"job": 1})),
                                "params must be a list"),
    "notify short merkle hash": (then_send(notify_with(4, ["00" * 32, "ab" * 31])),
                                 "merkle_branch[1]"),
    "notify odd coinb1": (then_send(notify_with(2, "abc")), "coinb1"),
    "extranonce2 size 99": (then_send(method_line("mining.set_extranonce", ["00", 99])),
                            "extranonce2_size"),
    "oversized line": (then_send(method_line("client.show_message", ["x" * 70_000])),
                       "longer than 65536 bytes"),
    "oversized line without newline": (then_send(b"[" * 100_000), "longer than 65536 bytes"),
    "subscribe result types": (bad_subscribe_types, "extranonce1"),
    "silent mid-line": (silent_mid_line, "went silent"),
    "eof mid-line": (eof_mid_line, "closed the connection"),
}


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    with structlog.testing.capture_logs() as captured:
        yield captured


@pytest.mark.parametrize("case", list(CASES))
def test_bad_pool_input_drops_the_session_and_recovers(
        case: str, scripted_pool: StartScripted, make_client: MakeClient,
        logs: list[dict[str, Any]]) -> None:
    script, expected_error = CASES[case]
    pool = scripted_pool([script, serve_well])
    client = make_client([url(pool.port)], line_timeout_s=0.5)
    job = client.get_job(10)
    assert job is not None and job.job_id == "good"
    assert len(pool.connections) >= 2
    wait_until(lambda: pool.connections[0].closed_by_client or case == "eof mid-line",
               what="the client to hang up on the bad pool")
    failures = [entry for entry in logs if entry["event"] == "stratum.session_failed"]
    assert failures, "the failure was not logged"
    assert expected_error in failures[0]["error"]
    assert not any(entry["event"] == "stratum.session_crashed" for entry in logs)
    # The first (bad) connection never gave the miner work and got no submit.
    assert all(m.get("method") != "mining.submit" for m in pool.connections[0].received)
    client.submit(find_share(job))
    wait_until(lambda: client.stats().accepted == 1)


def test_only_valid_shares_reach_the_pool(scripted_pool: StartScripted,
                                         make_client: MakeClient) -> None:
    pool = scripted_pool([serve_well])
    client = make_client([url(pool.port)])
    job = client.get_job(10)
    assert job is not None
    good = find_share(job)
    # 1. a nonce that misses the target
    client.submit(Share(job, find_bad_nonce(job)))
    # 2. a job whose target the miner made up (far easier than the pool's difficulty)
    forged_target = Job(job.job_id, job.header, 2**256 - 1, job.extranonce2, job.generation,
                        job.source)
    client.submit(Share(forged_target, find_bad_nonce(job)))
    # 3. a header the pool could not rebuild (a kernel that corrupted the merkle root)
    corrupted = Job(job.job_id, job.header[:40] + b"\xee" + job.header[41:], job.target,
                    job.extranonce2, job.generation, job.source)
    client.submit(find_share(corrupted))
    # 4. a job id the pool never sent
    unknown = Job("nope", job.header, job.target, job.extranonce2, job.generation, job.source)
    client.submit(Share(unknown, good.nonce))
    # 5. the genuine share
    client.submit(good)
    wait_until(lambda: client.stats().accepted == 1)
    assert client.stats().rejected_by_reason == {
        "local:above target": 2, "local:header mismatch": 1, "local:unknown job": 1,
    }
    submits = pool.submits()
    assert len(submits) == 1
    header = good.header
    version = int.from_bytes(header[:4], "little")
    version_bits = version & 0x1FFFE000
    assert roll_version(0x20000000, version_bits, 0x1FFFE000) == version
    assert submits[0]["params"] == [
        "rig1.worker", "good", job.extranonce2.hex(), "65000000", f"{good.nonce:08x}",
        f"{version_bits:08x}",
    ]


def test_pool_rejection_reasons_are_counted_and_bounded(scripted_pool: StartScripted,
                                                        make_client: MakeClient) -> None:
    replies = iter(
        [[23, "Low difficulty share", None], {"code": 21, "message": "Job not found"},
         "weird\x00 reason"] + [[20, f"reason {i}", None] for i in range(40)]
    )

    async def rejecting(conn: PoolConnection) -> None:
        await handshake(conn)
        while (message := await conn.read_message()) is not None:
            if message.get("method") == "mining.submit":
                await conn.send({"id": message["id"], "result": None, "error": next(replies)})

    pool = scripted_pool([rejecting])
    client = make_client([url(pool.port)])
    job = client.get_job(10)
    assert job is not None
    share = find_share(job)
    for _ in range(43):
        client.submit(share)
    wait_until(lambda: client.stats().rejected == 43)
    reasons = client.stats().rejected_by_reason
    assert reasons["low difficulty share"] == 1
    assert reasons["job not found"] == 1
    assert reasons["weird reason"] == 1
    assert len(reasons) == 32 + 1  # 32 distinct reasons, the rest lumped as "other"
    assert reasons["other"] == 43 - 32


def test_notify_before_subscribe_result_is_a_violation(scripted_pool: StartScripted,
                                                       make_client: MakeClient,
                                                       logs: list[dict[str, Any]]) -> None:
    async def eager(conn: PoolConnection) -> None:
        await conn.read_message()
        await conn.send({"id": None, "method": "mining.notify", "params": notify_params("early")})
        await conn.drain_until_closed()

    pool = scripted_pool([eager, serve_well])
    client = make_client([url(pool.port)])
    job = client.get_job(10)
    assert job is not None and job.job_id == "good"
    assert any("before a subscribe result" in str(entry.get("error")) for entry in logs)


def test_get_version_is_answered(scripted_pool: StartScripted, make_client: MakeClient) -> None:
    async def curious(conn: PoolConnection) -> None:
        await handshake(conn)
        await conn.send({"id": 77, "method": "client.get_version", "params": []})
        await conn.drain_until_closed()

    pool = scripted_pool([curious])
    make_client([url(pool.port)])
    wait_until(lambda: any(m.get("id") == 77 for c in pool.connections for m in c.received))
    reply = next(m for m in pool.connections[0].received if m.get("id") == 77)
    assert reply["result"].startswith("rigd/")


def test_stopping_with_a_pool_that_never_answers(make_client: MakeClient) -> None:
    """stop() returns promptly even while connected to a pool that says nothing."""

    async def mute() -> tuple[asyncio.AbstractServer, int]:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        return server, server.sockets[0].getsockname()[1]

    loop = asyncio.new_event_loop()
    server, port = loop.run_until_complete(mute())
    try:
        client = make_client([url(port)], idle_timeout_s=30)
        assert client.get_job(0.3) is None
        client.stop(timeout_s=3)
        assert not client.running
    finally:
        server.close()
        loop.close()


@pytest.mark.parametrize(
    ("update", "field"),
    [(method_line("mining.set_extranonce", ["0badcafe", 2]), "extranonce"),
     (method_line("mining.set_version_mask", ["00006000"]), "version mask")],
)
def test_mid_session_updates_invalidate_older_work(update: bytes, field: str,
                                                   scripted_pool: StartScripted,
                                                   make_client: MakeClient) -> None:
    pool = scripted_pool([serve_well])
    client = make_client([url(pool.port)])
    old = client.get_job(10)
    assert old is not None
    old_share = find_share(old)
    pool.call(pool.connections[0].send_raw(update))  # on the pool's loop: one writer
    wait_until(lambda: client.generation > old.generation, what="a generation bump")
    new = client.get_job(1)
    assert new is not None
    if field == "extranonce":
        assert len(new.extranonce2) == 2
        assert new.header[36:68] != old.header[36:68]
    else:
        assert client.status().version_mask == 0x00006000
        assert int.from_bytes(new.header[:4], "little") & ~0x00006000 == 0x20000000
    client.submit(old_share)  # found before the update: the pool could not verify it
    client.submit(find_share(new))
    wait_until(lambda: client.stats().accepted == 1)
    assert client.stats().rejected_by_reason == {"local:stale session": 1}
    assert len(pool.submits()) == 1
