"""Workload programs as supervised child processes, each in its own process group.

A workload's memory on a device is free only once every process that held it has ended, so a
stop ends the whole group: the stop signal to the group, the grace period, then SIGKILL to the
group. Processes that left the group (setsid) are tracked as descendants while the workload runs
and ended with it. Each process is recorded as pid plus start time (/proc/<pid>/stat), so a
restarted rigd can find what it started before a crash, and a reused pid is never mistaken for
one of ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import structlog

log = structlog.get_logger("rigd.supervisor")

MAX_LINE_BYTES = 64 * 1024
KILL_WAIT_S = 5.0  # after SIGKILL, how long a group may take to vanish


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    """One process rigd started (or one of its descendants), as the journal keeps it."""

    device_id: str
    role: str  # "hashing", "inference", "standby"
    pid: int
    start_ticks: int  # /proc/<pid>/stat field 22: with the pid, names the process uniquely
    program: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> ProcessRecord:
        return ProcessRecord(str(data["device_id"]), str(data["role"]), int(data["pid"]),
                             int(data["start_ticks"]), str(data["program"]))


def start_ticks(pid: int) -> int | None:
    """When the process started, in clock ticks since boot; None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def is_alive(pid: int, ticks: int) -> bool:
    return start_ticks(pid) == ticks


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in a process group."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


async def _until(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll a kernel fact (process gone, group empty) until it holds or the time is up."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True


@dataclass(slots=True)
class StopReport:
    signal: str
    killed: bool = False  # SIGKILL was needed
    survivors: list[int] = field(default_factory=list)  # still alive after SIGKILL (D state?)

    def __str__(self) -> str:
        how = f"{self.signal}" + (", then SIGKILL to the group" if self.killed else "")
        if self.survivors:
            how += f"; still alive: {self.survivors}"
        return how


class ManagedProcess:
    """A started workload program: its stdout lines go to `on_line`, stderr to the log."""

    def __init__(self, proc: asyncio.subprocess.Process, record: ProcessRecord,
                 on_line: Callable[[str], None]) -> None:
        self.proc = proc
        self.record = record
        self.pgid = proc.pid  # the launcher starts a new session: its pid is the group id
        self.descendants: dict[int, int] = {}  # pid -> start ticks, seen while running
        self._on_line = on_line
        self._readers = [
            asyncio.create_task(self._read(proc.stdout, on_line), name=f"{record.role}-stdout"),
            asyncio.create_task(self._read(proc.stderr, self._log_line),
                                name=f"{record.role}-stderr"),
        ]

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    def _log_line(self, line: str) -> None:
        """The program's stderr in rigd's log: a structured line keeps its level and fields
        (bounded), anything else is one `workload_output` event."""
        where = {"device_id": self.record.device_id, "role": self.record.role, "pid": self.pid}
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if not isinstance(event, dict) or not isinstance(event.get("event"), str):
            log.info("workload_output", **where, line=line[:500])
            return
        level = str(event.pop("level", "info"))
        event.pop("timestamp", None)
        name = f"{self.record.role}.{str(event.pop('event'))[:80]}"
        fields = {str(k)[:40]: str(v)[:300] for k, v in list(event.items())[:20]
                  if str(k) not in where}
        emit = getattr(log, level if level in ("debug", "info", "warning", "error") else "info")
        emit(name, **where, **fields)

    async def _read(self, stream: asyncio.StreamReader | None, sink: Callable[[str], None]
                    ) -> None:
        if stream is None:
            return
        while True:
            try:
                raw = await stream.readline()
            except (ValueError, asyncio.LimitOverrunError):  # a line past the limit
                raw = await stream.read(MAX_LINE_BYTES)
            if not raw:
                return
            sink(raw.decode("utf-8", "replace").rstrip("\n"))

    def send(self, line: str) -> None:
        """One line to the program's stdin (the hashing worker's commands)."""
        if self.proc.stdin is not None and self.running:
            with contextlib.suppress(ConnectionError, RuntimeError):
                self.proc.stdin.write(line.encode() + b"\n")

    def note_descendants(self) -> None:
        """Remember every descendant now, so one that leaves the group still ends with us."""
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.pid).children(recursive=True):
                ticks = start_ticks(child.pid)
                if ticks is not None:
                    self.descendants[child.pid] = ticks

    def records(self) -> list[ProcessRecord]:
        """The leader and every descendant seen, for the journal."""
        extra = [ProcessRecord(self.record.device_id, self.record.role, pid, ticks, "descendant")
                 for pid, ticks in self.descendants.items()]
        return [self.record, *extra]

    def _outside_group(self) -> list[int]:
        return [pid for pid, ticks in self.descendants.items()
                if is_alive(pid, ticks) and pid not in group_members(self.pgid)]

    def _signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, signum)
        for pid in self._outside_group():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)

    def _all_gone(self) -> bool:
        return (self.proc.returncode is not None and not group_members(self.pgid)
                and not self._outside_group())

    async def stop(self, stop_signal: int = signal.SIGTERM, grace_s: float = 10.0) -> StopReport:
        """End the group: `stop_signal`, up to `grace_s` for every member to exit, then SIGKILL."""
        self.note_descendants()
        report = StopReport(signal.Signals(stop_signal).name)
        self._signal(stop_signal)
        if not await _until(self._all_gone, grace_s):
            report.killed = True
            self._signal(signal.SIGKILL)
            if not await _until(self._all_gone, KILL_WAIT_S):
                report.survivors = group_members(self.pgid) + self._outside_group()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.proc.wait(), KILL_WAIT_S)
        for reader in self._readers:
            reader.cancel()
        log.info("workload_process_ended", device_id=self.record.device_id,
                 role=self.record.role, pid=self.pid, how=str(report),
                 returncode=self.proc.returncode)
        return report


async def spawn(argv: Sequence[str], env: Mapping[str, str], device_id: str, role: str,
                on_line: Callable[[str], None]) -> ManagedProcess:
    """Start `argv` (a list, never a shell string) through the launcher, in a new session."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.runtime.workloads.launch", str(os.getpid()), "--", *argv,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, start_new_session=True, env=dict(env),
        limit=MAX_LINE_BYTES,
    )
    ticks = start_ticks(proc.pid) or 0
    record = ProcessRecord(device_id, role, proc.pid, ticks, Path(argv[0]).name)
    log.info("workload_process_started", device_id=device_id, role=role, pid=proc.pid,
             program=record.program)
    return ManagedProcess(proc, record, on_line)


def end_leftovers(records: Sequence[ProcessRecord], grace_s: float = 5.0) -> list[str]:
    """At start-up: end what an earlier rigd started and did not stop (it crashed). Only
    processes whose pid and start time both match are touched. Returns what was ended."""
    found = [r for r in records if is_alive(r.pid, r.start_ticks)]
    alive = list(found)
    for signum, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, KILL_WAIT_S)):
        if not alive:
            break
        for record in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if record.program != "descendant":
                    os.killpg(record.pid, signum)  # a leader: its whole group
                os.kill(record.pid, signum)
        deadline = time.monotonic() + wait_s
        while alive and time.monotonic() < deadline:
            time.sleep(0.02)
            alive = [r for r in alive if is_alive(r.pid, r.start_ticks)]
    return [f"{r.role} pid {r.pid} ({r.device_id})" for r in found
            if not is_alive(r.pid, r.start_ticks)]
