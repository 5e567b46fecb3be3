"""The live site controller on loopback, end to end: a 3-member etcd cluster, two `rigsite run`
replicas, three real rigd processes (simulated GPUs hashing on PoCL and serving the builtin
runtime; simulated miners of three firmware families on each of two rigs), a price file and a
real openleadr VTN. Every check reads the rigs themselves (rigd's telemetry, operations and
audit log) beside the controller's journal.

One site serves the tests of this module, in order (a sequence: each starts from the state the
one before left): a price spike, a stale price, a demand burst with the leader SIGKILLed while its
switch runs, the deposed leader's fencing token, an OpenADR event, a rig that is gone and one
that refuses. Waits poll with deadlines; durations asserted are the Must-show's bounds."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from controller.policy import Why
from rigapi import pb
from tests.agent.conftest import ADMIN_TOKEN, OPERATOR_TOKEN
from tests.controller.etcd_cluster import EtcdCluster
from tests.controller.live_site import (
    Load,
    PriceSchedule,
    Replica,
    Rigs,
    journal,
    rigsite,
    set_workload,
    site_config,
    start_replica,
    start_rigs,
    wait_for,
)
from tests.ports import free_port

pytestmark = pytest.mark.timeout(900)  # its tiers: conftest.py

WINDOW_S = 2.0  # a price window, compressed from ERCOT's 5 minutes
INTERVAL_S = 0.5  # a decision round
LEASE_TTL_S = 3  # the leader's etcd lease
BASELINE = -5.0  # $/MWh: a windy night, where hashing pays on every device
SPIKE = 200.0  # above every miner's strike (71-118 $/MWh at 0.05 $/TH/day)
N, M = 2, 2  # shed after N windows above, resume after M below
# A switch is worth its cost over max(min dwell, window): the builtin runtime's cold start on
# these 2 shared cores (10-20 s) is far longer than a compressed window, so the dwell is what
# makes borrowing pay, as 600 s does against a 60 s cold start at a real site.
MIN_DWELL_S = 20.0
MAX_AGE_S = 3 * WINDOW_S
SITE_CONFIG = """
[[hashprice]]
algorithm = "sha256d"
source = "fixed"
usd_per_th_day = 0.05
[[inference]]
profile = "builtin"
model = "all-MiniLM-L6-v2"
capacity_rps_per_gpu = 4.0
wait_bound_s = 2.0
usd_per_gpu_hour = 1.0
warm_standby = true
"""


@dataclass
class Site:
    tmp: Path
    rigs: Rigs
    etcd: EtcdCluster
    vtn: Any
    prices: PriceSchedule
    config: Path
    replicas: dict[str, Replica] = field(default_factory=dict)
    trickle: Load | None = None

    def records(self, kind: str, since: float = 0.0, **match: Any) -> list[dict[str, Any]]:
        return [r for r in journal(self.tmp) if r["type"] == kind and r["t"] >= since
                and all(r.get(k) == v for k, v in match.items())]

    def leader(self) -> str:
        """The replica that leads now (its last `elected`, and it runs)."""
        elected = self.records("leader", event="elected")
        assert elected, "no replica leads"
        name = str(elected[-1]["replica"])
        assert self.replicas[name].alive(), f"{name} led last, and is gone"
        return name

    def story(self) -> str:
        """The journal's last words, for a failure's message."""
        tail = [r for r in journal(self.tmp) if r["type"] in ("leader", "action", "reason")]
        return "\n".join(json.dumps(r)[:300] for r in tail[-12:])

    def wait(self, what: str, check: Any, timeout_s: float = 60.0, every_s: float = 0.1
             ) -> Any:
        return wait_for(what, check, timeout_s, every_s, context=self.story)

    def rounds_since(self, t: float) -> list[dict[str, Any]]:
        return self.records("round", since=t)

    def miners(self) -> list[tuple[str, str]]:
        return [(rig, m) for rig, ms in self.rigs.miners.items() for m in ms]

    def all_mining(self, want: bool) -> bool:
        return all(self.rigs.mining(rig, m) == want for rig, m in self.miners())

    def gpu_workload(self, index: int) -> pb.WorkloadStatus:
        return self.rigs.workload("rig-gpus", self.rigs.gpus[index])

    def serving(self) -> list[str]:
        """The runtimes serving now, as a load balancer in front of them would see them."""
        return [d.workload.endpoint for d in self.rigs.telemetry("rig-gpus").devices
                if d.workload.endpoint and d.workload.state == pb.WORKLOAD_STATE_RUNNING]


def running(status: pb.WorkloadStatus, kind: int) -> bool:
    return status.kind == kind and status.state == pb.WORKLOAD_STATE_RUNNING


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    from agent.demo.vtn import Vtn  # openleadr: imported where a VTN runs

    tmp = tmp_path_factory.mktemp("site")
    etcd = EtcdCluster(tmp / "etcd").start()
    rigs: Rigs | None = None
    vtn = None
    built: Site | None = None
    try:
        rigs = start_rigs(tmp)
        etcd.wait_healthy()
        gpu0, gpu1 = rigs.gpus
        set_workload(rigs, "rig-gpus", gpu0, pb.Workload(
            kind=pb.WORKLOAD_KIND_INFERENCE, inference=pb.InferenceSpec(profile="builtin")))
        set_workload(rigs, "rig-gpus", gpu1, pb.Workload(kind=pb.WORKLOAD_KIND_HASHING))
        vtn = Vtn(free_port())
        prices = PriceSchedule(tmp / "price.csv", WINDOW_S, BASELINE, time.time() - WINDOW_S)
        config = site_config(
            tmp, rigs, etcd, price_file=prices.path, interval_s=INTERVAL_S, window_s=WINDOW_S,
            lease_ttl_s=LEASE_TTL_S, shed_windows=N, resume_windows=M, min_dwell_s=MIN_DWELL_S,
            default_switch_cold_s=15.0,
            extra=SITE_CONFIG.replace("[[hashprice]]", f"[openadr]\nvtn_url = \"{vtn.url}\"\n"
                                      "poll_interval_s = 0.5\ndeadline_s = 10.0\n"
                                      "[[hashprice]]", 1)).resolve()
        text = config.read_text().replace("max_age_s = 30", f"max_age_s = {MAX_AGE_S}")
        config.write_text(text)
        built = Site(tmp, rigs, etcd, vtn, prices, config)
        # A steady trickle keeps one GPU's worth of demand on the runtimes that serve.
        wait_for("gpu0's runtime endpoint", lambda: built.gpu_workload(0).endpoint)
        built.trickle = Load(built.serving, clients=1, pause_s=0.4)
        built.replicas["a"] = start_replica(config, "a", tmp)
        wait_for("replica a to lead", lambda: built.records("leader", event="elected"), 60)
        built.replicas["b"] = start_replica(config, "b", tmp)
        wait_for("b's first line", lambda: "rigsite_started" in
                 (tmp / "rigsite-b.log").read_text(), 60)
        yield built
    finally:
        if built is not None:
            for replica in built.replicas.values():
                replica.stop()
            if built.trickle is not None:
                built.trickle.stop()
        if vtn is not None:
            vtn.stop()
        if rigs is not None:
            rigs.stop()
        etcd.stop()


def test_a_price_spike_sheds_miners_after_n_windows_and_a_stale_price_wakes_none(
        site: Site) -> None:
    site.wait("every miner and gpu1 hashing", lambda: site.all_mining(True) and running(
        site.gpu_workload(1), pb.WORKLOAD_KIND_HASHING), 60)
    # The spike: N+2 windows above every strike, one window below, then no price at all.
    first = site.prices.phase([SPIKE] * (N + 2) + [BASELINE], stale=True)
    site.wait("the miners asleep", lambda: site.all_mining(False), 60)
    shed_after = site.prices.published_s(first + N - 1)
    sleeps = site.records("action", action="sleep", state="sent")
    assert len(sleeps) == 6 and {s["device"] for s in sleeps} == {m for _, m in site.miners()}
    assert min(s["t"] for s in sleeps) >= shed_after, \
        "shed only once the Nth window above the strike was published"
    reasons = site.records("reason", since=site.prices.published_s(first) - 0.5)
    miner = site.miners()[0][1]
    waited = [r for r in reasons if r["device"] == miner and r["why"] == Why.WAIT_SHED]
    shed = [r for r in reasons if r["device"] == miner and r["why"] == Why.SHED_WINDOWS]
    assert waited and f"for 1 of {N} windows" in waited[0]["text"], reasons
    assert shed and f"for {N} windows (shed after {N})" in shed[0]["text"]
    assert waited[0]["t"] < shed[0]["t"]
    # One window below the strike, then the price goes stale: held asleep, nothing woken.
    low = site.prices.published_s(first + N + 2)
    stale_from = low + MAX_AGE_S
    site.wait("rounds on a stale price for M windows, and past the miners' dwell", lambda: [
        r for r in site.rounds_since(max(stale_from + M * WINDOW_S, shed_after + MIN_DWELL_S))
        if "stale" in r["price_note"]], 60)
    assert site.all_mining(False), "a stale price woke a miner"
    assert not site.records("action", since=low, action="wake")
    held = site.records("reason", since=stale_from, device=miner)
    assert held and held[-1]["why"] == Why.HOLD_PRICE and "nothing is woken" in held[-1]["text"]
    out = rigsite("explain", "--journal", str(site.tmp / "journal"), miner)
    assert out.returncode == 0
    assert out.stdout.startswith("asleep since ") and f"for {N} windows" in out.stdout
    assert "stale" in out.stdout  # the latest round's reason
    # Prices again, below the strike: back after M windows below it (the one before the price
    # went stale counts: windows are counted as they are published).
    again = site.prices.phase([], lead=0)
    site.wait("the miners hashing again", lambda: site.all_mining(True), 60)
    wakes = site.records("action", since=low, action="wake", state="sent")
    assert len(wakes) == 6 and min(w["t"] for w in wakes) >= site.prices.published_s(
        again + M - 2), "woken only after M windows below the strike"
    resumed = site.records("reason", since=low, device=miner, why=Why.RESUME)
    assert resumed and f"for {M} windows (resume after {M})" in resumed[0]["text"]


def test_a_demand_burst_borrows_a_gpu_and_the_standby_adopts_it_when_the_leader_dies(
        site: Site) -> None:
    gpu1 = site.rigs.gpus[1]
    site.wait("gpu1 hashing", lambda: running(site.gpu_workload(1), pb.WORKLOAD_KIND_HASHING),
             90)
    leader = site.leader()
    standby = "b" if leader == "a" else "a"
    started = time.time()
    burst = Load(site.serving, clients=12, pause_s=0.0)
    try:
        sent = site.wait("the leader's switch of gpu1 to inference", lambda: site.records(
            "action", since=started, device=gpu1, action="switch", target="inference:builtin",
            state="sent"), 90, every_s=0.02)[0]
        site.replicas[leader].kill()  # mid-decision: its switch runs at the rig
        killed = time.time()
        assert sent["replica"] == leader
        elected = site.wait("the standby to lead", lambda: site.records(
            "leader", since=killed, event="elected", replica=standby), 30)[0]
        assert elected["t"] - killed <= LEASE_TTL_S + INTERVAL_S + 0.5, \
            f"the standby led {elected['t'] - killed:.2f} s after the kill"
        adopted = site.wait("the switch adopted", lambda: site.records(
            "action", since=killed, device=gpu1, state="adopted"), 30)[0]
        assert adopted["replica"] == standby
        assert (adopted["request_id"], adopted["operation_id"]) == \
            (sent["request_id"], sent["operation_id"])
        site.wait("gpu1 serving", lambda: running(site.gpu_workload(1),
                                                 pb.WORKLOAD_KIND_INFERENCE), 180)
        assert site.records("action", since=killed, device=gpu1, state="succeeded",
                            operation_id=sent["operation_id"], replica=standby)
    finally:
        burst.stop()
    # The burst is over: gpu1 goes back to hashing after give_back_windows low windows.
    site.wait("gpu1 hashing again", lambda: running(site.gpu_workload(1),
                                                   pb.WORKLOAD_KIND_HASHING), 120)
    given = site.records("reason", since=killed, device=gpu1, why=Why.INFER_RETURN_HASH)
    assert given and given[0]["replica"] == standby
    # Nothing was applied twice: rigd's own audit log holds one SetWorkload per change.
    audit = [json.loads(line) for line in
             (site.tmp / "rig-gpus" / "audit.jsonl").read_text().splitlines()]
    calls = [a for a in audit if a["method"] == "SetWorkload" and a["time_unix_s"] >= started
             and gpu1 in a["request"].get("device_ids", [])]
    kinds = [a["request"]["workload"]["kind"] for a in calls]
    assert kinds == ["WORKLOAD_KIND_INFERENCE", "WORKLOAD_KIND_HASHING"], calls
    ops = [op for op in site.rigs.operations("rig-gpus") if gpu1 in op.device_ids
           and op.create_time.ToNanoseconds() / 1e9 >= started]
    assert len(ops) == 2 and sent["operation_id"] in {op.operation_id for op in ops}
    # The killed replica comes back as the standby.
    site.replicas[leader] = start_replica(site.config, leader, site.tmp)


def test_a_deposed_leaders_fencing_token_is_refused_by_the_rig(site: Site) -> None:
    leader = site.leader()
    # Past three of their 10 s TTLs, the leaders kept their rigs' leases: renewed by the
    # client library in the background, never lost while leading.
    assert time.time() - site.records("action", action="lease")[0]["t"] > 3 * 10
    assert not site.records("action", action="lease", state="lost")
    deposed = "b" if leader == "a" else "a"
    tokens = {r["replica"]: r["fencing_token"] for r in site.records(
        "action", action="lease", rig="rig-gpus", state="acquired")}
    assert tokens[leader] > tokens[deposed], "every lease gets a larger token"
    gpu0 = site.rigs.gpus[0]
    stub = site.rigs.stub("rig-gpus")
    with pytest.raises(grpc.RpcError) as refused:
        stub.SetWorkload(pb.SetWorkloadRequest(
            device_ids=[gpu0], workload=pb.Workload(kind=pb.WORKLOAD_KIND_IDLE),
            fencing_token=tokens[deposed], request_id="from-the-deposed-leader"),
            metadata=[("authorization", f"Bearer {OPERATOR_TOKEN}")], timeout=10)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"rigsite/test-site/{leader}" in (refused.value.details() or "")
    assert running(site.gpu_workload(0), pb.WORKLOAD_KIND_INFERENCE), "nothing changed"


def test_a_site_openadr_event_brings_the_site_below_its_cap_by_the_deadline(
        site: Site) -> None:
    site.wait("the site's VEN registered", lambda: site.vtn.registrations > 0, 60)
    site.wait("every miner hashing", lambda: site.all_mining(True), 60)
    before_w = site.rigs.site_power_w()
    cap_w = round(0.5 * before_w)
    added = time.time()
    site.vtn.add_event("site-cap-1", "LOAD_DISPATCH", "setpoint", cap_w, duration_s=120)
    deadline = added + 10.0  # [openadr] deadline_s after it arrived (it arrives later)
    below = site.wait("the site below its cap", lambda: site.rigs.site_power_w() <= cap_w,
                     30, every_s=0.1)
    reached = time.time()
    assert below and reached <= deadline, f"below the cap {reached - added:.1f} s after the " \
        "event was added"
    answer = site.wait("the VEN's answer", lambda: site.vtn.answer("site-cap-1"), 30)
    assert answer["opt_type"] == "optIn"
    rounds = site.records("round", since=added)
    assert any(r["grid_cap_w"] == cap_w and r["grid_cap_source"] == "openadr:site-cap-1"
               for r in rounds)
    curtails = site.records("action", since=added, action="curtail", state="sent")
    last = {c["rig"]: c["target"] for c in curtails}
    assert set(last) == set(site.rigs.rigds) and sum(last.values()) <= cap_w, curtails
    for _ in range(5):  # and it stays there
        assert site.rigs.site_power_w() <= cap_w
        time.sleep(0.2)
    site.vtn.cancel("site-cap-1")
    site.wait("load given back", lambda: site.rigs.site_power_w() > cap_w * 1.2, 60)


def test_a_rig_that_is_gone_or_refuses_is_a_row_with_its_error(site: Site) -> None:
    gone = site.rigs.rigds["rig-miners-b"]
    gone.stop()
    stopped = time.time()
    rounds = site.wait("rounds without rig-miners-b", lambda: [
        r for r in site.rounds_since(stopped) if "rig-miners-b" in r["unreachable"]], 30)
    assert rounds[-1]["devices"] == 5, "the other rigs' devices are still decided"
    site.rigs.rigds["rig-miners-b"] = gone.restart()
    back = time.time()
    site.wait("rig-miners-b leased again", lambda: site.records(
        "action", since=back, action="lease", rig="rig-miners-b", state="acquired"), 30)
    site.wait("a round with rig-miners-b", lambda: [
        r for r in site.rounds_since(back) if not r["unreachable"] and r["devices"] == 8], 30)
    # An operator takes rig-miners-a over (admin, preempting the controller's lease): the
    # controller's changes there are refused, with rigd's reason; the others go on.
    stub = site.rigs.stub("rig-miners-a")
    admin = [("authorization", f"Bearer {ADMIN_TOKEN}")]
    lease = stub.AcquireLease(pb.AcquireLeaseRequest(holder="operator on site", ttl_s=60,
                                                     preempt=True), metadata=admin,
                              timeout=10).lease
    taken = time.time()
    try:
        site.prices.phase([SPIKE] * 20)
        site.wait("rig-miners-b asleep", lambda: not any(
            site.rigs.mining("rig-miners-b", m) for m in site.rigs.miners["rig-miners-b"]), 60)
        refused = site.wait("the controller refused on rig-miners-a", lambda: [
            r for r in site.records("action", since=taken, rig="rig-miners-a")
            if r["state"] in ("refused", "lost")], 30)
        assert any("operator on site" in (r.get("error") or "") or r["state"] == "lost"
                   for r in refused), refused
        assert all(site.rigs.mining("rig-miners-a", m) for m in site.rigs.miners["rig-miners-a"])
    finally:
        stub.ReleaseLease(pb.ReleaseLeaseRequest(lease_id=lease.lease_id), metadata=admin,
                          timeout=10)
    site.wait("rig-miners-a asleep once released", lambda: not any(
        site.rigs.mining("rig-miners-a", m) for m in site.rigs.miners["rig-miners-a"]), 60)
    assert site.records("action", since=taken, action="lease", rig="rig-miners-a",
                        state="acquired")
    site.prices.phase([])
    status = rigsite("status", "--journal", str(site.tmp / "journal"))
    assert status.returncode == 0 and f"leader: {site.leader()} elected" in status.stdout


def test_with_the_quorum_lost_the_leader_stops_acting_and_the_rigs_keep_their_state(
        site: Site) -> None:
    site.wait("every miner hashing", lambda: site.all_mining(True), 60)
    leader = site.leader()
    site.etcd.stop(1)
    lost = time.time()  # the quorum goes with the next member
    site.etcd.stop(2)
    try:
        deposed = site.wait("the leader to stop", lambda: site.records(
            "leader", since=lost, event="deposed", replica=leader), 30)[0]
        # within the TTL of etcd's last renewal, which etcd's leader grants until it notices
        # it lost its peers (its election timeout, 0.5 s here), and a round's interval
        assert deposed["t"] - lost <= LEASE_TTL_S + 0.5 + INTERVAL_S + 1.0, \
            f"acted {deposed['t'] - lost:.2f} s after the quorum was lost"
        # A spike the controller would act on at once: nobody leads, nothing is sent.
        spike = site.prices.phase([SPIKE] * (N + 20))
        site.wait("the spike's windows to pass", lambda: time.time() > site.prices.published_s(
            spike + N + 1), 60)
        assert not site.records("action", since=deposed["t"], action="sleep")
        assert not site.records("round", since=deposed["t"] + 0.1)
        assert site.all_mining(True), "the rigs keep their state"
    finally:
        site.etcd.start(1)
        site.etcd.start(2)
    back = time.time()
    site.etcd.wait_healthy()
    site.wait("a leader again", lambda: site.records("leader", since=back, event="elected"), 60)
    site.wait("the miners asleep for the spike", lambda: site.all_mining(False), 60)
    site.prices.phase([])
