"""Fan-out over a fleet: 50 rigs (four real rigd processes among simulated rig.v1 endpoints),
5 of them hung and 5 refusing connections. A fleet-wide GetTelemetry comes back within the
per-rig deadline plus a margin, with 40 values and 10 errors that say what happened; changes go
fleet-wide with bounded concurrency; `rigctl --fleet` does it through the installed entry
point."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from client import Fleet
from client.errors import Timeout, Unreachable
from client.fleet import parse_members
from client.model import Snapshot
from client.rig import Rig
from client.sim import Fault, SimRigProcess
from rigapi.model import OperationState, WorkloadKind
from tests.agent.conftest import RigdProcess, start_rigd

RIGCTL = str(Path(sys.executable).with_name("rigctl"))
DEADLINE_S = 2.0
HUNG = {"real-2", "sim-00000", "sim-00001", "sim-00002", "sim-00003"}
REFUSING = {"real-3", "sim-00004", "sim-00005", "sim-00006", "sim-00007"}


@dataclass
class FleetUnderTest:
    real: list[RigdProcess]
    sims: SimRigProcess
    file: Path  # all 50
    healthy_file: Path  # the 40 that answer

    @property
    def members(self) -> list[tuple[str, str]]:
        return parse_members(self.file.read_text().splitlines())


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetUnderTest]:
    tmp = tmp_path_factory.mktemp("fleet")
    real: list[RigdProcess] = []
    sims = SimRigProcess(46, gpus=1)
    try:  # every process started is ended, even if a later one fails to start
        for i in range(4):
            real.append(start_rigd(_dir(tmp, i)))
        sims.start()
        lines = [f"real-{i} {r.tcp_address}" for i, r in enumerate(real)]
        lines += [f"{name} {address}" for name, address in sims.rigs]
        file = tmp / "fleet.txt"
        file.write_text("# a test fleet: four rigd, 46 simulated\n" + "\n".join(lines) + "\n")
        healthy = [line for line in lines if line.split()[0] not in HUNG | REFUSING]
        healthy_file = tmp / "healthy.txt"
        healthy_file.write_text("\n".join(healthy) + "\n")
        # Faults: rigd stopped mid-flight (SIGSTOP: the kernel still accepts its connections,
        # nothing answers) and rigd gone (its port refuses); the simulated ones alike.
        real[2].proc.send_signal(signal.SIGSTOP)
        assert real[3].stop() == 0
        sims.set_fault(range(0, 4), Fault.HANG)
        sims.set_fault(range(4, 8), Fault.REFUSE)
        yield FleetUnderTest(real, sims, file, healthy_file)
    finally:
        for rigd in real:
            rigd.proc.send_signal(signal.SIGCONT)
            rigd.stop()
        sims.stop()


def _dir(tmp: Path, index: int) -> Path:
    path = tmp / f"rigd{index}"
    path.mkdir()
    return path


def test_a_fleet_wide_read_is_one_row_per_rig_within_the_deadline(
        fleet: FleetUnderTest) -> None:
    async def body() -> None:
        async with Fleet.from_file(fleet.file, deadline_s=DEADLINE_S, concurrency=64) as rigs:
            assert len(rigs) == 50
            results = await rigs.telemetry()
            assert results.wall_s < DEADLINE_S + 1.5, "a hung rig is a row, never a stall"
            assert [row.rig for row in results] == [name for name, _ in fleet.members]
            assert len(results.ok) == 40 and len(results.failed) == 10
            errors = results.errors()
            assert set(errors) == HUNG | REFUSING
            for name in HUNG:
                error = errors[name]
                assert isinstance(error, Timeout) and not error.answered, (name, error)
                assert f"no answer from rigd within {DEADLINE_S:g} s" in str(error)
            for name in REFUSING:
                error = errors[name]
                assert isinstance(error, Unreachable), (name, error)
                assert "connection refused" in str(error).lower()
            latency = {row.rig: row.latency_s for row in results}
            assert all(latency[n] >= DEADLINE_S * 0.9 for n in HUNG)
            assert all(latency[n] < DEADLINE_S for n in REFUSING), "refusals fail fast"
            values = results.values()
            for name in ("real-0", "real-1"):
                snapshot = values[name]
                assert isinstance(snapshot, Snapshot) and snapshot.rig_power is not None
                assert snapshot.readings[0].device_id.startswith("host/")
            sim = values["sim-00010"]
            assert {r.device_id for r in sim.readings} == {
                "asic/sim-00010-m0", "asic/sim-00010-m1", "gpu/sim-00010-g0"}
            assert sim.rig_power is not None and sim.rig_power.total_w > 0
            assert results.summary() == "40 of 50 rigs answered; 5 Timeout, 5 Unreachable"

    asyncio.run(body())


def test_concurrency_is_bounded_and_the_deadline_is_per_rig(fleet: FleetUnderTest) -> None:
    async def body() -> None:
        async with Fleet.from_file(fleet.healthy_file, concurrency=4, deadline_s=5) as rigs:
            in_flight = peak = 0

            async def read(rig: Rig) -> int:
                nonlocal in_flight, peak
                in_flight += 1
                peak = max(peak, in_flight)
                try:
                    return len((await rig.telemetry()).readings)
                finally:
                    in_flight -= 1

            results = await rigs.map(read)
            assert len(results.ok) == 40 and 1 < peak <= 4

            async def slow(rig: Rig) -> None:
                await asyncio.Event().wait()  # a rig's own code that never ends

            stalled = await rigs.map(slow, deadline_s=0.2, rigs=["sim-00010", "sim-00011"])
            assert [type(r.error) for r in stalled] == [Timeout, Timeout]
            assert stalled.wall_s < 2.0

    asyncio.run(body())


def test_changes_go_fleet_wide(fleet: FleetUnderTest) -> None:
    async def body() -> None:
        async with Fleet.from_file(fleet.healthy_file, deadline_s=10) as rigs:
            sims = [name for name in rigs.rigs if name.startswith("sim-")]
            limits = await rigs.set_power_limit(
                2000, select=lambda device: device.id.startswith("asic/"), deadline_s=10)
            assert len(limits.ok) == 40
            assert all(len(v) == 2 and {p.power_limit_w for p in v} == {2000.0}
                       for name, v in limits.values().items() if name in sims)
            assert all(v == () for name, v in limits.values().items() if name.startswith(
                "real-")), "a rig with nothing to limit has nothing set"

            switched = await rigs.switch(WorkloadKind.HASHING, device_ids={
                name: [f"gpu/{name}-g0"] for name in sims})
            assert len(switched) == len(sims) and len(switched.ok) == len(sims)
            assert {op.state for op in switched.values().values()} == {OperationState.SUCCEEDED}

            curtailed = await rigs.curtail({name: 1500.0 for name in sims}, deadline_s=5,
                                           reason="fleet test")
            assert len(curtailed.ok) == len(sims)
            inventories = await rigs.inventory()
            for name in sims:
                curtailment = inventories.values()[name].curtailment
                assert curtailment is not None and curtailment.reason == "fleet test"
            telemetry = await rigs.telemetry(max_age_s=0.01)
            for name in sims:
                power = telemetry.values()[name].rig_power
                assert power is not None and power.total_w <= 1500 * 1.05
            restored = await rigs.map(lambda rig: rig.cancel_curtailment(), rigs=sims)
            assert len(restored.ok) == len(sims)

    asyncio.run(body())


def rigctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RIGCTL, *args], capture_output=True, text=True, timeout=120)


def test_rigctl_fleet_through_the_installed_entry_point(fleet: FleetUnderTest) -> None:
    started = time.monotonic()
    result = rigctl("--fleet", str(fleet.file), "--timeout", str(DEADLINE_S), "telemetry")
    assert time.monotonic() - started < 30
    assert result.returncode == 1, result.stderr  # some rigs did not answer
    out = result.stdout
    assert out.count("\n== ") + out.startswith("== ") == 50, "a section per rig"
    assert "== real-0 (127.0.0.1:" in out and "rig power" in out
    assert "MINER" in out and "GPU" in out, "each rig's own tables"
    for name in HUNG:
        assert f"== {name} " in out and "no answer from rigd at 127.0.0.1:" in \
            out.split(f"== {name} ", 1)[1].splitlines()[0]
    refused = out.split("== sim-00004 ", 1)[1].splitlines()[0]
    assert "cannot reach rigd at 127.0.0.1:" in refused and "Connection refused" in refused
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("50 rigs: 40 answered, 10 did not (5 no answer within 2 s, "
                              "5 unreachable)"), summary
    assert "in all" in summary

    listed = rigctl("--fleet", str(fleet.healthy_file), "inventory", "--json")
    assert listed.returncode == 0, listed.stderr
    lines = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [line["kind"] for line in lines] == ["fleet_rig"] * 40 + ["fleet_summary"]
    assert all(line["ok"] and line["inventory"]["devices"] for line in lines[:-1])
    assert lines[-1]["answered"] == 40 and lines[-1]["failed"] == 0

    sims = fleet.healthy_file.parent / "sims.txt"
    sims.write_text("\n".join(line for line in fleet.healthy_file.read_text().splitlines()
                              if line.startswith("sim-")) + "\n")
    curtailed = rigctl("--fleet", str(sims), "curtail", "2000", "--deadline", "5",
                       "--reason", "rigctl fleet")
    assert curtailed.returncode == 0, curtailed.stdout + curtailed.stderr
    assert curtailed.stdout.count("(curtail): succeeded") == 38
    status = rigctl("--fleet", str(sims), "curtail", "status", "--json")
    rows = [json.loads(line) for line in status.stdout.splitlines()][:-1]
    assert all(r["curtailment"]["curtailment"]["reason"] == "rigctl fleet" for r in rows)
    cancelled = rigctl("--fleet", str(sims), "curtail", "cancel")
    assert cancelled.returncode == 0, cancelled.stdout

    wrong = rigctl("--fleet", str(fleet.file), "switch", "x", "idle")
    assert wrong.returncode == 2 and "--fleet runs inventory, telemetry, curtail" in wrong.stderr
    missing = rigctl("--fleet", str(fleet.file.parent / "none.txt"), "inventory")
    assert missing.returncode == 2 and "cannot read fleet file" in missing.stderr


def test_a_fleet_file_is_checked_line_by_line(tmp_path: Path) -> None:
    from client.errors import EndpointError

    assert parse_members(["# rigs", "", "a 10.0.0.5:50051  # rack 1", "10.0.0.6:50051",
                          "b unix:/run/rigd/rigd.sock"]) == [
        ("a", "10.0.0.5:50051"), ("10.0.0.6:50051", "10.0.0.6:50051"),
        ("b", "unix:/run/rigd/rigd.sock")]
    with pytest.raises(EndpointError, match="fleet:2: one rig a line"):
        parse_members(["a 10.0.0.5:1", "b c d"])
    with pytest.raises(EndpointError, match="listed twice"):
        parse_members(["a 10.0.0.5:1", "a 10.0.0.6:1"])
    with pytest.raises(EndpointError, match="neither HOST:PORT"):
        Fleet([("a", "rig-without-port")])


def test_a_fleet_from_dns_srv_records(fleet: FleetUnderTest) -> None:
    """SRV records from a DNS server on loopback (dnspython's wire format, served here)."""
    import dns.message
    import dns.rdata
    import dns.rdataclass
    import dns.rdatatype
    import dns.rrset

    targets = [(name, address) for name, address in fleet.members
               if name in ("sim-00010", "sim-00011", "real-0")]
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def answer() -> None:
        while not stop.is_set():
            try:
                data, peer = server.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            reply = dns.message.make_response(query)
            rrset = dns.rrset.RRset(query.question[0].name, dns.rdataclass.IN,
                                    dns.rdatatype.SRV)
            for priority, (_, address) in enumerate(targets):
                host, port = address.rsplit(":", 1)
                rrset.add(dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SRV,
                                              f"{priority} 10 {port} {host}."), ttl=60)
            reply.answer.append(rrset)
            server.sendto(reply.to_wire(), peer)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        found = Fleet.from_srv("_rigd._tcp.fleet.test.", nameserver="127.0.0.1",
                               port=server.getsockname()[1], deadline_s=DEADLINE_S)
        assert [r.endpoint.address for r in found.rigs.values()] == [a for _, a in targets]

        async def body() -> None:
            async with found:
                results = await found.inventory()
                assert len(results.ok) == 3

        asyncio.run(body())
    finally:
        stop.set()
        thread.join()
        server.close()
