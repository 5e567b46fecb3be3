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

The session with the VTN: register, offer the reports, fetch the events, then poll. Three polls
in a row without a good answer (no answer, a reply that is not OpenADR, an error code, a request
to register again) end the session; registering again waits 1 s, 2 s, 4 s ... up to
`retry_max_s`. Events already accepted keep running on rigd's clock meanwhile.

Plain http on loopback without signatures is for tests; a real VTN takes https with a client
certificate (`cert_file`, `key_file`, `ca_file`), which openleadr also uses to sign messages, and
`vtn_fingerprint` to check the VTN's signatures.

openleadr 0.5.36 is pinned: besides its public API this drives its client's `_poll`,
`_perform_request` (to tell a good answer from none), `_create_message` (to put the opt-out reason
into the response) and `_report_queue_worker`/`_event_cleanup` (as its own `run` does), so that
rigd, not openleadr, decides when to retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.sax.saxutils import escape

import structlog

from agent.config.settings import OPENLEADR_MISSING, Config
from agent.core.errors import Refused
from agent.edges.auth import AuditLog
from agent.runtime.curtail import MAX_EXPIRY_S, MAX_REASON_CHARS, Curtailer
from rigapi.model import Operation, RigPower

log = structlog.get_logger("rigd.openadr")

SOURCE_PREFIX = "openadr:"
LOST_AFTER_POLLS = 3
MAX_POLL_S = 86400.0  # a VTN asking for rarer polls is polled once a day
REPORT_SPECIFIER_ID = "rigd-power"
REPORT_BUFFER = timedelta(hours=1)
REASONS_KEPT = 256  # opt-out reasons remembered for the VTN (re-sent if it asks again)
RECONCILE_MAX_WAIT_S = 60.0  # look again at least this often (a wall clock that jumps)
STOP_TIMEOUT_S = 5.0
SI_SCALE = {"none": 1.0, "": 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9}


class OpenleadrMissing(Exception):
    """openleadr cannot be imported; the message is one line an operator can act on."""


class NotHonoured(Exception):
    """Why an event is opted out of (logged and told to the VTN)."""


def load_openleadr() -> Any:
    """The openleadr module, or OpenleadrMissing (called before rigd listens)."""
    try:
        import openleadr
    except ImportError as exc:
        raise OpenleadrMissing(f"{OPENLEADR_MISSING} ({exc})") from None
    return openleadr


# ---- events as plans -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """A rig power target, possibly relative to the rig's power when the event starts."""

    kind: str  # "watts" | "fraction" | "delta_w"
    value: float

    @property
    def needs_baseline(self) -> bool:
        return self.kind != "watts"

    def watts(self, baseline_w: float | None) -> float:
        if self.kind == "watts":
            return self.value
        assert baseline_w is not None
        if self.kind == "fraction":
            return self.value * baseline_w
        return baseline_w + self.value


@dataclass(frozen=True, slots=True)
class Interval:
    start_unix_s: float
    end_unix_s: float
    target: Target | None  # None: no curtailment during this interval


@dataclass(slots=True)
class EventPlan:
    event_id: str
    modification_number: int
    market_context: str
    start_unix_s: float
    end_unix_s: float
    intervals: list[Interval]
    baseline_w: float | None = None  # the rig's power when the event started
    refused: str = ""  # the Curtailer refused its target: opted out late

    @property
    def source(self) -> str:
        return SOURCE_PREFIX + self.event_id

    def targets_at(self, now: float) -> list[Target]:
        return [i.target for i in self.intervals
                if i.start_unix_s <= now < i.end_unix_s and i.target is not None]

    def next_change(self, now: float) -> float | None:
        times = [t for i in self.intervals for t in (i.start_unix_s, i.end_unix_s) if t > now]
        return min(times, default=None)


def _unix(value: Any) -> float:
    if not isinstance(value, datetime):
        raise NotHonoured(f"a start time that is not a time: {value!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def _seconds(value: Any) -> float:
    if not isinstance(value, timedelta):
        raise NotHonoured(f"a duration that is not a duration: {value!r}")
    return value.total_seconds()


def _payload(interval: dict[str, Any]) -> float:
    value = interval.get("signal_payload")
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value):
        raise NotHonoured(f"a signal payload that is not a number: {value!r}")
    return float(value)


def _simple_target(value: float, levels: dict[str, float]) -> Target | None:
    if not value.is_integer() or not 0 <= value <= 3:
        raise NotHonoured(f"SIMPLE level {value:g}: levels are 0, 1, 2 and 3")
    level = str(int(value))
    if level == "0":
        return None
    if level not in levels:
        raise NotHonoured(f"SIMPLE level {level} has no target in [openadr] simple_levels")
    return Target("fraction", levels[level])


