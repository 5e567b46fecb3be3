"""Leader election and the leader's state on etcd, through etcd's JSON gateway (grpc-gateway over
its v3 API: `/v3/lease/grant`, `/v3/lease/keepalive`, `/v3/election/campaign`,
`/v3/election/leader`, `/v3/kv/range`, `/v3/kv/txn`). Bytes are base64 in JSON, 64-bit numbers
are strings.

How long a leader is trusted: a replica leads while its etcd lease lives. It renews the lease
every third of its TTL and counts the lease as ending one TTL after the last renewal it *sent*
that etcd answered (etcd counts from when it received it, later), so a replica that cannot reach
a quorum stops acting no later than etcd lets its election key expire, and a standby campaigning
on the same name leads once the key is gone: within the TTL after the leader went silent.
Writes of the leader's state are transactions that succeed only while its election key exists
(compare on its create revision): a deposed leader's write is refused by etcd.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx


class EtcdError(Exception):
    """etcd could not be reached, or answered with an error; the message says which."""


class LeaseGone(EtcdError):
    """The lease expired or was revoked: whatever it held is gone."""


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


@dataclass(frozen=True, slots=True)
class LeaderKey:
    """A replica's key in the election (what campaign returns)."""

    name: str  # the election's name
    key: str  # the replica's key under it
    rev: int  # its create revision
    lease: int

    def to_json(self) -> dict[str, str]:
        return {"name": b64(self.name), "key": b64(self.key), "rev": str(self.rev),
                "lease": str(self.lease)}


class Etcd:
    """etcd's v3 JSON gateway on one of several endpoints (the next is tried when one fails)."""

    def __init__(self, endpoints: Sequence[str], timeout_s: float = 2.0) -> None:
        if not endpoints:
            raise ValueError("etcd needs at least one endpoint")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout_s = timeout_s
        self._first = 0
        self.client = httpx.AsyncClient(trust_env=False)

    async def close(self) -> None:
        await self.client.aclose()

    async def post(self, path: str, body: dict[str, Any], timeout_s: float | None = None,
                   *, every: bool = True) -> dict[str, Any]:
        """One request, to the endpoints in turn until one answers (`every`: else only the
        current one), within `timeout_s` (math.inf: none). A gRPC error in the answer raises
        EtcdError with etcd's message."""
        errors = []
        order = self.endpoints[self._first:] + self.endpoints[:self._first]
        for n, endpoint in enumerate(order if every else order[:1]):
            try:
                timeout = self.timeout_s if timeout_s is None else timeout_s
                reply = await self.client.post(
                    endpoint + path, content=json.dumps(body),
                    timeout=None if math.isinf(timeout) else timeout)
            except httpx.TimeoutException as exc:
                errors.append(f"{endpoint}: no answer in time ({type(exc).__name__})")
                continue
            except httpx.HTTPError as exc:
                errors.append(f"{endpoint}: {type(exc).__name__}: {exc}")
                continue
            try:
                data = reply.json()
            except ValueError:
                errors.append(f"{endpoint}: HTTP {reply.status_code}, not JSON")
                continue
            if reply.status_code != 200 or "error" in data or "code" in data:
                message = data.get("message") or data.get("error") or reply.text[:200]
                if "lease not found" in str(message) or "requested lease not found" in \
                        str(message):
                    raise LeaseGone(str(message))
                if reply.status_code >= 500 and "leader" in str(message).lower():
                    errors.append(f"{endpoint}: {message}")  # no quorum there: try another
                    continue
                raise EtcdError(f"{endpoint}{path}: {message}")
            self._first = (self._first + n) % len(self.endpoints)
            return dict(data)
        if not every:  # the next request goes to the next endpoint
            self._first = (self._first + 1) % len(self.endpoints)
        raise EtcdError("; ".join(errors) or "no etcd endpoint")

    # -- leases ------------------------------------------------------------------------------

    async def grant(self, ttl_s: int) -> int:
        data = await self.post("/v3/lease/grant", {"TTL": str(ttl_s)})
        return int(data["ID"])

    async def keepalive(self, lease: int) -> int:
        """Renew once; the TTL granted. LeaseGone if it no longer exists."""
        data = await self.post("/v3/lease/keepalive", {"ID": str(lease)})
        result = data.get("result") or {}
        ttl = int(result.get("TTL") or 0)
        if ttl <= 0:
            raise LeaseGone(f"lease {lease:x} has expired")
        return ttl

    async def revoke(self, lease: int) -> None:
        with contextlib.suppress(LeaseGone):
            await self.post("/v3/lease/revoke", {"ID": str(lease)})

    # -- election ----------------------------------------------------------------------------

    async def campaign(self, name: str, lease: int, value: str) -> LeaderKey:
        """Wait to lead (no timeout: it returns when every earlier candidate's key is gone)."""
        data = await self.post("/v3/election/campaign",
                               {"name": b64(name), "lease": str(lease), "value": b64(value)},
                               timeout_s=math.inf, every=False)
        leader = data["leader"]
        return LeaderKey(name=unb64(leader["name"]).decode(), key=unb64(leader["key"]).decode(),
                         rev=int(leader["rev"]), lease=int(leader["lease"]))

    async def leader(self, name: str) -> tuple[str, str] | None:
        """The leader's (key, value), read through the quorum; None when there is none."""
        try:
            data = await self.post("/v3/election/leader", {"name": b64(name)})
        except EtcdError as exc:
            if "no leader" in str(exc):
                return None
            raise
        kv = data.get("kv")
        if not kv:
            return None
        return unb64(kv.get("key")).decode(), unb64(kv.get("value")).decode()

    async def resign(self, key: LeaderKey) -> None:
        await self.post("/v3/election/resign", {"leader": key.to_json()})

    # -- keys --------------------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        data = await self.post("/v3/kv/range", {"key": b64(key)})
        kvs = data.get("kvs") or []
        return unb64(kvs[0].get("value")) if kvs else None

    async def put_if_leader(self, leader: LeaderKey, key: str, value: bytes) -> bool:
        """Put only while `leader`'s election key exists as created (False: deposed)."""
        data = await self.post("/v3/kv/txn", {
            "compare": [{"key": b64(leader.key), "target": "CREATE", "result": "EQUAL",
                         "create_revision": str(leader.rev)}],
            "success": [{"request_put": {"key": b64(key), "value": b64(value)}}],
        })
        return bool(data.get("succeeded"))


