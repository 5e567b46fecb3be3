"""rigd's side of a hashing worker process: start it, read its status, set its intensity,
drain and stop it."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Mapping

import structlog

from agent.runtime.workloads import WorkloadError
from agent.runtime.workloads.hashing.worker import PASSWORD_ENV
from agent.runtime.workloads.supervisor import ManagedProcess, StopReport, spawn
from rigapi.model import HashingSpec, WorkloadKind, WorkloadState, WorkloadStatus

log = structlog.get_logger("rigd.hashing")

DRAIN_WAIT_S = 5.0  # one launch (~0.25 s) plus the pool goodbye, with room to spare
STOP_GRACE_S = 5.0


class HashingProcess:
    kind = WorkloadKind.HASHING

    def __init__(self, device_id: str, facet_id: str, spec: HashingSpec,
                 env: Mapping[str, str]) -> None:
        self.device_id = device_id
        self.facet_id = facet_id
        self.spec = spec
        self._env = env
        self.process: ManagedProcess | None = None
        self._last: dict[str, object] = {}
        self._changed = asyncio.Event()

    @property
    def stop_grace_s(self) -> float:
        return STOP_GRACE_S

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "agent.runtime.workloads.hashing.worker",
                "--device", self.facet_id,
                "--user", self.spec.user, "--intensity", repr(self.spec.intensity),
                "--version-rolling", self.spec.version_rolling]
        for url in self.spec.pool_urls:
            argv += ["--pool", url]
        return argv

    async def start(self) -> None:
        env = {**os.environ, **self._env, PASSWORD_ENV: self.spec.password,
               "PYTHONUNBUFFERED": "1"}
        self.process = await spawn(self.argv(), env, self.device_id, "hashing", self._on_line)

    def _on_line(self, line: str) -> None:
        try:
            status = json.loads(line)
        except ValueError:
            log.info("workload_output", device_id=self.device_id, role="hashing", line=line[:500])
            return
        if isinstance(status, dict):
            self._last = status
            self._changed.set()

    async def wait_ready(self, timeout_s: float) -> None:
        """Until the worker mines (kernel built, pool authorized); WorkloadError if it fails,
        exits or takes longer than timeout_s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            state = self._last.get("state")
            if state == "running":
                return
            if state == "failed":
                raise WorkloadError(f"hashing worker failed: {self._last.get('error')}")
            if self.process is None or not self.process.running:
                raise WorkloadError("hashing worker exited before it was ready"
                                    + (f": {self._last.get('error')}" if self._last else ""))
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise WorkloadError(f"hashing worker not mining after {timeout_s:g} s "
                                    f"({self._last.get('detail') or 'no status'})")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))
            except TimeoutError:
                pass

    def set_intensity(self, intensity: float) -> None:
        if self.process is not None:
            self.process.send(json.dumps({"intensity": intensity}))
            self.spec = HashingSpec(self.spec.pool_urls, self.spec.user, self.spec.password,
                                    intensity, self.spec.version_rolling)

    async def drain(self) -> str:
        """Stop taking jobs and exit on its own (the kernel finishes its launch)."""
        if self.process is None or not self.process.running:
            return "not running"
        self.process.send(json.dumps({"drain": True}))
        try:
            await asyncio.wait_for(self.process.proc.wait(), DRAIN_WAIT_S)
        except TimeoutError:
            return f"still running after {DRAIN_WAIT_S:g} s"
        return "worker finished its launch and left the pool"

    async def stop(self) -> StopReport | None:
        if self.process is None:
            return None
        return await self.process.stop(grace_s=STOP_GRACE_S)

    def status(self) -> WorkloadStatus:
        last = self._last
        running = self.process is not None and self.process.running
        state = {"running": WorkloadState.RUNNING, "starting": WorkloadState.STARTING,
                 "failed": WorkloadState.FAILED}.get(str(last.get("state")), WorkloadState.STARTING)
        detail = str(last.get("error") or last.get("detail") or "")
        if not running and state != WorkloadState.FAILED:
            state, detail = WorkloadState.STOPPED, detail or "worker exited"

        def number(key: str) -> float | None:
            value = last.get(key)
            return float(value) if isinstance(value, (int, float)) else None

        accepted, rejected = number("shares_accepted"), number("shares_rejected")
        return WorkloadStatus(
            kind=WorkloadKind.HASHING, state=state, detail=detail,
            hashrate_hs=number("hashrate_hs"),
            shares_accepted=int(accepted) if accepted is not None else None,
            shares_rejected=int(rejected) if rejected is not None else None,
            pool_url=str(last.get("pool_url") or ""),
            intensity=self.spec.intensity,
            pid=self.process.pid if self.process else None,
        )
