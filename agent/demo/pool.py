"""A local Stratum V1 pool for tests, benchmarks and the demo rig.

Real pools only accept share difficulty >= 1 (minutes per share on a CPU); this one issues real
jobs at fractional difficulty, verifies every share with hashlib and says why it rejects one.
Loopback only by default. Use `LocalPool` inside an event loop, or `LocalPool.start_in_thread()`
for a handle that synchronous code (tests, the demo) can drive.

    python -m agent.demo.pool --port 3333 --difficulty 0.001
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import hashlib
import itertools
import json
import os
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from agent.core.header import (
    Notify,
    build_header,
    network_target,
    parse_hex,
    parse_u32_hex,
    roll_version,
)
from agent.core.job import hash_value, target_for_difficulty

log = structlog.get_logger(__name__)

MAX_LINE_BYTES = 65_536
NTIME_FUTURE_LIMIT_S = 7200  # Bitcoin's own rule for block timestamps
# ckpool-style error codes: the reason string is what miners show to operators.
ERROR_CODES = {
    "stale": 21,
    "bad job": 21,
    "duplicate": 22,
    "low difficulty": 23,
    "unauthorized": 24,
    "not subscribed": 25,
}


@dataclass(slots=True)
class WorkerStats:
    accepted: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    accepted_difficulty: float = 0.0  # sum of the difficulty of accepted shares
    first_seen_s: float = field(default_factory=time.monotonic)

    @property
    def hashrate_hs(self) -> float:
        """Expected hashes behind the accepted shares over the time since the worker appeared."""
        elapsed_s = max(time.monotonic() - self.first_seen_s, 1e-3)
        return self.accepted_difficulty * 2**32 / elapsed_s


@dataclass(frozen=True, slots=True)
class PoolStats:
    workers: dict[str, WorkerStats]
    connections: int
    blocks_found: int


@dataclass(slots=True, eq=False)  # hashed by identity: kept in a set
class _Connection:
    writer: asyncio.StreamWriter
    extranonce1: bytes
    difficulty: float
    subscribed: bool = False
    workers: set[str] = field(default_factory=set)
    version_mask: int = 0
    job_difficulty: dict[str, float] = field(default_factory=dict)  # as sent with each job
    seen_shares: set[tuple[str, ...]] = field(default_factory=set)


class LocalPool:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        difficulty: float = 0.001,
        version_mask: int = 0x1FFFE000,
        extranonce2_size: int = 4,
        nbits: int = 0x1D00FFFF,
        drop_configure: bool = False,
    ) -> None:
        target_for_difficulty(difficulty)  # validates
        # Like ckpool 0.9.4, which knows no `mining.configure`: hang up on it.
        self.drop_configure = drop_configure
        self.methods_seen: list[str] = []
        self.host = host
        self.port = port
        self.difficulty = difficulty
        self.version_mask = version_mask
        self.extranonce2_size = extranonce2_size
        self.nbits = nbits
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._extranonce1_counter = itertools.count(1)
        self._job_counter = itertools.count(1)
        self._jobs: dict[str, Notify] = {}  # valid now
        self._stale_job_ids: set[str] = set()  # were valid before a clean_jobs
        self._height = 840_000
        self._prevhash = os.urandom(28) + bytes(4)  # header order: the display form starts 00000000
        self._workers: dict[str, WorkerStats] = {}
        self._blocks_found = 0
        self._current_job_id = ""

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self._make_job(clean=True)
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=MAX_LINE_BYTES
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("pool.listening", host=self.host, port=self.port, difficulty=self.difficulty)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.writer.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def start_in_thread(self) -> PoolThread:
        return PoolThread(self)

    # ------------------------------------------------------------------ control

    def stats(self) -> PoolStats:
        return PoolStats(
            workers={
                name: replace(w, rejected_by_reason=dict(w.rejected_by_reason))
                for name, w in self._workers.items()
            },
            connections=len(self._connections),
            blocks_found=self._blocks_found,
        )

    async def new_block(self, clean: bool = True) -> str:
        """A new job; with clean=True every earlier job turns stale (a new block was found)."""
        job = self._make_job(clean=clean)
        for conn in list(self._connections):
            if conn.subscribed:
                await self._send_job(conn, job)
        return job.job_id

    async def set_difficulty(self, difficulty: float) -> None:
        target_for_difficulty(difficulty)
        self.difficulty = difficulty
        for conn in list(self._connections):
            conn.difficulty = difficulty
            await self._send(conn, {"id": None, "method": "mining.set_difficulty",
                                    "params": [difficulty]})

    async def send_reconnect(self, host: str = "", port: int = 0, wait_s: int = 0) -> None:
        """client.reconnect to every connection (empty host/port: the same pool)."""
        params = [host, port, wait_s] if host else []
        for conn in list(self._connections):
            await self._send(conn, {"id": None, "method": "client.reconnect", "params": params})

    # ------------------------------------------------------------------- jobs

    def _make_job(self, clean: bool) -> Notify:
        if clean:
            if self._current_job_id:  # the old block was "found": chain on
                self._height += 1
                self._prevhash = hashlib.sha256(self._prevhash).digest()[:28] + bytes(4)
            self._stale_job_ids.update(self._jobs)
            self._jobs.clear()
        height_push = self._height.to_bytes(3, "little")
        tag = b"/rigd-local-pool/"
        script_len = 1 + len(height_push) + 4 + self.extranonce2_size + len(tag)
        coinb1 = (
            bytes.fromhex("01000000" "01" + "00" * 32 + "ffffffff")
            + bytes([script_len, len(height_push)]) + height_push
        )
        coinb2 = (
            tag + bytes.fromhex("ffffffff" "01")
            + (625_000_000).to_bytes(8, "little")  # 6.25 BTC
            + bytes.fromhex("1976a914") + hashlib.sha256(tag).digest()[:20] + bytes.fromhex("88ac")
            + bytes(4)  # lock time
        )
        job_number = next(self._job_counter)
        branch = tuple(
            hashlib.sha256(b"tx%d/%d" % (job_number, i)).digest() for i in range(3)
        )
        job = Notify(
            job_id=f"{job_number:x}",
            prevhash=self._prevhash,
            coinb1=coinb1,
            coinb2=coinb2,
            merkle_branch=branch,
            version=0x20000000,
            nbits=self.nbits,
            ntime=int(time.time()),
            clean_jobs=clean,
        )
        self._jobs[job.job_id] = job
        self._current_job_id = job.job_id
        return job

    async def _send_job(self, conn: _Connection, job: Notify) -> None:
        conn.job_difficulty[job.job_id] = conn.difficulty
        await self._send(conn, {"id": None, "method": "mining.notify", "params": job.to_params()})

    # ------------------------------------------------------------- connections

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        extranonce1 = next(self._extranonce1_counter).to_bytes(4, "big")
        conn = _Connection(writer=writer, extranonce1=extranonce1, difficulty=self.difficulty)
        self._connections.add(conn)
        peer = writer.get_extra_info("peername")
        log.info("pool.connected", peer=peer, extranonce1=extranonce1.hex())
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # longer than MAX_LINE_BYTES
                    log.warning("pool.line_too_long", peer=peer)
                    break
                if not line:
                    break
                try:
                    message = json.loads(line)
                except (ValueError, RecursionError):
                    await self._reply(conn, None, None, (20, "malformed JSON"))
                    continue
                if isinstance(message, dict):
                    await self._dispatch(conn, message)
        except (ConnectionError, OSError):
            pass
        finally:
            self._connections.discard(conn)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            log.info("pool.disconnected", peer=peer)

    async def _dispatch(self, conn: _Connection, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        method = message.get("method")
        params = message.get("params")
        if not isinstance(params, list):
            params = []
        self.methods_seen.append(str(method)[:40])
        if method == "mining.configure" and self.drop_configure:
            conn.writer.close()
            return
        if method == "mining.configure":
            await self._reply(conn, request_id, self._configure(conn, params), None)
        elif method == "mining.subscribe":
            conn.subscribed = True
            result = [
                [["mining.set_difficulty", "1"], ["mining.notify", "1"]],
                conn.extranonce1.hex(),
                self.extranonce2_size,
            ]
            await self._reply(conn, request_id, result, None)
        elif method == "mining.authorize":
            if not conn.subscribed:
                await self._reply(conn, request_id, None, (25, "not subscribed"))
                return
            worker = params[0] if params and isinstance(params[0], str) else ""
            if not worker or len(worker) > 128:
                await self._reply(conn, request_id, False, (24, "unauthorized"))
                return
            conn.workers.add(worker)
            self._workers.setdefault(worker, WorkerStats())
            await self._reply(conn, request_id, True, None)
            await self._send(conn, {"id": None, "method": "mining.set_difficulty",
                                    "params": [conn.difficulty]})
            await self._send_job(conn, self._jobs[self._current_job_id])
        elif method == "mining.submit":
            reason = self._check_share(conn, params)
            error = None if reason is None else (ERROR_CODES.get(reason, 20), reason)
            await self._reply(conn, request_id, True if error is None else None, error)
        elif method in ("mining.extranonce.subscribe", "mining.suggest_difficulty"):
            await self._reply(conn, request_id, True, None)
        else:
            await self._reply(conn, request_id, None, (20, f"unknown method {method!r:.40}"))

    def _configure(self, conn: _Connection, params: list[Any]) -> dict[str, Any]:
        extensions = params[0] if params and isinstance(params[0], list) else []
        options = params[1] if len(params) > 1 and isinstance(params[1], dict) else {}
        result: dict[str, Any] = {}
        if "version-rolling" in extensions:
            try:
                requested = parse_u32_hex(options.get("version-rolling.mask", "ffffffff"), "mask")
            except ValueError:
                requested = 0
            conn.version_mask = requested & self.version_mask
            result["version-rolling"] = conn.version_mask != 0
            result["version-rolling.mask"] = f"{conn.version_mask:08x}"
        return result

    def _check_share(self, conn: _Connection, params: list[Any]) -> str | None:
        """None if the share is good, else the rejection reason. Records the outcome."""
        worker = params[0] if params and isinstance(params[0], str) else ""
        if worker not in conn.workers:
            return "unauthorized"
        stats = self._workers[worker]
        reason, difficulty = self._share_reason(conn, params)
        if reason is None:
            stats.accepted += 1
            stats.accepted_difficulty += difficulty
        else:
            stats.rejected += 1
            stats.rejected_by_reason[reason] = stats.rejected_by_reason.get(reason, 0) + 1
        (log.debug if reason is None else log.info)(
            "pool.share", worker=worker, accepted=reason is None, reason=reason)
        return reason

    def _share_reason(self, conn: _Connection, params: list[Any]) -> tuple[str | None, float]:
        if len(params) not in (5, 6) or not all(isinstance(p, str) for p in params):
            return "bad params", 0.0
        job_id, extranonce2_hex, ntime_hex, nonce_hex = params[1:5]
        if job_id in self._stale_job_ids:
            return "stale", 0.0
        job = self._jobs.get(job_id)
        if job is None or job_id not in conn.job_difficulty:
            return "bad job", 0.0
        try:
            extranonce2 = parse_hex(extranonce2_hex, "extranonce2", self.extranonce2_size)
        except ValueError:
            return "bad extranonce2", 0.0
        try:
            ntime = parse_u32_hex(ntime_hex, "ntime")
        except ValueError:
            return "bad ntime", 0.0
        if not job.ntime <= ntime <= time.time() + NTIME_FUTURE_LIMIT_S:
            return "bad ntime", 0.0
        try:
            nonce = parse_u32_hex(nonce_hex, "nonce")
        except ValueError:
            return "bad nonce", 0.0
        version = job.version
        if len(params) == 6:
            try:
                version_bits = parse_u32_hex(params[5], "version_bits")
            except ValueError:
                return "bad version bits", 0.0
            if version_bits & ~conn.version_mask:
                return "bad version bits", 0.0
            version = roll_version(job.version, version_bits, conn.version_mask)
        key = (job_id, extranonce2.hex(), ntime_hex.lower(), nonce_hex.lower(), f"{version:08x}")
        if key in conn.seen_shares:
            return "duplicate", 0.0
        header = build_header(
            job, conn.extranonce1, extranonce2, version=version, ntime=ntime, nonce=nonce
        )
        difficulty = conn.job_difficulty[job_id]
        value = hash_value(header)
        if value > target_for_difficulty(difficulty):
            return "low difficulty", 0.0
        conn.seen_shares.add(key)
        if value <= network_target(job.nbits):
            self._blocks_found += 1
            log.info("pool.block_found", job_id=job_id)
        return None, difficulty

    async def _reply(
        self, conn: _Connection, request_id: Any, result: Any, error: tuple[int, str] | None
    ) -> None:
        wire_error = None if error is None else [error[0], error[1], None]
        await self._send(conn, {"id": request_id, "result": result, "error": wire_error})

    async def _send(self, conn: _Connection, message: dict[str, Any]) -> None:
        try:
            conn.writer.write(json.dumps(message).encode() + b"\n")
            await conn.writer.drain()
        except (ConnectionError, OSError):
            conn.writer.close()


class PoolThread:
    """A LocalPool running on its own event loop thread, driven from synchronous code."""

    def __init__(self, pool: LocalPool) -> None:
        self.pool = pool
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="local-pool",
                                        daemon=True)
        self._thread.start()
        self._call(pool.start())

    @property
    def port(self) -> int:
        return self.pool.port

    def _call(self, coro: Any, timeout_s: float = 10.0) -> Any:
        future: concurrent.futures.Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout_s)

    def stats(self) -> PoolStats:
        return self._call(self._stats())

    def methods_seen(self) -> list[str]:
        return self._call(self._methods_seen())

    async def _methods_seen(self) -> list[str]:
        return list(self.pool.methods_seen)

    async def _stats(self) -> PoolStats:
        return self.pool.stats()

    def new_block(self, clean: bool = True) -> str:
        return self._call(self.pool.new_block(clean))

    def set_difficulty(self, difficulty: float) -> None:
        self._call(self.pool.set_difficulty(difficulty))

    def send_reconnect(self, host: str = "", port: int = 0, wait_s: int = 0) -> None:
        self._call(self.pool.send_reconnect(host, port, wait_s))

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self.pool.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3333)
    parser.add_argument("--difficulty", type=float, default=0.001)
    parser.add_argument("--block-interval-s", type=float, default=0.0,
                        help="start a new block (clean_jobs) this often; 0 = never")
    args = parser.parse_args(argv)

    async def run() -> None:
        pool = LocalPool(args.host, args.port, difficulty=args.difficulty)
        await pool.start()
        try:
            while True:
                if args.block_interval_s > 0:
                    await asyncio.sleep(args.block_interval_s)
                    await pool.new_block(clean=True)
                else:
                    await asyncio.sleep(3600)
        finally:
            await pool.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
