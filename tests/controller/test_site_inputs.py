"""The live controller's inputs and what bad input does to a decision: a price file and an HTTP
feed (a real HTTP server on loopback) that go stale, vanish, turn negative or absurd; hashprice
from a feed and computed; demand from runtimes' Prometheus text; the operator's cap file. The
safe defaults end to end: each input through the same policy function the live loop calls."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from controller.config import HashpriceSource, InferenceProfile
from controller.inputs import (
    DemandReader,
    FilePrice,
    HashpriceReader,
    HttpPrice,
    InputError,
    OperatorCap,
    binding_cap,
    hashprice_usd_per_th_day,
    parse_metrics,
)
from controller.model import Hashprice, PolicyMemory, Price, Snapshot, Workload
from controller.policy import PolicyConfig, Why, decide
from tests.controller.fleet import HP, miner, rig, snapshot
from tests.controller.live_site import write_prices

NOW = 1_800_000_000.0


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# ---- a feed on loopback --------------------------------------------------------------------


@dataclass
class Feed:
    """An HTTP server answering GET with whatever the test sets: (status, body)."""

    answers: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    gets: int = 0
    port: int = 0

    def set(self, path: str, body: Any, status: int = 200) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.answers[path] = (status, raw)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def feed() -> Iterator[Feed]:
    state = Feed()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            state.gets += 1
            status, body = state.answers.get(self.path, (404, b"no such feed"))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


async def http_price(feed: Feed, times: list[float], **kw: Any) -> list[Price]:
    async with httpx.AsyncClient(trust_env=False) as client:
        source = HttpPrice(feed.url("/rt"), kw.pop("value_path", "data.0.price"),
                           kw.pop("time_path", "data.0.published"), kw.pop("unit", "usd_per_mwh"),
                           kw.pop("poll_s", 1.0), client)
        out = []
        for t in times:
            out.append(await source.read(t))
            hook = kw.get("between")
            if hook is not None:
                hook(t)
        return out


# ---- the energy price ------------------------------------------------------------------------


def test_a_price_file_publishes_each_window_at_its_end_and_goes_stale(tmp_path: Path) -> None:
    path = tmp_path / "price.csv"
    write_prices(path, NOW, 300.0, [40.0, 55.0])
    source = FilePrice(str(path), 0.0, 300.0)
    before = run(source.read(NOW + 299.0))
    assert before.usd_per_mwh is None and "no price published yet" in source.last.error
    first = run(source.read(NOW + 300.0))
    assert (first.usd_per_mwh, first.age_s) == (40.0, 0.0)
    later = run(source.read(NOW + 600.0 + 1000.0))
    assert (later.usd_per_mwh, later.age_s) == (55.0, 1000.0)  # the last row, aging


def test_a_price_file_that_turns_bad_keeps_its_last_good_rows(tmp_path: Path) -> None:
    path = tmp_path / "price.csv"
    write_prices(path, NOW, 300.0, [40.0])
    source = FilePrice(str(path), 0.0, 300.0)
    assert run(source.read(NOW + 300.0)).usd_per_mwh == 40.0
    path.write_text("time_s,usd_per_mwh\n1,forty\n")
    kept = run(source.read(NOW + 400.0))
    assert (kept.usd_per_mwh, kept.age_s) == (40.0, 100.0)
    assert "usd_per_mwh = 'forty' is not a number" in source.last.error
    path.unlink()
    gone = run(source.read(NOW + 500.0))
    assert gone.age_s == 200.0 and "No such file" in source.last.error


def test_missing_price_file_is_no_price(tmp_path: Path) -> None:
    source = FilePrice(str(tmp_path / "absent.csv"), 0.0, 300.0)
    price = run(source.read(NOW))
    assert price == Price(None, None, source.name) and "No such file" in source.last.error


def test_an_http_feed_read_with_its_paths_units_and_times(feed: Feed) -> None:
    feed.set("/rt", {"data": [{"price": "0.0421", "published": "2027-01-15T08:00:00Z"}]})
    (price,) = run(http_price(feed, [NOW + 60.0], unit="usd_per_kwh"))
    assert NOW == 1_800_000_000.0  # 2027-01-15T08:00:00Z
    assert price.usd_per_mwh == pytest.approx(42.1)
    assert price.age_s == pytest.approx(60.0)


def test_an_http_feed_that_fails_keeps_the_last_value_aging(feed: Feed) -> None:
    feed.set("/rt", {"data": [{"price": 30, "published": NOW}]})

    def break_it(t: float) -> None:
        if t == NOW:
            feed.set("/rt", b"<html>maintenance</html>", 503)
        elif t == NOW + 10:
            feed.set("/rt", {"data": [{"cost": 1}]})

    prices = run(http_price(feed, [NOW, NOW + 10, NOW + 20], between=break_it, poll_s=5.0))
    assert [p.usd_per_mwh for p in prices] == [30.0, 30.0, 30.0]
    assert [p.age_s for p in prices] == [0.0, 10.0, 20.0]
    assert feed.gets == 3


@pytest.mark.parametrize(("value", "usable"), [(-20.0, True), (-1000.0, False),
                                               (50_000.0, False), (float("nan"), False)])
def test_negative_prices_are_real_and_absurd_ones_unusable(value: float, usable: bool) -> None:
    """A negative price inside ERCOT's floor is used; one below it, or above the ceiling, or
    not a number, holds every device and wakes nothing."""
    asleep = miner("m1", workload=Workload.ASLEEP)
    snap = snapshot(NOW, value, [rig(asleep)])
    decision, _ = decide(snap, PolicyMemory.empty(), PolicyConfig(min_dwell_s=0.0,
                                                                  resume_windows=1))
    device = decision.device("asic/m1")
    if usable:
        assert device.desired == Workload.HASHING
    else:
        assert device.desired == Workload.ASLEEP and "nothing is woken" in device.reason


def test_a_stale_file_price_never_wakes_a_miner(tmp_path: Path) -> None:
    """The file's last price was below every strike, but it is old: the asleep miner stays
    asleep, and says why."""
    path = tmp_path / "price.csv"
    write_prices(path, NOW, 300.0, [10.0, 10.0, 10.0])
    source = FilePrice(str(path), 0.0, 300.0)
    asleep = miner("m1", workload=Workload.ASLEEP)
    memory = PolicyMemory.empty()
    config = PolicyConfig(min_dwell_s=0.0, resume_windows=1)
    for t, woken in ((NOW + 900.0, True), (NOW + 900.0 + 901.0, False)):
        price = run(source.read(t))
        snap = snapshot(t, price.usd_per_mwh, [rig(asleep)], age_s=price.age_s)
        decision, memory = decide(snap, PolicyMemory.empty() if woken else memory, config)
        device = decision.device("asic/m1")
        if woken:  # fresh: below its nameplate strike, it would hash
            assert device.desired == Workload.HASHING
        else:
            assert device.desired == Workload.ASLEEP
            assert "901 s old (stale after 900 s)" in device.reason


# ---- the hashprice -----------------------------------------------------------------------------


def test_hashprice_computed_from_coin_price_difficulty_subsidy_and_fees() -> None:
    # 1 TH/s for a day at difficulty D finds 1e12 x 86,400 / (D x 2^32) blocks.
    value = hashprice_usd_per_th_day(100_000.0, 1.2e14, 3.125, 0.1)
    blocks = 1e12 * 86_400 / (1.2e14 * 2**32)
    assert value == pytest.approx(blocks * 3.225 * 100_000.0)
    assert 0.05 < value < 0.06  # the order of magnitude
    with pytest.raises(InputError, match="difficulty"):
        hashprice_usd_per_th_day(100_000.0, 0.0, 3.125, 0.0)


def test_hashprice_from_a_feed_of_inputs_and_when_the_feed_breaks(feed: Feed) -> None:
    feed.set("/btc", {"usd": 100_000, "net": {"difficulty": 1.2e14}, "fees": 0.1})
    spec = HashpriceSource(algorithm="sha256d", source="computed", inputs_url=feed.url("/btc"),
                           coin_price_path="usd", difficulty_path="net.difficulty",
                           fees_path="fees", block_subsidy=3.125, poll_s=1.0)

    async def read() -> list[Hashprice]:
        async with httpx.AsyncClient(trust_env=False) as client:
            reader = HashpriceReader(spec, client)
            first = await reader.read(NOW)
            feed.set("/btc", {"usd": "n/a"})
            second = await reader.read(NOW + 5)
            assert "not a number" in reader.last.error
            return [first, second]

    first, second = run(read())
    assert first.usd_per_th_day == pytest.approx(hashprice_usd_per_th_day(1e5, 1.2e14, 3.125, .1))
    assert (second.usd_per_th_day, second.age_s) == (first.usd_per_th_day, 5.0)


def test_a_stale_hashprice_holds_its_miners() -> None:
    hashing = miner("m1")
    snap = snapshot(NOW, 500.0, [rig(hashing)])
    snap = Snapshot(time_s=snap.time_s, price=snap.price, demand=snap.demand, grid_cap=None,
                    fleet=snap.fleet, hashprices=(Hashprice("sha256d", HP, 3 * 86_400.0),))
    decision, _ = decide(snap, PolicyMemory.empty(), PolicyConfig(high_strike_ratio=1.0))
    device = decision.device("asic/m1")
    assert device.desired == Workload.HASHING and int(decision.reason[0]) == Why.HOLD_NO_STRIKE


# ---- inference demand ------------------------------------------------------------------------


@dataclass
class Runtime:
    """A vLLM-like /metrics, from a prometheus_client registry the test moves."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        label = {"model_name": "m"}
        self.waiting = Gauge("vllm:num_requests_waiting", "", ["model_name"],
                             registry=self.registry).labels(**label)
        self.running = Gauge("vllm:num_requests_running", "", ["model_name"],
                             registry=self.registry).labels(**label)
        self.served = Counter("vllm:request_success", "", ["model_name"],
                              registry=self.registry).labels(**label)


