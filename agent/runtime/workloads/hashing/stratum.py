"""Stratum V1 client: a JobSource fed by one or more pools.

The asyncio loop runs in its own thread; the miner thread calls get_job / submit / stats, which
only take a lock and never wait on the network. A pool is untrusted input: any malformed
message (bad JSON, wrong types, oversized line, bad hex, silence mid-line) is logged, the
connection dropped and retried with capped, jittered exponential backoff, failing over along the
configured pool list (the first pool is preferred again after every round). Every share is
re-checked with hashlib against its job's target before it is sent.

Version rolling (BIP 310) "auto": `mining.configure` is asked first in each session. A pool is
taken as refusing it only when it answered it with an error, or closed a session in which the
request had been sent and not yet answered (ckpool 0.9.4 hangs up on it); a session that ended
before the request went out proves nothing. The verdict is not for good: the pool is asked again
in the first session after a backoff (twice the reconnect backoff's cap, doubling with each
refusal up to CONFIGURE_RETRY_MAX_S, jittered), so a pool that restarted or a proxy that reset
once gets version rolling back; an answer clears the verdict.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from agent.core.header import (
    Notify,
    build_header,
    parse_hex,
    parse_u32_hex,
    roll_version,
    spread_bits,
    submit_fields,
)
from agent.core.job import (
    Job,
    Share,
    ShareStats,
    hash_value,
    target_for_difficulty,
)
from agent.core.pool_url import PoolAddress, parse_pool_url
from hal.errors import InvalidArgument

log = structlog.get_logger(__name__)

MAX_REASONS = 32  # distinct rejection reasons kept; a hostile pool cannot grow our memory
MAX_RECONNECT_WAIT_S = 300.0
CONFIGURE_RETRY_MAX_S = 3600.0
CLIENT_AGENT = "rigd/0.1"


class ProtocolViolation(Exception):
    """The pool sent something we cannot use; the session is dropped and retried."""


def backoff_delay_s(failures: int, initial_s: float, max_s: float) -> float:
    """Exponential backoff, capped, with jitter so a fleet of rigs does not reconnect in step."""
    base = min(max_s, initial_s * 2 ** min(max(failures, 1) - 1, 30))
    return base * random.uniform(0.5, 1.0)


@dataclass(frozen=True, slots=True)
class _Refusal:
    """A pool refused or dropped `mining.configure` `strikes` times in a row; it is not asked
    again before `retry_at` (monotonic)."""

    strikes: int
    retry_at: float


@dataclass(frozen=True, slots=True)
class ClientStatus:
    pool_url: str | None  # None while not connected
    authorized: bool
    difficulty: float
    version_mask: int
    sessions_started: int


@dataclass(slots=True)
class _Work:
    """Current work as the miner sees it; replaced as a whole under the client's lock."""

    notify: Notify
    extranonce1: bytes
    extranonce2_size: int
    version_mask: int
    target: int
    pool_url: str


@dataclass(slots=True)
class _Session:
    address: PoolAddress
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    request_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    pending: dict[int, tuple[str, Share | None]] = field(default_factory=dict)
    extranonce1: bytes | None = None
    configure_pending: bool = False  # asked, not answered
    configure_sent: bool = False  # ... and the request went out whole
    extranonce2_size: int = 0
    version_mask: int = 0
    difficulty: float = 1.0
    authorized: bool = False
    notify: Notify | None = None
    jobs: dict[str, Notify] = field(default_factory=dict)  # insertion-ordered, bounded
    easiest_target: int = 0  # the highest target handed to the miner in this session


class _Reconnect(Exception):
    def __init__(self, address: PoolAddress, wait_s: float) -> None:
        super().__init__(f"client.reconnect to {address.url} after {wait_s}s")
        self.address = address
        self.wait_s = wait_s


