"""The site's VEN, its events without a VTN (events as openleadr hands them over): a dispatch
becomes the site's cap with its deadline, a SIMPLE level a share of the site's power when the
event starts, ELECTRICITY_PRICE signals the energy price; what the site controller cannot
honour is opted out of with the reason kept for the VTN; a cancelled event lifts its cap."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.config import from_dict
from controller.inputs import OpenAdrPrice, PriceBook
from controller.ven import SiteVen

T0 = datetime(2027, 1, 15, 18, 0, tzinfo=UTC)
CONFIG = from_dict({"rigs": {"endpoints": ["unix:/x"]}, "price": {"file": "/p.csv"},
                    "openadr": {"vtn_url": "http://127.0.0.1:8080/OpenADR2/Simple/2.0b",
                                "deadline_s": 60.0,
                                "simple_levels": {"1": 0.8, "2": 0.6, "3": 0.4}}})


def event(event_id: str, signals: list[dict[str, Any]], start: datetime = T0,
          duration_s: float = 3600, status: str = "far") -> dict[str, Any]:
    return {"event_descriptor": {"event_id": event_id, "modification_number": 0,
                                 "market_context": "oadr://grid", "event_status": status},
            "active_period": {"dtstart": start, "duration": timedelta(seconds=duration_s)},
            "event_signals": signals}


def signal(name: str, kind: str, payload: float, measurement: dict[str, str] | None = None,
           duration_s: float = 3600) -> dict[str, Any]:
    out: dict[str, Any] = {"signal_name": name, "signal_type": kind, "intervals": [
        {"duration": timedelta(seconds=duration_s), "signal_payload": payload, "uid": 0}]}
    if measurement is not None:
        out["measurement"] = measurement
    return out


def ven(site_w: float | None = 100_000.0) -> tuple[SiteVen, PriceBook, asyncio.Event]:
    book, wake = PriceBook(), asyncio.Event()
    return SiteVen(CONFIG, None, lambda: site_w, book, wake), book, wake


def test_a_dispatch_is_the_sites_cap_from_its_arrival_to_its_end() -> None:
    v, _, wake = ven()
    start = T0.timestamp()
    answer = asyncio.run(v.on_event(event("ev-1", [signal("LOAD_DISPATCH", "setpoint", 60.0,
                                                          {"unit": "W", "scale": "k"})])))
    assert answer == "optIn" and wake.is_set()
    received = v.plans["ev-1"].received_unix_s
    (cap,) = v.caps(start - 600)  # notified ahead: planned for from now on
    assert cap.cap_w == 60_000.0 and cap.source == "openadr:ev-1"
    assert cap.deadline_s == max(start, received + 60.0) and cap.ends_s == start + 3600
    assert v.caps(start + 3600) == []  # over


def test_an_event_that_starts_now_gets_the_configured_time_to_comply() -> None:
    v, _, _ = ven()
    now = datetime.now(UTC)
    asyncio.run(v.on_event(event("ev-now", [signal("LOAD_DISPATCH", "setpoint", 50_000.0)],
                                 start=now)))
    (cap,) = v.caps(now.timestamp() + 1)
    assert cap.deadline_s == pytest.approx(v.plans["ev-now"].received_unix_s + 60.0)


def test_simple_levels_are_shares_of_the_site_when_the_event_starts() -> None:
    v, _, _ = ven(site_w=200_000.0)
    asyncio.run(v.on_event(event("ev-2", [signal("SIMPLE", "level", 2)])))
    (cap,) = v.caps(T0.timestamp())
    assert cap.cap_w == 0.6 * 200_000.0


def test_several_events_the_lowest_binds_and_a_cancel_lifts_its_own() -> None:
    from controller.inputs import binding_cap

    v, _, _ = ven()
    asyncio.run(v.on_event(event("a", [signal("LOAD_DISPATCH", "setpoint", 80_000.0)])))
    asyncio.run(v.on_event(event("b", [signal("LOAD_DISPATCH", "delta", -50_000.0)])))
    low = binding_cap(v.caps(T0.timestamp()))
    assert low is not None and (low.cap_w, low.source) == (50_000.0, "openadr:b")
    asyncio.run(v.on_event(event("b", [], status="cancelled")))
    left = binding_cap(v.caps(T0.timestamp()))
    assert left is not None and left.source == "openadr:a"


@pytest.mark.parametrize(("signals", "why"), [
    ([signal("LOAD_DISPATCH", "delta", 5_000.0)], "asks for more load; the site controller only "
                                                  "sheds"),
    ([signal("SIMPLE", "level", 3.5)], "levels are 0, 1, 2 and 3"),
    ([signal("LOAD_CONTROL", "x_loadControlCapacity", 0.5)], "the site controller acts on"),
    ([signal("ELECTRICITY_PRICE", "priceRelative", 0.1)], "absolute prices"),
    ([signal("ELECTRICITY_PRICE", "price", 30.0, {"name": "currencyPerKWh", "unit": "EUR"})],
     "understands USD"),
    ([], "an event without a signal"),
])
def test_what_cannot_be_honoured_is_opted_out_of_with_its_reason(
        signals: list[dict[str, Any]], why: str) -> None:
    v, book, _ = ven()
    answer = asyncio.run(v.on_event(event("bad", signals)))
    assert answer == "optOut" and why in v.session.reasons["bad"]
    assert v.caps(T0.timestamp()) == [] and book.intervals == []


def test_electricity_price_signals_are_the_energy_price() -> None:
    v, book, _ = ven()
    start = T0.timestamp()
    price = {"signal_name": "ELECTRICITY_PRICE", "signal_type": "price",
             "measurement": {"name": "currencyPerKWh", "unit": "USD", "scale": "none"},
             "intervals": [{"duration": timedelta(minutes=5), "signal_payload": p, "uid": i}
                           for i, p in enumerate((0.031, 0.212))]}
    assert asyncio.run(v.on_event(event("prices", [price], duration_s=600))) == "optIn"
    assert v.caps(start) == []  # a price is not a cap
    source = OpenAdrPrice(book)
    first = asyncio.run(source.read(start + 10))
    second = asyncio.run(source.read(start + 310))
    assert (first.usd_per_mwh, first.age_s) == (pytest.approx(31.0), 10.0)
    assert (second.usd_per_mwh, second.age_s) == (pytest.approx(212.0), 10.0)
    gone = asyncio.run(source.read(start + 600))
    assert gone.usd_per_mwh is None and "no ELECTRICITY_PRICE interval" in source.last.error