def _dispatch_target(signal_type: str, value_w: float) -> Target | None:
    if signal_type == "setpoint":
        if value_w <= 0:
            raise NotHonoured(f"LOAD_DISPATCH setpoint {value_w:g} W: a target must be a "
                              f"positive number of watts")
        return Target("watts", value_w)
    if value_w > 0:
        raise NotHonoured(f"LOAD_DISPATCH delta +{value_w:g} W asks for more load; rigd only "
                          f"sheds")
    return Target("delta_w", value_w) if value_w < 0 else None


def _signal_scale(signal: dict[str, Any]) -> float:
    """Watts per unit of the payload (LOAD_DISPATCH may say kW through its itemBase)."""
    measurement = signal.get("measurement") or {}
    unit = measurement.get("unit", "W") if isinstance(measurement, dict) else "W"
    scale = measurement.get("scale", "none") if isinstance(measurement, dict) else "none"
    if unit != "W" or scale not in SI_SCALE:
        raise NotHonoured(f"LOAD_DISPATCH in {scale}{unit}: rigd understands watts")
    return SI_SCALE[scale or "none"]


def _signal_intervals(signal: dict[str, Any], start: float, end: float,
                      levels: dict[str, float]) -> list[Interval]:
    name, kind = signal.get("signal_name"), signal.get("signal_type")
    if name in ("SIMPLE", "simple") and kind == "level":
        def target(value: float) -> Target | None:
            return _simple_target(value, levels)
    elif name == "LOAD_DISPATCH" and kind in ("setpoint", "delta"):
        scale = _signal_scale(signal)

        def target(value: float) -> Target | None:
            return _dispatch_target(kind, value * scale)
    else:
        raise NotHonoured(f"signal {name} ({kind}) is not understood: rigd acts on SIMPLE "
                          f"levels and LOAD_DISPATCH setpoint or delta")
    intervals, cursor = [], start
    for raw in sorted(signal.get("intervals") or [], key=lambda i: i.get("uid") or 0):
        begin = _unix(raw["dtstart"]) if raw.get("dtstart") else cursor
        length = _seconds(raw.get("duration", timedelta(0)))
        finish = begin + length if length > 0 else end  # no duration: to the event's end
        cursor = finish
        intervals.append(Interval(max(begin, start), min(finish, end), target(_payload(raw))))
    if not intervals:
        raise NotHonoured(f"signal {name} has no intervals")
    return intervals


def plan_event(event: dict[str, Any], levels: dict[str, float]) -> EventPlan:
    """What the event asks of the rig, interval by interval; NotHonoured says why not."""
    try:
        descriptor = event["event_descriptor"]
        period = event["active_period"]
        start = _unix(period["dtstart"])
        duration = _seconds(period["duration"])
        if duration <= 0:
            raise NotHonoured("an event without an end: a curtailment needs one")
        if duration > MAX_EXPIRY_S:
            raise NotHonoured(f"an event of {duration:g} s: a curtailment lasts at most "
                              f"{MAX_EXPIRY_S:g} s")
        signals = event.get("event_signals") or []
        if isinstance(signals, dict):
            signals = signals.get("event_signals") or []
        if not signals:
            raise NotHonoured("an event without a signal")
        intervals = [i for s in signals
                     for i in _signal_intervals(s, start, start + duration, levels)]
        return EventPlan(str(descriptor["event_id"]), int(descriptor["modification_number"]),
                         str(descriptor.get("market_context") or ""), start, start + duration,
                         intervals)
    except NotHonoured:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise NotHonoured(f"a malformed event ({type(exc).__name__}: {exc})") from None


# ---- the VEN -------------------------------------------------------------------------------


class _ToLog(logging.Handler):
    """openleadr's and APScheduler's own log records, as rigd log lines."""

    def emit(self, record: logging.LogRecord) -> None:
        log.log(record.levelno, "openleadr", logger=record.name,
                message=record.getMessage()[:2000])


