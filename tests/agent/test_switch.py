"""SetWorkload through a real rigd on real processes: simulated GPUs whose hashing runs on the
PoCL device, the builtin runtime with real weights, runtimes that misbehave, bad requests."""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest

from agent.demo.pool import LocalPool, PoolThread
from agent.demo.rig import _best_opencl_device
from hal.sim.nvml import SimControl, demo_setup
from rigapi import pb
from tests.agent.conftest import RigdProcess, start_rigd

FAKE = Path(__file__).with_name("runtimes") / "fake_runtime.py"
INFERENCE = pb.WORKLOAD_KIND_INFERENCE
HASHING = pb.WORKLOAD_KIND_HASHING


@dataclass
class Rig:
    rigd: RigdProcess
    pool: PoolThread
    sim: SimControl
    gpus: list[str]
    tmp: Path


def rig_config(tmp: Path, gpus: list[str], options: dict[str, str], hashing: list[str]) -> str:
    facet = _best_opencl_device()
    assert facet is not None, "the tests need an OpenCL device (PoCL)"
    facets = ", ".join(f'"{g}" = "{facet}"' for g in gpus)
    nvml = "\n".join(f'{key} = "{value}"' for key, value in options.items())
    entries = "".join(f'[[hashing]]\ndevice = "{g}"\nintensity = 0.2\n' for g in hashing)
    fake = f'"{sys.executable}", "{FAKE}", "--port", "{{port}}"'
    return f"""compute_facets = {{ {facets} }}
[hal.nvml]
{nvml}
watch_xid = false
[inference.profiles.neverready]
argv = [{fake}, "--never-ready"]
devices = ["gpu", "host"]
ready_timeout_s = 3.0
grace_s = 2.0
[inference.profiles.stubborn]
argv = [{fake}, "--ignore-term"]
devices = ["gpu", "host"]
grace_s = 1.0
env = {{ FAKE_RUNTIME_PIDS = "{tmp}/stubborn.pids" }}
[inference.profiles.orphan]
argv = [{fake}, "--orphan-holds", "2.0"]
devices = ["gpu"]
grace_s = 2.0
env = {{ FAKE_RUNTIME_PIDS = "{tmp}/orphan.pids" }}
[inference.profiles.longorphan]
argv = [{fake}, "--orphan-holds", "60.0"]
devices = ["gpu"]
grace_s = 2.0
env = {{ FAKE_RUNTIME_PIDS = "{tmp}/longorphan.pids" }}
[inference.profiles.ghost]
argv = ["/nonexistent/bin/runtime", "--port", "{{port}}"]
devices = ["gpu"]
{entries}"""


def start_rig(tmp: Path, pool: PoolThread, count: int, hashing: int,
              verify_timeout_s: float = 4.0) -> Rig:
    options = demo_setup(tmp / "nvml", count=count)
    sim = SimControl(Path(options["sim_state_path"]), Path(options["library_path"]))
    gpus = [f"gpu/{g.uuid}" for g in sim.read().gpus]
    # The configuration's first line (compute_facets) lands in [hal], which ends the file.
    extra = rig_config(tmp, gpus, options, gpus[:hashing])
    rigd = start_rigd(tmp, extra, backends=("host", "nvml", "opencl"), settings={
        "telemetry": {"interval_s": 0.5},
        "pool": {"urls": [f"stratum+tcp://127.0.0.1:{pool.port}"], "user": "switch.test"},
        "workloads": {"state_dir": f"{tmp}/state", "min_dwell_s": 0.0,
                      "verify_timeout_s": verify_timeout_s, "hashing_ready_timeout_s": 60.0},
    })
    return Rig(rigd, pool, sim, gpus, tmp)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    pool = LocalPool(difficulty=0.002).start_in_thread()
    tmp = tmp_path_factory.mktemp("switch")
    rig = start_rig(tmp, pool, count=3, hashing=2)
    for gpu in rig.gpus[:2]:
        wait_for_workload(rig, gpu, HASHING)
    yield rig
    assert rig.rigd.stop() == 0
    pool.stop()
    for name in ("orphan.pids", "longorphan.pids", "stubborn.pids"):
        for pid in pids_in(tmp / name):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


# ---- helpers ---------------------------------------------------------------------------------


def reading(rig: Rig, device_id: str) -> pb.DeviceTelemetry:
    return rig.rigd.stub().GetTelemetry(
        pb.GetTelemetryRequest(device_ids=[device_id], max_age_ms=1), timeout=10).devices[0]


