"""OpenADR 2.0b through a real rigd and a real openleadr VTN, on loopback only. The rig: two
simulated GPUs hashing on PoCL, simulated miners of three firmware families, the host's
configured figure. A dispatched event curtails the rig (opted in, reported on); cancelling it
restores every device; a SIMPLE level goes through the configured table; a VTN that disappears
leaves the curtailment to expire at the event's end; signals rigd does not understand, and a VTN
that answers garbage, are refused clearly; TLS with client certificates and signed messages work
both ways. Waits poll with deadlines; sleeps are safety nets."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from agent.config.settings import Config
from agent.daemon import build_runtime
from agent.demo.pool import LocalPool
from agent.demo.rig import _best_opencl_device
from agent.edges.auth import AuditLog
from agent.edges.openadr import EventPlan, Interval, NotHonoured, Target, Ven, plan_event
from agent.runtime.operations import Operations
from agent.runtime.parts import Runtime
from hal.registry import discover
from hal.sim.asic import SimFleet
from hal.sim.nvml import SimControl, demo_setup
from rigapi import pb
from tests.agent.conftest import RigdProcess, start_rigd
from tests.agent.test_asic_rigd import asic_section
from tests.ports import free_port

if TYPE_CHECKING:  # openleadr (agent.demo.vtn) is imported by the tests that start a VTN
    from agent.demo.vtn import Vtn

VEN_ID = "ven-test-rig"  # the VTN names the VEN after its venName, the rig_id "test-rig"
LEVELS = {"1": 0.8, "2": 0.6, "3": 0.4}  # not the defaults: the table is what maps levels
T = TypeVar("T")


# ---- the rig -----------------------------------------------------------------------------------


@dataclass
class Rig:
    rigd: RigdProcess
    fleet: SimFleet
    gpus: list[str]
    vtn: Vtn  # replaced when a test stops the VTN and starts another on its port


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    from agent.demo.vtn import Vtn  # openleadr: imported where a VTN runs

    tmp = tmp_path_factory.mktemp("openadr")
    pool = LocalPool(difficulty=0.002).start_in_thread()
    vtn = Vtn(free_port())
    fleet = SimFleet.of(["antminer", "luxos", "whatsminer"], warmup_s=0.3).start()
    rig: Rig | None = None
    try:
        for miner in fleet.miners:
            miner.state.response_s = 0.5  # power ramps to a new target, as hash boards do
        options = demo_setup(tmp / "nvml", count=2)
        sim = SimControl(Path(options["sim_state_path"]), Path(options["library_path"]))
        gpus = [f"gpu/{g.uuid}" for g in sim.read().gpus]
        facet = _best_opencl_device()
        assert facet is not None, "the tests need an OpenCL device (PoCL)"
        nvml = "\n".join(f'{key} = "{value}"' for key, value in options.items())
        extra = (  # the first line lands in [hal], which ends the generated file
            "compute_facets = { " + ", ".join(f'"{g}" = "{facet}"' for g in gpus) + " }\n"
            f"[hal.nvml]\n{nvml}\nwatch_xid = false\n"
            + asic_section(fleet.discover_options())
            + "".join(f'[[hashing]]\ndevice = "{g}"\nintensity = 0.5\n' for g in gpus)
            + "[openadr.simple_levels]\n"
            + "".join(f'"{level}" = {fraction}\n' for level, fraction in LEVELS.items()))
        rigd = start_rigd(tmp, extra, backends=("host", "nvml", "opencl", "asic"), settings={
            "pool": {"urls": [f"stratum+tcp://127.0.0.1:{pool.port}"], "user": "adr.test"},
            "workloads": {"min_dwell_s": 0.0, "state_dir": f"{tmp}/state"},
            "power": {"host_w": 300.0},
            "telemetry": {"interval_s": 0.5},
            "openadr": {"vtn_url": vtn.url, "poll_interval_s": 0.5, "report_interval_s": 1,
                        "deadline_s": 30.0, "retry_max_s": 2.0},
        })
        rig = Rig(rigd, fleet, gpus, vtn)
        wait_for(lambda: all(readings(rig)[g].workload.state == pb.WORKLOAD_STATE_RUNNING
                             for g in gpus) and rig.vtn.registrations > 0, "rig up", 120)
        yield rig
    finally:
        if rig is not None:
            assert rig.rigd.stop() == 0
            vtn = rig.vtn
        vtn.stop()
        fleet.stop()
        pool.stop()


# ---- helpers -----------------------------------------------------------------------------------


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def readings(rig: Rig) -> dict[str, pb.DeviceTelemetry]:
    reply = rig.rigd.stub().GetTelemetry(pb.GetTelemetryRequest(max_age_ms=1), timeout=10)
    return {d.device_id: d for d in reply.devices}


def rig_w(rig: Rig) -> float:
    reply = rig.rigd.stub().GetTelemetry(pb.GetTelemetryRequest(max_age_ms=1), timeout=10)
    return reply.rig_power.total_w


def curtailment(rig: Rig) -> pb.Curtailment | None:
    return curtailment_of(rig.rigd)


def curtailment_of(rigd: RigdProcess) -> pb.Curtailment | None:
    inventory = rigd.stub().GetInventory(pb.GetInventoryRequest(), timeout=10)
    return inventory.curtailment if inventory.HasField("curtailment") else None


def state(rig: Rig) -> dict[str, tuple[Any, ...]]:
    """What a restore must bring back: each device's workload and settings, each miner's mode."""
    out: dict[str, tuple[Any, ...]] = {}
    for device_id, t in readings(rig).items():
        out[device_id] = (t.workload.kind, t.workload.state, round(t.workload.intensity, 3),
                          t.power_limit_w if t.HasField("power_limit_w") else None,
                          t.asic.is_mining if t.HasField("asic") else None)
    for index, miner in enumerate(rig.fleet.miners):
        out[f"sim{index}"] = (miner.state.sleeping, getattr(miner, "low_power", None),
                              getattr(miner, "profile", None))
    return out


def log_lines(rig: Rig, event: str) -> list[dict[str, Any]]:
    return log_of(rig.rigd, event)


def log_of(rigd: RigdProcess, event: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in rigd.log_path.read_text().splitlines()
            if f'"event": "{event}"' in line]


def settled(rig: Rig) -> dict[str, tuple[Any, ...]]:
    """The rig's state once nothing is curtailed and every workload runs again."""
    wait_for(lambda: curtailment(rig) is None, "no curtailment")
    wait_for(lambda: all(t.workload.state == pb.WORKLOAD_STATE_RUNNING
                         for g, t in readings(rig).items() if g in rig.gpus), "GPUs hashing")
    return state(rig)


