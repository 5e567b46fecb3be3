"""The live controller's side of the rigs, through the client library: the fleet as rigd reports
it (inventory, telemetry, operations in flight) turned into the policy's `RigState`s, and a
decision applied as changes that are safe to repeat and safe to lose.

Reading: per rig, within the rig's deadline, its inventory, every device's latest reading and the
operations running. A rig that does not answer is a row with its error: unreachable this round,
its devices left as they are. Devices the policy acts on are GPUs and miners; the rest (the host)
is the rig's base draw.

Acting, per changed device:
- a GPU: SetWorkload (hashing with rigd's configured pool, inference with a runtime profile, or
  idle: asleep, or standby when its profile keeps the runtime warm), each with an idempotent
  request id (a retry, or a new leader adopting the intent, gets the same operation back);
- a miner: DeviceAction sleep or wake (repeating one is harmless);
- a rig under a grid cap: Curtail to its target (sent again when the target, deadline or expiry
  changes, and before a standing cap's curtailment expires); CancelCurtailment of the
  controller's own curtailment when no cap applies any more.
Every mutating call carries the fencing token of the lease this replica holds on the rig (the
client library adds it and refuses locally once the lease is lost; rigd refuses a deposed
controller's token). At most `max_switches_per_rig` and `max_switches_per_site` switches are in
flight; sheds go first (what lowers power before what raises it). A device with an operation
running (this replica's, or one rigd reports) is left alone until it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from client import Fleet, Rig
from client.errors import RigError
from client.model import Device, Inventory
from client.model import Snapshot as RigSnapshot
from controller.config import SiteConfig
from controller.journal import Journal
from controller.model import (
    KIND_ASIC,
    KIND_GPU,
    W_ASLEEP,
    W_IDLE,
    W_STANDBY,
    WORKLOADS,
    Decision,
    DeviceKind,
    DeviceState,
    RigState,
    Workload,
)
from hal.device import DeviceKind as HalKind
from hal.device import HealthState
from rigapi.model import (
    HashingSpec,
    InferenceSpec,
    Operation,
    OperationState,
    Reading,
    WorkloadKind,
    WorkloadSpec,
    WorkloadState,
)

WAKE_WAIT_S = 120.0  # a miner told to sleep or wake that does not show it by then: lost


@dataclass
class RigView:
    """One rig as read this round (or why it could not be)."""

    name: str
    inventory: Inventory | None = None
    telemetry: RigSnapshot | None = None
    running: tuple[Operation, ...] = ()
    error: str = ""

    @property
    def reachable(self) -> bool:
        return self.inventory is not None and self.telemetry is not None

    @property
    def power_w(self) -> float | None:
        if self.telemetry is None or self.telemetry.rig_power is None:
            return None
        return self.telemetry.rig_power.total_w

    def busy(self) -> set[str]:
        return {d for op in self.running for d in op.device_ids}


@dataclass
class Facts:
    """What the controller has measured and must keep across rounds and leaders (journaled in
    etcd with the policy's memory): each device's switch durations by kind, the profile kept
    warm for it, its hashrate when it last hashed (a GPU's expected hashrate while it does
    not: rigd has no nameplate for it), and the identity rigd knows this controller by."""

    switch_cold_s: dict[str, float] = field(default_factory=dict)
    switch_warm_s: dict[str, float] = field(default_factory=dict)
    switch_to_hashing_s: dict[str, float] = field(default_factory=dict)
    warm_profile: dict[str, str] = field(default_factory=dict)
    hashrate_hs: dict[str, float] = field(default_factory=dict)  # last measured while hashing
    identity: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"switch_cold_s": self.switch_cold_s, "switch_warm_s": self.switch_warm_s,
                "switch_to_hashing_s": self.switch_to_hashing_s,
                "warm_profile": self.warm_profile, "hashrate_hs": self.hashrate_hs,
                "identity": self.identity}

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Facts:
        def floats(name: str) -> dict[str, float]:
            return {str(k): float(v) for k, v in (data.get(name) or {}).items()}

        return Facts(switch_cold_s=floats("switch_cold_s"),
                     switch_warm_s=floats("switch_warm_s"),
                     switch_to_hashing_s=floats("switch_to_hashing_s"),
                     hashrate_hs=floats("hashrate_hs"),
                     warm_profile={str(k): str(v)
                                   for k, v in (data.get("warm_profile") or {}).items()},
                     identity=str(data.get("identity") or ""))


# ---------------------------------------------------------------------------------------------
# Reading


async def read_rig(rig: Rig) -> RigView:
    inventory, telemetry, running = await asyncio.gather(
        rig.inventory(), rig.telemetry(), rig.operations(limit=100, running_only=True))
    return RigView(rig.name, inventory, telemetry, tuple(running))


async def read_fleet(fleet: Fleet, deadline_s: float) -> list[RigView]:
    results = await fleet.map(read_rig, deadline_s=deadline_s)
    return [row.value if row.value is not None else
            RigView(row.rig, error=f"{type(row.error).__name__}: {row.error}")
            for row in results]


def _workload(device: Device, reading: Reading | None, facts: Facts
              ) -> tuple[Workload, str, str]:
    """(workload, profile, why unhealthy) of a GPU or miner as rigd reports it."""
    kind = device.kind
    if reading is None:
        return Workload.ASLEEP, "", "no reading"
    t = reading.telemetry
    if kind == HalKind.ASIC:
        mining = t.asic.is_mining if t.asic is not None else None
        if mining is None:
            mining = bool(t.hashrate_hs)
        return (Workload.HASHING if mining else Workload.ASLEEP), "", ""
    status = reading.workload
    warm = facts.warm_profile.get(device.id, "")
    if status is None or status.kind == WorkloadKind.IDLE:
        return (Workload.STANDBY, warm, "") if warm else (Workload.ASLEEP, "", "")
    why = status.detail if status.state == WorkloadState.FAILED else ""
    if status.kind == WorkloadKind.HASHING:
        return Workload.HASHING, warm, why
    if status.state == WorkloadState.STANDBY:
        return Workload.STANDBY, status.profile, why
    return Workload.INFERENCE, status.profile, why


def rig_state(view: RigView, facts: Facts, warm_profiles: set[str]) -> RigState:
    """The policy's view of one rig."""
    if not view.reachable:
        return RigState(rig_id=view.name, devices=(), reachable=False, error=view.error)
    assert view.inventory is not None and view.telemetry is not None
    readings = view.telemetry.by_id()
    devices = []
    device_w = 0.0
    for d in view.inventory.devices:
        if d.kind not in (HalKind.GPU, HalKind.ASIC):
            continue
        reading = readings.get(d.id)
        t = reading.telemetry if reading is not None else None
        workload, profile, failed = _workload(d, reading, facts)
        health_state = t.health.state if t is not None else d.health.state
        unhealthy = health_state == HealthState.UNHEALTHY or bool(failed) or \
            (reading is not None and bool(reading.error))
        reason = failed or (reading.error if reading is not None and reading.error else "") or \
            (t.health.reason if t is not None else d.health.reason)
        power = t.power_w if t is not None else None
        if power is not None:
            device_w += power
        hashrate = t.hashrate_hs if t is not None and t.hashrate_hs else None
        if hashrate is not None and workload == Workload.HASHING:
            facts.hashrate_hs[d.id] = hashrate
        gpu = t.gpu if t is not None else None
        asic = t.asic if t is not None else None
        warm = d.kind == HalKind.GPU and facts.warm_profile.get(d.id, "") in warm_profiles
        devices.append(DeviceState(
            device_id=d.id, kind=DeviceKind.ASIC if d.kind == HalKind.ASIC else DeviceKind.GPU,
            model=d.info.model or d.info.name, workload=workload, profile=profile,
            power_w=power, hashrate_hs=hashrate,
            algorithm=(asic.algorithm if asic is not None and asic.algorithm else "sha256d"),
            power_limit_min_w=gpu.power_limit_min_w if gpu is not None else None,
            power_limit_max_w=gpu.power_limit_max_w if gpu is not None else None,
            rated_power_w=gpu.power_limit_default_w if gpu is not None else None,
            rated_hashrate_hs=(asic.expected_hashrate_hs if asic is not None
                               and asic.expected_hashrate_hs else facts.hashrate_hs.get(d.id)),
            warm_standby=warm,
            switch_cold_s=facts.switch_cold_s.get(d.id),
            switch_warm_s=facts.switch_warm_s.get(d.id),
            switch_to_hashing_s=facts.switch_to_hashing_s.get(d.id),
            healthy=not unhealthy, health_reason=reason if unhealthy else ""))
    total = view.power_w
    base = max(total - device_w, 0.0) if total is not None else None
    return RigState(rig_id=view.name, devices=tuple(devices), base_power_w=base)


def inference_endpoints(views: Sequence[RigView]) -> dict[str, list[str]]:
    """Profile -> the endpoints of the runtimes rigd reports ready for it."""
    out: dict[str, list[str]] = {}
    for view in views:
        if view.telemetry is None:
            continue
        for r in view.telemetry.readings:
            w = r.workload
            if w is not None and w.kind == WorkloadKind.INFERENCE and w.endpoint:
                out.setdefault(w.profile, []).append(w.endpoint)
    return out


# ---------------------------------------------------------------------------------------------
# Acting


@dataclass
class InFlight:
    device: str
    rig: str
    action: str  # switch | sleep | wake
    target: str  # the desired workload ("inference:builtin")
    request_id: str
    started_unix_s: float
    started_mono: float
    fencing_token: int
    operation_id: str = ""
    from_workload: str = ""
    from_profile: str = ""
    warm: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"device": self.device, "rig": self.rig, "action": self.action,
                "target": self.target, "request_id": self.request_id,
                "started_unix_s": self.started_unix_s, "fencing_token": self.fencing_token,
                "operation_id": self.operation_id, "from_workload": self.from_workload,
                "from_profile": self.from_profile, "warm": self.warm}


