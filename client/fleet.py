"""One question to many rigs: a dead or slow rig is a row with its error, never a stall.

    fleet = Fleet.from_file("rigs.txt", template=Endpoint(ca=..., cert=..., key=...))
    results = await fleet.telemetry()          # one Row per rig: value or error, and latency
    for row in results.failed: print(row.rig, row.error)
    await fleet.curtail(5000, deadline_s=30)   # each rig to 5 kW, each awaited to its end

One channel per rig, opened on first use and kept open; at most `concurrency` rigs in flight;
each rig has `deadline_s` for the whole of what is asked of it (every call it makes ends by
then), counted from when its turn comes. Members come from a list, a file (one rig a line:
`[NAME] HOST:PORT|unix:/path`, `#` comments) or DNS SRV records (`from_srv`, with dnspython).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import grpc

from client.deadline import deadline
from client.endpoint import Endpoint
from client.errors import EndpointError, RigError, Timeout
from client.model import Device, Inventory, PowerLimit, Snapshot
from client.rig import Rig
from hal.device import Capability
from rigapi import FRESH_STREAM_OPTIONS
from rigapi.model import Operation, WorkloadKind, WorkloadSpec

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Row(Generic[T]):
    """One rig's answer: its value, or the error that says what happened; and how long it took
    (from its turn to its answer)."""

    rig: str
    value: T | None = None
    error: RigError | None = None
    latency_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


class Results(Sequence[Row[T]]):
    """The rows of one fleet-wide call, in the fleet's order."""

    def __init__(self, rows: Iterable[Row[T]], wall_s: float = 0.0) -> None:
        self.rows = list(rows)
        self.wall_s = wall_s

    def __getitem__(self, index: Any) -> Any:
        return self.rows[index]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Row[T]]:
        return iter(self.rows)

    @property
    def ok(self) -> list[Row[T]]:
        return [r for r in self.rows if r.ok]

    @property
    def failed(self) -> list[Row[T]]:
        return [r for r in self.rows if not r.ok]

    def values(self) -> dict[str, T]:
        return {r.rig: r.value for r in self.rows if r.ok}  # type: ignore[misc]

    def errors(self) -> dict[str, RigError]:
        return {r.rig: r.error for r in self.rows if r.error is not None}

    def summary(self) -> str:
        """"47 of 50 rigs answered; 2 Timeout, 1 Unreachable" (counts by error kind)."""
        kinds: dict[str, int] = {}
        for row in self.failed:
            name = type(row.error).__name__
            kinds[name] = kinds.get(name, 0) + 1
        text = f"{len(self.ok)} of {len(self.rows)} rigs answered"
        if kinds:
            text += "; " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        return text


def parse_members(lines: Iterable[str], source: str = "fleet") -> list[tuple[str, str]]:
    """(name, target) for each line `[NAME] TARGET`; blank lines and # comments skipped."""
    members: list[tuple[str, str]] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) > 2:
            raise EndpointError(f"{source}:{number}: one rig a line, `[NAME] HOST:PORT` or "
                                f"`[NAME] unix:/path`, got {line.strip()!r}")
        name, target = (words[0], words[1]) if len(words) == 2 else (words[0], words[0])
        if name in seen:
            raise EndpointError(f"{source}:{number}: rig {name!r} is listed twice")
        seen.add(name)
        members.append((name, target))
    return members


