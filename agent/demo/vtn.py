"""A small OpenADR 2.0b VTN (openleadr's) for the demo story and the tests: what a utility runs.

It listens on loopback only, registers whichever VEN comes, and records what the VEN answers
(event responses, power reports). Events are added, modified and cancelled from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from openleadr import OpenADRServer, hooks, utils
from openleadr.service.vtn_service import VTNService

T = TypeVar("T")
# openleadr advises, at every start, to provision VENs out of band; this VTN takes any VEN.
logging.getLogger("openleadr").setLevel(logging.ERROR)


class Vtn:
    """openleadr's VTN on its own event loop in a thread, recording what the VEN tells it."""

    def __init__(self, port: int, pki: Path | None = None, ven_fingerprint: str = "",
                 ven_id: str = "ven-test-rig", vtn_id: str = "TEST-VTN") -> None:
        """With `pki`: https with client certificates, and signed messages both ways.
        `ven_id` names the VEN it provisions out of band (for signed messages); a VEN that
        registers is named after its venName."""
        self.port = port
        self.ven_id = ven_id
        self.vtn_id = vtn_id
        self.market_context = "oadr://test.grid/ers"
        self.pki = pki
        self.ven_fingerprint = ven_fingerprint
        self.registrations = 0
        self.knows_ven = True  # False: a VTN that has lost its VEN asks it to register at each poll
        self.responses: list[dict[str, Any]] = []  # every eventResponse of oadrCreatedEvent
        self.reports: list[tuple[str, float]] = []  # (resource id, watts)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vtn", daemon=True)
        self._thread.start()
        hooks.register("before_handle", self._handled)
        self.server: Any = self._run(self._start())

    @property
    def url(self) -> str:
        scheme = "https" if self.pki else "http"
        return f"{scheme}://127.0.0.1:{self.port}/OpenADR2/Simple/2.0b"

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def _on_loop(self, call: Callable[[], T]) -> T:
        async def run() -> T:
            return call()

        result: T = self._run(run())
        return result

    async def _start(self) -> Any:
        _forget_lookups()
        tls: dict[str, Any] = {"ven_lookup": self._lookup}
        if self.pki is not None:
            cert, key = str(self.pki / "server.pem"), str(self.pki / "server.key")
            tls |= {"cert": cert, "key": key, "http_cert": cert, "http_key": key,
                    "http_ca_file": str(self.pki / "ca.pem")}
        server = OpenADRServer(vtn_id=self.vtn_id, http_host="127.0.0.1", http_port=self.port,
                               requested_poll_freq=timedelta(seconds=1), show_fingerprint=False,
                               **tls)
        server.add_handler("on_create_party_registration", self._register)
        server.add_handler("on_register_report", self._offered)
        with contextlib.redirect_stdout(io.StringIO()):  # openleadr's banner is for consoles
            await server.run()
        return server

    def _register(self, payload: dict[str, Any]) -> tuple[str, str]:
        self.registrations += 1
        self.ven_id = f"ven-{payload['ven_name']}"
        return self.ven_id, f"reg-{self.registrations}"

    def _lookup(self, ven_id: str) -> dict[str, str]:
        """The VEN as provisioned out of band (its venID and certificate fingerprint), or as it
        registered; {} for a VEN this VTN does not know."""
        known = ven_id == self.ven_id and self.knows_ven
        return {"ven_id": self.ven_id, "ven_name": self.ven_id.removeprefix("ven-"),
                "registration_id": "reg-signed", "fingerprint": self.ven_fingerprint} \
            if known else {}

    def _offered(self, ven_id: str, resource_id: str, measurement: str, unit: str, scale: str,
                 min_sampling_interval: timedelta, max_sampling_interval: timedelta
                 ) -> tuple[Callable[[list[tuple[datetime, float]]], None], timedelta]:
        def received(values: list[tuple[datetime, float]]) -> None:
            self.reports += [(resource_id, value) for _, value in values]

        return received, min_sampling_interval

    async def _handled(self, message_type: str, payload: dict[str, Any]) -> None:
        if message_type == "oadrCreatedEvent":
            self.responses += payload.get("event_responses") or []

    def add_event(self, event_id: str, signal_name: str, signal_type: str, payload: float,
                  duration_s: float) -> None:
        def opted(ven_id: str, event_id: str, opt_type: str) -> None:
            """Responses are recorded from every oadrCreatedEvent (this sees only the first)."""

        interval = {"dtstart": datetime.now(UTC), "duration": timedelta(seconds=duration_s),
                    "signal_payload": payload}
        self._on_loop(lambda: self.server.add_event(
            self.ven_id, signal_name, signal_type, [interval], event_id=event_id, callback=opted,
            market_context=self.market_context))

    def modify(self, event_id: str, payload: float) -> None:
        def change() -> None:
            event = utils.find_by(self.server.events[self.ven_id], "event_descriptor.event_id",
                                  event_id)
            event.event_signals[0].intervals[0]["signal_payload"] = payload
            utils.increment_event_modification_number(event)
            self.server.events_updated[self.ven_id] = True

        self._on_loop(change)

    def cancel(self, event_id: str) -> None:
        self._on_loop(lambda: self.server.cancel_event(self.ven_id, event_id))

    def answer(self, event_id: str, modification: int = 0) -> dict[str, Any] | None:
        return next((r for r in reversed(self.responses) if r["event_id"] == event_id
                     and r["modification_number"] == modification), None)

    def stop(self) -> None:
        try:
            self._run(self.server.stop())
        finally:
            hooks.HOOKS["before_handle"].remove(self._handled)
            _forget_lookups()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()


def _forget_lookups() -> None:
    """openleadr stores a VTN's `ven_lookup` on its VTNService class, for every VTN in the
    process: a signed VTN's lookup outlives it and makes the next VTN ask its VEN to register
    again on every poll, so no event ever reaches it. One VTN at a time, each with its own."""
    for name in ("ven_lookup", "fingerprint_lookup"):
        if name in VTNService.__dict__:
            delattr(VTNService, name)
