"""Helpers for the Stratum tests: share search, raw clients, scripted (hostile) pools.

Everything talks TCP on 127.0.0.1. Shares are found with a plain hashlib loop (midstate copy),
so difficulties stay around 1e-4 (~430k hashes, well under a second per share).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from agent.core.job import Job, Share, hash_value

TEST_DIFFICULTY = 0.0001

# Block 125552, public record.
B125552_HASH = "00000000000000001e8d6829a8a21adc5d38d0a473b144b6765798e61f98bd1d"
B125552_PREV = "00000000000008a3a41b85b8b29ad444def299fee21793cd8b9e567eab02cd81"
B125552_MERKLE = "2b12fcf1b09288fcaff797d71e950e71ae42b91e8bdb2304758dfcffc2b620e3"
B125552_COINBASE_TXID = "51d37bdd871c9e1f4d5541be67a6ab625e32028744d7d4609d0c37747b40cd2d"
B125552_TXIDS = (
    "60c25dda8d41f8d3d7d5c6249e2ea1b05a25bf7ae2ad6d904b512b31f997e1a1",
    "01f314cdd8566d3e5dbdd97de2d9fbfbfd6873e916a00d48758282cbb81a45b9",
    "b519286a1040da6ad83c783eb2872659eaf57b1bec088e614776ffe7dc8f6d01",
)
B125552_COINB1 = (
    "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff"
    "0804f2b9441a022a01ffffffff01403415"
)
B125552_EXTRANONCE1 = "2a010000"
B125552_EXTRANONCE2 = "00434104"
B125552_COINB2 = (
    "d879d5ef8b70cf0a33925101b64429ad7eb370da8ad0b05c9cd60922c363a1eada85bcc2843b7378e2"
    "26735048786c790b30b28438d22acfade24ef047b5f865ac00000000"
)
B125552_VERSION, B125552_NBITS, B125552_NTIME, B125552_NONCE = 1, 0x1A44B9F2, 0x4DD7F5C7, 2504433986


def stratum_prevhash(displayed: str) -> str:
    """The notes' definition, written independently of header.py: reverse the 8 words."""
    words = [displayed[i : i + 8] for i in range(0, 64, 8)]
    return "".join(reversed(words))


def find_share(job: Job, start_nonce: int = 0, max_nonces: int = 20_000_000) -> Share:
    """Brute-force a nonce meeting the job's target with hashlib (midstate of the first block)."""
    midstate = hashlib.sha256(job.header[:64])
    tail = job.header[64:76]
    for nonce in range(start_nonce, start_nonce + max_nonces):
        first = midstate.copy()
        first.update(tail + nonce.to_bytes(4, "little"))
        digest = hashlib.sha256(first.digest()).digest()
        if int.from_bytes(digest, "little") <= job.target:
            assert hash_value(job.with_nonce(nonce)) <= job.target
            return Share(job, nonce)
    raise AssertionError("no share found; is the difficulty too high for a test?")


def find_bad_nonce(job: Job) -> int:
    """A nonce whose hash does NOT meet the target."""
    for nonce in range(1000):
        if hash_value(job.with_nonce(nonce)) > job.target:
            return nonce
    raise AssertionError("every nonce meets the target?")


def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what or predicate}")


def url(port: int) -> str:
    return f"stratum+tcp://127.0.0.1:{port}"


class RawStratum:
    """A blocking line-JSON client for poking the pool directly (what a buggy miner might send)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.file = self.sock.makefile("rwb")
        self.notifications: list[dict[str, Any]] = []
        self._ids = iter(range(1, 1_000_000))

    def call(self, method: str, params: list[Any]) -> dict[str, Any]:
        request_id = next(self._ids)
        self.send({"id": request_id, "method": method, "params": params})
        while True:
            message = self.read()
            if message.get("id") == request_id and "method" not in message:
                return message
            self.notifications.append(message)

    def send(self, message: dict[str, Any]) -> None:
        self.file.write(json.dumps(message).encode() + b"\n")
        self.file.flush()

    def read(self) -> dict[str, Any]:
        line = self.file.readline()
        assert line, "pool closed the connection"
        message: dict[str, Any] = json.loads(line)
        return message

    def wait_notification(self, method: str) -> dict[str, Any]:
        for index, message in enumerate(self.notifications):
            if message.get("method") == method:
                return self.notifications.pop(index)
        while True:
            message = self.read()
            if message.get("method") == method:
                return message
            self.notifications.append(message)

    def close(self) -> None:
        self.file.close()
        self.sock.close()


# A scripted pool: connection number n (0-based) is handled by scripts[min(n, len - 1)].
Script = Callable[["PoolConnection"], Awaitable[None]]


class PoolConnection:
    """One accepted connection of a ScriptedPool, recording every line the client sent."""

    def __init__(self, index: int, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.index = index
        self.reader = reader
        self.writer = writer
        self.received: list[dict[str, Any]] = []
        self.closed_by_client = False

    async def read_message(self) -> dict[str, Any] | None:
        line = await self.reader.readline()
        if not line:
            self.closed_by_client = True
            return None
        message: dict[str, Any] = json.loads(line)
        self.received.append(message)
        return message

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, message: dict[str, Any]) -> None:
        await self.send_raw(json.dumps(message).encode() + b"\n")

    async def drain_until_closed(self) -> None:
        while await self.read_message() is not None:
            pass


class ScriptedPool:
    def __init__(self, scripts: list[Script]) -> None:
        self.scripts = scripts
        self.connections: list[PoolConnection] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(5)
        self.port: int = self._server.sockets[0].getsockname()[1]

    async def _start(self) -> asyncio.Server:
        return await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=1 << 20)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = PoolConnection(len(self.connections), reader, writer)
        self.connections.append(conn)
        try:
            await self.scripts[min(conn.index, len(self.scripts) - 1)](conn)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    def call(self, coro: Awaitable[Any]) -> Any:
        """Run a coroutine on the pool's loop (e.g. a connection's send) and wait for it."""

        async def run() -> Any:
            return await coro

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(5)

    def submits(self) -> list[dict[str, Any]]:
        received = [m for conn in self.connections for m in conn.received]
        return [m for m in received if m.get("method") == "mining.submit"]

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