def test_parse_metrics_sums_series_and_refuses_what_is_not_a_runtime() -> None:
    r = Runtime()
    r.waiting.set(7)
    r.running.set(3)
    r.served.inc(40)
    assert parse_metrics(generate_latest(r.registry).decode()) == (7.0, 3.0, 40.0)
    with pytest.raises(InputError, match="no vllm:num_requests_waiting"):
        parse_metrics("# nothing here\nup 1\n")


def test_demand_from_two_runtimes_and_one_that_is_gone(feed: Feed) -> None:
    a, b = Runtime(), Runtime()
    profile = InferenceProfile(profile="llm", capacity_rps_per_gpu=4.0, wait_bound_s=2.0)

    def publish() -> None:
        feed.set("/a/metrics", generate_latest(a.registry))
        feed.set("/b/metrics", generate_latest(b.registry))

    async def rounds() -> list[Any]:
        async with httpx.AsyncClient(trust_env=False) as client:
            reader = DemandReader([profile], client, rate_window_s=10.0)
            endpoints = {"llm": [feed.url("/a"), feed.url("/b")]}
            out = []
            publish()
            out.append(await reader.read(NOW, endpoints))
            # 10 s later: a served 30 and its queue grew by 5; b served 20, queue unchanged
            a.served.inc(30)
            a.waiting.set(5)
            b.served.inc(20)
            publish()
            out.append(await reader.read(NOW + 10, endpoints))
            feed.answers.pop("/b/metrics")  # b is gone: a alone
            out.append(await reader.read(NOW + 20, endpoints))
            feed.answers.pop("/a/metrics")  # none answers: unknown, not zero
            out.append(await reader.read(NOW + 30, endpoints))
            out.append(reader.errors)
            return out

    first, second, third, fourth, errors = run(rounds())
    assert first[0].arrival_rate_rps is None  # no counter history yet
    assert second[0].requests_waiting == 5.0
    assert second[0].arrival_rate_rps == pytest.approx((30 + 5 + 20) / 10)
    assert third[0].requests_waiting == 5.0 and third[0].arrival_rate_rps == 0.0
    assert fourth[0].requests_waiting is None and fourth[0].arrival_rate_rps is None
    assert set(errors) == {feed.url("/a"), feed.url("/b")}


