"""A lease held on one rig, renewed in the background, and lost loudly.

The rule a controller needs: once it may have lost its lease it stops acting at once. So the
lease is taken as lost when rigd says it is not ours any more (NOT_FOUND after a restart or an
expiry, PERMISSION_DENIED once another identity holds it) and also when it could not be renewed
before its expiry as this client counts it: from the moment the last successful renewal was
*sent* (rigd counts from its arrival, later), so this client gives up no later than rigd does.
Either way `on_lost` is called and `lost` set at that moment, and the rig's next mutating call is
refused here with LeaseLost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from client.backoff import Backoff
from client.deadline import without_deadline
from client.errors import InvalidArgument, LeaseLost, NotAllowed, NotFound, RigError
from client.model import LeaseInfo

if TYPE_CHECKING:
    from client.rig import Rig

log = logging.getLogger("client.lease")


class Lease:
    """Made by Rig.acquire_lease()."""

    def __init__(self, rig: Rig, info: LeaseInfo, ttl_s: int, *, sent_at: float,
                 on_lost: Callable[[Lease], None] | None = None, renew_every: float = 1 / 3,
                 keep: bool = True) -> None:
        if not 0 < renew_every < 1:
            raise ValueError(f"renew_every is a fraction of the ttl in (0, 1), got {renew_every}")
        self._rig = rig
        self.info = info
        self.ttl_s = ttl_s
        self._expires = sent_at + ttl_s  # monotonic
        self._on_lost = on_lost
        self._every_s = ttl_s * renew_every
        self.lost = asyncio.Event()
        self.lost_reason = ""
        self.lost_unix_s: float | None = None
        self.renewals = 0
        self.failed_renewals = 0
        self._task: asyncio.Task[None] | None = None
        if keep:  # outside any caller's deadline (Fleet.map's): the renewals outlive the call
            self._task = asyncio.get_running_loop().create_task(
                self._keep(), name=f"lease {info.lease_id[:8]} on {rig.name}",
                context=without_deadline())

    @property
    def lease_id(self) -> str:
        return self.info.lease_id

    @property
    def fencing_token(self) -> int:
        return self.info.fencing_token

    @property
    def is_lost(self) -> bool:
        return self.lost.is_set()

    @property
    def expires_in_s(self) -> float:
        """Seconds until the lease expires as this client counts it (<= rigd's count)."""
        return self._expires - time.monotonic()

    def check(self) -> None:
        """Raise LeaseLost unless the lease is still ours (as far as this client knows)."""
        if not self.lost.is_set() and self.expires_in_s <= 0:
            self._lose(f"its {self.ttl_s} s ttl ran out without a renewal")
        if self.lost.is_set():
            raise LeaseLost(f"lease {self.lease_id} on {self._rig.name} is lost "
                            f"({self.lost_reason}): no change is sent with its fencing token "
                            f"{self.fencing_token}; acquire a new lease", rig=self._rig.name)

    def _lose(self, reason: str) -> None:
        if self.lost.is_set():
            return
        self.lost_reason = reason
        self.lost_unix_s = time.time()
        self.lost.set()
        log.warning("lease %s on %s lost: %s", self.lease_id, self._rig.name, reason)
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        if self._on_lost is not None:
            try:
                self._on_lost(self)
            except Exception:  # the caller's callback must not stop the renewals' bookkeeping
                log.exception("on_lost of lease %s on %s failed", self.lease_id, self._rig.name)

    async def _renew(self) -> None:
        sent = time.monotonic()
        info = await self._rig.renew_lease(
            self.lease_id, self.ttl_s, timeout_s=max(0.001, min(self._rig.timeout_s,
                                                                self._expires - sent)))
        self.info = info
        self._expires = sent + self.ttl_s
        self.renewals += 1

    async def verify(self) -> None:
        """Renew now: after a refusal, find out at once whether the lease is still ours."""
        if self.lost.is_set():
            return
        try:
            await self._renew()
        except (NotFound, NotAllowed, InvalidArgument) as exc:
            self._lose(f"rigd no longer holds it for this client: {exc}")
        except RigError:
            pass  # unknown: the background renewal goes on deciding

    async def _keep(self) -> None:
        retry = Backoff(min(0.05, self._every_s), max(self._every_s, 0.05))
        next_at = time.monotonic() + self._every_s
        last_error = ""
        while True:
            await asyncio.sleep(max(0.0, min(next_at, self._expires) - time.monotonic()))
            if self.expires_in_s <= 0:
                self._lose(f"not renewed within its {self.ttl_s} s ttl"
                           + (f" ({last_error})" if last_error else ""))
                return
            try:
                await self._renew()
            except (NotFound, NotAllowed, InvalidArgument) as exc:
                self._lose(f"rigd no longer holds it for this client: {exc}")
                return
            except RigError as exc:  # unreachable, timed out, unavailable: try again soon
                self.failed_renewals += 1
                last_error = f"{type(exc).__name__}: {exc}"
                next_at = time.monotonic() + retry.next()
                continue
            retry.reset()
            last_error = ""
            next_at = time.monotonic() + self._every_s

    async def stop(self) -> None:
        """Stop renewing (the lease runs out at its expiry); the rig forgets it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._rig._forget_lease(self)

    async def release(self) -> None:
        """Give the lease up now (if it is still ours) and stop renewing it."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if not self.lost.is_set():
            try:
                await self._rig.release_lease(self.lease_id)
            except (NotFound, NotAllowed):
                pass  # already not ours: nothing to give up
        self._rig._forget_lease(self)

    async def __aenter__(self) -> Lease:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()

    def __repr__(self) -> str:
        state = f"lost: {self.lost_reason}" if self.is_lost else \
            f"expires in {self.expires_in_s:.1f} s"
        return f"<Lease {self.lease_id[:8]} on {self._rig.name} token {self.fencing_token} " \
               f"{state}>"