class StratumClient:
    """JobSource over Stratum V1. Call start() once and stop() when done (no restart)."""

    def __init__(
        self,
        pools: Sequence[str],
        user: str,
        password: str = "x",
        *,
        version_rolling: bool | str = "auto",
        version_mask: int = 0x1FFFE000,
        connect_timeout_s: float = 10.0,
        idle_timeout_s: float = 300.0,
        line_timeout_s: float = 10.0,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        healthy_session_s: float = 30.0,
        max_line_bytes: int = 65_536,
        max_queued_shares: int = 1024,
    ) -> None:
        if not pools:
            raise InvalidArgument("at least one pool URL is required")
        self._pools = [parse_pool_url(url) for url in pools]
        self._user = user
        self._password = password
        if not (isinstance(version_rolling, bool) or version_rolling == "auto"):
            raise InvalidArgument(
                f"version_rolling must be true, false or \"auto\", got {version_rolling!r:.40}")
        # "auto": negotiate BIP 310 where the pool answers, fall back without it where the pool
        # refuses or drops `mining.configure` (asked again after a backoff, see the module's
        # docstring); True: always ask.
        self._version_rolling = version_rolling
        self._requested_mask = version_mask if version_rolling else 0
        self._configure_refused: dict[PoolAddress, _Refusal] = {}
        self._connect_timeout_s = connect_timeout_s
        self._idle_timeout_s = idle_timeout_s
        self._line_timeout_s = line_timeout_s
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._healthy_session_s = healthy_session_s
        self._max_line_bytes = max_line_bytes
        self._max_queued_shares = max_queued_shares

        self._cond = threading.Condition()  # guards everything below that the miner thread reads
        self._work: _Work | None = None
        self._generation = 0
        self._first_valid_generation = 0  # jobs older than this belong to a dead session
        self._extranonce2_counter = 0
        self._stats = ShareStats()
        self._session: _Session | None = None
        self._sessions_started = 0

        self._loop: asyncio.AbstractEventLoop | None = None
        self._outbox: asyncio.Queue[Share] | None = None
        self._thread: threading.Thread | None = None
        self._main_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ JobSource (any thread)

    @property
    def generation(self) -> int:
        with self._cond:
            return self._generation

    def get_job(self, timeout_s: float) -> Job | None:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._work is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            work, counter, generation = self._work, self._extranonce2_counter, self._generation
            self._extranonce2_counter += 1
        size = work.extranonce2_size
        extranonce2 = (counter % 256**size).to_bytes(size, "big")
        version = work.notify.version
        if work.version_mask:  # also walk the negotiated version bits: free extra search space
            version = roll_version(version, spread_bits(counter, work.version_mask),
                                   work.version_mask)
        header = build_header(work.notify, work.extranonce1, extranonce2, version=version)
        return Job(job_id=work.notify.job_id, header=header, target=work.target,
                   extranonce2=extranonce2, generation=generation, source=work.pool_url)

    def submit(self, share: Share) -> None:
        """Check the share with hashlib and queue it for the loop; never waits."""
        if hash_value(share.header) > share.job.target:
            log.error("stratum.share_invalid", job_id=share.job.job_id, nonce=share.nonce)
            self._count(False, "local:above target")
            return
        loop = self._loop
        try:
            if loop is None:
                raise RuntimeError("not started")
            loop.call_soon_threadsafe(self._enqueue, share)
        except RuntimeError:  # not started, or stopped (loop closed) meanwhile
            self._count(False, "local:not running")

    def stats(self) -> ShareStats:
        """Pool verdicts, plus shares we refused to send under reasons starting "local:"."""
        with self._cond:
            return ShareStats(self._stats.accepted, self._stats.rejected,
                              dict(self._stats.rejected_by_reason))

    def status(self) -> ClientStatus:
        with self._cond:
            session = self._session
            return ClientStatus(
                pool_url=session.address.url if session else None,
                authorized=bool(session and session.authorized),
                difficulty=session.difficulty if session else 0.0,
                version_mask=session.version_mask if session else 0,
                sessions_started=self._sessions_started,
            )

    # ------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("StratumClient already started")
        ready = threading.Event()
        self._thread = threading.Thread(target=self._thread_main, args=(ready,),
                                        name="stratum-client", daemon=True)
        self._thread.start()
        ready.wait(5)

    def stop(self, timeout_s: float = 5.0) -> None:
        loop, task = self._loop, self._main_task
        if loop is not None and task is not None and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _thread_main(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._outbox = asyncio.Queue()
        self._main_task = loop.create_task(self._run())
        ready.set()
        try:
            loop.run_until_complete(self._main_task)
        except asyncio.CancelledError:
            pass
        finally:
            loop.close()

    # ------------------------------------------------------------ connection policy

    async def _run(self) -> None:
        failures = 0
        redirect: PoolAddress | None = None
        while True:
            candidates = [redirect] if redirect else list(self._pools)
            redirect = None
            for address in candidates:
                started = time.monotonic()
                try:
                    await self._run_session(address)
                except _Reconnect as request:
                    log.info("stratum.reconnect_requested", pool=address.url,
                             to=request.address.url, wait_s=request.wait_s)
                    redirect = request.address
                    await asyncio.sleep(request.wait_s)
                    break
                except (OSError, TimeoutError, ProtocolViolation) as error:
                    log.warning("stratum.session_failed", pool=address.url,
                                error=f"{type(error).__name__}: {error}")
                except Exception:  # a bug of ours must not kill mining for good
                    log.exception("stratum.session_crashed", pool=address.url)
                if time.monotonic() - started >= self._healthy_session_s:
                    failures = 0
                    break  # it was a good pool for a while: start again from the primary
            else:
                failures += 1
                await asyncio.sleep(
                    backoff_delay_s(failures, self._backoff_initial_s, self._backoff_max_s))

    async def _run_session(self, address: PoolAddress) -> None:
        """One connection, start to finish; always ends by raising (a session never 'ends well')."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(address.host, address.port, limit=self._max_line_bytes),
            self._connect_timeout_s,
        )
        session = _Session(address, reader, writer)
        with self._cond:
            self._session = session
            self._sessions_started += 1
        log.info("stratum.connected", pool=address.url)
        sender = asyncio.create_task(self._send_shares(session))
        try:
            if self._requested_mask and self._ask_configure(address):
                session.configure_pending = True
                await self._request(session, "mining.configure", [
                    ["version-rolling"],
                    {"version-rolling.mask": f"{self._requested_mask:08x}",
                     "version-rolling.min-bit-count": 2},
                ])
                session.configure_sent = True
            await self._request(session, "mining.subscribe", [CLIENT_AGENT])
            await self._request(session, "mining.authorize", [self._user, self._password])
            while True:
                await self._handle_line(session, await self._read_line(session))
        finally:
            if session.configure_pending and session.configure_sent:
                # The pool hung up on `mining.configure` (ckpool 0.9.4 does): without, a while.
                self._configure_struck(address, "dropped")
            self._end_session(session)
            sender.cancel()
            writer.close()
            await asyncio.wait([sender], timeout=1.0)  # a stop() arriving here still cancels

    def _end_session(self, session: _Session) -> None:
        with self._cond:
            self._session = None
            self._work = None
            self._generation += 1  # every job of this session is now worthless
            self._first_valid_generation = self._generation
            unanswered = sum(1 for kind, _ in session.pending.values() if kind == "submit")
        for _ in range(unanswered):
            self._count(False, "local:unanswered")

    async def _read_line(self, session: _Session) -> bytes:
        """One line: its first byte may take idle_timeout_s (connect_timeout_s before the first
        job), the rest must follow within line_timeout_s (a pool stuck mid-line is broken)."""
        idle_timeout_s = self._idle_timeout_s if session.notify else self._connect_timeout_s
        try:
            first = await asyncio.wait_for(session.reader.readexactly(1), idle_timeout_s)
            if first == b"\n":
                return first
            line = first + await asyncio.wait_for(session.reader.readline(),
                                                  self._line_timeout_s)
        except asyncio.IncompleteReadError as error:
            raise ConnectionResetError("pool closed the connection") from error
        except ValueError as error:  # asyncio's limit overrun: an oversized line
            raise ProtocolViolation(f"line longer than {self._max_line_bytes} bytes") from error
        except TimeoutError as error:
            raise ProtocolViolation("pool went silent (read timeout)") from error
        if not line.endswith(b"\n"):
            raise ConnectionResetError("pool closed the connection mid-line")
        return line

    # ---------------------------------------------------------------- wire, loop side

    async def _write(self, session: _Session, message: dict[str, Any]) -> None:
        session.writer.write(json.dumps(message).encode() + b"\n")
        await asyncio.wait_for(session.writer.drain(), self._line_timeout_s)

    async def _request(self, session: _Session, method: str, params: list[Any],
                       share: Share | None = None) -> None:
        request_id = next(session.request_ids)
        kind = "submit" if method == "mining.submit" else method
        session.pending[request_id] = (kind, share)
        await self._write(session, {"id": request_id, "method": method, "params": params})

    def _enqueue(self, share: Share) -> None:
        assert self._outbox is not None
        if self._outbox.qsize() >= self._max_queued_shares:
            self._count(False, "local:queue full")
            return
        self._outbox.put_nowait(share)

    async def _send_shares(self, session: _Session) -> None:
        assert self._outbox is not None
        while True:
            share = await self._outbox.get()
            reason = self._why_unsendable(session, share)
            if reason:
                log.info("stratum.share_dropped", job_id=share.job.job_id, reason=reason)
                self._count(False, reason)
                continue
            fields = submit_fields(share.header, session.version_mask)
            params = [self._user, share.job.job_id, share.job.extranonce2.hex(),
                      fields.ntime, fields.nonce]
            if fields.version_bits is not None:
                params.append(fields.version_bits)
            try:
                await self._request(session, "mining.submit", params, share)
            except (OSError, TimeoutError) as error:
                log.warning("stratum.send_failed", pool=session.address.url, error=repr(error))
                session.writer.transport.abort()  # the reading side sees it and retries
                return

    def _why_unsendable(self, session: _Session, share: Share) -> str | None:
        """Rebuild the header the pool will rebuild from the submit, and check it ourselves."""
        with self._cond:
            first_valid = self._first_valid_generation
        job = share.job
        if job.source != session.address.url or job.generation < first_valid:
            return "local:stale session"
        notify = session.jobs.get(job.job_id)
        if notify is None or session.extranonce1 is None:
            return "local:unknown job"
        if len(job.extranonce2) != session.extranonce2_size:
            return "local:bad extranonce2"
        header = share.header
        version_bits = int.from_bytes(header[:4], "little") & session.version_mask
        rebuilt = build_header(
            notify, session.extranonce1, job.extranonce2,
            version=roll_version(notify.version, version_bits, session.version_mask),
            ntime=int.from_bytes(header[68:72], "little"), nonce=share.nonce,
        )
        if rebuilt != header:
            return "local:header mismatch"
        if hash_value(rebuilt) > min(job.target, session.easiest_target):
            return "local:above target"
        return None

    # ------------------------------------------------------------- pool messages

    async def _handle_line(self, session: _Session, line: bytes) -> None:
        if not line.strip():
            return  # blank keep-alive lines are harmless
        try:
            message = json.loads(line)
        except (ValueError, RecursionError) as error:  # RecursionError: absurdly nested JSON
            raise ProtocolViolation(f"malformed JSON: {line[:80]!r}") from error
        if not isinstance(message, dict):
            raise ProtocolViolation(f"expected a JSON object: {line[:80]!r}")
        method = message.get("method")
        if method is not None:
            await self._handle_notification(session, method, message.get("params"),
                                            message.get("id"))
        else:
            self._handle_response(session, message)

    def _handle_response(self, session: _Session, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        if not isinstance(request_id, int) or request_id not in session.pending:
            log.debug("stratum.unexpected_response", id=request_id)
            return
        kind, share = session.pending.pop(request_id)
        result, error = message.get("result"), message.get("error")
        if kind == "mining.configure":
            session.configure_pending = False
            if error is not None:
                self._configure_struck(session.address, "refused")
            else:
                self._configure_refused.pop(session.address, None)
            self._configured(session, result if error is None else None)
        elif kind == "mining.subscribe":
            if error is not None or not isinstance(result, list) or len(result) < 3:
                raise ProtocolViolation(f"subscribe failed: {error or result!r:.120}")
            self._set_extranonce(session, result[1], result[2])
        elif kind == "mining.authorize":
            if result is not True:
                raise ProtocolViolation(f"authorization refused: {error!r:.120}")
            session.authorized = True
            log.info("stratum.authorized", pool=session.address.url, user=self._user)
        elif kind == "submit":
            accepted = result is True and error is None
            reason = None if accepted else _reason(error)
            # Accepted shares are counted in telemetry; only a rejection is worth a line.
            (log.debug if accepted else log.warning)(
                "stratum.share_result", accepted=accepted, reason=reason,
                job_id=share.job.job_id if share else None)
            self._count(accepted, reason)

    def configure_refused(self) -> list[str]:
        """The pools that refused or dropped `mining.configure` when last asked (in "auto":
        asked again after a backoff)."""
        return sorted(address.url for address in self._configure_refused)

    def _ask_configure(self, address: PoolAddress) -> bool:
        refusal = self._configure_refused.get(address)
        return refusal is None or self._version_rolling is True \
            or time.monotonic() >= refusal.retry_at

    def _configure_struck(self, address: PoolAddress, how: str) -> None:
        if self._version_rolling != "auto":
            return
        previous = self._configure_refused.get(address)
        strikes = 1 if previous is None else previous.strikes + 1
        # At least twice the reconnect backoff's cap: the reconnect that follows a drop at once
        # goes without; later ones ask again.
        wait_s = min(CONFIGURE_RETRY_MAX_S,
                     2 * self._backoff_max_s * 2 ** min(strikes - 1, 30)) * random.uniform(1, 1.5)
        self._configure_refused[address] = _Refusal(strikes, time.monotonic() + wait_s)
        log.warning("stratum.configure_" + how, pool=address.url, strikes=strikes,
                    ask_again_in_s=round(wait_s, 1))

    def _configured(self, session: _Session, result: Any) -> None:
        mask = 0
        if isinstance(result, dict) and result.get("version-rolling") is True:
            try:
                mask = parse_u32_hex(result.get("version-rolling.mask"), "version-rolling.mask")
            except ValueError as error:
                raise ProtocolViolation(str(error)) from error
        session.version_mask = mask & self._requested_mask
        log.info("stratum.version_rolling", mask=f"{session.version_mask:08x}")

    async def _handle_notification(self, session: _Session, method: Any, params: Any,
                                   request_id: Any) -> None:
        if not isinstance(params, list):
            raise ProtocolViolation(f"{method!r:.40}: params must be a list")
        if method == "mining.notify":
            try:
                notify = Notify.from_params(params)
            except ValueError as error:
                raise ProtocolViolation(f"mining.notify: {error}") from error
            if session.extranonce1 is None:
                raise ProtocolViolation("mining.notify before a subscribe result")
            session.jobs[notify.job_id] = notify
            while len(session.jobs) > 64:
                del session.jobs[next(iter(session.jobs))]
            fresh = notify.clean_jobs or session.notify is None
            session.notify = notify
            self._publish(session, bump=fresh)
        elif method == "mining.set_difficulty":
            difficulty = params[0] if params else None
            if (isinstance(difficulty, bool) or not isinstance(difficulty, int | float)
                    or not math.isfinite(difficulty) or difficulty <= 0):
                raise ProtocolViolation(f"bad difficulty {difficulty!r:.40}")
            session.difficulty = float(difficulty)
            self._publish(session, bump=False)
        elif method == "mining.set_extranonce":
            if len(params) < 2:
                raise ProtocolViolation("mining.set_extranonce needs 2 params")
            self._set_extranonce(session, params[0], params[1])
            self._publish(session, bump=True, invalidate_old=True)
        elif method == "mining.set_version_mask":
            try:
                mask = parse_u32_hex(params[0] if params else None, "version mask")
            except ValueError as error:
                raise ProtocolViolation(str(error)) from error
            session.version_mask = mask & self._requested_mask
            self._publish(session, bump=True, invalidate_old=True)
        elif method == "client.reconnect":
            raise _Reconnect(*self._reconnect_target(session, params))
        elif method == "client.get_version" and request_id is not None:
            await self._write(session, {"id": request_id, "result": CLIENT_AGENT, "error": None})
        elif method == "client.show_message":
            log.info("stratum.pool_message", message=str(params[:1])[:200])
        else:
            log.debug("stratum.unknown_method", method=str(method)[:40])

    def _set_extranonce(self, session: _Session, extranonce1: Any, size: Any) -> None:
        try:
            value = parse_hex(extranonce1, "extranonce1")
        except ValueError as error:
            raise ProtocolViolation(str(error)) from error
        if len(value) > 32:
            raise ProtocolViolation(f"extranonce1 too long: {len(value)} bytes")
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 16:
            raise ProtocolViolation(f"bad extranonce2_size {size!r:.20}")
        session.extranonce1, session.extranonce2_size = value, size

    def _reconnect_target(self, session: _Session, params: list[Any]) -> tuple[PoolAddress, float]:
        """Honour client.reconnect, but only towards a host from our own configuration."""
        address = session.address
        host, port, wait = [*params, None, None, 0][:3]
        wait_s = float(wait) if isinstance(wait, int | float) and not isinstance(wait, bool) else 0
        wait_s = min(max(wait_s, 0.0), MAX_RECONNECT_WAIT_S)
        if host:
            if isinstance(port, str) and port.isdigit():
                port = int(port)
            allowed_hosts = {pool.host for pool in self._pools}
            if host in allowed_hosts and isinstance(port, int) and 0 < port < 65536:
                address = PoolAddress(host, port)
            else:
                log.warning("stratum.reconnect_target_refused", host=str(host)[:80],
                            port=str(port)[:10])
        return address, wait_s

    def _publish(self, session: _Session, *, bump: bool, invalidate_old: bool = False) -> None:
        """Make the session's latest notify the miner's work."""
        if session.notify is None or session.extranonce1 is None:
            return
        target = target_for_difficulty(session.difficulty)
        session.easiest_target = max(session.easiest_target, target)
        work = _Work(session.notify, session.extranonce1, session.extranonce2_size,
                     session.version_mask, target, session.address.url)
        with self._cond:
            self._work = work
            if bump:
                self._generation += 1
            if invalidate_old:
                self._first_valid_generation = self._generation
            self._cond.notify_all()

    def _count(self, accepted: bool, reason: str | None) -> None:
        with self._cond:
            if accepted:
                self._stats.accepted += 1
                return
            self._stats.rejected += 1
            reasons = self._stats.rejected_by_reason
            key = reason or "rejected"
            if key not in reasons and len(reasons) >= MAX_REASONS:
                key = "other"
            reasons[key] = reasons.get(key, 0) + 1


def _reason(error: Any) -> str:
    """A short printable reason from a pool's error ([code, message, data], dict or string)."""
    if isinstance(error, list) and len(error) > 1:
        error = error[1]
    elif isinstance(error, dict):
        error = error.get("message", error)
    text = "".join(c for c in str(error) if c.isprintable()).strip().lower()
    return text[:64] or "rejected"
