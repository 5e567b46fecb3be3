"""Diagnostics and Prometheus metrics of a real rigd: two simulated GPUs hashing on the PoCL
device, simulated miners of three firmware families, the host serving the builtin runtime.

`rigctl diag -r 3` (the installed entry point) passes every device of the healthy rig; a lost
GPU and a hung miner fail with their reasons; bad requests get clear statuses. `/metrics` is
fetched over HTTP (curl), parsed with prometheus_client's own parser, its GPU metrics named as
dcgm-exporter names them, its values those GetTelemetry serves.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from agent.demo.pool import PoolThread
from hal.sim.asic import Fault, SimFleet
from hal.sim.nvml import SimControl
from rigapi import pb
from tests.agent.conftest import (
    OPERATOR_TOKEN,
    RigdProcess,
    bearer,
    free_port,
    simulated_gpus,
    start_rigd,
)
from tests.agent.test_asic_rigd import asic_section
from tests.agent.test_curtail import switch
from tests.agent.test_daemon import assert_one_clean_error, run_rigd

RIGCTL = str(Path(sys.executable).with_name("rigctl"))
MIB = 1 << 20

# dcgm-exporter's etc/default-counters.csv (NVIDIA/dcgm-exporter): the fields it exports when
# not configured otherwise.
DCGM_DEFAULT_COUNTERS = {
    "DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_MEM_CLOCK", "DCGM_FI_DEV_MEMORY_TEMP",
    "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
    "DCGM_FI_DEV_PCIE_TX_THROUGHPUT", "DCGM_FI_DEV_PCIE_RX_THROUGHPUT",
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_MEM_COPY_UTIL",
    "DCGM_FI_DEV_ENC_UTIL", "DCGM_FI_DEV_DEC_UTIL", "DCGM_FI_DEV_XID_ERRORS",
    "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
    "DCGM_FI_DEV_VGPU_LICENSE_STATUS", "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "DCGM_FI_DEV_ROW_REMAP_FAILURE",
}
# DCGM fields outside the defaults that dcgm-exporter exports when a counters file lists them
# (dcgm_fields.h names), which rigd reads from NVML too.
DCGM_OTHER_FIELDS = {"DCGM_FI_DEV_POWER_MGMT_LIMIT", "DCGM_FI_DEV_FB_TOTAL",
                     "DCGM_FI_DEV_FAN_SPEED", "DCGM_FI_DEV_PSTATE"}
DCGM_LABELS = {"gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname"}
LINE = re.compile(r"^\[\s*(\d+)/(\d+)\] (\w+)\s+(\S+)\s+(\S+)\s+(.*)$")


@dataclass
class Rig:
    rigd: RigdProcess
    gpus: list[str]
    asics: list[str]
    host: str
    fleet: SimFleet
    sim: SimControl
    metrics_url: str


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, pool: PoolThread) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("observe")
    sim, gpus, gpu_config = simulated_gpus(tmp, 2)
    port = free_port()
    with SimFleet.of(["antminer", "luxos", "whatsminer"], warmup_s=0.1) as fleet:
        extra = (gpu_config + asic_section(fleet.discover_options())
                 + f'[[hashing]]\ndevice = "{gpus[0]}"\nintensity = 0.1\n')
        rigd = start_rigd(tmp, extra, backends=("host", "nvml", "opencl", "asic"), settings={
            "pool": {"urls": [f"stratum+tcp://127.0.0.1:{pool.port}"], "user": "observe.test"},
            "workloads": {"min_dwell_s": 0.0, "state_dir": f"{tmp}/state"},
            "power": {"host_w": 250.0},
            # Readings only when asked (GetTelemetry max_age_ms=1, diagnostics): a scrape and
            # GetTelemetry then serve the very same reading, to compare them to the digit.
            "telemetry": {"interval_s": 600.0},
            "metrics": {"address": f"127.0.0.1:{port}"},
        })
        try:
            inventory = rigd.stub().GetInventory(pb.GetInventoryRequest(), timeout=10)
            host = next(d.id for d in inventory.devices if d.kind == pb.DEVICE_KIND_HOST)
            rig = Rig(rigd, gpus, [f"asic/{a}" for a in fleet.addresses], host, fleet, sim,
                      f"http://127.0.0.1:{port}/metrics")
            wait_for(rig, lambda r: r[gpus[0]].workload.state == pb.WORKLOAD_STATE_RUNNING)
            op = switch(rig, host, pb.Workload(kind=pb.WORKLOAD_KIND_INFERENCE,
                                                inference=pb.InferenceSpec(profile="builtin")))
            assert op.state == pb.OPERATION_STATE_SUCCEEDED, op.error
            wait_for(rig, lambda r: r[host].workload.kind == pb.WORKLOAD_KIND_INFERENCE)
            yield rig
        finally:
            assert rigd.stop() == 0


# ---- helpers ---------------------------------------------------------------------------------


def readings(rig: Rig, max_age_ms: int = 0) -> pb.GetTelemetryResponse:
    return rig.rigd.stub().GetTelemetry(pb.GetTelemetryRequest(max_age_ms=max_age_ms),
                                        timeout=10)


def wait_for(rig: Rig, condition: object, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        now = {d.device_id: d for d in readings(rig, max_age_ms=1).devices}
        if condition(now):  # type: ignore[operator]
            return
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.2)


def rigctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RIGCTL, *args], capture_output=True, text=True, timeout=240)


def fetch(url: str, *curl_args: str) -> str:
    """GET with curl where the machine has it (what an operator runs), else urllib."""
    if shutil.which("curl"):
        result = subprocess.run(["curl", "-sS", "--fail", "--max-time", "20", *curl_args, url],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return result.stdout
    with urllib.request.urlopen(url, timeout=20) as reply:
        return str(reply.read().decode())


def scrape(url: str, *curl_args: str) -> dict[str, list[Sample]]:
    """Samples by family name, as prometheus_client's own parser reads the page."""
    return {f.name: f.samples for f in text_string_to_metric_families(fetch(url, *curl_args))}


