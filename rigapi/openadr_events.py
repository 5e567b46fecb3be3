"""OpenADR 2.0b events as plans: what an event asks for, interval by interval, as a power
target; pure (no I/O, no openleadr import), shared by rigd's VEN (a rig's power) and the site
controller's VEN (the site's grid cap).

What an event asks for:
- SIMPLE (signal type `level`): level 0 is no curtailment; levels 1..3 are fractions of the power
  when the event starts, from a table of levels.
- LOAD_DISPATCH `setpoint`: the target in watts (the signal's scale applied: kW, MW).
- LOAD_DISPATCH `delta`: the change in load from the power when the event starts; a negative
  delta sheds that many watts, zero is no curtailment. A positive delta (more load) is not
  honoured: only shedding is.
Anything else (another signal, a level not in the table, an event with no end or longer than
`max_duration_s`, a malformed event) raises NotHonoured with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

SOURCE_PREFIX = "openadr:"
SI_SCALE = {"none": 1.0, "": 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9}
MAX_EVENT_S = 86400.0  # the default longest event: a day


class NotHonoured(Exception):
    """Why an event is opted out of (logged and told to the VTN)."""


@dataclass(frozen=True, slots=True)
class Target:
    """A power target, possibly relative to the power when the event starts."""

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
    baseline_w: float | None = None  # the power when the event started
    refused: str = ""  # its target could not be applied: opted out late

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


def _simple_target(value: float, levels: dict[str, float], table: str) -> Target | None:
    if not value.is_integer() or not 0 <= value <= 3:
        raise NotHonoured(f"SIMPLE level {value:g}: levels are 0, 1, 2 and 3")
    level = str(int(value))
    if level == "0":
        return None
    if level not in levels:
        raise NotHonoured(f"SIMPLE level {level} has no target in {table}")
    return Target("fraction", levels[level])


def _dispatch_target(signal_type: str, value_w: float, who: str) -> Target | None:
    if signal_type == "setpoint":
        if value_w <= 0:
            raise NotHonoured(f"LOAD_DISPATCH setpoint {value_w:g} W: a target must be a "
                              f"positive number of watts")
        return Target("watts", value_w)
    if value_w > 0:
        raise NotHonoured(f"LOAD_DISPATCH delta +{value_w:g} W asks for more load; {who} only "
                          f"sheds")
    return Target("delta_w", value_w) if value_w < 0 else None


def _signal_scale(signal: dict[str, Any], who: str) -> float:
    """Watts per unit of the payload (LOAD_DISPATCH may say kW through its itemBase)."""
    measurement = signal.get("measurement") or {}
    unit = measurement.get("unit", "W") if isinstance(measurement, dict) else "W"
    scale = measurement.get("scale", "none") if isinstance(measurement, dict) else "none"
    if unit != "W" or scale not in SI_SCALE:
        raise NotHonoured(f"LOAD_DISPATCH in {scale}{unit}: {who} understands watts")
    return SI_SCALE[scale or "none"]


def _signal_intervals(signal: dict[str, Any], start: float, end: float,
                      levels: dict[str, float], who: str, table: str) -> list[Interval]:
    name, kind = signal.get("signal_name"), signal.get("signal_type")
    if name in ("SIMPLE", "simple") and kind == "level":
        def target(value: float) -> Target | None:
            return _simple_target(value, levels, table)
    elif name == "LOAD_DISPATCH" and kind in ("setpoint", "delta"):
        scale = _signal_scale(signal, who)

        def target(value: float) -> Target | None:
            return _dispatch_target(kind, value * scale, who)
    else:
        raise NotHonoured(f"signal {name} ({kind}) is not understood: {who} acts on SIMPLE "
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


def plan_event(event: dict[str, Any], levels: dict[str, float], *,
               max_duration_s: float = MAX_EVENT_S, who: str = "rigd",
               levels_table: str = "[openadr] simple_levels") -> EventPlan:
    """What the event asks for, interval by interval; NotHonoured says why not. `who` names the
    party in the reasons ("rigd", "the site controller"), `levels_table` where the SIMPLE levels
    are configured."""
    try:
        descriptor = event["event_descriptor"]
        period = event["active_period"]
        start = _unix(period["dtstart"])
        duration = _seconds(period["duration"])
        if duration <= 0:
            raise NotHonoured("an event without an end: a curtailment needs one")
        if duration > max_duration_s:
            raise NotHonoured(f"an event of {duration:g} s: a curtailment lasts at most "
                              f"{max_duration_s:g} s")
        signals = event.get("event_signals") or []
        if isinstance(signals, dict):
            signals = signals.get("event_signals") or []
        if not signals:
            raise NotHonoured("an event without a signal")
        intervals = [i for s in signals
                     for i in _signal_intervals(s, start, start + duration, levels, who,
                                                levels_table)]
        return EventPlan(str(descriptor["event_id"]), int(descriptor["modification_number"]),
                         str(descriptor.get("market_context") or ""), start, start + duration,
                         intervals)
    except NotHonoured:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise NotHonoured(f"a malformed event ({type(exc).__name__}: {exc})") from None


@dataclass(frozen=True, slots=True)
class PriceSignal:
    """An ELECTRICITY_PRICE signal: its type ("price", "priceRelative", "priceMultiplier"), its
    itemBase as the VTN gave it (unit "currencyPerKWh", "currency"...; currency "USD"...; SI
    scale), and (start, end, value) per interval. The caller decides what it understands."""

    signal_type: str
    unit: str
    currency: str
    scale: str
    intervals: tuple[tuple[float, float, float], ...]


def price_signal(event: dict[str, Any]) -> PriceSignal | None:
    """An event's ELECTRICITY_PRICE signal, or None when it carries none; NotHonoured when it
    carries one that is malformed."""
    try:
        period = event["active_period"]
        start = _unix(period["dtstart"])
        end = start + _seconds(period["duration"])
        signals = event.get("event_signals") or []
        if isinstance(signals, dict):
            signals = signals.get("event_signals") or []
        prices = [s for s in signals if s.get("signal_name") == "ELECTRICITY_PRICE"]
        if not prices:
            return None
        signal = prices[0]
        measurement = signal.get("measurement") or {}
        if not isinstance(measurement, dict):
            measurement = {}
        out, cursor = [], start
        for raw in sorted(signal.get("intervals") or [], key=lambda i: i.get("uid") or 0):
            begin = _unix(raw["dtstart"]) if raw.get("dtstart") else cursor
            length = _seconds(raw.get("duration", timedelta(0)))
            finish = begin + length if length > 0 else end
            cursor = finish
            out.append((max(begin, start), min(finish, end), _payload(raw)))
        if not out:
            raise NotHonoured("an ELECTRICITY_PRICE signal without intervals")
        return PriceSignal(str(signal.get("signal_type") or ""),
                           str(measurement.get("name") or ""),
                           str(measurement.get("unit") or ""),
                           str(measurement.get("scale") or "none"), tuple(out))
    except NotHonoured:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise NotHonoured(f"a malformed price event ({type(exc).__name__}: {exc})") from None