class Fleet:
    def __init__(self, members: Iterable[Rig | Endpoint | str | tuple[str, str]], *,
                 template: Endpoint | None = None, concurrency: int = 256,
                 deadline_s: float = 5.0, timeout_s: float = 10.0,
                 options: Sequence[tuple[str, Any]] = FRESH_STREAM_OPTIONS) -> None:
        """`members`: Rigs, Endpoints, targets (`HOST:PORT`, `unix:/path`) or (name, target);
        targets take their credentials from `template`."""
        if concurrency < 1 or not deadline_s > 0:
            raise ValueError("a fleet needs concurrency >= 1 and a positive deadline")
        self.template = template or Endpoint()
        self.concurrency = concurrency
        self.deadline_s = deadline_s
        self.rigs: dict[str, Rig] = {}
        credentials = self.template.credentials()  # the files read once for every member
        for member in members:
            if isinstance(member, Rig):
                rig = member
            else:
                name = ""
                if isinstance(member, tuple):
                    name, member = member
                endpoint = member if isinstance(member, Endpoint) else \
                    Endpoint.parse(member, self.template)
                rig = Rig(endpoint, timeout_s=timeout_s, name=name, options=options,
                          credentials=credentials if endpoint.tls else None)
            if rig.name in self.rigs:
                raise EndpointError(f"rig {rig.name!r} is in the fleet twice")
            self.rigs[rig.name] = rig

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> Fleet:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise EndpointError(f"cannot read fleet file {path}: {exc.strerror}",
                                path=str(path)) from None
        members = parse_members(text.splitlines(), str(path))
        if not members:
            raise EndpointError(f"fleet file {path} names no rig")
        return cls(members, **kwargs)

    @classmethod
    def from_srv(cls, name: str, *, nameserver: str | None = None, port: int = 53,
                 **kwargs: Any) -> Fleet:
        """The rigs DNS SRV records name (`_rigd._tcp.site.example.`), by priority then
        weight; `nameserver` asks that server instead of the system's resolver."""
        try:
            import dns.resolver
        except ImportError:
            raise EndpointError("DNS SRV discovery needs dnspython (pip install dnspython)"
                                ) from None
        resolver = dns.resolver.Resolver(configure=nameserver is None)
        if nameserver is not None:
            resolver.nameservers = [nameserver]
            resolver.port = port
        try:
            answer = resolver.resolve(name, "SRV")
        except Exception as exc:  # dnspython's NXDOMAIN, NoAnswer, timeouts...
            raise EndpointError(f"no SRV records for {name}: {exc}") from None
        records = sorted(answer, key=lambda r: (r.priority, -r.weight, str(r.target)))
        targets = [f"{str(r.target).rstrip('.')}:{r.port}" for r in records]
        return cls(targets, **kwargs)

    def __len__(self) -> int:
        return len(self.rigs)

    async def close(self) -> None:
        await asyncio.gather(*(rig.close() for rig in self.rigs.values()))

    async def __aenter__(self) -> Fleet:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- fan-out ----------------------------------------------------------------------------

    async def map(self, fn: Callable[[Rig], Awaitable[T]], *, deadline_s: float | None = None,
                  rigs: Iterable[str] | None = None) -> Results[T]:
        """fn(rig) on every rig (or those named), at most `concurrency` at a time, each within
        its deadline: one Row per rig, in the fleet's order."""
        limit = self.deadline_s if deadline_s is None else deadline_s
        names = list(self.rigs) if rigs is None else list(rigs)
        gate = asyncio.Semaphore(self.concurrency)

        async def one(name: str) -> Row[T]:
            rig = self.rigs[name]
            async with gate:
                started = time.monotonic()
                try:
                    with deadline(limit):
                        # Every call's own gRPC deadline ends first; this only bounds the
                        # rig's code between calls.
                        async with asyncio.timeout(limit + 0.5):
                            value = await fn(rig)
                except RigError as exc:
                    return Row(name, error=exc, latency_s=time.monotonic() - started)
                except TimeoutError:
                    error = Timeout(f"no answer within {limit:g} s",
                                    code=grpc.StatusCode.DEADLINE_EXCEEDED, rig=name,
                                    party="rigd", answered=False, connected=rig.connected())
                    return Row(name, error=error, latency_s=time.monotonic() - started)
                return Row(name, value=value, latency_s=time.monotonic() - started)

        started = time.monotonic()
        rows = await asyncio.gather(*(one(n) for n in names))
        return Results(rows, time.monotonic() - started)

    async def connect(self, *, deadline_s: float | None = None) -> Results[dict[str, str]]:
        """Open every rig's channel (a health check each): later calls skip the handshake."""
        return await self.map(lambda rig: rig.health(("",)), deadline_s=deadline_s)

    # ---- reads ------------------------------------------------------------------------------

    async def inventory(self, *, deadline_s: float | None = None) -> Results[Inventory]:
        return await self.map(lambda rig: rig.inventory(), deadline_s=deadline_s)

    async def telemetry(self, *, max_age_s: float | None = None,
                        deadline_s: float | None = None) -> Results[Snapshot]:
        """Every device's latest reading and the rig's power, of every rig."""
        return await self.map(lambda rig: rig.telemetry(max_age_s=max_age_s),
                              deadline_s=deadline_s)

    # ---- leases -----------------------------------------------------------------------------

    async def acquire_leases(self, holder: str, ttl_s: int, *,
                             on_lost: Callable[[Any], None] | None = None,
                             deadline_s: float | None = None) -> Results[Any]:
        """A lease on every rig, each renewed in the background: the fleet's mutating calls
        then carry each rig's fencing token, and stop on a rig whose lease is lost."""
        return await self.map(lambda rig: rig.acquire_lease(holder, ttl_s, on_lost=on_lost),
                              deadline_s=deadline_s)

    # ---- changes ----------------------------------------------------------------------------

    @staticmethod
    async def _devices(rig: Rig, device_ids: Mapping[str, Sequence[str]] | None,
                       select: Callable[[Device], bool], capability: str) -> list[str]:
        if device_ids is not None:
            return list(device_ids.get(rig.name, ()))
        inventory = await rig.inventory()
        return [d.id for d in inventory.devices if capability in d.capabilities and select(d)]

    async def set_power_limit(self, watts: float | Mapping[str, float], *,
                              device_ids: Mapping[str, Sequence[str]] | None = None,
                              select: Callable[[Device], bool] = lambda device: True,
                              deadline_s: float | None = None
                              ) -> Results[tuple[PowerLimit, ...]]:
        """Set power limits: on the devices named per rig, else on every device of each rig
        whose limit can be set (and that `select` keeps). `watts` per rig or for all."""
        async def one(rig: Rig) -> tuple[PowerLimit, ...]:
            target = watts[rig.name] if isinstance(watts, Mapping) else watts
            ids = await self._devices(rig, device_ids, select, Capability.SET_POWER_LIMIT)
            return tuple([await rig.set_power_limit(d, target) for d in ids])

        rigs = watts.keys() if isinstance(watts, Mapping) else None
        return await self.map(one, deadline_s=deadline_s, rigs=rigs)

    async def switch(self, workload: WorkloadSpec | WorkloadKind | str, *,
                     device_ids: Mapping[str, Sequence[str]] | None = None,
                     select: Callable[[Device], bool] = lambda device: True, wait: bool = True,
                     deadline_s: float | None = None) -> Results[Operation]:
        """Switch the devices named per rig (else every device of a rig that can run the
        workload's kind and that `select` keeps); with `wait`, each to its end."""
        spec = workload if isinstance(workload, WorkloadSpec) else WorkloadSpec(
            WorkloadKind(workload))
        capability = str(spec.kind) if spec.kind != WorkloadKind.IDLE else ""

        async def one(rig: Rig) -> Operation:
            if device_ids is not None:
                ids = list(device_ids.get(rig.name, ()))
            else:
                inventory = await rig.inventory()
                ids = [d.id for d in inventory.devices
                       if (not capability or capability in d.capabilities) and select(d)]
            op = await rig.start_switch(ids, spec)
            return await rig.wait(op) if wait else op

        rigs = device_ids.keys() if device_ids is not None else None
        return await self.map(one, deadline_s=deadline_s, rigs=rigs)

    async def curtail(self, target_w: float | Mapping[str, float], *, deadline_s: int = 60,
                      expiry_s: int = 3600, reason: str = "", wait: bool = True,
                      rig_deadline_s: float | None = None) -> Results[Operation]:
        """Curtail each rig to its target (one for all, or per rig); with `wait`, each until
        rigd confirmed it or found it cannot. A rig's own deadline is then the curtailment's
        plus the fleet's."""
        limit = rig_deadline_s if rig_deadline_s is not None else \
            (deadline_s + self.deadline_s if wait else None)

        async def one(rig: Rig) -> Operation:
            target = target_w[rig.name] if isinstance(target_w, Mapping) else target_w
            op = await rig.start_curtailment(target, deadline_s=deadline_s, expiry_s=expiry_s,
                                             reason=reason)
            return await rig.wait(op) if wait else op

        rigs = target_w.keys() if isinstance(target_w, Mapping) else None
        return await self.map(one, deadline_s=limit, rigs=rigs)

    async def cancel_curtailment(self, *, wait: bool = True, deadline_s: float | None = None
                                 ) -> Results[Operation]:
        async def one(rig: Rig) -> Operation:
            op = await rig.start_cancel_curtailment()
            return await rig.wait(op) if wait else op

        return await self.map(one, deadline_s=deadline_s)