def value(samples: list[Sample], **labels: str) -> float:
    found = [s.value for s in samples if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (labels, samples)
    return float(found[0])


def diag_lines(stdout: str) -> list[tuple[str, str, str, str]]:
    """(result, device, test, detail) of each streamed line of `rigctl diag`."""
    out = []
    for line in stdout.splitlines():
        match = LINE.match(line)
        if match:
            out.append((match[3], match[4], match[5], match[6]))
    return out


# ---- /metrics --------------------------------------------------------------------------------


def test_metrics_use_dcgm_names_and_serve_the_telemetry_values(rig: Rig) -> None:
    reply = readings(rig)
    families = scrape(rig.metrics_url)

    dcgm = {name for name in families if name.startswith("DCGM_")}
    assert dcgm <= DCGM_DEFAULT_COUNTERS | DCGM_OTHER_FIELDS, dcgm - DCGM_DEFAULT_COUNTERS
    assert {"DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_FB_USED",
            "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_XID_ERRORS"} <= dcgm
    for name in dcgm:
        for sample in families[name]:
            assert DCGM_LABELS <= set(sample.labels), (name, sample.labels)

    devices = {d.device_id: d for d in reply.devices}
    for gpu_id in rig.gpus:
        t = devices[gpu_id]
        g = t.gpu
        by = {"UUID": gpu_id.removeprefix("gpu/")}
        assert value(families["DCGM_FI_DEV_GPU_TEMP"], **by) == t.temp_c
        assert value(families["DCGM_FI_DEV_POWER_USAGE"], **by) == t.power_w
        assert value(families["DCGM_FI_DEV_POWER_MGMT_LIMIT"], **by) == t.power_limit_w
        assert value(families["DCGM_FI_DEV_FB_USED"], **by) == g.mem_used_bytes / MIB
        assert value(families["DCGM_FI_DEV_FB_FREE"], **by) == g.mem_free_bytes / MIB
        assert value(families["DCGM_FI_DEV_GPU_UTIL"], **by) == g.utilization_gpu_pct
        assert value(families["DCGM_FI_DEV_SM_CLOCK"], **by) == g.clock_sm_mhz
        assert value(families["DCGM_FI_DEV_XID_ERRORS"], **by) == (g.last_xid or 0)
        assert value(families["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"], **by) \
            == t.energy_j * 1000
        sample = next(s for s in families["DCGM_FI_DEV_GPU_TEMP"] if s.labels["UUID"] == by["UUID"])
        assert sample.labels["gpu"] == str(g.index)
        assert sample.labels["device"] == f"nvidia{g.index}"
        assert sample.labels["modelName"] == "NVIDIA H100 80GB HBM3"
        assert sample.labels["Hostname"] == socket.gethostname()

    # rigd's own, for every device, in base units.
    for device_id, t in devices.items():
        if t.HasField("power_w"):
            source = "estimated" if t.power_source == pb.POWER_SOURCE_ESTIMATED else "measured"
            assert value(families["rigd_device_power_watts"], device_id=device_id,
                         source=source) == t.power_w
        if t.HasField("hashrate_hs"):
            assert value(families["rigd_device_hashrate_hashes_per_second"],
                         device_id=device_id) == t.hashrate_hs
        if t.HasField("temp_c"):
            assert value(families["rigd_device_temperature_celsius"],
                         device_id=device_id) == t.temp_c
        assert value(families["rigd_device_up"], device_id=device_id) == 1
        assert value(families["rigd_device_health"], device_id=device_id,
                     rigd_device_health="healthy") == 1
    power = reply.rig_power
    assert value(families["rigd_rig_power_watts"], source="measured") == power.measured_w
    assert value(families["rigd_rig_power_watts"], source="estimated") == power.estimated_w

    hashing = devices[rig.gpus[0]].workload
    assert value(families["rigd_device_workload"], device_id=rig.gpus[0], workload="hashing",
                 state="running") == 1
    assert value(families["rigd_shares_accepted"], device_id=rig.gpus[0]) \
        == hashing.shares_accepted
    assert value(families["rigd_device_workload"], device_id=rig.host, workload="inference",
                 profile="builtin") == 1
    for asic_id in rig.asics:
        pools = devices[asic_id].asic.pools
        assert value(families["rigd_shares_accepted"], device_id=asic_id, pool_index="0") \
            == pools[0].accepted

    # Operations as they ended: the start-up restore and the host's switch, with latency.
    assert value(families["rigd_operations"], kind="set_workload", state="succeeded") >= 1
    count = value(families["rigd_operation_duration_seconds"], kind="set_workload",
                  le="+Inf")
    assert count >= 1
    assert value(families["rigd_info"], rig_id="test-rig") == 1
    assert value(families["rigd_ready"]) == 1
    assert value(families["rigd_curtailment_active"]) == 0


def test_metrics_listener_answers_only_metrics(rig: Rig) -> None:
    root = rig.metrics_url.removesuffix("metrics")
    assert "/metrics" in fetch(root)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(root + "nothing", timeout=10)
    assert info.value.code == 404
    # OpenMetrics when the scraper asks for it (as Prometheus does), by prometheus_client.
    request = urllib.request.Request(rig.metrics_url, headers={
        "Accept": "application/openmetrics-text; version=1.0.0"})
    with urllib.request.urlopen(request, timeout=20) as reply:
        assert reply.headers["Content-Type"].startswith("application/openmetrics-text")
        families = {f.name: f for f in openmetrics_families(reply.read().decode())}
    assert families["rigd"].type == "info" and families["rigd_device_health"].type == "stateset"
    assert families["rigd_operations"].type == "counter"


def test_metrics_over_tls_need_the_client_certificate(tmp_path: Path, pki: Path) -> None:
    port = free_port()
    rigd = start_rigd(tmp_path, settings={"metrics": {
        "address": f"127.0.0.1:{port}", "cert_file": str(pki / "server.pem"),
        "key_file": str(pki / "server.key"), "client_ca_file": str(pki / "ca.pem")}})
    try:
        url = f"https://127.0.0.1:{port}/metrics"
        families = scrape(url, "--cacert", str(pki / "ca.pem"), "--cert",
                          str(pki / "ctrl-a.pem"), "--key", str(pki / "ctrl-a.key"))
        assert value(families["rigd_ready"]) == 1
        refused = subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert",
                                  str(pki / "ca.pem"), url], capture_output=True, text=True,
                                 timeout=30)
        assert refused.returncode != 0, "no client certificate, no metrics"
        plain = subprocess.run(["curl", "-sS", "--max-time", "10", f"http://127.0.0.1:{port}/"],
                               capture_output=True, text=True, timeout=30)
        assert plain.returncode != 0 and "rigd" not in plain.stdout
        # A silent client that never completes its handshake does not stall the next scrape.
        with socket.create_connection(("127.0.0.1", port)):
            assert "rigd_ready" in fetch(url, "--cacert", str(pki / "ca.pem"), "--cert",
                                         str(pki / "ctrl-a.pem"), "--key",
                                         str(pki / "ctrl-a.key"))
    finally:
        assert rigd.stop() == 0


