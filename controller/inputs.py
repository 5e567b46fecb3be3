"""The live controller's inputs, each from a source a site really has, each also from a file:

- the energy price ($/MWh): a CSV file (the replay's price.csv; a row's price is published when
  its interval ends), an HTTP JSON feed, or ELECTRICITY_PRICE events at the site's VEN;
- the hashprice per algorithm ($/TH/day): fixed, a CSV file (the replay's hashprice.csv), an
  HTTP JSON feed, or computed from the coin's price, the network difficulty, the block subsidy
  and the fees;
- inference demand per runtime profile: the runtimes' own Prometheus /metrics (vLLM's
  `vllm:num_requests_waiting`, `vllm:num_requests_running`, `vllm:request_success_total`),
  summed over the runtimes serving the profile;
- the operator's grid cap (a standing figure, or a JSON file).

A source never invents a value: what it cannot read is None (unknown) with its error, and what
it read before keeps its publication time, so it goes stale by itself (a stale price never wakes
a miner: controller/rules.py). Every read is bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import httpx

from controller.config import HashpriceSource, InferenceProfile, SiteConfig
from controller.model import GridCap, Hashprice, InferenceValue, ModelDemand, Price
from controller.sim.traces import load_hashprice_csv, load_price_csv

HTTP_TIMEOUT_S = 5.0
SCRAPE_TIMEOUT_S = 2.0
TH = 1e12
TWO_32 = 2.0**32


class InputError(Exception):
    """A source could not be read; the message says which and why."""


def dig(document: Any, path: str) -> Any:
    """`a.b.0.c` in a JSON document (list indexes as numbers); InputError if absent."""
    value = document
    for part in path.split(".") if path else []:
        if isinstance(value, list) and part.lstrip("-").isdigit():
            index = int(part)
            if not -len(value) <= index < len(value):
                raise InputError(f"{path}: no item {index}")
            value = value[index]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise InputError(f"{path}: no {part!r} in the document")
    return value


def number(value: Any, what: str) -> float:
    """A finite number from JSON (a number, or text holding one)."""
    if isinstance(value, bool):
        raise InputError(f"{what} is {value!r}, not a number")
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} is {value!r}, not a number") from None
    if not math.isfinite(result):
        raise InputError(f"{what} is {value!r}, not a finite number")
    return result


def unix_time(value: Any, what: str) -> float:
    """A time as unix seconds: a number, or ISO 8601 text (UTC unless it says otherwise)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return number(value, what)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InputError(f"{what} {value!r} is neither unix seconds nor ISO 8601") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    raise InputError(f"{what} {value!r} is not a time")


