"""An OpenADR 2.0b VEN inside rigd: grid events become curtailments, and the rig's power goes
back to the VTN as telemetry reports. Off unless `[openadr] vtn_url` is set.

What an event asks for, as a rig power target:
- SIMPLE (signal type `level`): level 0 is no curtailment; levels 1..3 are fractions of the rig's
  power when the event starts, from `[openadr] simple_levels` (default 0.75, 0.5, 0.25). "When
  the event starts" is the rig's power read as the event's first interval begins, or the power
  before the curtailment already in force; a modified event keeps it.
- LOAD_DISPATCH `setpoint`: the target in watts (the signal's scale applied: kW, MW).
- LOAD_DISPATCH `delta`: the change in load from the rig's power when the event starts; a
  negative delta sheds that many watts, zero is no curtailment. A positive delta (more load) is
  opted out of: rigd only sheds.
Anything else (another signal, a level not in the table, an event with no end or longer than the
Curtailer's 24 h expiry, a malformed event) is opted out of, with the reason in the rig's log and
in the oadrCreatedEvent's responseDescription. Several signals, or several events at once: the
lowest target wins.

An event becomes a curtailment (source `openadr:<event id>`) when its interval starts (at once if
it already has), with `deadline_s` to get below target and the event's end as expiry, so a VTN that
disappears never leaves the rig curtailed past the event: the Curtailer's expiry runs in rigd. A
later interval or a modified event with another target replaces the curtailment (a higher target
gives load back: the Curtailer puts devices back, the last shed first, while the rig stays below
it). A cancelled event, or the end of its last interval, restores the rig. An operator's
curtailment in force with a lower target is left alone; the event's, if lower, replaces it (and
ends with the event). An operator's CancelCurtailment of an event's curtailment wins: the VTN hears
optOut. A curtailment journaled before a restart is left to its expiry until its event comes again.

The session with the VTN (registration, reports, polls, retries, signatures) is
rigapi.openadr_ven's, shared with the site controller's VEN; what an event asks for is
rigapi.openadr_events' `plan_event`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from agent.config.settings import OPENLEADR_MISSING, Config
from agent.core.errors import Refused
from agent.edges.auth import AuditLog
from agent.runtime.curtail import MAX_EXPIRY_S, MAX_REASON_CHARS, Curtailer
from rigapi.model import Operation, RigPower
from rigapi.openadr_events import (
    SOURCE_PREFIX,
    EventPlan,
    Interval,
    NotHonoured,
    Target,
    plan_event,
)
from rigapi.openadr_ven import PowerReport, VenSession, VenSettings

log = structlog.get_logger("rigd.openadr")

REPORT_SPECIFIER_ID = "rigd-power"
RECONCILE_MAX_WAIT_S = 60.0  # look again at least this often (a wall clock that jumps)
STOP_TIMEOUT_S = 5.0
__all__ = ["EventPlan", "Interval", "NotHonoured", "OpenleadrMissing", "Target", "Ven",
           "load_openleadr", "plan_event"]


class OpenleadrMissing(Exception):
    """openleadr cannot be imported; the message is one line an operator can act on."""


def load_openleadr() -> Any:
    """The openleadr module, or OpenleadrMissing (called before rigd listens)."""
    try:
        import openleadr
    except ImportError as exc:
        raise OpenleadrMissing(f"{OPENLEADR_MISSING} ({exc})") from None
    return openleadr


# ---- the VEN -------------------------------------------------------------------------------


class Ven:
    """One VEN on rigd's event loop: `start()` once rigd's workloads are back, `stop()` at
    shutdown."""

    def __init__(self, config: Config, curtailer: Curtailer, audit: AuditLog,
                 openleadr: Any) -> None:
        self.config = config
        self.curtailer = curtailer
        self.audit = audit
        self.openleadr = openleadr
        self.ven_name = config.openadr_ven_name or config.rig_id
        self.plans: dict[str, EventPlan] = {}
        self.endings: dict[str, str] = {}  # event id -> how it ended, for the restore's reason
        self.session = VenSession(
            VenSettings(vtn_url=config.openadr_vtn_url, ven_name=self.ven_name,
                        ven_id=config.openadr_ven_id,
                        poll_interval_s=config.openadr_poll_interval_s,
                        report_interval_s=config.openadr_report_interval_s,
                        retry_max_s=config.openadr_retry_max_s,
                        report_specifier_id=REPORT_SPECIFIER_ID,
                        cert_file=config.openadr_cert_file, key_file=config.openadr_key_file,
                        ca_file=config.openadr_ca_file,
                        vtn_fingerprint=config.openadr_vtn_fingerprint),
            openleadr, self._on_event,
            [PowerReport(self.ven_name if part == "total" else f"{self.ven_name}/{part}",
                         f"rig_power_{part}_w", self._report(part))
             for part in ("total", "measured", "estimated")],
            log, kept=lambda: list(self.plans))
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._power: tuple[float, RigPower] | None = None
        self._applied: str | None = None  # the event whose curtailment this VEN put in force

    @property
    def reasons(self) -> dict[str, str]:
        """Event id -> why it was opted out of."""
        return self.session.reasons

    def start(self) -> None:
        self.session.route_logs()
        self._spawn(self.session.run(), "openadr-session")
        self._spawn(self._reconcile_loop(), "openadr-events")
        log.info("openadr_started", vtn_url=self.config.openadr_vtn_url, ven_name=self.ven_name,
                 signed=bool(self.config.openadr_cert_file))
        if self.config.openadr_cert_file:  # what the VTN's operator must be given out of band
            log.info("openadr_ven_fingerprint", fingerprint=self.session.fingerprint())

    async def stop(self) -> None:
        """Bounded: a VTN that hangs does not hold rigd's shutdown. Curtailments stay to their
        expiry, as after any restart."""
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True),
                                   STOP_TIMEOUT_S)
        log.info("openadr_stopped")

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- events -------------------------------------------------------------------------------

    async def _on_event(self, event: dict[str, Any]) -> str:
        """openleadr asks: optIn or optOut. The curtailment itself follows from the plans."""
        descriptor = event.get("event_descriptor") or {}
        event_id = str(descriptor.get("event_id", "?"))
        status = descriptor.get("event_status")
        if status in ("cancelled", "completed"):
            self._drop(event_id, f"{status} by the VTN")
            return "optIn"
        try:
            plan = plan_event(event, self.config.openadr_simple_levels,
                              max_duration_s=MAX_EXPIRY_S)
        except NotHonoured as exc:
            self.session.remember_reason(event_id, str(exc))
            self._drop(event_id, "modified beyond what rigd can honour")
            log.warning("openadr_opt_out", event_id=event_id, reason=str(exc))
            return "optOut"
        old = self.plans.get(event_id)
        if old is not None and old.baseline_w is not None:
            plan.baseline_w = old.baseline_w
        self.plans[event_id] = plan
        self.reasons.pop(event_id, None)
        log.info("openadr_opt_in", event_id=event_id, modification=plan.modification_number,
                 market_context=plan.market_context,
                 start=_iso(plan.start_unix_s), end=_iso(plan.end_unix_s),
                 targets=[_describe(i) for i in plan.intervals])
        self._wake.set()
        return "optIn"

    def _drop(self, event_id: str, how: str) -> None:
        if self.plans.pop(event_id, None) is not None:
            self.endings[event_id] = how
            log.info("openadr_event_ended", event_id=event_id, how=how)
            self._wake.set()

    def _opt_out_late(self, plan: EventPlan, reason: str) -> None:
        """After an optIn: tell the VTN the target could not be applied after all."""
        plan.refused = reason
        self.session.opt_out_late(plan.event_id, plan.modification_number, reason)

    # -- from plans to the Curtailer --------------------------------------------------------

    async def _reconcile_loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                next_at = await self._reconcile()
            except Exception:  # logged; the next change tries again
                log.exception("openadr_reconcile_failed")
                next_at = time.time() + 5.0
            wait_s = RECONCILE_MAX_WAIT_S if next_at is None else \
                min(RECONCILE_MAX_WAIT_S, max(0.0, next_at - time.time()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait_s)

    async def _reconcile(self) -> float | None:
        """Bring the Curtailer to what the events ask now; returns when to look again."""
        now = time.time()
        for ended in [p.event_id for p in self.plans.values() if p.end_unix_s <= now]:
            self._drop(ended, "over")
        wanted = await self._wanted(now)
        await self._restores_done()
        # From here to each Curtailer call nothing awaits: its expiry cannot slip in between.
        current = self.curtailer.current
        if self._overridden(current) and wanted is not None and wanted[0].refused:
            wanted = None
            self._wake.set()  # another event may still ask for something: look again
        event_id = current.source[len(SOURCE_PREFIX):] \
            if current is not None and current.source.startswith(SOURCE_PREFIX) else ""
        # A curtailment of an event this VEN knows; another (an operator's, or one journaled
        # before a restart whose event the VTN has not sent again yet) is left to its expiry.
        known = bool(event_id) and (event_id in self.plans or event_id in self.endings)
        if wanted is None:
            if known:
                await self._lift(f"OpenADR event {event_id} {self.endings.pop(event_id, 'over')}")
        else:
            plan, target_w = wanted
            same = current is not None and current.source == plan.source \
                and abs(current.target_w - target_w) < 0.5 \
                and abs(current.expire_unix_s - plan.end_unix_s) < 1.0
            if current is not None and known and not same and target_w > current.target_w:
                log.info("openadr_give_back", why=(
                    f"OpenADR event {event_id} gives load back: {current.target_w:g} W -> "
                    f"{target_w:g} W" if event_id == plan.event_id else
                    f"OpenADR event {event_id} {self.endings.pop(event_id, 'over')}; "
                    f"event {plan.event_id} holds the rig at {target_w:g} W"))
            if current is None or (known and not same) or current.target_w > target_w:
                await self._curtail(plan, target_w)
        if not self.plans and self.curtailer.current is None:
            self.endings.clear()
        changes = [t for p in self.plans.values() if (t := p.next_change(now)) is not None]
        return min(changes, default=None)

    def _overridden(self, current: Any) -> bool:
        """The curtailment this VEN put in force was cancelled on the rig (CancelCurtailment by
        an operator) before its event ended: the operator wins, and the VTN hears optOut."""
        event_id = self._applied
        if event_id is None or current is not None:
            return False
        self._applied = None
        plan = self.plans.get(event_id)
        if plan is None or plan.end_unix_s <= time.time() + 1:
            return False
        log.warning("openadr_overridden", event_id=event_id,
                    why="its curtailment was cancelled on the rig")
        self._opt_out_late(plan, "the rig's operator cancelled its curtailment")
        return True

    async def _wanted(self, now: float) -> tuple[EventPlan, float] | None:
        """The event with the lowest target now, and that target in watts."""
        best: tuple[EventPlan, float] | None = None
        for plan in list(self.plans.values()):
            targets = [] if plan.refused else plan.targets_at(now)
            if not targets:
                continue
            if plan.baseline_w is None and any(t.needs_baseline for t in targets):
                plan.baseline_w = await self._baseline_w()
                log.info("openadr_baseline", event_id=plan.event_id, rig_w=plan.baseline_w)
            watts = round(min(t.watts(plan.baseline_w) for t in targets), 1)
            if best is None or watts < best[1]:
                best = (plan, watts)
        return best

    async def _baseline_w(self) -> float:
        current = self.curtailer.current
        if current is not None:
            return current.power_before_w
        return (await self.curtailer.rig_power()).total_w

    async def _restores_done(self) -> None:
        """A restore under way (an expiry, an operator's cancel) ends before anything else."""
        while not self.curtailer.ops.closed:
            running = [op for op in self.curtailer.ops.all()
                       if op.kind == "restore_curtailment" and not op.done]
            if not running:
                return
            await self._follow(running[0])

    async def _follow(self, op: Operation) -> None:
        async for _ in self.curtailer.ops.watch(op.operation_id):
            pass

    async def _curtail(self, plan: EventPlan, target_w: float) -> None:
        expiry_s = plan.end_unix_s - time.time()
        if expiry_s < 1:
            return
        deadline_s = max(1.0, min(self.config.openadr_deadline_s, expiry_s))
        reason = f"OpenADR event {plan.event_id} ({plan.market_context or 'no market context'})"
        request = {"rig_power_target_w": target_w, "deadline_s": round(deadline_s, 3),
                   "expiry_s": round(expiry_s, 3), "reason": reason[:MAX_REASON_CHARS]}
        try:
            op = await self.curtailer.curtail(target_w, deadline_s, expiry_s,
                                              reason[:MAX_REASON_CHARS], plan.source)
        except Refused as exc:
            self._audit("Curtail", plan.source, request, exc.code.value, str(exc))
            log.error("openadr_curtail_refused", event_id=plan.event_id, target_w=target_w,
                      error=str(exc))
            self._opt_out_late(plan, f"rigd refused the target: {exc}")
            return
        self._applied = plan.event_id
        self._audit("Curtail", plan.source, request, "OK", op.operation_id)
        log.info("openadr_curtail", event_id=plan.event_id, target_w=target_w,
                 operation_id=op.operation_id, deadline_s=round(deadline_s, 1),
                 expiry_s=round(expiry_s, 1))

    async def _lift(self, why: str) -> None:
        source = self.curtailer.current.source if self.curtailer.current else ""
        self._applied = None
        op = await self.curtailer.cancel(why)
        if op is None:
            return
        self._audit("CancelCurtailment", source, {"why": why}, "OK", op.operation_id)
        log.info("openadr_restore", why=why, operation_id=op.operation_id)
        await self._follow(op)

    def _audit(self, method: str, source: str, request: dict[str, Any], outcome: str,
               detail: str) -> None:
        self.audit.record(method=method, identity=source, role="openadr",
                          peer=self.config.openadr_vtn_url, request=request, outcome=outcome,
                          detail=detail)

    # -- reports ------------------------------------------------------------------------------

    def _report(self, part: str) -> Callable[[], Awaitable[float]]:
        async def value() -> float:
            return float(getattr(await self._rig_power(), f"{part}_w"))

        return value

    async def _rig_power(self) -> RigPower:
        """One reading serves the three values of a report."""
        now = time.monotonic()
        if self._power is None or now - self._power[0] > 0.5:
            self._power = (now, await self.curtailer.rig_power())
        return self._power[1]


def _iso(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="seconds")


def _describe(interval: Interval) -> str:
    target = interval.target
    what = "none" if target is None else (
        f"{target.value:g} W" if target.kind == "watts" else
        f"{target.value:g} x rig" if target.kind == "fraction" else f"rig {target.value:+g} W")
    return f"{_iso(interval.start_unix_s)}..{_iso(interval.end_unix_s)}: {what}"