def test_a_taken_metrics_port_stops_start_up_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "rigd.toml"
        config.write_text(f'[server]\nunix_socket = "{tmp_path}/r.sock"\n'
                          f'[metrics]\naddress = "127.0.0.1:{port}"\n'
                          '[hal]\nbackends = ["host"]\n')
        result = run_rigd("--config", str(config))
    assert_one_clean_error(result, f"cannot listen on 127.0.0.1:{port} for /metrics")
    assert not (tmp_path / "r.sock").exists()


# ---- diagnostics -----------------------------------------------------------------------------


def test_diag_level_3_passes_every_device_of_a_healthy_rig(rig: Rig) -> None:
    result = rigctl("--socket", rig.rigd.socket_path, "diag", "-r", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = diag_lines(result.stdout)
    totals = {int(m[2]) for m in map(LINE.match, result.stdout.splitlines()) if m}
    assert len(totals) == 1 and len(lines) == totals.pop(), "progress counts every result"
    assert not [line for line in lines if line[0] == "FAIL"], result.stdout
    inventory = rig.rigd.stub().GetInventory(pb.GetInventoryRequest(), timeout=10)
    short = {d.id: line_id(d.id) for d in inventory.devices}
    passed = {(device, test) for res, device, test, _ in lines if res == "PASS"}
    for device_id, name in short.items():
        assert any(d == name for d, _ in passed), f"{device_id} has no PASS"
        assert (name, "telemetry") in passed and (name, "health") in passed
    for gpu in rig.gpus:
        assert (short[gpu], "hashing_kernel") in passed, result.stdout
        assert (short[gpu], "inference") in passed, result.stdout
    for asic in rig.asics:
        assert {(short[asic], t) for t in ("hashrate", "pool", "hashrate_sustained")} <= passed
    assert (short[rig.host], "inference") in passed
    details = {(device, test): detail for _, device, test, detail in lines}
    assert "genesis nonce 2083236893" in details[(short[rig.gpus[0]], "hashing_kernel")]
    assert "384-dim embeddings" in details[(short[rig.host], "inference")]
    assert "builtin runtime pid" in details[(short[rig.gpus[1]], "inference")]
    # The summary, as dcgmi draws it.
    assert "| Diagnostic" in result.stdout and "-----  Long (level 3)" in result.stdout
    assert re.search(r"^0 failed, \d+ warnings, \d+ passed", result.stdout, re.M)
    # Running workloads kept running; the run is in the audit log.
    now = {d.device_id: d for d in readings(rig, max_age_ms=1).devices}
    assert now[rig.gpus[0]].workload.state == pb.WORKLOAD_STATE_RUNNING
    assert now[rig.host].workload.kind == pb.WORKLOAD_KIND_INFERENCE
    audit = [json.loads(line) for line in rig.rigd.audit_path.read_text().splitlines()]
    assert any(entry.get("method") == "RunDiagnostics" for entry in audit)


def line_id(device_id: str) -> str:
    from agent.cli.output import short_id

    return short_id(device_id)


def builtin_children(rig: Rig) -> set[int]:
    """Builtin inference runtimes rigd runs beside the host's workload."""
    workload = readings(rig, max_age_ms=1)
    keep = {d.workload.pid for d in workload.devices if d.workload.HasField("pid")}
    found = set()
    for child in psutil.Process(rig.rigd.proc.pid).children(recursive=True):
        try:
            if "agent.runtime.workloads.inference.builtin" in " ".join(child.cmdline()):
                found.add(child.pid)
        except psutil.Error:
            continue
    return found - keep


def test_one_long_run_at_a_time_and_a_cancelled_run_ends_its_runtimes(rig: Rig) -> None:
    stub = rig.rigd.stub()
    first = stub.RunDiagnostics(pb.RunDiagnosticsRequest(
        level=pb.DIAGNOSTIC_LEVEL_LONG, device_ids=[rig.gpus[1]]), timeout=120)
    assert next(first).tests_total > 0
    deadline = time.monotonic() + 60
    while not builtin_children(rig):  # the run's own builtin runtime has started
        assert time.monotonic() < deadline, "the inference test never started its runtime"
        time.sleep(0.1)
    with pytest.raises(grpc.RpcError) as info:
        next(stub.RunDiagnostics(pb.RunDiagnosticsRequest(level=pb.DIAGNOSTIC_LEVEL_LONG),
                                 timeout=10))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "level-3 run is under way" in (info.value.details() or "")
    first.cancel()
    deadline = time.monotonic() + 30
    while builtin_children(rig):
        assert time.monotonic() < deadline, "a cancelled run left its runtime behind"
        time.sleep(0.1)
    # The lock went with it: a quick run and a new long one are accepted.
    quick = list(stub.RunDiagnostics(pb.RunDiagnosticsRequest(level=pb.DIAGNOSTIC_LEVEL_QUICK),
                                     timeout=30))
    assert quick and all(r.level == pb.DIAGNOSTIC_LEVEL_QUICK for r in quick)
    # The cancelled run is audited with its peer (read before the call was freed: reading it
    # afterwards crashed rigd), once its handler has wound down.
    def cancelled() -> list[dict[str, str]]:
        audit = [json.loads(line) for line in rig.rigd.audit_path.read_text().splitlines()]
        return [e for e in audit
                if e.get("method") == "RunDiagnostics" and e.get("outcome") == "CANCELLED"]

    deadline = time.monotonic() + 60
    while not cancelled():
        assert time.monotonic() < deadline, "the cancelled run was never audited"
        time.sleep(0.1)
    assert cancelled()[-1]["peer"].startswith("unix:"), cancelled()
    assert rig.rigd.proc.poll() is None


@pytest.mark.parametrize(
    ("request_", "code", "fragment"),
    [
        (pb.RunDiagnosticsRequest(device_ids=["gpu/GPU-nope"]), grpc.StatusCode.NOT_FOUND,
         "unknown device id(s): 'gpu/GPU-nope'"),
        (pb.RunDiagnosticsRequest(level=7), grpc.StatusCode.INVALID_ARGUMENT,
         "level must be 1 (quick), 2 (medium) or 3 (long), got 7"),
    ],
)
def test_bad_diagnostics_requests_get_clear_statuses(
        rig: Rig, request_: pb.RunDiagnosticsRequest, code: grpc.StatusCode, fragment: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        list(rig.rigd.stub().RunDiagnostics(request_, timeout=10,
                                            metadata=bearer(OPERATOR_TOKEN)))
    assert info.value.code() == code
    assert fragment in (info.value.details() or "")


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (("diag", "-r", "7"), 2, "invalid level '7': 1 (quick), 2 (medium) or 3 (long)"),
        (("diag", "-d", "nope"), 1, "no device 'nope'"),
    ],
)
def test_bad_diag_command_lines(rig: Rig, args: tuple[str, ...], code: int,
                                fragment: str) -> None:
    result = rigctl("--socket", rig.rigd.socket_path, *args)
    assert result.returncode == code and fragment in result.stderr, result