def back_as(rig: Rig, before: dict[str, tuple[Any, ...]]) -> None:
    """Wait until every device is as it was; on timeout, say which are not and how."""
    differs: dict[str, tuple[Any, Any]] = {}

    def same() -> bool:
        now = settled(rig)
        differs.clear()
        differs.update({d: (before.get(d), now.get(d)) for d in before.keys() | now.keys()
                        if before.get(d) != now.get(d)})
        return not differs

    try:
        wait_for(same, "every device back as before", 60)
    except AssertionError as exc:
        what_rigd_did = [line for line in rig.rigd.log_path.read_text().splitlines()
                         if '"event": "curtail_' in line or '"event": "openadr_' in line]
        raise AssertionError(f"{exc}; (before, now) of each device that differs: {differs}; "
                             "rigd's curtailments:\n" + "\n".join(what_rigd_did[-40:])
                             ) from None


def opted(rig: Rig, event_id: str, modification: int = 0) -> dict[str, Any]:
    return opted_on(rig.vtn, event_id, modification)


def opted_on(vtn: Vtn, event_id: str, modification: int = 0) -> dict[str, Any]:
    answer: dict[str, Any] = wait_for(lambda: vtn.answer(event_id, modification),
                                      f"the VEN's answer to {event_id}#{modification}", 30)
    return answer