async def fetch_json(client: httpx.AsyncClient, where: str) -> Any:
    """A JSON document from http(s):// or a file path."""
    if not where.startswith(("http://", "https://")):
        try:
            return json.loads(Path(where).read_text(encoding="utf-8"))
        except OSError as exc:
            raise InputError(f"{where}: {exc.strerror}") from None
        except ValueError as exc:
            raise InputError(f"{where}: not JSON ({exc})") from None
    try:
        reply = await client.get(where, timeout=HTTP_TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise InputError(f"{where}: {type(exc).__name__}: {exc}") from None
    if reply.status_code != 200:
        raise InputError(f"{where}: HTTP {reply.status_code}")
    try:
        return reply.json()
    except ValueError as exc:
        raise InputError(f"{where}: not JSON ({exc})") from None


@dataclass
class Reading:
    """What a source last read well, and what went wrong since."""

    value: float | None = None
    published_s: float | None = None
    error: str = ""
    errors: int = 0

    def fail(self, error: str) -> None:
        self.error = error
        self.errors += 1

    def age_s(self, now: float) -> float | None:
        return None if self.published_s is None else now - self.published_s


# ---------------------------------------------------------------------------------------------
# The energy price


class PriceSource(Protocol):
    name: str
    last: Reading

    async def read(self, now: float) -> Price: ...


class FilePrice:
    """The replay's price.csv (time_s,usd_per_mwh): a row holds an interval's price, published
    when the interval ends. Read again when the file changes; a file that turns unreadable or
    malformed keeps the rows read before (they go stale)."""

    def __init__(self, path: str, origin_unix_s: float, interval_s: float) -> None:
        self.path = Path(path)
        self.name = f"file:{path}"
        self.origin = origin_unix_s
        self.interval_s = interval_s
        self.last = Reading()
        self._stamp: tuple[int, int] | None = None
        self._published: list[float] = []
        self._values: list[float] = []

    def _load(self) -> None:
        try:
            stat = self.path.stat()
        except OSError as exc:
            self.last.fail(f"{self.path}: {exc.strerror}")
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        try:
            trace = load_price_csv(self.path)
        except (OSError, ValueError) as exc:
            self.last.fail(str(exc))
            return
        self._stamp = stamp
        pairs = sorted(zip((trace.time_s + self.origin + self.interval_s).tolist(),
                           trace.usd_per_mwh.tolist(), strict=True))
        self._published = [p for p, _ in pairs]
        self._values = [v for _, v in pairs]
        self.last.error = ""

    async def read(self, now: float) -> Price:
        self._load()
        k = bisect.bisect_right(self._published, now) - 1
        if k < 0:
            if not self.last.error:
                self.last.error = f"{self.path}: no price published yet"
            return Price(None, None, self.name)
        self.last.value, self.last.published_s = self._values[k], self._published[k]
        return Price(self.last.value, now - self._published[k], self.name)


class HttpPrice:
    """A JSON feed: the price at `value_path`, its publication time at `time_path` (when
    fetched, if none), in $/MWh or $/kWh. Read every `poll_s`; a failed read keeps the last
    value with its time."""

    def __init__(self, url: str, value_path: str, time_path: str, unit: str, poll_s: float,
                 client: httpx.AsyncClient) -> None:
        self.url = url
        self.name = f"http:{url}"
        self.value_path, self.time_path = value_path, time_path
        self.scale = 1000.0 if unit == "usd_per_kwh" else 1.0
        self.poll_s = poll_s
        self.client = client
        self.last = Reading()
        self._next_s = 0.0

    async def read(self, now: float) -> Price:
        if now >= self._next_s:
            self._next_s = now + self.poll_s
            try:
                document = await fetch_json(self.client, self.url)
                value = number(dig(document, self.value_path), self.value_path) * self.scale
                published = unix_time(dig(document, self.time_path), self.time_path) \
                    if self.time_path else now
                self.last.value, self.last.published_s, self.last.error = value, published, ""
            except InputError as exc:
                self.last.fail(str(exc))
        return Price(self.last.value, self.last.age_s(now), self.name)


class OpenAdrPrice:
    """ELECTRICITY_PRICE events at the site's VEN: the price of the interval that covers now,
    published when that interval began."""

    def __init__(self, prices: PriceBook) -> None:
        self.book = prices
        self.name = "openadr"
        self.last = Reading()

    async def read(self, now: float) -> Price:
        current = self.book.at(now)
        if current is None:
            self.last.error = self.book.error or "no ELECTRICITY_PRICE interval covers now"
            return Price(None, None, self.name)
        value, start, event_id = current
        self.last.value, self.last.published_s, self.last.error = value, start, ""
        return Price(value, now - start, f"openadr:{event_id}")


@dataclass
class PriceBook:
    """Price intervals from ELECTRICITY_PRICE events: (start, end, $/MWh, event id)."""

    intervals: list[tuple[float, float, float, str]] = field(default_factory=list)
    error: str = ""

    def replace_event(self, event_id: str, intervals: Iterable[tuple[float, float, float]]
                      ) -> None:
        self.intervals = [i for i in self.intervals if i[3] != event_id]
        self.intervals += [(s, e, v, event_id) for s, e, v in intervals]

    def drop(self, event_id: str) -> None:
        self.intervals = [i for i in self.intervals if i[3] != event_id]

    def at(self, now: float) -> tuple[float, float, str] | None:
        covering = [i for i in self.intervals if i[0] <= now < i[1]]
        if not covering:
            return None
        start, _, value, event_id = max(covering, key=lambda i: i[0])
        return value, start, event_id


def price_source(config: SiteConfig, client: httpx.AsyncClient, book: PriceBook
                 ) -> PriceSource:
    if config.price_source == "file":
        return FilePrice(config.price_file, config.price_time_origin_unix_s,
                         config.price_interval_s)
    if config.price_source == "http":
        return HttpPrice(config.price_url, config.price_value_path, config.price_time_path,
                         config.price_unit, config.price_poll_s, client)
    return OpenAdrPrice(book)


# ---------------------------------------------------------------------------------------------
# The hashprice


def hashprice_usd_per_th_day(coin_price_usd: float, difficulty: float, block_subsidy: float,
                             fees_per_block: float) -> float:
    """What a TH/s earns per day: blocks a day found by 1 TH/s (1e12 x 86,400 / (difficulty x
    2^32) for SHA-256d's difficulty-1 target) times each block's coins (subsidy and fees) at
    the coin's price."""
    if difficulty <= 0:
        raise InputError(f"difficulty {difficulty!r} must be positive")
    if coin_price_usd < 0 or block_subsidy < 0 or fees_per_block < 0:
        raise InputError("coin price, block subsidy and fees must be ≥ 0")
    blocks_per_th_day = TH * 86_400.0 / (difficulty * TWO_32)
    return blocks_per_th_day * (block_subsidy + fees_per_block) * coin_price_usd


class HashpriceReader:
    """One algorithm's hashprice from its configured source."""

    def __init__(self, spec: HashpriceSource, client: httpx.AsyncClient) -> None:
        self.spec = spec
        self.client = client
        self.last = Reading()
        self.name = f"{spec.source}:{spec.algorithm}"
        self._next_s = 0.0
        self._stamp: tuple[int, int] | None = None
        self._table: list[tuple[float, float]] = []

    async def read(self, now: float) -> Hashprice:
        s = self.spec
        if s.source == "fixed":
            return Hashprice(s.algorithm, s.usd_per_th_day, 0.0, "fixed")
        if s.source == "file":
            self._load_file()
            k = bisect.bisect_right([t for t, _ in self._table], now) - 1
            if k >= 0:
                self.last.published_s, self.last.value = self._table[k]
        elif now >= self._next_s:
            self._next_s = now + s.poll_s
            try:
                self.last.value, self.last.published_s = await self._fetch(now)
                self.last.error = ""
            except InputError as exc:
                self.last.fail(str(exc))
        return Hashprice(s.algorithm, self.last.value, self.last.age_s(now), self.name)

    def _load_file(self) -> None:
        path = Path(self.spec.file)
        try:
            stat = path.stat()
        except OSError as exc:
            self.last.fail(f"{path}: {exc.strerror}")
            return
        if (stat.st_mtime_ns, stat.st_size) == self._stamp:
            return
        try:
            trace = load_hashprice_csv(path)
        except (OSError, ValueError) as exc:
            self.last.fail(str(exc))
            return
        self._stamp = (stat.st_mtime_ns, stat.st_size)
        if self.spec.algorithm not in trace.algorithms:
            self.last.fail(f"{path}: no rows for {self.spec.algorithm}")
            self._table = []
            return
        row = trace.usd_per_th_day[trace.algorithms.index(self.spec.algorithm)]
        times = trace.time_s + self.spec.time_origin_unix_s
        self._table = sorted(zip(times.tolist(), row.tolist(), strict=True))
        self.last.error = ""

    async def _fetch(self, now: float) -> tuple[float, float]:
        s = self.spec
        if s.source == "http":
            document = await fetch_json(self.client, s.url)
            value = number(dig(document, s.value_path), s.value_path)
            published = unix_time(dig(document, s.time_path), s.time_path) if s.time_path \
                else now
            return value, published
        document = await fetch_json(self.client, s.inputs_url) if s.inputs_url else {}
        coin = number(dig(document, s.coin_price_path), s.coin_price_path) \
            if s.coin_price_path else s.coin_price_usd
        difficulty = number(dig(document, s.difficulty_path), s.difficulty_path) \
            if s.difficulty_path else s.difficulty
        fees = number(dig(document, s.fees_path), s.fees_path) if s.fees_path \
            else s.fees_per_block
        published = unix_time(dig(document, s.time_path), s.time_path) if s.time_path else now
        return hashprice_usd_per_th_day(coin, difficulty, s.block_subsidy, fees), published


# ---------------------------------------------------------------------------------------------
# Inference demand


WAITING = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"
SUCCESS = "vllm:request_success_total"


@dataclass(frozen=True, slots=True)
class Scrape:
    """One runtime's queue as its /metrics showed it."""

    time_s: float
    waiting: float
    running: float
    served: float  # the counter of requests served


def parse_metrics(text: str) -> tuple[float, float, float]:
    """(waiting, running, served) summed over the exposition's series; InputError when the
    waiting or running gauge is absent (not a vLLM-compatible runtime)."""
    from prometheus_client.parser import text_string_to_metric_families

    sums = {WAITING: 0.0, RUNNING: 0.0, SUCCESS: 0.0}
    seen = set()
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in sums:
                    sums[sample.name] += float(sample.value)
                    seen.add(sample.name)
    except ValueError as exc:
        raise InputError(f"not Prometheus text: {exc}") from None
    if WAITING not in seen or RUNNING not in seen:
        raise InputError(f"no {WAITING} / {RUNNING} in /metrics")
    return sums[WAITING], sums[RUNNING], sums[SUCCESS]


class DemandReader:
    """Demand per profile from its runtimes: requests waiting and running are summed; the
    arrival rate is what was served plus what the queue grew by, per second, over the last
    `rate_window_s` of scrapes of the same runtime (a new or restarted runtime counts from its
    second scrape). A profile none of whose runtimes answered has unknown demand (its GPUs are
    held)."""

    def __init__(self, profiles: Sequence[InferenceProfile], client: httpx.AsyncClient,
                 timeout_s: float = SCRAPE_TIMEOUT_S, rate_window_s: float = 60.0) -> None:
        self.profiles = tuple(profiles)
        self.client = client
        self.timeout_s = timeout_s
        self.rate_window_s = rate_window_s
        self.history: dict[str, list[Scrape]] = {}
        self.errors: dict[str, str] = {}

    async def _scrape(self, endpoint: str, now: float) -> Scrape | None:
        url = endpoint.rstrip("/") + "/metrics"
        try:
            reply = await self.client.get(url, timeout=self.timeout_s)
            if reply.status_code != 200:
                raise InputError(f"HTTP {reply.status_code}")
            waiting, running, served = parse_metrics(reply.text)
        except (httpx.HTTPError, InputError) as exc:
            self.errors[endpoint] = f"{url}: {type(exc).__name__}: {exc}"
            return None
        self.errors.pop(endpoint, None)
        return Scrape(now, waiting, running, served)

    async def read(self, now: float, serving: Mapping[str, Sequence[str]]
                   ) -> tuple[ModelDemand, ...]:
        """`serving`: profile -> the endpoints rigd reports for its inference devices."""
        wanted = {p.profile: list(dict.fromkeys([*serving.get(p.profile, ()), *p.endpoints]))
                  for p in self.profiles}
        endpoints = sorted({e for es in wanted.values() for e in es})
        scrapes = dict(zip(endpoints, await asyncio.gather(
            *(self._scrape(e, now) for e in endpoints)), strict=True))
        out = []
        for p in self.profiles:
            got = [(e, s) for e in wanted[p.profile] if (s := scrapes[e]) is not None]
            waiting = sum(s.waiting for _, s in got) if got else None
            running = sum(s.running for _, s in got) if got else None
            rates = []
            for e, s in got:
                before = self._base(e, s)
                if before is None:
                    continue  # new, or restarted: its counter began again
                arrived = (s.served - before.served) + (s.waiting + s.running) \
                    - (before.waiting + before.running)
                rates.append(max(arrived, 0.0) / (s.time_s - before.time_s))
            arrival = sum(rates) if rates else None
            out.append(ModelDemand(
                profile=p.profile, requests_waiting=waiting, requests_running=running,
                arrival_rate_rps=arrival, capacity_rps_per_gpu=p.capacity_rps_per_gpu,
                wait_bound_s=p.wait_bound_s,
                value=InferenceValue(usd_per_gpu_hour=p.usd_per_gpu_hour or None,
                                     usd_per_million_tokens=p.usd_per_million_tokens or None,
                                     tokens_per_request=p.tokens_per_request or None),
                model=p.model))
        for e, s in scrapes.items():
            if s is None:
                continue
            kept = [h for h in self.history.get(e, [])
                    if h.time_s >= s.time_s - 2 * self.rate_window_s and h.served <= s.served]
            self.history[e] = [*kept, s]
        for gone in set(self.history) - set(endpoints):
            del self.history[gone]
        return tuple(out)

    def _base(self, endpoint: str, now: Scrape) -> Scrape | None:
        """The scrape to count from: the newest at least `rate_window_s` old, else the oldest;
        None when there is none, or the runtime's counter went back (it restarted)."""
        history = [h for h in self.history.get(endpoint, []) if h.time_s < now.time_s]
        if not history or any(h.served > now.served for h in history):
            return None
        old = [h for h in history if h.time_s <= now.time_s - self.rate_window_s]
        return old[-1] if old else history[0]


# ---------------------------------------------------------------------------------------------
# The operator's grid cap


class OperatorCap:
    """A standing cap from the configuration, and a cap file an operator may write:
    {"cap_w": W, "deadline_unix_s": T, "ends_unix_s": T or null}. A file that is malformed is
    an error (said every round) and its last good cap holds; a missing file is no cap."""

    def __init__(self, cap_w: float, path: str, started_s: float) -> None:
        self.standing = GridCap(cap_w=cap_w, deadline_s=started_s, source="operator") \
            if cap_w > 0 else None
        self.path = Path(path) if path else None
        self.error = ""
        self._stamp: tuple[int, int] | None = None
        self._file_cap: GridCap | None = None

    def read(self, now: float) -> list[GridCap]:
        caps = [self.standing] if self.standing is not None else []
        if self.path is not None:
            self._load()
            cap = self._file_cap
            if cap is not None and (cap.ends_s is None or cap.ends_s > now):
                caps.append(cap)
        return caps

    def _load(self) -> None:
        assert self.path is not None
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._file_cap, self._stamp, self.error = None, None, ""
            return
        except OSError as exc:
            self.error = f"{self.path}: {exc.strerror}"
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise InputError("not a JSON object")
            unknown = set(data) - {"cap_w", "deadline_unix_s", "ends_unix_s"}
            if unknown:
                raise InputError(f"unknown keys {sorted(unknown)}")
            cap_w = number(data["cap_w"], "cap_w")
            deadline = unix_time(data.get("deadline_unix_s", time.time()), "deadline_unix_s")
            ends = data.get("ends_unix_s")
            ends_s = None if ends is None else unix_time(ends, "ends_unix_s")
            if cap_w < 0 or (ends_s is not None and ends_s <= deadline):
                raise InputError("needs cap_w ≥ 0 and ends_unix_s after deadline_unix_s")
            self._file_cap = GridCap(cap_w=cap_w, deadline_s=deadline, ends_s=ends_s,
                                     source=f"operator:{self.path.name}")
        except (OSError, ValueError, KeyError, InputError) as exc:
            self.error = f"{self.path}: {type(exc).__name__}: {exc}"
            return
        self._stamp, self.error = stamp, ""


def binding_cap(caps: Iterable[GridCap]) -> GridCap | None:
    """The cap that binds: the lowest (the earliest deadline among equals)."""
    return min(caps, key=lambda c: (c.cap_w, c.deadline_s), default=None)