def test_viewers_cannot_run_diagnostics(rig: Rig) -> None:
    result = rigctl("--address", rig.rigd.tcp_address, "diag")
    assert result.returncode == 1
    assert "not allowed: RunDiagnostics needs role operator" in result.stderr


def test_a_lost_gpu_and_a_hung_miner_fail_with_their_reasons(rig: Rig) -> None:
    lost, hung = rig.gpus[1], rig.asics[0]
    rig.sim.set_lost(1)
    rig.fleet.set_fault(0, Fault.HANG)
    try:
        text = rigctl("--socket", rig.rigd.socket_path, "diag", "-r", "2", "-d", lost,
                      "-d", hung)
        assert text.returncode == 4, text.stdout + text.stderr
        lines = diag_lines(text.stdout)
        failed = {(device, test): detail for res, device, test, detail in lines
                  if res == "FAIL"}
        assert "GPU is lost" in failed[(line_id(lost), "health")]
        assert "no answer on" in failed[(line_id(hung), "telemetry")]
        assert re.search(r"^[1-9]\d* failed", text.stdout, re.M)
        assert f"Fail - {line_id(lost)}: GPU is lost" in text.stdout  # the summary table

        reply = rigctl("--socket", rig.rigd.socket_path, "diag", "-r", "3", "--json",
                       "-d", lost, "-d", hung)
        assert reply.returncode == 4, reply.stdout + reply.stderr
        documents = [json.loads(line) for line in reply.stdout.splitlines()]
        results = [d for d in documents if d["kind"] == "diagnostic"]
        summary = documents[-1]
        assert summary["kind"] == "diagnostics_summary" and summary["failed"] is True
        assert [r["tests_done"] for r in results] == list(range(1, len(results) + 1))
        assert all(r["tests_total"] == len(results) for r in results)
        by = {(r["device_id"], r["test_name"]): r for r in results}
        assert by[(lost, "health")]["result"] == "fail"
        assert by[(hung, "telemetry")]["result"] == "fail"
        for key in ((lost, "hashing_kernel"), (lost, "inference"), (hung, "hashrate_sustained")):
            assert by[key]["result"] == "skip" and "failed" in by[key]["detail"], by[key]
            assert by[key]["level"] == "long"
        assert all(isinstance(r["duration_ms"], int) for r in results)
    finally:
        rig.sim.set_lost(1, False)
        rig.fleet.set_fault(0, Fault.NONE)