# ---- through a real rigd -----------------------------------------------------------------------


def test_dispatched_event_curtails_opts_in_reports_and_cancel_restores(rig: Rig) -> None:
    before = settled(rig)
    target_w = round(0.5 * rig_w(rig), 1)
    rig.vtn.add_event("dispatch-1", "LOAD_DISPATCH", "setpoint", target_w, duration_s=600)
    assert opted(rig, "dispatch-1")["opt_type"] == "optIn"
    confirmed = wait_for(lambda: (c := curtailment(rig)) is not None and c.state == "confirmed"
                         and c, "the curtailment confirmed below target", 60)
    assert confirmed.source == "openadr:dispatch-1"
    assert confirmed.rig_power_target_w == pytest.approx(target_w)
    assert "dispatch-1" in confirmed.reason and "oadr://test.grid/ers" in confirmed.reason
    expected_end = time.time() + 600
    assert abs(confirmed.expire_time.ToSeconds() - expected_end) < 30, "expiry = the event's end"
    assert rig_w(rig) <= target_w
    # The VTN hears the rig's power: the total, and measured and estimated apart.
    wait_for(lambda: any(r == "test-rig" and w <= target_w for r, w in rig.vtn.reports),
             "a power report below target", 30)
    resources = {r for r, _ in rig.vtn.reports}
    assert {"test-rig/measured", "test-rig/estimated"} <= resources
    audit = [json.loads(line) for line in rig.rigd.audit_path.read_text().splitlines()]
    assert any(a["method"] == "Curtail" and a["identity"] == "openadr:dispatch-1" for a in audit)

    rig.vtn.cancel("dispatch-1")
    assert opted(rig, "dispatch-1", modification=1)["opt_type"] == "optIn"
    back_as(rig, before)
    restores = log_lines(rig, "openadr_restore")
    assert restores and "dispatch-1 cancelled by the VTN" in restores[-1]["why"]


def test_simple_levels_map_through_the_table_and_modifications_apply(rig: Rig) -> None:
    before = settled(rig)
    rig.vtn.add_event("simple-1", "SIMPLE", "level", 2, duration_s=600)
    assert opted(rig, "simple-1")["opt_type"] == "optIn"
    level2 = wait_for(lambda: curtailment(rig), "a curtailment for level 2")
    assert level2.source == "openadr:simple-1"
    # Level 2 is 0.6 of the rig's power when the event started (read just before the
    # Curtailer read it again for rig_power_before_w).
    baseline_w = level2.rig_power_target_w / LEVELS["2"]
    assert baseline_w == pytest.approx(level2.rig_power_before_w, rel=0.05)

    # Up a level: a lower target, the same baseline, applied in place.
    rig.vtn.modify("simple-1", 3)
    assert opted(rig, "simple-1", modification=1)["opt_type"] == "optIn"
    level3 = wait_for(lambda: (c := curtailment(rig)) and c.operation_id != level2.operation_id
                      and c, "the level 3 curtailment")
    assert level3.rig_power_target_w == pytest.approx(LEVELS["3"] * baseline_w, abs=0.2)
    assert level3.rig_power_before_w == level2.rig_power_before_w, "replaced, not restored"

    # Down to level 1: a higher target, applied in place: load is given back.
    rig.vtn.modify("simple-1", 1)
    assert opted(rig, "simple-1", modification=2)["opt_type"] == "optIn"
    level1 = wait_for(lambda: (c := curtailment(rig)) and c.operation_id != level3.operation_id
                      and c, "the level 1 curtailment")
    assert level1.rig_power_target_w == pytest.approx(LEVELS["1"] * baseline_w, abs=0.2)
    assert level1.rig_power_before_w == level2.rig_power_before_w, "raised, not restored"
    assert log_lines(rig, "openadr_give_back")[-1]["why"].startswith(
        "OpenADR event simple-1 gives load back")

    rig.vtn.cancel("simple-1")
    back_as(rig, before)


