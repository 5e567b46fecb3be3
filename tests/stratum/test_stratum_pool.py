"""LocalPool on its own, driven by a raw line-JSON client (what a buggy miner might send)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

import pytest
from stratum_helpers import (
    TEST_DIFFICULTY,
    RawStratum,
    find_bad_nonce,
    find_share,
    wait_until,
)

from agent.core.header import Notify, build_header, roll_version
from agent.core.job import Job, target_for_difficulty
from agent.demo.pool import PoolThread
from tests.ports import free_port

Connect = Callable[[int], RawStratum]


class Miner:
    """Subscribed + authorized raw session holding the pool's current job."""

    def __init__(self, raw: RawStratum, worker: str = "w1", mask: int = 0) -> None:
        self.raw = raw
        self.worker = worker
        if mask:
            configured = raw.call("mining.configure", [["version-rolling"],
                                                       {"version-rolling.mask": f"{mask:08x}"}])
            self.mask = int(configured["result"]["version-rolling.mask"], 16)
        else:
            self.mask = 0
        subscribed = raw.call("mining.subscribe", ["test"])["result"]
        self.extranonce1 = bytes.fromhex(subscribed[1])
        self.extranonce2_size = subscribed[2]
        assert raw.call("mining.authorize", [worker, "x"])["result"] is True
        self.difficulty = raw.wait_notification("mining.set_difficulty")["params"][0]
        self.notify = Notify.from_params(raw.wait_notification("mining.notify")["params"])

    def job(self, extranonce2: bytes, version_bits: int = 0) -> Job:
        version = roll_version(self.notify.version, version_bits, self.mask)
        header = build_header(self.notify, self.extranonce1, extranonce2, version=version)
        return Job(self.notify.job_id, header, target_for_difficulty(self.difficulty),
                   extranonce2=extranonce2)

    def submit(self, params: list[object]) -> tuple[object, object]:
        reply = self.raw.call("mining.submit", [self.worker, *params])
        return reply["result"], reply["error"]

    def submit_job(self, job: Job, nonce: int, version_bits: str | None = None,
                   ntime: str | None = None) -> tuple[object, object]:
        params: list[object] = [job.job_id, job.extranonce2.hex(),
                                ntime or job.header[68:72][::-1].hex(), f"{nonce:08x}"]
        if version_bits is not None:
            params.append(version_bits)
        return self.submit(params)


def reason(reply: tuple[object, object]) -> str:
    result, error = reply
    assert result is not True
    assert isinstance(error, list)
    return str(error[1])


def test_handshake_issues_real_jobs(start_pool: Callable[..., PoolThread],
                                    raw_client: Connect) -> None:
    pool = start_pool()
    first, second = Miner(raw_client(pool.port)), Miner(raw_client(pool.port))
    assert first.difficulty == TEST_DIFFICULTY
    assert first.extranonce1 != second.extranonce1  # one extranonce1 per connection
    assert first.extranonce2_size == 4
    notify = first.notify
    assert notify.prevhash[28:] == bytes(4)  # displayed prevhash starts with zeros
    assert notify.prevhash != bytes(32)
    assert len(notify.merkle_branch) == 3
    assert abs(notify.ntime - time.time()) < 60
    # coinb1's scriptSig length covers extranonce1 + extranonce2: the coinbase parses.
    script_len = notify.coinb1[41]
    script_start = 42
    assert script_start + script_len == len(notify.coinb1) + 8 + notify.coinb2.index(b"\xff" * 4)


def test_accepts_a_real_share_and_estimates_hashrate(start_pool: Callable[..., PoolThread],
                                                     raw_client: Connect) -> None:
    pool = start_pool()
    miner = Miner(raw_client(pool.port))
    job = miner.job(b"\0\0\0\1")
    share = find_share(job)
    assert miner.submit_job(job, share.nonce) == (True, None)
    worker = pool.stats().workers["w1"]
    assert (worker.accepted, worker.rejected) == (1, 0)
    assert worker.accepted_difficulty == pytest.approx(TEST_DIFFICULTY)
    assert worker.hashrate_hs > 0