class Election:
    """One replica's place in the election: a lease kept alive in the background, a campaign,
    and the local count of how long this replica may still act as leader."""

    def __init__(self, etcd: Etcd, name: str, replica: str, ttl_s: int) -> None:
        self.etcd = etcd
        self.name = name
        self.replica = replica
        self.ttl_s = ttl_s
        self.lease: int | None = None
        self.key: LeaderKey | None = None
        self.valid_until = 0.0  # monotonic: the lease counts as alive until then
        self.renewed_at = 0.0  # monotonic: when the last renewal etcd granted was sent
        self.lost_reason = ""
        self._keeper: asyncio.Task[None] | None = None
        self.lost = asyncio.Event()

    @property
    def leading(self) -> bool:
        return self.key is not None and not self.lost.is_set() and \
            time.monotonic() < self.valid_until

    def expires_in_s(self) -> float:
        return self.valid_until - time.monotonic()

    async def start(self) -> None:
        """A fresh lease, kept alive from now on."""
        sent = time.monotonic()
        self.lease = await self.etcd.grant(self.ttl_s)
        self.valid_until = sent + self.ttl_s
        self.renewed_at = sent
        self.lost.clear()
        self.lost_reason = ""
        self._keeper = asyncio.create_task(self._keep(self.lease), name="etcd-keepalive")

    async def _keep(self, lease: int) -> None:
        every = self.ttl_s / 3.0
        while True:
            await asyncio.sleep(max(0.0, min(every, self.valid_until - time.monotonic())))
            if time.monotonic() >= self.valid_until:
                self._lose(f"the etcd lease was not renewed within its {self.ttl_s} s TTL "
                           "(no quorum, or etcd unreachable)")
                return
            sent = time.monotonic()
            try:
                ttl = await asyncio.wait_for(self.etcd.keepalive(lease),
                                             max(0.05, self.valid_until - sent))
            except LeaseGone as exc:
                self._lose(f"the etcd lease is gone: {exc}")
                return
            except (EtcdError, TimeoutError):
                await asyncio.sleep(min(0.2, every))
                continue
            self.valid_until = sent + ttl
            self.renewed_at = sent

    def _lose(self, reason: str) -> None:
        if not self.lost.is_set():
            self.lost_reason = reason
            self.lost.set()

    async def campaign(self) -> LeaderKey:
        """Until this replica leads; EtcdError/LeaseGone when its lease is lost meanwhile."""
        assert self.lease is not None
        campaign = asyncio.create_task(self.etcd.campaign(self.name, self.lease, self.replica))
        lost = asyncio.create_task(self.lost.wait())
        try:
            done, _ = await asyncio.wait({campaign, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        if campaign not in done:
            campaign.cancel()
            with contextlib.suppress(asyncio.CancelledError, EtcdError):
                await campaign
            raise LeaseGone(self.lost_reason)
        self.key = campaign.result()
        return self.key

    async def still_leader(self) -> bool:
        """The leader key read through the quorum is still this replica's."""
        if not self.leading or self.key is None:
            return False
        try:
            current = await self.etcd.leader(self.name)
        except EtcdError:
            return self.leading  # unknown now: the lease's own count decides
        return current is not None and current[0] == self.key.key

    async def stop(self, revoke: bool = True) -> None:
        """Stop renewing; with `revoke` give the lease up now (best effort): the standby
        campaigns on at once instead of waiting out the TTL."""
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None
        lease, self.lease, self.key = self.lease, None, None
        self.valid_until = 0.0
        if revoke and lease is not None:
            with contextlib.suppress(EtcdError):
                await self.etcd.revoke(lease)