def test_unknown_demand_holds_the_gpus_that_serve() -> None:
    from controller.model import ModelDemand
    from tests.controller.fleet import PROFILE, gpu

    serving = gpu("g1", workload=Workload.INFERENCE, profile=PROFILE)
    unknown = ModelDemand(profile=PROFILE, requests_waiting=None, requests_running=None,
                          arrival_rate_rps=None, capacity_rps_per_gpu=4.0, wait_bound_s=2.0)
    snap = snapshot(NOW, 30.0, [rig(serving)], demands=(unknown,))
    decision, _ = decide(snap, PolicyMemory.empty(), PolicyConfig(min_dwell_s=0.0))
    assert decision.device("gpu/g1").desired == Workload.INFERENCE
    assert int(decision.reason[0]) == Why.INFER_HOLD


# ---- the operator's cap --------------------------------------------------------------------


def test_the_operators_cap_file(tmp_path: Path) -> None:
    path = tmp_path / "cap.json"
    caps = OperatorCap(50_000.0, str(path), NOW)
    assert [c.cap_w for c in caps.read(NOW)] == [50_000.0]  # the standing cap; no file: none
    path.write_text(json.dumps({"cap_w": 30_000, "deadline_unix_s": NOW + 60,
                                "ends_unix_s": NOW + 3600}))
    now = caps.read(NOW)
    assert binding_cap(now) is not None and binding_cap(now).cap_w == 30_000.0  # type: ignore
    path.write_text(json.dumps({"cap_w": 20_000, "dedline_unix_s": NOW}))
    kept = caps.read(NOW + 1)
    assert "unknown keys ['dedline_unix_s']" in caps.error
    assert min(c.cap_w for c in kept) == 30_000.0, "the last good cap holds"
    assert [c.cap_w for c in caps.read(NOW + 3600)] == [50_000.0], "it ended"