def request_id(site: str, leader_rev: int, round_no: int, device: str, target: str) -> str:
    """The same intent gets the same id (a retry is the same operation at rigd); ids of
    different intents differ (leaders have different election revisions)."""
    text = f"{site}\n{leader_rev}\n{round_no}\n{device}\n{target}"
    return "rigsite-" + hashlib.sha256(text.encode()).hexdigest()[:40]


def target_name(workload: Workload, profile: str) -> str:
    return f"inference:{profile}" if workload == Workload.INFERENCE else str(workload)


class Applier:
    """Applies decisions; follows what it started until it ends. One per leadership term."""

    def __init__(self, fleet: Fleet, config: SiteConfig, journal: Journal, facts: Facts,
                 leader_rev: int, on_outcome: Callable[[str, str], None] = lambda a, s: None
                 ) -> None:
        self.fleet = fleet
        self.config = config
        self.journal = journal
        self.facts = facts
        self.leader_rev = leader_rev
        self.on_outcome = on_outcome  # (action, state): for metrics
        self.in_flight: dict[str, InFlight] = {}
        self._followers: set[asyncio.Task[None]] = set()
        self.stopped = False

    async def stop(self) -> None:
        """Stop following (what was sent runs to its end at rigd)."""
        self.stopped = True
        for task in self._followers:
            task.cancel()
        for task in list(self._followers):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _token(self, rig: Rig) -> int:
        lease = rig.lease
        return lease.fencing_token if lease is not None else 0

    def _record(self, flight: InFlight, state: str, **extra: Any) -> None:
        self.journal.write("action", device=flight.device, rig=flight.rig,
                           action=flight.action, target=flight.target,
                           request_id=flight.request_id, operation_id=flight.operation_id,
                           fencing_token=flight.fencing_token, state=state, **extra)
        self.on_outcome(flight.action, state)

    # -- intents carried over from the previous leader ---------------------------------------

    async def adopt(self, intents: Mapping[str, Mapping[str, Any]], views: Sequence[RigView]
                    ) -> None:
        """The previous leader's changes in flight: each found at its rig (by request id) is
        followed to its end, not sent again; one the rig never saw is dropped (this leader's
        own decision sends it again if it is still wanted)."""
        by_rig = {v.name: v for v in views}
        for device, intent in intents.items():
            rig_name = str(intent.get("rig"))
            rig = self.fleet.rigs.get(rig_name)
            flight = InFlight(device=device, rig=rig_name, action=str(intent.get("action")),
                              target=str(intent.get("target")),
                              request_id=str(intent.get("request_id")),
                              started_unix_s=float(intent.get("started_unix_s") or time.time()),
                              started_mono=time.monotonic(),
                              fencing_token=int(intent.get("fencing_token") or 0),
                              operation_id=str(intent.get("operation_id") or ""),
                              from_workload=str(intent.get("from_workload") or ""),
                              from_profile=str(intent.get("from_profile") or ""),
                              warm=bool(intent.get("warm")))
            if rig is None:
                continue
            if flight.action != "switch":
                # a sleep or wake: the rig's own state shows whether it took; this leader
                # decides again from it
                self._record(flight, "dropped", error="a miner's sleep or wake is decided "
                                                      "again from its state")
                continue
            view = by_rig.get(rig_name)
            op = await self._find(rig, flight.request_id, view)
            if op is None:
                self._record(flight, "dropped", error="the rig has no operation with this "
                                                      "request id: never delivered")
                continue
            flight.operation_id = op.operation_id
            self._record(flight, "adopted")
            if op.done:
                self._finished(flight, op)
            else:
                self.in_flight[device] = flight
                self._follow(rig, flight, op)

    async def _find(self, rig: Rig, request: str, view: RigView | None) -> Operation | None:
        ops: Sequence[Operation] = view.running if view is not None else ()
        found = next((op for op in ops if op.request_id == request), None)
        if found is not None:
            return found
        try:
            recent = await rig.operations(limit=200)
        except RigError:
            return None
        return next((op for op in recent if op.request_id == request), None)

    # -- a decision -------------------------------------------------------------------------

    def intents(self) -> dict[str, dict[str, Any]]:
        return {d: f.to_json() for d, f in self.in_flight.items()}

    def plan(self, decision: Decision, views: Sequence[RigView], round_no: int
             ) -> list[InFlight]:
        """The changes to send now, within the in-flight limits (sheds first); the rest are
        journaled as deferred."""
        f = decision.fleet
        busy = set(self.in_flight)
        for view in views:
            busy |= view.busy()
        per_rig: dict[str, int] = {}
        for flight in self.in_flight.values():
            per_rig[flight.rig] = per_rig.get(flight.rig, 0) + 1
        site = len(self.in_flight)
        changed = decision.changed()
        # lowering power first: to rest before to work
        resting = (W_ASLEEP, W_STANDBY, W_IDLE)
        order = sorted(changed.tolist(), key=lambda i: (int(decision.desired[i]) not in resting,
                                                        f.device_ids[i]))
        chosen = []
        for i in order:
            device = f.device_ids[i]
            rig = f.rig_of(i)
            desired = WORKLOADS[int(decision.desired[i])]
            profile = decision.profile_name(i)
            target = target_name(desired, profile)
            if device in busy:
                continue  # its switch runs: decided again once it ends
            if not f.rig_reachable[int(f.rig[i])]:
                continue
            if per_rig.get(rig, 0) >= self.config.max_switches_per_rig or \
                    site >= self.config.max_switches_per_site:
                self.journal.write("action", device=device, rig=rig, action="switch",
                                   target=target, state="deferred",
                                   error=f"switches in flight: {per_rig.get(rig, 0)} on the rig "
                                         f"(at most {self.config.max_switches_per_rig}), "
                                         f"{site} on the site (at most "
                                         f"{self.config.max_switches_per_site})")
                continue
            kind = int(f.kind[i])
            current = WORKLOADS[int(f.workload[i])]
            if kind == KIND_ASIC:
                action = "wake" if desired == Workload.HASHING else "sleep"
            elif kind == KIND_GPU:
                action = "switch"
                if current in (Workload.ASLEEP, Workload.STANDBY) and \
                        desired in (Workload.ASLEEP, Workload.STANDBY):
                    continue  # rigd runs nothing either way: nothing to send
            else:
                continue
            code = int(f.profile[i])
            warm = bool(f.warm_standby[i]) and desired == Workload.INFERENCE and code >= 0 \
                and f.profiles[code] == profile
            chosen.append(InFlight(
                device=device, rig=rig, action=action, target=target,
                request_id=request_id(self.config.site_id, self.leader_rev, round_no, device,
                                      target),
                started_unix_s=time.time(), started_mono=time.monotonic(), fencing_token=0,
                from_workload=str(current),
                from_profile=f.profiles[code] if code >= 0 else "", warm=warm))
            per_rig[rig] = per_rig.get(rig, 0) + 1
            site += 1
        return chosen

    async def send(self, changes: Sequence[InFlight]) -> None:
        """Send the planned changes, rigs in parallel (each rig's within its deadline)."""
        by_rig: dict[str, list[InFlight]] = {}
        for c in changes:
            by_rig.setdefault(c.rig, []).append(c)
        if not by_rig:
            return

        async def one(rig: Rig) -> None:
            for flight in by_rig[rig.name]:
                if self.stopped:
                    return
                await self._send(rig, flight)

        await self.fleet.map(one, rigs=list(by_rig), deadline_s=self.config.rig_deadline_s)

    async def _send(self, rig: Rig, flight: InFlight) -> None:
        flight.fencing_token = self._token(rig)
        self.in_flight[flight.device] = flight
        try:
            if flight.action == "switch":
                op = await rig.start_switch([flight.device], self._spec(flight.target),
                                            request_id=flight.request_id)
                flight.operation_id = op.operation_id
                self._record(flight, "sent")
                if op.done:
                    self._finished(flight, op)
                else:
                    self._follow(rig, flight, op)
            else:
                detail = await rig.device_action(flight.device, flight.action)
                self._record(flight, "sent", detail=detail)
                # done when the rig's telemetry shows it (see observe())
        except RigError as exc:
            self.in_flight.pop(flight.device, None)
            self._record(flight, "refused", error=f"{type(exc).__name__}: {exc}")

    def _spec(self, target: str) -> WorkloadSpec:
        if target.startswith("inference:"):
            return WorkloadSpec(WorkloadKind.INFERENCE,
                                inference=InferenceSpec(target.split(":", 1)[1]))
        if target == "hashing":
            intensity = self.config.hashing_intensity
            return WorkloadSpec(WorkloadKind.HASHING, hashing=HashingSpec(
                pool_urls=(), user="", password="", intensity=intensity)) \
                if intensity > 0 else WorkloadSpec(WorkloadKind.HASHING)
        return WorkloadSpec(WorkloadKind.IDLE)

    def _follow(self, rig: Rig, flight: InFlight, op: Operation) -> None:
        async def follow() -> None:
            try:
                final = await rig.wait(op)
            except RigError as exc:
                self.in_flight.pop(flight.device, None)
                self._record(flight, "lost", error=f"{type(exc).__name__}: {exc}")
                return
            self._finished(flight, final)

        task = asyncio.create_task(follow(), name=f"follow {flight.device}")
        self._followers.add(task)
        task.add_done_callback(self._followers.discard)

    def _finished(self, flight: InFlight, op: Operation) -> None:
        self.in_flight.pop(flight.device, None)
        duration = (op.end_unix_s - op.create_unix_s) if op.end_unix_s is not None else None
        outcome = op.outcomes.get(flight.device)
        state = str(outcome.state if outcome is not None else op.state)
        self._record(flight, state, duration_s=duration,
                     error=(outcome.error if outcome is not None else op.error) or None)
        if state != OperationState.SUCCEEDED or duration is None:
            return
        device = flight.device
        if flight.target.startswith("inference:"):
            (self.facts.switch_warm_s if flight.warm else self.facts.switch_cold_s)[device] = \
                duration
            # serving now; rigd dropped any other profile's standby for this device
            self.facts.warm_profile.pop(device, None)
            return
        if flight.target == str(Workload.HASHING):
            self.facts.switch_to_hashing_s[device] = duration
        if flight.from_workload == str(Workload.INFERENCE):
            spec = self.config.profile(flight.from_profile)
            if spec is not None and spec.warm_standby:
                # rigd keeps the runtime asleep for this device: it wakes in a fraction of a s
                self.facts.warm_profile[device] = flight.from_profile

    def observe(self, decision_fleet_workload: Mapping[str, Workload]) -> None:
        """A miner's sleep or wake ends when its telemetry shows it (its wake measured), or is
        lost after WAKE_WAIT_S."""
        now = time.monotonic()
        for device, flight in list(self.in_flight.items()):
            if flight.action == "switch":
                continue
            seen = decision_fleet_workload.get(device)
            want = Workload.HASHING if flight.action == "wake" else Workload.ASLEEP
            if seen == want:
                del self.in_flight[device]
                took = now - flight.started_mono
                if flight.action == "wake":
                    self.facts.switch_to_hashing_s[device] = took
                self._record(flight, "succeeded", duration_s=took)
            elif now - flight.started_mono > WAKE_WAIT_S:
                del self.in_flight[device]
                self._record(flight, "lost", error=f"not {want} after {WAKE_WAIT_S:g} s")

    # -- grid caps --------------------------------------------------------------------------

    async def curtail(self, decision: Decision, views: Sequence[RigView], now: float) -> None:
        """Each rig to its Curtail target; this controller's curtailments lifted where no cap
        applies now."""
        wanted = {c.rig_id: c for c in decision.curtail}
        by_rig = {v.name: v for v in views if v.inventory is not None}
        work: dict[str, Callable[[Rig], Any]] = {}
        for name, view in by_rig.items():
            assert view.inventory is not None
            current = view.inventory.curtailment
            c = wanted.get(name)
            ours = current is not None and bool(self.facts.identity) and \
                current.source == self.facts.identity
            if c is None:
                if ours:
                    work[name] = self._cancel
                continue
            expires = c.expires_s if c.expires_s is not None else \
                now + self.config.curtail_expiry_s
            same = current is not None and ours and \
                abs(current.rig_power_target_w - c.target_w) <= max(1.0, 0.01 * c.target_w) \
                and (c.expires_s is not None or current.expire_unix_s - now >
                     self.config.curtail_expiry_s / 2)
            if same:
                continue
            if current is not None and not ours and current.source and \
                    current.rig_power_target_w <= c.target_w:
                continue  # a lower target of someone else's (the rig's own VEN) holds
            work[name] = self._curtailer(c.target_w, max(1, math.ceil(c.deadline_s - now)),
                                         max(1, min(86400, math.ceil(expires - now))), c.reason)
        if work:
            await self.fleet.map(lambda rig: work[rig.name](rig), rigs=list(work),
                                 deadline_s=self.config.rig_deadline_s)

    def _curtailer(self, target_w: float, deadline_s: int, expiry_s: int, reason: str
                   ) -> Callable[[Rig], Any]:
        async def run(rig: Rig) -> None:
            token = self._token(rig)
            try:
                op = await rig.start_curtailment(target_w, deadline_s=min(deadline_s, 3600),
                                                 expiry_s=expiry_s, reason=reason[:200])
            except RigError as exc:
                self.journal.write("action", rig=rig.name, action="curtail",
                                   target=round(target_w, 1), state="refused",
                                   fencing_token=token, error=f"{type(exc).__name__}: {exc}")
                self.on_outcome("curtail", "refused")
                return
            self.journal.write("action", rig=rig.name, action="curtail",
                               target=round(target_w, 1), state="sent", fencing_token=token,
                               operation_id=op.operation_id, deadline_s=deadline_s,
                               expiry_s=expiry_s)
            self.on_outcome("curtail", "sent")
            if not self.facts.identity:
                with contextlib.suppress(RigError):
                    inventory = await rig.inventory()
                    if inventory.curtailment is not None and \
                            inventory.curtailment.operation_id == op.operation_id:
                        self.facts.identity = inventory.curtailment.source

        return run

    async def _cancel(self, rig: Rig) -> None:
        token = self._token(rig)
        try:
            op = await rig.start_cancel_curtailment()
        except RigError as exc:
            self.journal.write("action", rig=rig.name, action="cancel_curtailment",
                               state="refused", fencing_token=token,
                               error=f"{type(exc).__name__}: {exc}")
            self.on_outcome("cancel_curtailment", "refused")
            return
        self.journal.write("action", rig=rig.name, action="cancel_curtailment", state="sent",
                           fencing_token=token, operation_id=op.operation_id)
        self.on_outcome("cancel_curtailment", "sent")


def workloads_by_device(states: Sequence[RigState]) -> dict[str, Workload]:
    return {d.device_id: d.workload for s in states for d in s.devices}