def follows(rig: Rig, target_w: float, what: str, watch_s: float = 3.0,
            above_w: float = 0.0) -> pb.Curtailment:
    """The rig follows a level: a curtailment to `target_w` is confirmed, the rig draws more than
    `above_w` (load given back by a higher level), then stays at or below its target (read
    from telemetry) for watch_s."""
    c = wait_for(lambda: (c := curtailment(rig)) is not None
                 and c.rig_power_target_w == pytest.approx(target_w, abs=0.2)
                 and c.state == "confirmed" and c, f"{what} confirmed", 60)
    wait_for(lambda: rig_w(rig) > above_w, f"{what}: load given back above {above_w:g} W", 30)
    end = time.monotonic() + watch_s
    while time.monotonic() < end:
        now = readings(rig)
        total = sum(t.power_w for t in now.values() if t.HasField("power_w"))
        assert total <= target_w, (f"{what}: the rig reads {total:.0f} W over its "
                                   f"{target_w:g} W target: " + ", ".join(
                                       f"{d}={t.power_w:.0f}W" for d, t in now.items()))
        time.sleep(0.1)
    return c


def test_a_target_rigd_refuses_is_opted_out_of(rig: Rig) -> None:
    """A LOAD_DISPATCH delta deeper than the rig draws gives a target below zero: rigd refuses
    it, and the utility hears optOut with rigd's reason instead of keeping an optIn for an event
    the rig will not follow."""
    before = settled(rig)
    rig.vtn.add_event("too-deep-1", "LOAD_DISPATCH", "delta", -(rig_w(rig) + 2000.0),
                      duration_s=600)
    answer = wait_for(lambda: (a := rig.vtn.answer("too-deep-1")) is not None
                      and a["opt_type"] == "optOut" and a, "the VEN's optOut", 30)
    assert "rigd refused the target" in answer["response_description"]
    assert curtailment(rig) is None, "nothing is curtailed for it"
    rig.vtn.cancel("too-deep-1")
    back_as(rig, before)


def test_an_event_modified_to_a_higher_then_a_lower_target_is_followed(rig: Rig) -> None:
    """Level 3 (the lowest target), then 1 (gives load back: the miners woken are counted at
    what they will draw, so the new curtailment holds as they wake), then 3 again."""
    before = settled(rig)
    rig.vtn.add_event("follow-1", "SIMPLE", "level", 3, duration_s=600)
    assert opted(rig, "follow-1")["opt_type"] == "optIn"
    first = wait_for(lambda: curtailment(rig), "the level 3 curtailment")
    baseline_w = first.rig_power_before_w
    follows(rig, round(LEVELS["3"] * baseline_w, 1), "level 3")
    rig.vtn.modify("follow-1", 1)
    assert opted(rig, "follow-1", modification=1)["opt_type"] == "optIn"
    follows(rig, round(LEVELS["1"] * baseline_w, 1), "level 1",
            above_w=round(LEVELS["3"] * baseline_w, 1))
    rig.vtn.modify("follow-1", 3)
    assert opted(rig, "follow-1", modification=2)["opt_type"] == "optIn"
    follows(rig, round(LEVELS["3"] * baseline_w, 1), "level 3 again")
    rig.vtn.cancel("follow-1")
    back_as(rig, before)