def wait_for_workload(rig: Rig, device_id: str, kind: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        workload = reading(rig, device_id).workload
        if workload.kind == kind and workload.state == pb.WORKLOAD_STATE_RUNNING:
            return
        assert time.monotonic() < deadline, f"{device_id}: {workload}"
        time.sleep(0.2)


def switch(rig: Rig, device_ids: list[str], workload: pb.Workload, request_id: str = ""
           ) -> tuple[pb.Operation, list[pb.Operation]]:
    """Start a switch and watch it to the end: (the final operation, every snapshot)."""
    stub = rig.rigd.stub()
    op = stub.SetWorkload(pb.SetWorkloadRequest(device_ids=device_ids, workload=workload,
                                                request_id=request_id), timeout=10).operation
    snapshots = [m.operation for m in stub.WatchOperation(
        pb.WatchOperationRequest(operation_id=op.operation_id), timeout=300)]
    return snapshots[-1], snapshots


def inference(profile: str) -> pb.Workload:
    return pb.Workload(kind=INFERENCE, inference=pb.InferenceSpec(profile=profile))


def hashing() -> pb.Workload:
    return pb.Workload(kind=HASHING)  # an empty spec: the configured pool


def phases(op: pb.Operation, device_id: str) -> list[str]:
    return [pb.SwitchPhase.Name(p.phase).removeprefix("SWITCH_PHASE_")
            for p in op.phases if p.device_id == device_id]


def detail(op: pb.Operation, device_id: str, phase: int) -> str:
    return next(p.detail for p in op.phases if p.device_id == device_id and p.phase == phase)


def pids_in(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def gpu_pids(rig: Rig, device_id: str) -> set[int]:
    return {p.pid for p in reading(rig, device_id).gpu.processes}


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def accepted(pool: PoolThread) -> int:
    worker = pool.stats().workers.get("switch.test")
    return worker.accepted if worker else 0


# ---- the switch itself -----------------------------------------------------------------------


@pytest.mark.model  # the real embedding model: the point of the test
def test_hashing_to_builtin_inference_and_back(rig: Rig) -> None:
    gpu = rig.gpus[0]
    hashing_pids = gpu_pids(rig, gpu)
    assert hashing_pids, "the hashing worker holds (simulated) GPU memory, as a context would"

    op, _ = switch(rig, [gpu], inference("builtin"))
    assert op.state == pb.OPERATION_STATE_SUCCEEDED, op.error
    assert phases(op, gpu) == ["REQUESTED", "DRAINING", "STOPPING", "VERIFYING", "CONFIGURING",
                               "STARTING", "READY"]
    assert "NVML" in detail(op, gpu, pb.SWITCH_PHASE_VERIFYING)
    status = reading(rig, gpu).workload
    assert status.kind == INFERENCE and status.state == pb.WORKLOAD_STATE_RUNNING
    assert status.profile == "builtin" and status.endpoint.startswith("http://127.0.0.1:")
    runtime_pids = gpu_pids(rig, gpu)
    assert status.pid in runtime_pids and not runtime_pids & hashing_pids, \
        "NVML shows the runtime's memory and none of the hashing worker's"
    models = httpx.get(status.endpoint + "/v1/models", timeout=30).json()
    assert [m["id"] for m in models["data"]] == ["all-MiniLM-L6-v2"]
    reply = httpx.post(status.endpoint + "/v1/embeddings", timeout=60, json={
        "input": ["The cat sits on the mat.", "A kitten is resting on a rug.",
                  "Quarterly revenue grew by five percent."]}).json()
    cat, kitten, revenue = (d["embedding"] for d in reply["data"])
    assert len(cat) == 384
    assert cosine(cat, kitten) > cosine(cat, revenue) + 0.3

    before = accepted(rig.pool)
    op, _ = switch(rig, [gpu], hashing())
    assert op.state == pb.OPERATION_STATE_SUCCEEDED, op.error
    assert "warm standby" in detail(op, gpu, pb.SWITCH_PHASE_STOPPING)
    status = reading(rig, gpu).workload
    assert status.kind == HASHING and status.pool_url.endswith(f":{rig.pool.port}")
    deadline = time.monotonic() + 120
    while accepted(rig.pool) <= before:
        assert time.monotonic() < deadline, "no share accepted after the switch back"
        time.sleep(0.2)


@pytest.mark.model  # the real embedding model: the point of the test
def test_warm_standby_is_woken_instead_of_started(rig: Rig) -> None:
    gpu = rig.gpus[0]
    # A runtime left in warm standby: by the test before this one, else made here.
    for workload in (inference("builtin"), hashing()):
        op, _ = switch(rig, [gpu], workload)
        assert op.state == pb.OPERATION_STATE_SUCCEEDED, op.error
    op, _ = switch(rig, [gpu], inference("builtin"))
    assert op.state == pb.OPERATION_STATE_SUCCEEDED, op.error
    assert detail(op, gpu, pb.SWITCH_PHASE_STARTING).startswith("woke warm standby pid")
    op, _ = switch(rig, [gpu], hashing())
    assert op.state == pb.OPERATION_STATE_SUCCEEDED, op.error


def test_a_runtime_that_never_gets_ready_rolls_back_to_hashing(rig: Rig) -> None:
    gpu = rig.gpus[1]
    op, _ = switch(rig, [gpu], inference("neverready"))
    assert op.state == pb.OPERATION_STATE_ROLLED_BACK
    assert "not ready after 3 s" in op.error and "/health answers 503" in op.error
    assert phases(op, gpu)[-1] == "ROLLED_BACK"
    outcome = next(o for o in op.outcomes if o.device_id == gpu)
    assert outcome.state == pb.OPERATION_STATE_ROLLED_BACK
    wait_for_workload(rig, gpu, HASHING)


def test_a_runtime_that_ignores_sigterm_is_killed_with_its_group(rig: Rig) -> None:
    gpu = rig.gpus[1]
    op, _ = switch(rig, [gpu], inference("stubborn"))
    assert op.state == pb.OPERATION_STATE_SUCCEEDED, op.error
    started = pids_in(rig.tmp / "stubborn.pids")
    assert len(started) == 2 and all(alive(p) for p in started)  # the server and its child
    op, _ = switch(rig, [gpu], hashing())
    assert op.state == pb.OPERATION_STATE_SUCCEEDED, op.error
    assert "SIGTERM, then SIGKILL to the group" in detail(op, gpu, pb.SWITCH_PHASE_STOPPING)
    assert not any(alive(p) for p in started), "the child went with its parent"


def test_verifying_waits_for_an_orphan_that_holds_gpu_memory(rig: Rig) -> None:
    gpu = rig.gpus[2]
    op, _ = switch(rig, [gpu], inference("orphan"))
    assert op.state == pb.OPERATION_STATE_SUCCEEDED, op.error
    orphan = pids_in(rig.tmp / "orphan.pids")[-1]
    assert orphan in gpu_pids(rig, gpu)
    op, snapshots = switch(rig, [gpu], pb.Workload(kind=pb.WORKLOAD_KIND_IDLE))
    assert op.state == pb.OPERATION_STATE_SUCCEEDED, op.error
    waited = [detail(s, gpu, pb.SWITCH_PHASE_VERIFYING) for s in snapshots
              if "VERIFYING" in phases(s, gpu)]
    assert any(f"pid {orphan} holds 2048 MiB" in d for d in waited), waited
    assert not gpu_pids(rig, gpu) and not alive(orphan)


def test_an_orphan_past_the_verify_timeout_rolls_back(rig: Rig) -> None:
    gpu = rig.gpus[2]
    op, _ = switch(rig, [gpu], inference("longorphan"))
    assert op.state == pb.OPERATION_STATE_SUCCEEDED, op.error
    orphan = pids_in(rig.tmp / "longorphan.pids")[-1]
    op, _ = switch(rig, [gpu], hashing())
    assert op.state == pb.OPERATION_STATE_ROLLED_BACK
    assert f"GPU memory still held after 4 s: pid {orphan} holds 2048 MiB" in op.error
    wait_for_workload(rig, gpu, INFERENCE)  # the runtime rolled back to (with a new orphan)
    for pid in pids_in(rig.tmp / "longorphan.pids"):
        if alive(pid) and pid in gpu_pids(rig, gpu) and pid != reading(rig, gpu).workload.pid:
            os.kill(pid, signal.SIGKILL)  # what an operator does once VERIFYING names it
    op, _ = switch(rig, [gpu], pb.Workload(kind=pb.WORKLOAD_KIND_IDLE))
    assert op.state == pb.OPERATION_STATE_SUCCEEDED, op.error


def test_several_devices_in_one_request_each_report_their_outcome(rig: Rig) -> None:
    gpus = rig.gpus[:2]
    op, _ = switch(rig, gpus, pb.Workload(kind=pb.WORKLOAD_KIND_IDLE), request_id="idle-both")
    assert op.state == pb.OPERATION_STATE_SUCCEEDED, op.error
    assert {o.device_id: o.state for o in op.outcomes} == dict.fromkeys(
        gpus, pb.OPERATION_STATE_SUCCEEDED)
    assert all(reading(rig, g).workload.kind in (0, pb.WORKLOAD_KIND_IDLE) for g in gpus)
    # A retry with the same request_id and body is the same operation, not a second switch.
    again = rig.rigd.stub().SetWorkload(pb.SetWorkloadRequest(
        device_ids=gpus, workload=pb.Workload(kind=pb.WORKLOAD_KIND_IDLE),
        request_id="idle-both"), timeout=10).operation
    assert again.operation_id == op.operation_id
    # ... and with another body (one of the two devices) it is refused, changing nothing.
    got, text = refusal(rig, gpus[1:], pb.Workload(kind=pb.WORKLOAD_KIND_IDLE), "idle-both")
    assert (got, "was used for another request" in text) == (grpc.StatusCode.ALREADY_EXISTS,
                                                            True), text
    op, _ = switch(rig, gpus, hashing())
    assert op.state == pb.OPERATION_STATE_SUCCEEDED, op.error
    listed = rig.rigd.stub().ListOperations(pb.ListOperationsRequest(limit=2), timeout=10)
    assert listed.operations[0].operation_id == op.operation_id


# ---- refusals --------------------------------------------------------------------------------


def refusal(rig: Rig, device_ids: list[str], workload: pb.Workload, request_id: str = ""
            ) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        rig.rigd.stub().SetWorkload(pb.SetWorkloadRequest(
            device_ids=device_ids, workload=workload, request_id=request_id), timeout=10)
    return info.value.code(), info.value.details() or ""


def test_bad_requests_are_refused_and_change_nothing(rig: Rig) -> None:
    gpu, host = rig.gpus[1], next(d.id for d in rig.rigd.stub().GetInventory(
        pb.GetInventoryRequest(), timeout=10).devices if d.id.startswith("host/"))
    before = reading(rig, gpu).workload
    ops_before = len(rig.rigd.stub().ListOperations(pb.ListOperationsRequest(limit=1000),
                                                    timeout=10).operations)
    cases = [
        ([gpu], inference("nosuch"), "", grpc.StatusCode.FAILED_PRECONDITION,
         "unknown inference profile 'nosuch'"),
        ([gpu], inference("ghost"), "", grpc.StatusCode.FAILED_PRECONDITION,
         "program '/nonexistent/bin/runtime' not found"),
        ([host], hashing(), "", grpc.StatusCode.FAILED_PRECONDITION,
         "has no OpenCL compute facet"),
        ([gpu], pb.Workload(kind=HASHING, hashing=pb.HashingSpec(
            pool_urls=["http://127.0.0.1:1"])), "", grpc.StatusCode.INVALID_ARGUMENT,
         "stratum+tcp://"),
        ([gpu], pb.Workload(kind=HASHING, hashing=pb.HashingSpec(intensity=1.5)), "",
         grpc.StatusCode.INVALID_ARGUMENT, "intensity must be in (0, 1]"),
        ([gpu], pb.Workload(), "", grpc.StatusCode.INVALID_ARGUMENT, "workload.kind"),
        ([gpu, gpu], hashing(), "", grpc.StatusCode.INVALID_ARGUMENT, "named twice"),
        (["gpu/none"], hashing(), "", grpc.StatusCode.NOT_FOUND, "unknown device"),
    ]
    for device_ids, workload, request_id, code, fragment in cases:
        got, text = refusal(rig, device_ids, workload, request_id)
        assert (got, fragment in text) == (code, True), (fragment, got, text)
    assert reading(rig, gpu).workload.kind == before.kind
    assert reading(rig, gpu).workload.pid == before.pid, "the worker was not touched"
    assert len(rig.rigd.stub().ListOperations(pb.ListOperationsRequest(limit=1000),
                                              timeout=10).operations) == ops_before


def test_a_device_already_switching_refuses_a_second_switch(rig: Rig) -> None:
    gpu = rig.gpus[0]
    stub = rig.rigd.stub()
    first = stub.SetWorkload(pb.SetWorkloadRequest(device_ids=[gpu],
                                                   workload=inference("neverready")),
                             timeout=10).operation
    code, text = refusal(rig, [gpu], hashing())
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert f"operation {first.operation_id}" in text
    final = list(stub.WatchOperation(pb.WatchOperationRequest(operation_id=first.operation_id),
                                     timeout=120))[-1].operation
    assert final.state == pb.OPERATION_STATE_ROLLED_BACK
    wait_for_workload(rig, gpu, HASHING)


def test_dwell_time_refuses_a_switch_too_soon(tmp_path: Path) -> None:
    pool = LocalPool(difficulty=0.002).start_in_thread()
    try:
        facet = _best_opencl_device()
        rigd = start_rigd(tmp_path, backends=("host", "opencl"), settings={
            "pool": {"urls": [f"stratum+tcp://127.0.0.1:{pool.port}"]},
            "telemetry": {"interval_s": 3600.0},  # no sampling tick during the test
            "workloads": {"state_dir": f"{tmp_path}/state", "min_dwell_s": 300.0}})
        try:
            stub = rigd.stub()
            deadline = time.monotonic() + 60
            while True:  # the kernel probe runs first
                try:
                    op = stub.SetWorkload(pb.SetWorkloadRequest(
                        device_ids=[facet], workload=hashing()), timeout=10).operation
                    break
                except grpc.RpcError as exc:
                    assert "has not finished yet" in (exc.details() or ""), exc
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
            final = list(stub.WatchOperation(pb.WatchOperationRequest(
                operation_id=op.operation_id), timeout=120))[-1].operation
            assert final.state == pb.OPERATION_STATE_SUCCEEDED, final.error
            # The reading served right after the switch (at the default freshness, with the
            # sampler's next tick an hour away) shows the new workload, not the one before.
            workload = stub.GetTelemetry(pb.GetTelemetryRequest(device_ids=[facet]),
                                         timeout=10).devices[0].workload
            assert workload.kind == HASHING and workload.state == pb.WORKLOAD_STATE_RUNNING
            with pytest.raises(grpc.RpcError) as info:
                stub.SetWorkload(pb.SetWorkloadRequest(
                    device_ids=[facet], workload=pb.Workload(kind=pb.WORKLOAD_KIND_IDLE)),
                    timeout=10)
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "min_dwell_s" in (info.value.details() or "")
        finally:
            rigd.stop()
    finally:
        pool.stop()


def test_shutdown_gives_a_runtime_its_whole_stop_grace(tmp_path: Path) -> None:
    """SIGTERM to rigd while a runtime serves: the runtime takes longer to finish its requests
    than rigd's own drain and grace, and gets its profile's grace, not the shutdown watchdog."""
    done = tmp_path / "runtime.done"
    extra = f"""[inference.profiles.slowstop]
argv = ["{sys.executable}", "{FAKE}", "--port", "{{port}}", "--term-takes", "4",
        "--done-file", "{done}"]
devices = ["host"]
grace_s = 20.0
"""
    rigd = start_rigd(tmp_path, extra, settings={
        "server": {"drain_s": 0.2, "shutdown_grace_s": 0.5},  # the watchdog's own part: 2.7 s
        "workloads": {"state_dir": f"{tmp_path}/state", "min_dwell_s": 0.0}})
    try:
        stub = rigd.stub()
        host = next(d.id for d in stub.GetInventory(pb.GetInventoryRequest(), timeout=10).devices
                    if d.kind == pb.DEVICE_KIND_HOST)
        op = stub.SetWorkload(pb.SetWorkloadRequest(device_ids=[host],
                                                    workload=inference("slowstop")),
                              timeout=10).operation
        final = list(stub.WatchOperation(pb.WatchOperationRequest(
            operation_id=op.operation_id), timeout=120))[-1].operation
        assert final.state == pb.OPERATION_STATE_SUCCEEDED, final.error
        rigd.proc.send_signal(signal.SIGTERM)
        assert rigd.proc.wait(timeout=60) == 0
    finally:
        rigd.stop()
    log = rigd.log_path.read_text()
    assert '"event": "shutdown_overran"' not in log
    assert done.exists() and done.read_text() == "finished", \
        "the runtime finished its requests and exited on its own, within its grace"