@dataclass(slots=True)
class _Exchanges:
    """What the VTN answered, for deciding whether a poll reached it."""

    reply: str | None = None  # the last raw reply, if any came
    problem: str = ""
    poll_answered: bool = False  # the last oadrPoll got an answer that was not "register again"


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
        self.ven_id: str | None = config.openadr_ven_id or None
        self.plans: dict[str, EventPlan] = {}
        self.reasons: dict[str, str] = {}  # event id -> why it was opted out of
        self.endings: dict[str, str] = {}  # event id -> how it ended, for the restore's reason
        self.client: Any = None  # the registered openleadr client, while there is one
        self.exchanges = _Exchanges()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._power: tuple[float, RigPower] | None = None
        self._applied: str | None = None  # the event whose curtailment this VEN put in force

    def start(self) -> None:
        handler = _ToLog()
        for name in ("openleadr", "apscheduler"):
            logger = logging.getLogger(name)
            logger.setLevel(logging.WARNING)
            logger.handlers = [handler]
            logger.propagate = False
        self._spawn(self._session_loop(), "openadr-session")
        self._spawn(self._reconcile_loop(), "openadr-events")
        log.info("openadr_started", vtn_url=self.config.openadr_vtn_url, ven_name=self.ven_name,
                 signed=bool(self.config.openadr_cert_file))
        if self.config.openadr_cert_file:  # what the VTN's operator must be given out of band
            with open(self.config.openadr_cert_file, encoding="ascii") as f:
                fingerprint = self.openleadr.utils.certificate_fingerprint(f.read())
            log.info("openadr_ven_fingerprint", fingerprint=fingerprint)

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

    # -- the session with the VTN -------------------------------------------------------------

    async def _session_loop(self) -> None:
        attempt = 0
        while True:
            client = self._new_client()
            try:
                if await self._register(client):
                    attempt = 0
                    await self._poll_until_lost(client)
            except Exception as exc:  # whatever a VTN's reply did to openleadr
                log.error("openadr_session_failed", error=f"{type(exc).__name__}: {exc}",
                          reply=self._reply_excerpt())
            finally:
                self.client = None
                await self._close(client)
            attempt += 1
            wait_s = min(self.config.openadr_retry_max_s, 2.0 ** (attempt - 1))
            log.warning("openadr_retrying", in_s=wait_s, attempt=attempt,
                        vtn_url=self.config.openadr_vtn_url)
            await asyncio.sleep(wait_s)

    def _new_client(self) -> Any:
        c = self.config
        client = self.openleadr.OpenADRClient(
            ven_name=self.ven_name, vtn_url=c.openadr_vtn_url, ven_id=self.ven_id,
            cert=c.openadr_cert_file or None, key=c.openadr_key_file or None,
            ca_file=c.openadr_ca_file or None, vtn_fingerprint=c.openadr_vtn_fingerprint or None,
            show_fingerprint=False)
        client.add_handler("on_event", self._on_event)
        client.add_handler("on_update_event", self._on_event)
        client.add_hook("after_receive_xml", self._received)
        perform, create = client._perform_request, client._create_message

        async def perform_counted(service: str, message: Any) -> Any:
            return await self._exchange(perform, service, message)

        client._perform_request = perform_counted
        client._create_message = lambda kind, **payload: create(kind, **self._with_reasons(
            kind, payload))
        rate = self.openleadr.objects.SamplingRate(
            min_period=timedelta(seconds=c.openadr_report_interval_s),
            max_period=max(REPORT_BUFFER, timedelta(seconds=c.openadr_report_interval_s)),
            on_change=False)
        for part in ("total", "measured", "estimated"):
            resource = self.ven_name if part == "total" else f"{self.ven_name}/{part}"
            client.add_report(self._report(part), resource_id=resource, measurement="REAL_POWER",
                              unit="W", scale="none", r_id=f"rig_power_{part}_w",
                              report_specifier_id=REPORT_SPECIFIER_ID, sampling_rate=rate,
                              report_duration=REPORT_BUFFER)
        return client

    async def _register(self, client: Any) -> bool:
        """openleadr's `run` up to polling: register, offer reports, fetch events."""
        client.loop = asyncio.get_running_loop()
        _, query = await client.query_registration()
        response: dict[str, Any] = (query or {}).get("response") or {}
        request_id = response.get("request_id")
        await client.create_party_registration(ven_id=self.ven_id, request_id=request_id)
        if not client.registration_id:
            log.error("openadr_registration_failed", vtn_url=self.config.openadr_vtn_url,
                      problem=self.exchanges.problem or "the VTN did not register this VEN")
            return False
        self.ven_id = client.ven_id
        self.client = client
        log.info("openadr_registered", vtn_url=self.config.openadr_vtn_url, ven_id=client.ven_id,
                 registration_id=client.registration_id, poll_s=self._poll_interval_s(client))
        await client.register_reports(client.reports)
        client.report_queue_task = asyncio.create_task(client._report_queue_worker())
        await client.sync_events()
        client.scheduler.add_job(client._event_cleanup, trigger="interval",
                                 seconds=client.events_clean_up_period)
        client.scheduler.start()
        return True

    def _poll_interval_s(self, client: Any) -> float:
        asked = client.poll_frequency.total_seconds() if client.poll_frequency else 10.0
        return self.config.openadr_poll_interval_s or min(asked, MAX_POLL_S)

    async def _poll_until_lost(self, client: Any) -> None:
        interval_s, bad = self._poll_interval_s(client), 0
        while bad < LOST_AFTER_POLLS:
            await asyncio.sleep(interval_s)
            self.exchanges.poll_answered = False
            try:
                await client._poll()
            except Exception as exc:  # a reply openleadr could not handle
                self.exchanges.problem = f"{type(exc).__name__}: {exc}"
                log.warning("openadr_poll_failed", problem=self.exchanges.problem)
            if client.registration_id is None:
                log.warning("openadr_registration_lost", vtn_url=self.config.openadr_vtn_url)
                return
            bad = 0 if self.exchanges.poll_answered else bad + 1
        log.warning("openadr_vtn_lost", vtn_url=self.config.openadr_vtn_url, polls=bad,
                    problem=self.exchanges.problem, events_kept=sorted(self.plans))

    async def _exchange(self, perform: Callable[..., Any], service: str, message: Any) -> Any:
        """One request to the VTN; a poll counts as answered only if a valid OpenADR answer
        with code 200 came back; otherwise `exchanges.problem` says what came instead."""
        self.exchanges.reply = None
        result = await perform(service, message)
        if not isinstance(result, tuple):  # openleadr's answer to an empty reply: make it usual
            result = (None, {})
        message_type, payload = result
        response = payload.get("response") if isinstance(payload, dict) else None
        code = (response or {}).get("response_code", 200)
        if message_type == "oadrRequestReregistration":
            # openleadr registers again at once; a VTN that asks at every poll does not know
            # this VEN (and sends it no events): that is a lost session, said in the log
            self.exchanges.problem = f"{service}: the VTN asks this VEN to register again"
            return result
        if message_type is not None and str(code) == "200":
            self.exchanges.poll_answered |= service == "OadrPoll"
            return result
        if message_type is not None:
            description = (response or {}).get("response_description")
            problem = f"{message_type} with code {code}: {description}"
        elif self.exchanges.reply is None:
            problem = "no answer"
        else:
            problem = f"a reply that is not valid OpenADR: {self._reply_excerpt()}"
        self.exchanges.problem = f"{service}: {problem}"
        # debug: openleadr's own line says what failed, and the session's lines sum it up
        log.debug("openadr_bad_exchange", problem=self.exchanges.problem)
        return result

    def _received(self, content: str) -> None:
        self.exchanges.reply = content

    def _reply_excerpt(self) -> str:
        reply = self.exchanges.reply
        return "" if reply is None else repr(reply[:200]) if reply else "an empty reply"

    @staticmethod
    async def _close(client: Any) -> None:
        with contextlib.suppress(Exception):
            if client.scheduler.running:
                client.scheduler.shutdown(wait=False)
        if client.report_queue_task is not None:
            client.report_queue_task.cancel()
        if client.client_session is not None:
            await client.client_session.close()

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
            plan = plan_event(event, self.config.openadr_simple_levels)
        except NotHonoured as exc:
            self._remember_reason(event_id, str(exc))
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

    def _remember_reason(self, event_id: str, reason: str) -> None:
        self.reasons[event_id] = reason
        while len(self.reasons) > REASONS_KEPT:
            del self.reasons[next(iter(self.reasons))]

    def _drop(self, event_id: str, how: str) -> None:
        if self.plans.pop(event_id, None) is not None:
            self.endings[event_id] = how
            log.info("openadr_event_ended", event_id=event_id, how=how)
            self._wake.set()

    def _with_reasons(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        """An opt-out's oadrCreatedEvent carries its reason as the responseDescription."""
        if kind == "oadrCreatedEvent":
            for response in payload.get("event_responses") or []:
                reason = self.reasons.get(str(response.get("event_id")))
                if reason and response.get("opt_type") == "optOut":
                    response["response_description"] = escape(reason[:MAX_REASON_CHARS])
        return payload

    def _opt_out_late(self, plan: EventPlan, reason: str) -> None:
        """After an optIn: tell the VTN the target could not be applied after all."""
        plan.refused = reason
        self._remember_reason(plan.event_id, reason)
        client = self.client
        if client is not None:
            self._spawn(client.created_event(secrets.token_hex(8), plan.event_id, "optOut",
                                             plan.modification_number), "openadr-opt-out")

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

    def _report(self, part: str) -> Callable[[], Any]:
        async def value() -> float:
            return round(float(getattr(await self._rig_power(), f"{part}_w")), 1)

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