@pytest.mark.parametrize(("event_id", "signal", "signal_type", "payload", "why"), [
    ("price-1", "ELECTRICITY_PRICE", "price", 0.12, "ELECTRICITY_PRICE (price) is not understood"),
    ("multiplier-1", "LOAD_DISPATCH", "multiplier", 0.5, "LOAD_DISPATCH (multiplier) is not"),
    ("more-load-1", "LOAD_DISPATCH", "delta", 500.0, "asks for more load"),
])
def test_a_signal_rigd_cannot_honour_gets_an_opt_out_with_its_reason(
        rig: Rig, event_id: str, signal: str, signal_type: str, payload: float, why: str) -> None:
    rig.vtn.add_event(event_id, signal, signal_type, payload, duration_s=600)
    answer = opted(rig, event_id)
    assert answer["opt_type"] == "optOut"
    assert why in answer["response_description"], "the reason travels to the VTN"
    assert any(why in line["reason"] for line in log_lines(rig, "openadr_opt_out"))
    assert curtailment(rig) is None
    rig.vtn.cancel(event_id)


def test_a_vtn_that_disappears_leaves_the_curtailment_to_expire(rig: Rig) -> None:
    before = settled(rig)
    duration_s = 25.0
    started = time.time()
    rig.vtn.add_event("short-1", "LOAD_DISPATCH", "delta", -0.3 * rig_w(rig), duration_s)
    assert opted(rig, "short-1")["opt_type"] == "optIn"
    held = wait_for(lambda: curtailment(rig), "the curtailment")
    assert held.source == "openadr:short-1"
    end_s = held.expire_time.ToNanoseconds() / 1e9
    assert started < end_s <= started + duration_s + 1

    rig.vtn.stop()
    lost = wait_for(lambda: log_lines(rig, "openadr_vtn_lost"), "the VEN to notice", 30)
    assert "short-1" in lost[-1]["events_kept"]
    assert curtailment(rig) is not None, "the VTN's absence lifts nothing"
    wait_for(lambda: curtailment(rig) is None, "the curtailment's expiry", duration_s + 30)
    assert time.time() >= end_s - 0.5, "lifted at the event's end, not before"
    back_as(rig, before)
    retries = log_lines(rig, "openadr_retrying")
    assert retries and max(r["in_s"] for r in retries) <= 2.0  # retry_max_s

    # A VTN back on the same address: the VEN registers again by itself.
    from agent.demo.vtn import Vtn  # openleadr: imported where a VTN runs

    rig.vtn = Vtn(rig.vtn.port)
    wait_for(lambda: rig.vtn.registrations > 0, "registration with the new VTN", 30)


@pytest.mark.processes
def test_signed_messages_over_mutual_tls(tmp_path: Path, pki: Path) -> None:
    """The VTN checks the VEN's client certificate and signatures, the VEN the VTN's."""
    from openleadr.utils import certificate_fingerprint

    from agent.demo.vtn import Vtn  # openleadr: imported where a VTN runs

    vtn = Vtn(free_port(), pki, certificate_fingerprint((pki / "ctrl-a.pem").read_text()))
    rigd = start_rigd(tmp_path, settings={"power": {"host_w": 1000.0}, "openadr": {
        "vtn_url": vtn.url, "ven_id": VEN_ID, "poll_interval_s": 0.5,
        "cert_file": str(pki / "ctrl-a.pem"), "key_file": str(pki / "ctrl-a.key"),
        "ca_file": str(pki / "ca.pem"),
        "vtn_fingerprint": certificate_fingerprint((pki / "server.pem").read_text())}})
    try:
        wait_for(lambda: vtn.registrations > 0, "a signed registration", 30)
        vtn.add_event("signed-1", "LOAD_DISPATCH", "setpoint", 600.0, duration_s=600)
        assert opted_on(vtn, "signed-1")["opt_type"] == "optIn"
        held = wait_for(lambda: curtailment_of(rigd), "the curtailment")
        assert held.source == "openadr:signed-1" and held.rig_power_target_w == 600.0
        vtn.cancel("signed-1")
        wait_for(lambda: curtailment_of(rigd) is None, "the restore")
        assert log_of(rigd, "openadr_ven_fingerprint")[0]["fingerprint"] == \
            certificate_fingerprint((pki / "ctrl-a.pem").read_text())
    finally:
        assert rigd.stop() == 0
        vtn.stop()


