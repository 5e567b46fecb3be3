"""An OpenADR 2.0b VEN's session with its VTN, on openleadr 0.5.36: shared by rigd's VEN (a rig)
and the site controller's (a site). What the events mean is the owner's (`on_event`); this
module registers, offers the owner's power reports, fetches events and polls.

Three polls in a row without a good answer (no answer, a reply that is not OpenADR, an error
code, a request to register again) end the session; registering again waits 1 s, 2 s, 4 s ... up
to `retry_max_s`. Events already accepted keep running on the owner's clock meanwhile.

Plain http on loopback without signatures is for tests; a real VTN takes https with a client
certificate (`cert_file`, `key_file`, `ca_file`), which openleadr also uses to sign messages, and
`vtn_fingerprint` to check the VTN's signatures.

openleadr 0.5.36 is pinned: besides its public API this drives its client's `_poll`,
`_perform_request` (to tell a good answer from none), `_create_message` (to put the opt-out reason
into the response) and `_report_queue_worker`/`_event_cleanup` (as its own `run` does), so that
the owner, not openleadr, decides when to retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from xml.sax.saxutils import escape

LOST_AFTER_POLLS = 3
MAX_POLL_S = 86400.0  # a VTN asking for rarer polls is polled once a day
REPORT_BUFFER = timedelta(hours=1)
REASONS_KEPT = 256  # opt-out reasons remembered for the VTN (re-sent if it asks again)
MAX_REASON_CHARS = 200


@dataclass(frozen=True, slots=True)
class VenSettings:
    vtn_url: str
    ven_name: str
    ven_id: str = ""  # "" = the VTN assigns one
    poll_interval_s: float = 0.0  # 0 = as the VTN asks at registration
    report_interval_s: float = 10.0
    retry_max_s: float = 60.0
    report_specifier_id: str = "power"
    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""
    vtn_fingerprint: str = ""


@dataclass(frozen=True, slots=True)
class PowerReport:
    """One REAL_POWER value the VEN offers the VTN (TELEMETRY_USAGE, watts)."""

    resource_id: str
    r_id: str
    read_w: Callable[[], Awaitable[float]]


class _ToLog(logging.Handler):
    """openleadr's and APScheduler's own log records, as the owner's log lines."""

    def __init__(self, log: Any) -> None:
        super().__init__()
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        self.log.log(record.levelno, "openleadr", logger=record.name,
                     message=record.getMessage()[:2000])


@dataclass(slots=True)
class Exchanges:
    """What the VTN answered, for deciding whether a poll reached it."""

    reply: str | None = None  # the last raw reply, if any came
    problem: str = ""
    poll_answered: bool = False  # the last oadrPoll got an answer that was not "register again"


