"""rigd killed (SIGKILL) in the middle of things, then restarted: every device ends in a known
state, and no workload process from before is left running, found by scanning processes."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from agent.demo.pool import LocalPool, PoolThread
from rigapi import pb
from tests.agent.test_switch import (
    HASHING,
    INFERENCE,
    Rig,
    alive,
    inference,
    pids_in,
    reading,
    start_rig,
    wait_for_workload,
)


@pytest.fixture
def pool() -> Iterator[PoolThread]:
    pool = LocalPool(difficulty=0.002).start_in_thread()
    yield pool
    pool.stop()


def workload_processes(tmp: Path) -> list[psutil.Process]:
    """Every live process that is one of this test's workloads (by its command line)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if ("agent.runtime.workloads.hashing.worker" in cmdline
                or "agent.runtime.workloads.inference" in cmdline
                or "fake_runtime.py" in cmdline) and (
                str(tmp) in cmdline or _env_mentions(proc, str(tmp))):
            found.append(proc)
    return found


def _env_mentions(proc: psutil.Process, text: str) -> bool:
    try:
        return any(text in value for value in proc.environ().values())
    except psutil.Error:
        return False


def descendants_of(pid: int) -> set[int]:
    try:
        return {p.pid for p in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return set()


def kill_rigd(rig: Rig) -> None:
    rig.rigd.proc.send_signal(signal.SIGKILL)
    rig.rigd.proc.wait(timeout=30)


def journal(rig: Rig) -> dict[str, object]:
    data: dict[str, object] = json.loads((rig.tmp / "state" / "journal.json").read_text())
    return data


@pytest.mark.model  # the real embedding model: the point of the test
def test_killed_mid_switch_restarts_on_the_previous_workload(tmp_path: Path,
                                                             pool: PoolThread) -> None:
    rig = start_rig(tmp_path, pool, count=1, hashing=1)
    gpu = rig.gpus[0]
    try:
        wait_for_workload(rig, gpu, HASHING)
        stub = rig.rigd.stub()
        op = stub.SetWorkload(pb.SetWorkloadRequest(device_ids=[gpu],
                                                    workload=inference("builtin")),
                              timeout=10).operation
        for message in stub.WatchOperation(pb.WatchOperationRequest(
                operation_id=op.operation_id), timeout=120):
            if message.operation.phases[-1].phase == pb.SWITCH_PHASE_READY:
                break  # the runtime is starting (loading its model): kill rigd now
        records = journal(rig)["processes"]
        assert records and op.operation_id in journal(rig)["operations"]  # type: ignore[operator]
        kill_rigd(rig)
        # The parent-death signal ends the runtime; nothing of the old rigd runs on.
        deadline = time.monotonic() + 30
        while workload_processes(tmp_path):
            assert time.monotonic() < deadline, workload_processes(tmp_path)
            time.sleep(0.1)

        rig.rigd = rig.rigd.restart()
        wait_for_workload(rig, gpu, HASHING)  # the previous workload: hashing
        listed = rig.rigd.stub().ListOperations(pb.ListOperationsRequest(), timeout=10)
        interrupted = next(o for o in listed.operations if o.operation_id == op.operation_id)
        assert interrupted.state == pb.OPERATION_STATE_FAILED
        assert "interrupted: rigd stopped during the switch; hashing runs" in interrupted.error
        mine = descendants_of(rig.rigd.proc.pid)
        assert {p.pid for p in workload_processes(tmp_path)} <= mine, "no orphan survives"
    finally:
        rig.rigd.stop()


def test_a_workload_that_outlives_a_killed_rigd_is_ended_at_restart(tmp_path: Path,
                                                                     pool: PoolThread) -> None:
    """A runtime that ignores SIGTERM survives the parent-death signal: the journal knows it
    (pid and start time), and the next rigd ends its whole group before starting anew."""
    rig = start_rig(tmp_path, pool, count=1, hashing=0)
    gpu = rig.gpus[0]
    try:
        stub = rig.rigd.stub()
        deadline = time.monotonic() + 60
        while True:  # the kernel probe (and so the capabilities) come first
            inventory = stub.GetInventory(pb.GetInventoryRequest(), timeout=10)
            if "inference" in next(d for d in inventory.devices if d.id == gpu).capabilities:
                break
            assert time.monotonic() < deadline
            time.sleep(0.1)
        op = stub.SetWorkload(pb.SetWorkloadRequest(device_ids=[gpu],
                                                    workload=inference("stubborn")),
                              timeout=10).operation
        final = list(stub.WatchOperation(pb.WatchOperationRequest(
            operation_id=op.operation_id), timeout=120))[-1].operation
        assert final.state == pb.OPERATION_STATE_SUCCEEDED, final.error
        survivors = pids_in(tmp_path / "stubborn.pids")
        kill_rigd(rig)
        assert all(alive(p) for p in survivors), "they ignore the parent-death SIGTERM"

        rig.rigd = rig.rigd.restart()
        assert not any(alive(p) for p in survivors), "ended before the new rigd serves"
        assert "leftover_process_ended" in rig.rigd.log_path.read_text()
        wait_for_workload(rig, gpu, INFERENCE)  # its desired workload, started afresh
        new = set(pids_in(tmp_path / "stubborn.pids")) - set(survivors)
        assert reading(rig, gpu).workload.pid in new
    finally:
        rig.rigd.stop()
        for pid in pids_in(tmp_path / "stubborn.pids"):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