# ---- a VTN that answers garbage, and a rig without openleadr ----------------------------------


class GarbageVtn(http.server.ThreadingHTTPServer):
    """Answers every OpenADR request with bytes that are not OpenADR."""

    def __init__(self) -> None:
        self.queries: list[float] = []  # when each registration attempt began
        super().__init__(("127.0.0.1", 0), GarbageHandler)


class GarbageHandler(http.server.BaseHTTPRequestHandler):
    server: GarbageVtn

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if b"oadrQueryRegistration" in body:
            self.server.queries.append(time.monotonic())
        reply = b'<oadrPayload>}{"STATUS": nan\x00'
        self.send_response(200)
        self.send_header("content-type", "application/xml")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.processes
def test_a_vtn_answering_garbage_is_retried_with_backoff(tmp_path: Path) -> None:
    garbage = GarbageVtn()
    thread = threading.Thread(target=garbage.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{garbage.server_address[1]}/OpenADR2/Simple/2.0b"
    rigd = start_rigd(tmp_path, settings={"power": {"host_w": 200.0},
                                          "openadr": {"vtn_url": url, "retry_max_s": 2.0}})
    try:
        wait_for(lambda: len(garbage.queries) >= 4, "four registration attempts", 30)
        gaps = [b - a for a, b in zip(garbage.queries, garbage.queries[1:], strict=False)]
        assert gaps[0] >= 0.9 and gaps[1] >= 1.8 and all(g < 3.5 for g in gaps[:3]), gaps
        text = rigd.log_path.read_text()
        assert "a reply that is not valid OpenADR" in text and "openadr_registration_failed" \
            in text, text[-3000:]
        assert "Traceback" not in text
        inventory = rigd.stub().GetInventory(pb.GetInventoryRequest(), timeout=10)
        assert not inventory.HasField("curtailment")
    finally:
        assert rigd.stop() == 0
        garbage.shutdown()
        garbage.server_close()


@pytest.mark.processes
def test_a_vtn_that_asks_to_register_at_every_poll_is_a_lost_session(tmp_path: Path) -> None:
    """openleadr registers again whenever the VTN asks; a VTN that asks at every poll (it has
    lost this VEN, and sends it no events) is said in the log and retried with backoff."""
    from agent.demo.vtn import Vtn  # openleadr: imported where a VTN runs

    vtn = Vtn(free_port())
    vtn.knows_ven = False
    rigd = start_rigd(tmp_path, settings={"power": {"host_w": 200.0}, "openadr": {
        "vtn_url": vtn.url, "poll_interval_s": 0.2, "retry_max_s": 1.0}})
    try:
        lost = wait_for(lambda: log_of(rigd, "openadr_vtn_lost"), "the session given up", 60)
        assert "the VTN asks this VEN to register again" in lost[0]["problem"]
        assert vtn.registrations >= 2, "it did register again, as openleadr does"
        vtn.knows_ven = True  # the VTN recovers: the next session holds
        registered = len(log_of(rigd, "openadr_registered"))
        wait_for(lambda: len(log_of(rigd, "openadr_registered")) > registered,
                 "a new session", 60)
        vtn.add_event("after", "LOAD_DISPATCH", "setpoint", 50.0, duration_s=60)
        assert wait_for(lambda: vtn.answer("after"), "the event's answer", 60)["opt_type"] \
            == "optIn"
    finally:
        assert rigd.stop() == 0
        vtn.stop()


@pytest.mark.processes
def test_openadr_configured_without_openleadr_is_one_clear_error(tmp_path: Path) -> None:
    shim = tmp_path / "shim" / "openleadr"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text('raise ImportError("No module named \'openleadr\'")\n')
    config = tmp_path / "rigd.toml"
    config.write_text(f'[server]\nunix_socket = "{tmp_path}/r.sock"\n[hal]\nbackends = ["host"]\n'
                      '[openadr]\nvtn_url = "http://127.0.0.1:1/OpenADR2/Simple/2.0b"\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(shim.parent), os.environ.get("PYTHONPATH", "")]))}
    result = subprocess.run([sys.executable, "-m", "agent.main", "--config", str(config)],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2, result
    assert result.stderr.strip().splitlines() == [
        line for line in result.stderr.strip().splitlines() if line.startswith("rigd: error: ")]
    assert "openleadr is not installed" in result.stderr
    assert not (tmp_path / "r.sock").exists()


# ---- events to plans, without a rig ----------------------------------------------------------


def event(signal_name: str, signal_type: str, payloads: list[float], *, duration_s: float = 60,
          measurement: dict[str, Any] | None = None) -> dict[str, Any]:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    each = timedelta(seconds=duration_s / len(payloads))
    signal: dict[str, Any] = {
        "signal_name": signal_name, "signal_type": signal_type,
        "intervals": [{"duration": each, "signal_payload": p, "uid": i}
                      for i, p in enumerate(payloads)]}
    if measurement is not None:
        signal["measurement"] = measurement
    return {"event_descriptor": {"event_id": "e1", "modification_number": 0,
                                 "market_context": "oadr://m"},
            "active_period": {"dtstart": start, "duration": timedelta(seconds=duration_s)},
            "event_signals": [signal]}


def test_plans_map_levels_and_watts_interval_by_interval() -> None:
    plan = plan_event(event("SIMPLE", "level", [0, 2, 3]), LEVELS)
    t0 = datetime(2030, 1, 1, tzinfo=UTC).timestamp()
    assert [i.target for i in plan.intervals] == [None, Target("fraction", 0.6),
                                                  Target("fraction", 0.4)]
    assert (plan.intervals[1].start_unix_s, plan.intervals[1].end_unix_s) == (t0 + 20, t0 + 40)
    assert plan.targets_at(t0 + 5) == [] and plan.next_change(t0 + 5) == t0 + 20
    assert plan.end_unix_s == t0 + 60
    kw = plan_event(event("LOAD_DISPATCH", "setpoint", [1.5],
                          measurement={"unit": "W", "scale": "k"}), LEVELS)
    assert kw.intervals[0].target == Target("watts", 1500.0)
    delta = plan_event(event("LOAD_DISPATCH", "delta", [-400.0]), LEVELS).intervals[0].target
    assert delta is not None and delta.watts(1000.0) == 600.0


@pytest.mark.parametrize(("bad", "why"), [
    (event("SIMPLE", "level", [2]), "has no target"),  # with a table without level 2, below
    (event("SIMPLE", "level", [1.5]), "levels are 0, 1, 2 and 3"),
    (event("LOAD_DISPATCH", "setpoint", [0.0]), "positive number of watts"),
    (event("LOAD_DISPATCH", "setpoint", [5.0], measurement={"unit": "A", "scale": "none"}),
     "rigd understands watts"),
    (event("LOAD_DISPATCH", "setpoint", [float("nan")]), "not a number"),
    (event("SIMPLE", "level", [1], duration_s=0), "without an end"),
    (event("SIMPLE", "level", [1], duration_s=90000), "at most 86400"),
    ({"event_descriptor": {"event_id": "e1"}}, "malformed event"),
    ({**event("SIMPLE", "level", [1]), "event_signals": []}, "without a signal"),
])
def test_events_rigd_cannot_honour_say_why(bad: dict[str, Any], why: str) -> None:
    with pytest.raises(NotHonoured, match=why):
        plan_event(bad, {"1": 0.8})


# ---- plans to the Curtailer, without a rig -----------------------------------------------------


@contextlib.asynccontextmanager
async def host_runtime(tmp: Path) -> AsyncIterator[Runtime]:
    """rigd's runtime, built as rigd builds it, on this host alone (an estimated 1,000 W): the
    real Curtailer the VEN drives, with nothing it could shed."""
    (tmp / "state").mkdir()
    config = dataclasses.replace(Config(), state_dir=str(tmp / "state"), host_power_w=1000.0,
                                 curtail_settle_s=0.5)
    discovery = discover(("host",))
    runtime = build_runtime(config, discovery, Operations(ended=None))
    await runtime.sampler.start()
    try:
        yield runtime
    finally:
        await runtime.sampler.stop()
        discovery.close()


async def operator_curtails(runtime: Runtime, target_w: float, source: str) -> None:
    await runtime.curtailer.curtail(target_w, 10, 60, "", source)


def restores(runtime: Runtime) -> list[str]:
    return [op.detail for op in runtime.operations.all() if op.kind == "restore_curtailment"]


def test_the_lowest_target_holds_and_an_operators_lower_curtailment_stays(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        async with host_runtime(tmp_path) as runtime:
            curtailer = runtime.curtailer
            ven = Ven(Config(), curtailer, AuditLog(), openleadr=None)
            now = time.time()
            ven.plans["e1"] = EventPlan("e1", 0, "", now - 1, now + 20, [
                Interval(now - 1, now + 10, Target("fraction", 0.5)),
                Interval(now + 10, now + 20, Target("fraction", 0.25))])
            await operator_curtails(runtime, 400.0, "token:controller")
            assert await ven._reconcile() == pytest.approx(now + 10), \
                "wakes for the next interval"
            assert curtailer.current is not None and curtailer.current.target_w == 400.0, \
                "the operator's 400 W is lower than the event's 500 W"
            await operator_curtails(runtime, 700.0, "token:controller")  # gives load back
            await ven._reconcile()
            assert curtailer.current is not None
            assert (curtailer.current.target_w, curtailer.current.source) == \
                (500.0, "openadr:e1"), "the event's is lower"
            ven.plans["e2"] = EventPlan("e2", 0, "", now - 1, now + 5,
                                        [Interval(now - 1, now + 5, Target("watts", 300.0))])
            await ven._reconcile()
            assert (curtailer.current.target_w, curtailer.current.source) == \
                (300.0, "openadr:e2"), "the lowest wins"
            ven._drop("e2", "cancelled by the VTN")
            await ven._reconcile()
            assert (curtailer.current.target_w, curtailer.current.source) == \
                (500.0, "openadr:e1"), "e1 holds the rig again: load given back in place"
            assert restores(runtime) == [], "raised, not restored"
            ven._drop("e1", "cancelled by the VTN")
            await ven._reconcile()
            assert curtailer.current is None
            assert restores(runtime)[-1].startswith("OpenADR event e1 cancelled by the VTN")

    asyncio.run(scenario())


def test_an_operators_cancel_wins_and_the_vtn_hears_opt_out(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with host_runtime(tmp_path) as runtime:
            curtailer = runtime.curtailer
            ven = Ven(Config(), curtailer, AuditLog(), openleadr=None)
            now = time.time()
            # Journaled before a restart: an event this VEN has not heard of again is kept.
            await operator_curtails(runtime, 450.0, "openadr:old")
            await ven._reconcile()
            assert curtailer.current is not None and curtailer.current.source == "openadr:old"
            assert restores(runtime) == []
            await curtailer.cancel("an operator")
            await ven._reconcile()  # waits for the restore
            ven.plans["e1"] = EventPlan("e1", 0, "", now - 1, now + 60,
                                        [Interval(now - 1, now + 60, Target("watts", 500.0))])
            await ven._reconcile()
            assert curtailer.current is not None
            assert (curtailer.current.target_w, curtailer.current.source) == \
                (500.0, "openadr:e1")
            await curtailer.cancel("cancelled by token:controller")  # the operator
            await ven._reconcile()
            assert curtailer.current is None, "not curtailed again behind the operator's back"
            assert ven.plans["e1"].refused and "operator" in ven.reasons["e1"]

    asyncio.run(scenario())
