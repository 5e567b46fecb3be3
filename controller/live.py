"""`rigsite run`: the live site controller. One loop per replica:

1. Campaign (etcd's election API); while another replica leads, wait. Without etcd endpoints the
   replica leads alone.
2. On becoming leader: read the previous leader's state from etcd (the policy's memory, the
   measured switch durations, the changes it had in flight), take a lease on every rig, read
   every rig, and adopt the changes in flight: each found at its rig by its request id is
   followed to its end, not sent again.
3. Every `interval_s` (sooner when the site's VEN receives an event): check that this replica
   still leads (its etcd lease counted locally, and the leader key read through the quorum);
   read the rigs and the inputs; call the policy, `controller.policy.decide` (the same function
   the replay calls); journal the round and every changed reason; write the memory and the
   changes about to be sent to etcd (a transaction refused once this replica is deposed); then
   send the changes (bounded in flight) and the rigs' Curtail targets.
4. Deposed, or etcd's quorum lost (the lease not renewed within its TTL): stop acting at once.
   The rigs keep their state (leases and curtailments expire by themselves at the rigs).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import math
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from client import Endpoint, Fleet
from client.errors import RigError
from controller.config import SiteConfig
from controller.etcd import Election, Etcd, EtcdError, LeaderKey
from controller.inputs import (
    DemandReader,
    HashpriceReader,
    OperatorCap,
    PriceBook,
    binding_cap,
    price_source,
)
from controller.journal import Journal
from controller.model import Fleet as PolicyFleet
from controller.model import PolicyMemory, Snapshot
from controller.policy import decide
from controller.rigs import (
    Applier,
    Facts,
    RigView,
    inference_endpoints,
    read_fleet,
    rig_state,
    workloads_by_device,
)
from controller.ven import SiteVen

log = structlog.get_logger("rigsite")


def configure_logging(level: str) -> None:
    structlog.configure(
        processors=[structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                    structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr), cache_logger_on_first_use=False)


# ---------------------------------------------------------------------------------------------
# Metrics


class Metrics:
    def __init__(self, replica: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry()
        self.leader = Gauge("rigsite_leader", "1 while this replica leads", registry=r)
        self.rounds = Counter("rigsite_rounds", "decision rounds", registry=r)
        self.round_s = Histogram("rigsite_round_seconds", "a round, reads to sends",
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r)
        self.decide_s = Histogram("rigsite_decide_seconds", "the policy's CPU time per round",
                                  buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1), registry=r)
        self.devices = Gauge("rigsite_devices", "devices by desired workload", ["desired"],
                             registry=r)
        self.price = Gauge("rigsite_price_usd_per_mwh", "the energy price read", registry=r)
        self.price_age = Gauge("rigsite_price_age_seconds", "its age", registry=r)
        self.price_usable = Gauge("rigsite_price_usable", "1 when the policy could use it",
                                  registry=r)
        self.input_errors = Counter("rigsite_input_errors", "inputs that could not be read",
                                    ["input"], registry=r)
        self.actions = Counter("rigsite_actions", "changes sent and their outcomes",
                               ["action", "state"], registry=r)
        self.in_flight = Gauge("rigsite_in_flight", "switches in flight", registry=r)
        self.rigs = Gauge("rigsite_rigs", "rigs by reachability", ["state"], registry=r)
        self.site_power = Gauge("rigsite_site_power_w", "the rigs' power read", registry=r)
        self.grid_cap = Gauge("rigsite_grid_cap_w", "the binding grid cap (NaN: none)",
                              registry=r)
        self.failovers = Counter("rigsite_elected", "times this replica became leader",
                                 registry=r)
        self.round_failures = Counter("rigsite_round_failures", "rounds that failed (journaled)",
                                      registry=r)
        Gauge("rigsite_replica_info", "this replica", ["replica"],
              registry=r).labels(replica=replica).set(1)

    def serve(self, address: str) -> None:
        from prometheus_client import start_http_server

        host, _, port = address.rpartition(":")
        start_http_server(int(port), addr=host.strip("[]"), registry=self.registry)


# ---------------------------------------------------------------------------------------------
# The leader's state in etcd


@dataclass
class LeaderState:
    memory: PolicyMemory
    facts: Facts
    intents: dict[str, dict[str, Any]]
    round: int

    def encode(self, replica: str) -> bytes:
        body = {"memory": self.memory.to_json(), "facts": self.facts.to_json(),
                "intents": self.intents, "round": self.round, "replica": replica,
                "t": time.time()}
        return gzip.compress(json.dumps(body, separators=(",", ":")).encode(), 6)

    @staticmethod
    def decode(data: bytes | None) -> LeaderState:
        if not data:
            return LeaderState(PolicyMemory.empty(), Facts(), {}, 0)
        body = json.loads(gzip.decompress(data))
        return LeaderState(PolicyMemory.from_json(body["memory"]),
                           Facts.from_json(body.get("facts") or {}),
                           dict(body.get("intents") or {}), int(body.get("round") or 0))


def make_fleet(config: SiteConfig) -> Fleet:
    template = Endpoint(ca=config.rig_ca_file, cert=config.rig_cert_file,
                        key=config.rig_key_file, server_name=config.rig_server_name,
                        token_file=config.rig_token_file)
    kwargs: dict[str, Any] = {"template": template, "concurrency": config.rig_concurrency,
                              "deadline_s": config.rig_deadline_s}
    if config.rig_file:
        return Fleet.from_file(config.rig_file, **kwargs)
    if config.rig_srv:
        return Fleet.from_srv(config.rig_srv, **kwargs)
    members: list[str | tuple[str, str]] = []
    for entry in config.rig_endpoints:
        name, sep, target = entry.partition("=")
        members.append((name, target) if sep else entry)
    return Fleet(members, **kwargs)


class Deposed(Exception):
    """This replica no longer leads (the message says why)."""


class Controller:
    def __init__(self, config: SiteConfig, openleadr: Any = None) -> None:
        self.config = config
        self.openleadr = openleadr
        self.metrics = Metrics(config.replica)
        self.journal = Journal(config.journal_path(), config.replica, config.journal_max_bytes)
        self.stop_requested = asyncio.Event()
        self.wake = asyncio.Event()
        self.prices = PriceBook()
        self.site_power_w: float | None = None
        self.round_no = 0
        self.http = httpx.AsyncClient(trust_env=False)
        self.price = price_source(config, self.http, self.prices)
        self.hashprices = [HashpriceReader(h, self.http) for h in config.hashprices]
        self.demand = DemandReader(config.inference, self.http,
                                   rate_window_s=config.policy_window_s)
        self.operator = OperatorCap(config.grid_cap_w, config.grid_cap_file, time.time())
        self.ven: SiteVen | None = None  # the site's VEN, while this replica leads

    # -- the replica's life ----------------------------------------------------------------

    async def run(self) -> int:
        c = self.config
        if c.metrics_address:
            self.metrics.serve(c.metrics_address)
        async with self.http:
            fleet = make_fleet(c)
            etcd = Etcd(c.etcd_endpoints, c.etcd_timeout_s) if c.etcd_endpoints else None
            log.info("rigsite_started", replica=c.replica, site=c.site_id, rigs=len(fleet),
                     etcd=list(c.etcd_endpoints), interval_s=c.interval_s)
            try:
                while not self.stop_requested.is_set():
                    if etcd is None:
                        await self.lead(fleet, None, None)
                        break
                    await self.term(fleet, etcd)
            finally:
                await fleet.close()
                if etcd is not None:
                    await etcd.close()
                self.journal.close()
        log.info("rigsite_stopped", replica=c.replica)
        return 0

    async def term(self, fleet: Fleet, etcd: Etcd) -> None:
        """Campaign, lead until deposed or stopped, step down."""
        c = self.config
        election = Election(etcd, f"{c.etcd_site_prefix}/leader", c.replica, c.etcd_lease_ttl_s)
        try:
            await election.start()
            campaign = asyncio.create_task(election.campaign())
            stopping = asyncio.create_task(self.stop_requested.wait())
            done, _ = await asyncio.wait({campaign, stopping},
                                         return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if campaign not in done:
                campaign.cancel()
                with contextlib.suppress(asyncio.CancelledError, EtcdError):
                    await campaign
                return
            key = campaign.result()
        except EtcdError as exc:
            log.warning("etcd_unavailable", error=str(exc))
            await election.stop(revoke=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_requested.wait(), min(c.etcd_lease_ttl_s, 2.0))
            return
        try:
            await self.lead(fleet, election, key)
        except Deposed as exc:
            self.journal.write("leader", event="deposed", why=str(exc))
            log.warning("deposed", why=str(exc))
        except EtcdError as exc:  # the previous leader's state could not be read
            self.journal.write("leader", event="stepped_down", why=f"etcd: {exc}")
            log.warning("stepped_down", why=str(exc))
        finally:
            self.metrics.leader.set(0)
            await election.stop(revoke=True)

    # -- leading ---------------------------------------------------------------------------

    async def _leading(self, election: Election | None) -> None:
        if election is None:
            return
        if not election.leading:
            raise Deposed(election.lost_reason or "the etcd lease ran out")
        if not await election.still_leader():
            raise Deposed("another replica's key leads the election")

    async def lead(self, fleet: Fleet, election: Election | None, key: LeaderKey | None
                   ) -> None:
        c = self.config
        etcd = election.etcd if election is not None else None
        state_key = f"{c.etcd_site_prefix}/state"
        state = LeaderState.decode(await etcd.get(state_key)) if etcd is not None else \
            LeaderState(PolicyMemory.empty(), Facts(), {}, 0)
        self.round_no = state.round
        self.metrics.leader.set(1)
        self.metrics.failovers.inc()
        self.journal.forget_reasons()
        self.journal.write("leader", event="elected", lease=f"{key.lease:x}" if key else None,
                           rev=key.rev if key else None, adopted=len(state.intents),
                           previous_round=state.round)
        log.info("elected", replica=c.replica, intents=len(state.intents), round=state.round)
        holder = f"rigsite/{c.site_id}/{c.replica}"
        applier = Applier(fleet, c, self.journal, state.facts, key.rev if key else 0,
                          on_outcome=lambda a, s: self.metrics.actions.labels(a, s).inc())
        ven = None
        if c.ven_vtn_url and self.openleadr is not None:
            ven = SiteVen(c, self.openleadr, lambda: self.site_power_w, self.prices, self.wake)
            ven.start()
        self.ven = ven
        memory = state.memory
        try:
            await self._leases(fleet, holder)
            views = await read_fleet(fleet, c.rig_deadline_s)
            await applier.adopt(state.intents, views)
            while not self.stop_requested.is_set():
                started = time.monotonic()
                await self._leading(election)
                try:
                    memory = await self.one_round(fleet, applier, memory, election, key, etcd,
                                                  state_key, holder)
                except (Deposed, asyncio.CancelledError):
                    raise
                except Exception as exc:  # a round that fails is said; the next one runs
                    log.exception("round_failed", round=self.round_no)
                    self.journal.write("round_failed", round=self.round_no,
                                       error=f"{type(exc).__name__}: {exc}")
                    self.metrics.round_failures.inc()
                self.metrics.round_s.observe(time.monotonic() - started)
                await self._pause(started, election)
        finally:
            if ven is not None:
                await ven.stop()
            self.ven = None
            await applier.stop()
            for rig in fleet.rigs.values():
                if rig.lease is not None:
                    if self.stop_requested.is_set() and (election is None or election.leading):
                        with contextlib.suppress(Exception):
                            await rig.lease.release()  # a clean hand-over
                    else:
                        await rig.lease.stop()  # it runs out at the rig

    async def _pause(self, started: float, election: Election | None) -> None:
        left = self.config.interval_s - (time.monotonic() - started)
        if left <= 0:
            return
        waits = [asyncio.create_task(self.wake.wait()),
                 asyncio.create_task(self.stop_requested.wait())]
        if election is not None:
            waits.append(asyncio.create_task(election.lost.wait()))
        await asyncio.wait(waits, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        self.wake.clear()

    async def _leases(self, fleet: Fleet, holder: str, rigs: Sequence[str] | None = None
                      ) -> None:
        """A lease on every rig that lacks one (or whose lease was lost)."""
        names = [n for n in (rigs or fleet.rigs)
                 if (lease := fleet.rigs[n].lease) is None or lease.is_lost]
        if not names:
            return

        def lost_on(name: str) -> Callable[[Any], None]:
            def lost(lease: Any) -> None:
                self.journal.write("action", action="lease", state="lost", rig=name,
                                   error=lease.lost_reason)
            return lost

        # One acquisition per rig, each with its own timeout and journaled as it ends (a
        # lease's renewals run outside the acquiring call's deadline: client.deadline).
        async def one(name: str) -> None:
            rig = fleet.rigs[name]
            try:
                lease = await rig.acquire_lease(holder, self.config.rig_lease_ttl_s,
                                                on_lost=lost_on(name),
                                                timeout_s=self.config.rig_deadline_s)
            except RigError as exc:
                self.journal.write("action", action="lease", rig=name, state="refused",
                                   error=f"{type(exc).__name__}: {exc}")
                return
            self.journal.write("action", action="lease", rig=name, state="acquired",
                               fencing_token=lease.fencing_token)

        gate = asyncio.Semaphore(self.config.rig_concurrency)

        async def gated(name: str) -> None:
            async with gate:
                await one(name)

        await asyncio.gather(*(gated(n) for n in names))

    async def inputs(self, now: float, views: Sequence[RigView]) -> tuple[Any, ...]:
        price, hashprices, demand = await asyncio.gather(
            self.price.read(now), asyncio.gather(*(h.read(now) for h in self.hashprices)),
            self.demand.read(now, inference_endpoints(views)))
        if self.price.last.error:
            self.metrics.input_errors.labels("price").inc()
        for h in self.hashprices:
            if h.last.error:
                self.metrics.input_errors.labels(f"hashprice:{h.spec.algorithm}").inc()
        for _ in self.demand.errors:
            self.metrics.input_errors.labels("demand").inc()
        caps = self.operator.read(now)
        if self.operator.error:
            self.metrics.input_errors.labels("grid_cap").inc()
        if self.ven is not None:
            caps += self.ven.caps(now)
        return price, tuple(hashprices), demand, binding_cap(caps)

    async def one_round(self, fleet: Fleet, applier: Applier, memory: PolicyMemory,
                        election: Election | None, key: LeaderKey | None, etcd: Etcd | None,
                        state_key: str, holder: str) -> PolicyMemory:
        c = self.config
        self.round_no += 1
        await self._leases(fleet, holder)
        views = await read_fleet(fleet, c.rig_deadline_s)
        states = [rig_state(v, applier.facts, {p.profile for p in c.inference
                                                if p.warm_standby}) for v in views]
        applier.observe(workloads_by_device(states))
        now = time.time()
        price, hashprices, demand, cap = await self.inputs(now, views)
        powers = [v.power_w for v in views if v.power_w is not None]
        self.site_power_w = sum(powers) if powers else None
        snapshot = Snapshot(time_s=now, price=price, hashprices=hashprices, demand=demand,
                            grid_cap=cap, fleet=PolicyFleet.from_rigs(states))
        cpu = time.process_time()
        decision, memory = decide(snapshot, memory, c.policy)
        self.metrics.decide_s.observe(time.process_time() - cpu)
        errors = {"price": self.price.last.error,
                  **{f"hashprice:{h.spec.algorithm}": h.last.error for h in self.hashprices
                     if h.last.error},
                  **{f"demand:{e}": m for e, m in self.demand.errors.items()},
                  "grid_cap": self.operator.error}
        self.journal.round(self.round_no, snapshot, decision, {
            "site_power_w": self.site_power_w,
            "unreachable": {s.rig_id: s.error for s in states if not s.reachable},
            "input_errors": {k: v for k, v in errors.items() if v},
            "demand": {d.profile: {"waiting": d.requests_waiting, "running": d.requests_running,
                                   "arrival_rps": d.arrival_rate_rps} for d in demand}})
        changes = applier.plan(decision, views, self.round_no)
        if etcd is not None and key is not None:
            intents = applier.intents()
            intents.update({f.device: f.to_json() for f in changes})
            state = LeaderState(memory, applier.facts, intents, self.round_no)
            try:
                written = await etcd.put_if_leader(key, state_key, state.encode(c.replica))
            except EtcdError as exc:
                raise Deposed(f"the round's state could not be written to etcd: {exc}") \
                    from None
            if not written:
                raise Deposed("etcd refused the state: this replica's election key is gone")
        await self._leading_locally(election)
        await applier.send(changes)
        await applier.curtail(decision, views, now)
        self._observe(snapshot, decision, views, applier)
        return memory

    async def _leading_locally(self, election: Election | None) -> None:
        if election is not None and not election.leading:
            raise Deposed(election.lost_reason or "the etcd lease ran out")

    def _observe(self, snapshot: Snapshot, decision: Any, views: Sequence[RigView],
                 applier: Applier) -> None:
        m = self.metrics
        m.rounds.inc()
        for w, n in decision.counts().items():
            m.devices.labels(str(w)).set(n)
        p = snapshot.price
        m.price.set(p.usd_per_mwh if p.usd_per_mwh is not None else math.nan)
        m.price_age.set(p.age_s if p.age_s is not None else math.nan)
        m.price_usable.set(0 if decision.site_numbers.get("price_note") else 1)
        m.in_flight.set(len(applier.in_flight))
        reachable = sum(1 for v in views if v.reachable)
        m.rigs.labels("reachable").set(reachable)
        m.rigs.labels("unreachable").set(len(views) - reachable)
        m.site_power.set(self.site_power_w if self.site_power_w is not None else math.nan)
        m.grid_cap.set(snapshot.grid_cap.cap_w if snapshot.grid_cap else math.nan)


def run(config: SiteConfig) -> int:
    """The replica until SIGTERM or SIGINT (a clean stop hands leadership over at once)."""
    configure_logging(config.log_level)
    openleadr = None
    if config.ven_vtn_url:
        try:
            import openleadr as openleadr_module
        except ImportError as exc:
            print(f"rigsite: [openadr] vtn_url is set but openleadr is missing: pip install "
                  f"'rigd[openadr]' ({exc})", file=sys.stderr)
            return 2
        openleadr = openleadr_module

    async def main() -> int:
        controller = Controller(config, openleadr)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, controller.stop_requested.set)
        return await controller.run()

    return asyncio.run(main())

