"""The site as one OpenADR 2.0b VEN: its events become the site's grid cap (the policy splits
the cap into per-rig Curtail targets), its ELECTRICITY_PRICE signals may be the energy price,
and the site's power goes back to the VTN as reports. The session (registration, polls,
retries, signatures) is rigapi.openadr_ven's, and what an event asks for rigapi.openadr_events',
both shared with rigd's own VEN.

Only the leading replica runs the site's VEN: a new leader registers under the same venName and
the VTN sends it the events in force again.

An event's cap (its SIMPLE level as a fraction of the site's power when the event starts, or a
LOAD_DISPATCH setpoint or delta) is in the snapshot from the moment the event arrives until it
ends, so the policy plans for it ahead; the site must be below it by the interval's start, and
never sooner than `[openadr] deadline_s` after the event arrived. Several events: the lowest cap
binds. A cancelled event lifts its cap.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from controller.config import SiteConfig
from controller.inputs import PriceBook
from controller.model import GridCap
from rigapi.openadr_events import (
    SI_SCALE,
    EventPlan,
    NotHonoured,
    PriceSignal,
    plan_event,
    price_signal,
)
from rigapi.openadr_ven import PowerReport, VenSession, VenSettings

log = structlog.get_logger("rigsite.openadr")

PRICE_UNITS = {"currencyPerKWh": 1000.0, "currencyPerMWh": 1.0}  # -> $/MWh


@dataclass(slots=True)
class SitePlan:
    plan: EventPlan
    received_unix_s: float


def price_intervals(signal: PriceSignal) -> list[tuple[float, float, float]]:
    """A price signal as $/MWh intervals; NotHonoured for what is not a USD energy price."""
    if signal.signal_type != "price":
        raise NotHonoured(f"ELECTRICITY_PRICE {signal.signal_type}: the site controller "
                          "understands absolute prices (signal type price)")
    if signal.unit not in PRICE_UNITS or signal.currency not in ("USD", ""):
        raise NotHonoured(f"ELECTRICITY_PRICE in {signal.currency or '?'} {signal.unit or '?'}:"
                          " the site controller understands USD per kWh or MWh")
    scale = SI_SCALE.get(signal.scale)
    if scale is None:
        raise NotHonoured(f"ELECTRICITY_PRICE with scale {signal.scale!r}")
    factor = PRICE_UNITS[signal.unit] * scale
    return [(start, end, value * factor) for start, end, value in signal.intervals]


class SiteVen:
    def __init__(self, config: SiteConfig, openleadr: Any, site_power_w: Callable[[], float | None],
                 prices: PriceBook, wake: asyncio.Event) -> None:
        self.config = config
        self.site_power_w = site_power_w
        self.prices = prices
        self.wake = wake
        self.plans: dict[str, SitePlan] = {}
        name = config.ven_name or config.site_id
        self.session = VenSession(
            VenSettings(vtn_url=config.ven_vtn_url, ven_name=name, ven_id=config.ven_id,
                        poll_interval_s=config.ven_poll_interval_s,
                        report_interval_s=config.ven_report_interval_s,
                        retry_max_s=config.ven_retry_max_s,
                        report_specifier_id="rigsite-power", cert_file=config.ven_cert_file,
                        key_file=config.ven_key_file, ca_file=config.ven_ca_file,
                        vtn_fingerprint=config.ven_vtn_fingerprint),
            openleadr, self.on_event,
            [PowerReport(name, "site_power_w", self._power)], log,
            kept=lambda: list(self.plans))
        self._task: asyncio.Task[None] | None = None

    async def _power(self) -> float:
        value = self.site_power_w()
        return 0.0 if value is None else value

    def start(self) -> None:
        self.session.route_logs()
        self._task = asyncio.create_task(self.session.run(), name="site-ven")
        log.info("openadr_started", vtn_url=self.config.ven_vtn_url,
                 ven_name=self.session.settings.ven_name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await asyncio.wait_for(asyncio.gather(self._task, return_exceptions=True), 5.0)
            except TimeoutError:
                pass
            self._task = None

    async def on_event(self, event: dict[str, Any]) -> str:
        descriptor = event.get("event_descriptor") or {}
        event_id = str(descriptor.get("event_id", "?"))
        status = descriptor.get("event_status")
        if status in ("cancelled", "completed"):
            self._drop(event_id, f"{status} by the VTN")
            return "optIn"
        try:
            signal = price_signal(event)
            caps = [s for s in _signals(event) if s.get("signal_name") != "ELECTRICITY_PRICE"]
            plan = None
            if caps:
                plan = plan_event({**event, "event_signals": caps},
                                  self.config.ven_simple_levels, who="the site controller",
                                  levels_table="[openadr] simple_levels")
            elif signal is None:
                raise NotHonoured("an event without a signal")
            intervals = price_intervals(signal) if signal is not None else None
        except NotHonoured as exc:
            self.session.remember_reason(event_id, str(exc))
            self._drop(event_id, "not honoured")
            log.warning("openadr_opt_out", event_id=event_id, reason=str(exc))
            return "optOut"
        if intervals is not None:
            self.prices.replace_event(event_id, intervals)
        if plan is not None:
            old = self.plans.get(event_id)
            if old is not None and old.plan.baseline_w is not None:
                plan.baseline_w = old.plan.baseline_w
            self.plans[event_id] = SitePlan(plan, old.received_unix_s if old else time.time())
        log.info("openadr_opt_in", event_id=event_id, cap=plan is not None,
                 price=intervals is not None)
        self.wake.set()
        return "optIn"

    def _drop(self, event_id: str, how: str) -> None:
        self.prices.drop(event_id)
        if self.plans.pop(event_id, None) is not None:
            log.info("openadr_event_ended", event_id=event_id, how=how)
            self.wake.set()

    def caps(self, now: float) -> list[GridCap]:
        """The caps in force now: per event, the interval covering now, else its next one."""
        out = []
        for event_id, held in list(self.plans.items()):
            plan = held.plan
            if plan.end_unix_s <= now:
                del self.plans[event_id]
                continue
            upcoming = sorted((i for i in plan.intervals
                               if i.end_unix_s > now and i.target is not None),
                              key=lambda i: i.start_unix_s)
            if not upcoming:
                continue
            interval = upcoming[0]
            assert interval.target is not None
            if interval.target.needs_baseline and plan.baseline_w is None:
                plan.baseline_w = self.site_power_w()
                if plan.baseline_w is None:
                    log.warning("openadr_no_baseline", event_id=event_id)
                    continue
            cap_w = max(interval.target.watts(plan.baseline_w), 0.0)
            deadline = max(interval.start_unix_s,
                           held.received_unix_s + self.config.ven_deadline_s)
            out.append(GridCap(cap_w=cap_w, deadline_s=deadline, ends_s=interval.end_unix_s,
                               source=plan.source))
        return out


def _signals(event: dict[str, Any]) -> list[dict[str, Any]]:
    signals = event.get("event_signals") or []
    if isinstance(signals, dict):
        signals = signals.get("event_signals") or []
    return list(signals)
