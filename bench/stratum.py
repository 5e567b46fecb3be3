"""Stratum client figures against LocalPool on loopback (medians of 5 runs).

- get_job rate, beside a baseline of calling build_header directly (the client adds locking,
  extranonce2/version-bits bookkeeping and the Job dataclass);
- share submit -> accepted latency through the client (hashlib check, header rebuild, pool verify),
  beside a baseline of a raw blocking-socket request/reply to the same pool.

    .venv/bin/python -m bench.stratum
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import statistics
import time

import structlog

from agent.core.header import build_header
from agent.core.job import Job, Share
from agent.demo.pool import LocalPool
from agent.runtime.workloads.hashing.stratum import StratumClient
from bench._machine import describe

RUNS = 5


def find_share(job: Job) -> Share:
    midstate = hashlib.sha256(job.header[:64])
    for nonce in range(2**32):
        first = midstate.copy()
        first.update(job.header[64:76] + nonce.to_bytes(4, "little"))
        if int.from_bytes(hashlib.sha256(first.digest()).digest(), "little") <= job.target:
            return Share(job, nonce)
    raise RuntimeError("no share")


def raw_round_trip_ms(port: int, count: int) -> list[float]:
    with socket.create_connection(("127.0.0.1", port)) as sock, sock.makefile("rwb") as f:
        times = []
        for request_id in range(count):
            started = time.perf_counter()
            f.write(json.dumps({"id": request_id, "method": "mining.extranonce.subscribe",
                                "params": []}).encode() + b"\n")
            f.flush()
            while json.loads(f.readline()).get("id") != request_id:
                pass
            times.append((time.perf_counter() - started) * 1e3)
    return times


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print(describe())
    pool = LocalPool(difficulty=0.00002).start_in_thread()
    client = StratumClient([f"stratum+tcp://127.0.0.1:{pool.port}"], "bench")
    client.start()
    try:
        first = client.get_job(10)
        assert first is not None
        work = client._work  # the notify behind the job, for the baseline
        assert work is not None
        n = 20_000
        direct, via_client = [], []
        for _ in range(RUNS):
            started = time.perf_counter()
            for i in range(n):
                build_header(work.notify, work.extranonce1, i.to_bytes(4, "big"))
            direct.append(n / (time.perf_counter() - started))
            started = time.perf_counter()
            for _ in range(n):
                client.get_job(1)
            via_client.append(n / (time.perf_counter() - started))
        print(f"get_job: {statistics.median(via_client):,.0f} jobs/s "
              f"(baseline build_header alone: {statistics.median(direct):,.0f}/s)")

        run_medians, raw_medians = [], []
        for _ in range(RUNS):
            shares = [find_share(job) for job in (client.get_job(1) for _ in range(10)) if job]
            latencies = []
            for share in shares:
                before = client.stats().accepted
                started = time.perf_counter()
                client.submit(share)
                while client.stats().accepted == before:
                    time.sleep(0.0001)
                latencies.append((time.perf_counter() - started) * 1e3)
            run_medians.append(statistics.median(latencies))
            raw_medians.append(statistics.median(raw_round_trip_ms(pool.port, 10)))
        print(f"submit -> accepted: {statistics.median(run_medians):.2f} ms median "
              f"(baseline raw socket request/reply: {statistics.median(raw_medians):.2f} ms)")
        print(f"pool: {pool.stats().workers['bench'].accepted} shares accepted, "
              f"client stats {client.stats()}")
    finally:
        client.stop()
        pool.stop()


if __name__ == "__main__":
    main()
