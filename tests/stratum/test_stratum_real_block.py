"""End to end: a pool on loopback announces block 125552 as a Stratum job; the client's header
for its first job is the real block's header, and the real nonce goes back in the submit."""

from __future__ import annotations

from collections.abc import Callable

from stratum_helpers import (
    B125552_COINB1,
    B125552_COINB2,
    B125552_EXTRANONCE1,
    B125552_EXTRANONCE2,
    B125552_HASH,
    B125552_NONCE,
    B125552_PREV,
    B125552_TXIDS,
    PoolConnection,
    Script,
    ScriptedPool,
    stratum_prevhash,
    url,
    wait_until,
)

from agent.core.header import block_hash
from agent.core.job import Share, sha256d
from agent.runtime.workloads.hashing.stratum import StratumClient


def branch() -> list[str]:
    tx1, tx2, tx3 = (bytes.fromhex(t)[::-1] for t in B125552_TXIDS)
    return [tx1.hex(), sha256d(tx2 + tx3).hex()]


async def block_125552_pool(conn: PoolConnection) -> None:
    # The client's first extranonce2 is 00 (1 byte), which is the byte the real coinbase has
    # right after extranonce1; the rest of the real extranonce2 moves into coinb2.
    assert B125552_EXTRANONCE2.startswith("00")
    while (message := await conn.read_message()) is not None:
        method, request_id = message.get("method"), message.get("id")
        if method == "mining.configure":
            await conn.send({"id": request_id, "error": None, "result": {
                "version-rolling": True, "version-rolling.mask": "1fffe000"}})
        elif method == "mining.subscribe":
            await conn.send({"id": request_id, "error": None,
                             "result": [[], B125552_EXTRANONCE1, 1]})
        elif method == "mining.authorize":
            await conn.send({"id": request_id, "result": True, "error": None})
            await conn.send({"id": None, "method": "mining.set_difficulty", "params": [1]})
            await conn.send({"id": None, "method": "mining.notify", "params": [
                "b125552", stratum_prevhash(B125552_PREV), B125552_COINB1,
                B125552_EXTRANONCE2[2:] + B125552_COINB2, branch(),
                "00000001", "1a44b9f2", "4dd7f5c7", True]})
        elif method == "mining.submit":
            await conn.send({"id": request_id, "result": True, "error": None})


def test_client_rebuilds_block_125552_and_submits_its_nonce(
        scripted_pool: Callable[[list[Script]], ScriptedPool],
        make_client: Callable[..., StratumClient]) -> None:
    pool = scripted_pool([block_125552_pool])
    client = make_client([url(pool.port)])
    job = client.get_job(10)
    assert job is not None
    assert job.extranonce2 == b"\0"
    header = job.with_nonce(B125552_NONCE)
    assert block_hash(header) == B125552_HASH
    client.submit(Share(job, B125552_NONCE))
    wait_until(lambda: client.stats().accepted == 1)
    assert pool.submits()[0]["params"] == [
        "rig1.worker", "b125552", "00", "4dd7f5c7", "9546a142", "00000000"]
