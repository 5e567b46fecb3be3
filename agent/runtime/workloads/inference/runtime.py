"""rigd's side of an inference runtime process: start it from its profile, probe its readiness,
put it to sleep and wake it (warm standby), stop its process group."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping

import httpx
import structlog

from agent.config.profiles import RuntimeProfile
from agent.runtime.workloads import WorkloadError
from agent.runtime.workloads.supervisor import ManagedProcess, StopReport, spawn
from rigapi.model import InferenceSpec, WorkloadKind, WorkloadState, WorkloadStatus

log = structlog.get_logger("rigd.inference")

PROBE_INTERVAL_S = 0.05
PROBE_TIMEOUT_S = 2.0


def free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class RuntimeProcess:
    kind = WorkloadKind.INFERENCE

    def __init__(self, device_id: str, spec: InferenceSpec, profile: RuntimeProfile,
                 env: Mapping[str, str]) -> None:
        self.device_id = device_id
        self.spec = spec
        self.profile = profile
        self.model = spec.model or profile.model
        self._env = env
        self.port = profile.port or free_port(profile.host)
        self.process: ManagedProcess | None = None
        self.ready = False
        self.asleep = False

    @property
    def stop_grace_s(self) -> float:
        return self.profile.grace_s

    @property
    def endpoint(self) -> str:
        host = f"[{self.profile.host}]" if ":" in self.profile.host else self.profile.host
        return f"http://{host}:{self.port}"

    def argv(self) -> list[str]:
        return self.profile.command(self.port, self.model)

    async def start(self) -> None:
        env = {**os.environ, **self.profile.env, **self._env, "PYTHONUNBUFFERED": "1"}
        self.process = await spawn(self.argv(), env, self.device_id, "inference", self._on_line)

    def _on_line(self, line: str) -> None:
        log.info("workload_output", device_id=self.device_id, role="inference", line=line[:500])

    async def _probe(self, client: httpx.AsyncClient) -> str:
        """"" when ready, else what the probe saw."""
        try:
            reply = await client.get(self.endpoint + self.profile.ready_path,
                                     timeout=PROBE_TIMEOUT_S)
        except httpx.HTTPError as exc:
            return f"{self.profile.ready_path}: {type(exc).__name__}"
        if reply.status_code != self.profile.ready_status:
            return f"{self.profile.ready_path} answers {reply.status_code}"
        if self.profile.ready_model_listed:
            try:
                listed = [m.get("id") for m in reply.json().get("data", [])]
            except (ValueError, AttributeError):
                return f"{self.profile.ready_path}: not the JSON model list"
            if self.model not in listed:
                return f"{self.profile.ready_path} does not list {self.model!r} yet"
        return ""

    async def wait_ready(self, timeout_s: float | None = None) -> None:
        """Until the readiness rule holds; WorkloadError if the runtime exits or times out."""
        timeout_s = self.profile.ready_timeout_s if timeout_s is None else timeout_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        seen = "not probed"
        async with httpx.AsyncClient(trust_env=False) as client:
            while True:
                if self.process is None or not self.process.running:
                    code = self.process.proc.returncode if self.process else None
                    raise WorkloadError(f"runtime exited (code {code}) before it was ready; "
                                        f"last probe: {seen}")
                seen = await self._probe(client)
                if not seen:
                    self.ready = True
                    return
                if loop.time() >= deadline:
                    raise WorkloadError(f"runtime not ready after {timeout_s:g} s: {seen}")
                await asyncio.sleep(PROBE_INTERVAL_S)

    async def _post(self, path: str) -> None:
        async with httpx.AsyncClient(trust_env=False) as client:
            try:
                reply = await client.post(self.endpoint + path, timeout=60.0)
            except httpx.HTTPError as exc:
                raise WorkloadError(f"POST {path}: {exc}") from exc
        if reply.status_code >= 300:
            raise WorkloadError(f"POST {path} answered {reply.status_code}")

    async def sleep(self) -> None:
        """Release device memory, stay loaded (the profile's sleep mode)."""
        await self._post(self.profile.sleep_path)
        self.asleep, self.ready = True, False

    async def wake(self) -> None:
        await self._post(self.profile.wake_path)
        self.asleep = False

    async def drain(self) -> str:
        """Requests in flight get the profile's drain time (rigd no longer advertises the
        endpoint from the moment the switch begins)."""
        self.ready = False
        if self.profile.drain_s:
            await asyncio.sleep(self.profile.drain_s)
            return f"waited {self.profile.drain_s:g} s for requests in flight"
        return "no drain time configured"

    async def stop(self) -> StopReport | None:
        self.ready = False
        if self.process is None:
            return None
        return await self.process.stop(self.profile.stop_signum, self.profile.grace_s)

    def status(self) -> WorkloadStatus:
        running = self.process is not None and self.process.running
        if not running:
            state, detail = WorkloadState.STOPPED, "runtime exited"
        elif self.asleep:
            state, detail = WorkloadState.STANDBY, "asleep (warm standby)"
        elif self.ready:
            state, detail = WorkloadState.RUNNING, ""
        else:
            state, detail = WorkloadState.STARTING, "waiting for the readiness probe"
        return WorkloadStatus(
            kind=WorkloadKind.INFERENCE, state=state, detail=detail,
            endpoint=self.endpoint if state == WorkloadState.RUNNING else "",
            profile=self.spec.profile,
            pid=self.process.pid if self.process else None,
        )
