"""One writer per rig: leases with fencing tokens.

A controller acquires a lease and passes its fencing token with every mutating call. Tokens only
grow (they start from the wall clock in microseconds, so a restarted agent never reissues one,
and each grant adds a random step, so the next token cannot be guessed), and a call is admitted
only when both its token and its caller's identity are the live lease's: a controller that paused
past its lease's expiry cannot overwrite the decisions of the one that took over, and nobody can
act on a token they merely saw.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass

from agent.core.errors import Code, Refused

MIN_TTL_S = 1
MAX_TTL_S = 3600
MAX_HOLDER_CHARS = 200


@dataclass(frozen=True, slots=True)
class Lease:
    lease_id: str
    holder: str
    owner: str  # the authenticated identity that acquired it
    fencing_token: int
    expire_unix_s: float


class LeaseManager:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lease: Lease | None = None
        self._last_token = int(time.time() * 1_000_000)

    def _live(self) -> Lease | None:
        if self._lease is not None and self._lease.expire_unix_s <= time.time():
            self._lease = None
        return self._lease

    @staticmethod
    def _check_ttl(ttl_s: int) -> None:
        if not MIN_TTL_S <= ttl_s <= MAX_TTL_S:
            raise Refused(Code.INVALID_ARGUMENT,
                          f"ttl_s must be within {MIN_TTL_S} .. {MAX_TTL_S}, got {ttl_s}")

    def acquire(self, holder: str, owner: str, ttl_s: int, preempt: bool = False) -> Lease:
        self._check_ttl(ttl_s)
        if not holder or len(holder) > MAX_HOLDER_CHARS:
            raise Refused(Code.INVALID_ARGUMENT,
                          f"holder must be 1 .. {MAX_HOLDER_CHARS} characters")
        with self._lock:
            live = self._live()
            if live is not None and not preempt and live.owner != owner:
                remaining = live.expire_unix_s - time.time()
                raise Refused(
                    Code.FAILED_PRECONDITION,
                    f"rig is leased by {live.holder} ({live.owner}) for {remaining:.0f} s more",
                    reason="LEASE_HELD")
            self._last_token += 1 + secrets.randbelow(1 << 20)
            self._lease = Lease(
                lease_id=secrets.token_hex(16),
                holder=holder,
                owner=owner,
                fencing_token=self._last_token,
                expire_unix_s=time.time() + ttl_s,
            )
            return self._lease

    def _own(self, lease_id: str, owner: str) -> Lease:
        live = self._live()
        if live is None or live.lease_id != lease_id:
            raise Refused(Code.NOT_FOUND, f"lease {lease_id!r} is not live (expired, released "
                          "or unknown)", reason="LEASE_NOT_FOUND")
        if live.owner != owner:
            raise Refused(Code.PERMISSION_DENIED, f"lease {lease_id!r} belongs to {live.owner}",
                          reason="LEASE_NOT_YOURS")
        return live

    def renew(self, lease_id: str, owner: str, ttl_s: int) -> Lease:
        self._check_ttl(ttl_s)
        with self._lock:
            live = self._own(lease_id, owner)
            self._lease = Lease(
                live.lease_id, live.holder, live.owner, live.fencing_token, time.time() + ttl_s
            )
            return self._lease

    def release(self, lease_id: str, owner: str) -> None:
        with self._lock:
            self._own(lease_id, owner)
            self._lease = None

    def check(self, fencing_token: int, caller: str) -> None:
        """Admit a mutating call by `caller` carrying `fencing_token` (0 = no lease held).

        Refusals never echo the live token: it is the holder's secret."""
        with self._lock:
            live = self._live()
            if live is None:
                if fencing_token:
                    raise Refused(
                        Code.FAILED_PRECONDITION,
                        f"fencing token {fencing_token} is stale: no lease is live (expired?)",
                        reason="FENCING_TOKEN_STALE")
                return
            if fencing_token != live.fencing_token:
                given = f"token {fencing_token}" if fencing_token else "no fencing token"
                raise Refused(Code.FAILED_PRECONDITION,
                              f"rig is leased by {live.holder} ({live.owner}); {given} refused",
                              reason="LEASE_HELD")
            if caller != live.owner:
                raise Refused(
                    Code.PERMISSION_DENIED,
                    f"the fencing token belongs to {live.holder} ({live.owner}), not {caller}",
                    reason="LEASE_NOT_YOURS")

    def current(self) -> Lease | None:
        with self._lock:
            return self._live()