class VenSession:
    """Registration, reports and polling for one VEN; `run()` until cancelled.

    `on_event(event)` is openleadr's on_event/on_update_event handler: it returns "optIn" or
    "optOut" (and records the reason of an optOut with `remember_reason`). `kept()` names the
    events the owner keeps running while the VTN is lost (for the log line)."""

    def __init__(self, settings: VenSettings, openleadr: Any,
                 on_event: Callable[[dict[str, Any]], Awaitable[str]],
                 reports: Sequence[PowerReport], log: Any,
                 kept: Callable[[], list[str]] = list) -> None:
        self.settings = settings
        self.openleadr = openleadr
        self.on_event = on_event
        self.reports = tuple(reports)
        self.log = log
        self.kept = kept
        self.ven_id: str | None = settings.ven_id or None
        self.reasons: dict[str, str] = {}  # event id -> why it was opted out of
        self.client: Any = None  # the registered openleadr client, while there is one
        self.exchanges = Exchanges()
        self._spawned: set[asyncio.Task[Any]] = set()

    def route_logs(self) -> None:
        """openleadr's and APScheduler's logging to the owner's log (warnings and worse)."""
        handler = _ToLog(self.log)
        for name in ("openleadr", "apscheduler"):
            logger = logging.getLogger(name)
            logger.setLevel(logging.WARNING)
            logger.handlers = [handler]
            logger.propagate = False

    def fingerprint(self) -> str:
        """This VEN's certificate fingerprint (what the VTN's operator is given), or ""."""
        if not self.settings.cert_file:
            return ""
        with open(self.settings.cert_file, encoding="ascii") as f:
            return str(self.openleadr.utils.certificate_fingerprint(f.read()))

    async def run(self) -> None:
        attempt = 0
        try:
            while True:
                client = self._new_client()
                try:
                    if await self._register(client):
                        attempt = 0
                        await self._poll_until_lost(client)
                except Exception as exc:  # whatever a VTN's reply did to openleadr
                    self.log.error("openadr_session_failed",
                                   error=f"{type(exc).__name__}: {exc}",
                                   reply=self._reply_excerpt())
                finally:
                    self.client = None
                    await self._close(client)
                attempt += 1
                wait_s = min(self.settings.retry_max_s, 2.0 ** (attempt - 1))
                self.log.warning("openadr_retrying", in_s=wait_s, attempt=attempt,
                                 vtn_url=self.settings.vtn_url)
                await asyncio.sleep(wait_s)
        finally:
            for task in self._spawned:
                task.cancel()

    def _new_client(self) -> Any:
        s = self.settings
        client = self.openleadr.OpenADRClient(
            ven_name=s.ven_name, vtn_url=s.vtn_url, ven_id=self.ven_id,
            cert=s.cert_file or None, key=s.key_file or None, ca_file=s.ca_file or None,
            vtn_fingerprint=s.vtn_fingerprint or None, show_fingerprint=False)
        client.add_handler("on_event", self.on_event)
        client.add_handler("on_update_event", self.on_event)
        client.add_hook("after_receive_xml", self._received)
        perform, create = client._perform_request, client._create_message

        async def perform_counted(service: str, message: Any) -> Any:
            return await self._exchange(perform, service, message)

        client._perform_request = perform_counted
        client._create_message = lambda kind, **payload: create(kind, **self._with_reasons(
            kind, payload))
        if self.reports:
            rate = self.openleadr.objects.SamplingRate(
                min_period=timedelta(seconds=s.report_interval_s),
                max_period=max(REPORT_BUFFER, timedelta(seconds=s.report_interval_s)),
                on_change=False)
            for report in self.reports:
                client.add_report(self._report(report), resource_id=report.resource_id,
                                  measurement="REAL_POWER", unit="W", scale="none",
                                  r_id=report.r_id, report_specifier_id=s.report_specifier_id,
                                  sampling_rate=rate, report_duration=REPORT_BUFFER)
        return client

    @staticmethod
    def _report(report: PowerReport) -> Callable[[], Any]:
        async def value() -> float:
            return round(float(await report.read_w()), 1)

        return value

    async def _register(self, client: Any) -> bool:
        """openleadr's `run` up to polling: register, offer reports, fetch events."""
        client.loop = asyncio.get_running_loop()
        _, query = await client.query_registration()
        response: dict[str, Any] = (query or {}).get("response") or {}
        request_id = response.get("request_id")
        await client.create_party_registration(ven_id=self.ven_id, request_id=request_id)
        if not client.registration_id:
            self.log.error("openadr_registration_failed", vtn_url=self.settings.vtn_url,
                           problem=self.exchanges.problem or "the VTN did not register this VEN")
            return False
        self.ven_id = client.ven_id
        self.client = client
        self.log.info("openadr_registered", vtn_url=self.settings.vtn_url, ven_id=client.ven_id,
                      registration_id=client.registration_id,
                      poll_s=self._poll_interval_s(client))
        await client.register_reports(client.reports)
        if client.reports:
            client.report_queue_task = asyncio.create_task(client._report_queue_worker())
        await client.sync_events()
        client.scheduler.add_job(client._event_cleanup, trigger="interval",
                                 seconds=client.events_clean_up_period)
        client.scheduler.start()
        return True

    def _poll_interval_s(self, client: Any) -> float:
        asked = client.poll_frequency.total_seconds() if client.poll_frequency else 10.0
        return self.settings.poll_interval_s or min(asked, MAX_POLL_S)

    async def _poll_until_lost(self, client: Any) -> None:
        interval_s, bad = self._poll_interval_s(client), 0
        while bad < LOST_AFTER_POLLS:
            await asyncio.sleep(interval_s)
            self.exchanges.poll_answered = False
            try:
                await client._poll()
            except Exception as exc:  # a reply openleadr could not handle
                self.exchanges.problem = f"{type(exc).__name__}: {exc}"
                self.log.warning("openadr_poll_failed", problem=self.exchanges.problem)
            if client.registration_id is None:
                self.log.warning("openadr_registration_lost", vtn_url=self.settings.vtn_url)
                return
            bad = 0 if self.exchanges.poll_answered else bad + 1
        self.log.warning("openadr_vtn_lost", vtn_url=self.settings.vtn_url, polls=bad,
                         problem=self.exchanges.problem, events_kept=sorted(self.kept()))

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
        self.log.debug("openadr_bad_exchange", problem=self.exchanges.problem)
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

    # -- opting out -----------------------------------------------------------------------

    def remember_reason(self, event_id: str, reason: str) -> None:
        self.reasons[event_id] = reason
        while len(self.reasons) > REASONS_KEPT:
            del self.reasons[next(iter(self.reasons))]

    def _with_reasons(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        """An opt-out's oadrCreatedEvent carries its reason as the responseDescription."""
        if kind == "oadrCreatedEvent":
            for response in payload.get("event_responses") or []:
                reason = self.reasons.get(str(response.get("event_id")))
                if reason and response.get("opt_type") == "optOut":
                    response["response_description"] = escape(reason[:MAX_REASON_CHARS])
        return payload

    def opt_out_late(self, event_id: str, modification_number: int, reason: str) -> None:
        """After an optIn: tell the VTN the event cannot be honoured after all (if a session
        is up; the reason is kept for the VTN's next question either way)."""
        self.remember_reason(event_id, reason)
        client = self.client
        if client is not None:
            task = asyncio.get_running_loop().create_task(
                client.created_event(secrets.token_hex(8), event_id, "optOut",
                                     modification_number), name="openadr-opt-out")
            self._spawned.add(task)
            task.add_done_callback(self._spawned.discard)