def test_rejections_carry_reasons(start_pool: Callable[..., PoolThread],
                                  raw_client: Connect) -> None:
    pool = start_pool()
    miner = Miner(raw_client(pool.port))
    job = miner.job(b"\0\0\0\2")
    share = find_share(job)
    ntime = job.header[68:72][::-1].hex()
    assert reason(miner.submit_job(job, find_bad_nonce(job))) == "low difficulty"
    assert reason(miner.submit(["nope", "00000002", ntime, "00000000"])) == "bad job"
    assert reason(miner.submit([job.job_id, "00000002", ntime, "xyz"])) == "bad nonce"
    assert reason(miner.submit([job.job_id, "00000002", ntime, "0000000000"])) == "bad nonce"
    assert reason(miner.submit([job.job_id, "00000002", "0000000g", "00000000"])) == "bad ntime"
    assert reason(miner.submit([job.job_id, "00000002", "00000001", "00000000"])) == "bad ntime"
    assert reason(miner.submit([job.job_id, "0002", ntime, "00000000"])) == "bad extranonce2"
    assert reason(miner.submit([job.job_id, 2, ntime, "00000000"])) == "bad params"
    # version bits without negotiation are outside the (empty) mask
    assert reason(miner.submit_job(job, share.nonce, version_bits="00002000")) == \
        "bad version bits"
    assert miner.submit_job(job, share.nonce) == (True, None)
    assert reason(miner.submit_job(job, share.nonce)) == "duplicate"
    stale_job_id = job.job_id
    pool.new_block(clean=True)
    assert reason(miner.submit_job(job, share.nonce)) == "stale"
    assert miner.raw.wait_notification("mining.notify")["params"][0] != stale_job_id

    worker = pool.stats().workers["w1"]
    assert worker.accepted == 1
    assert worker.rejected_by_reason == {
        "low difficulty": 1, "bad job": 1, "bad nonce": 2, "bad ntime": 2,
        "bad extranonce2": 1, "bad params": 1, "bad version bits": 1, "duplicate": 1, "stale": 1,
    }
    assert worker.rejected == 11


def test_unauthorized_worker_is_refused(start_pool: Callable[..., PoolThread],
                                        raw_client: Connect) -> None:
    pool = start_pool()
    miner = Miner(raw_client(pool.port))
    job = miner.job(b"\0\0\0\3")
    reply = miner.raw.call("mining.submit", ["someone-else", job.job_id, "00000003",
                                             "00000000", "00000000"])
    assert reply["error"][1] == "unauthorized"
    assert "someone-else" not in pool.stats().workers


def test_version_rolling_negotiation_and_rolled_share(start_pool: Callable[..., PoolThread],
                                                      raw_client: Connect) -> None:
    pool = start_pool(version_mask=0x1FFFE000)
    miner = Miner(raw_client(pool.port), mask=0x00FFF000)
    assert miner.mask == 0x00FFE000  # the AND of both masks
    bits = 0x0000A000
    job = miner.job(b"\0\0\0\4", version_bits=bits)
    share = find_share(job)
    assert reason(miner.submit_job(job, share.nonce)) == "low difficulty"  # bits left out
    assert reason(miner.submit_job(job, share.nonce, version_bits="20000000")) == \
        "bad version bits"
    assert miner.submit_job(job, share.nonce, version_bits=f"{bits:08x}") == (True, None)


def test_malformed_lines_get_an_error_and_the_session_survives(
        start_pool: Callable[..., PoolThread], raw_client: Connect) -> None:
    pool = start_pool()
    raw = raw_client(pool.port)
    raw.file.write(b"{not json\n")
    raw.file.flush()
    assert raw.read()["error"][1] == "malformed JSON"
    raw.file.write(b"[" * 30_000 + b"]" * 30_000 + b"\n")
    raw.file.flush()
    assert raw.read()["error"][1] == "malformed JSON"
    assert raw.call("mining.bogus", [])["error"][1].startswith("unknown method")
    assert raw.call("mining.authorize", ["w", "x"])["error"][1] == "not subscribed"
    assert Miner(raw).notify.job_id


def test_oversized_line_closes_the_connection(start_pool: Callable[..., PoolThread],
                                              raw_client: Connect) -> None:
    pool = start_pool()
    raw = raw_client(pool.port)
    raw.file.write(b'{"id": 1, "method": "mining.subscribe", "params": ["' + b"x" * 70_000)
    raw.file.flush()
    assert raw.file.readline() == b""  # closed, nothing answered
    assert Miner(raw_client(pool.port)).notify.job_id  # and the pool still serves others


@pytest.mark.processes
def test_runs_as_a_module() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "agent.demo.pool", "--port", str(port),
         "--difficulty", "0.002"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        raw: list[RawStratum] = []

        def connected() -> bool:
            try:
                raw.append(RawStratum(port))
            except OSError:
                return False
            return True

        wait_until(connected, 15, "the pool process to listen")
        miner = Miner(raw[0])
        assert miner.difficulty == 0.002
        raw[0].close()
    finally:
        process.terminate()
        process.wait(10)
