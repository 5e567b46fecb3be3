"""What each device runs, what it may run, and what it should run after a restart.

The manager owns the workload processes (a hashing worker or an inference runtime per device),
the inference runtimes kept asleep as warm standby, and the desired workload of every device,
which it journals. It offers the switcher its primitives (drain, stop, verify, start, commit)
and supervises: a workload that dies on its own is started again, with backoff. At start it
ends whatever an earlier rigd left running and brings every device back to its desired workload.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Protocol

import structlog

from agent.config.profiles import RuntimeProfile, resolve
from agent.config.settings import Config
from agent.runtime.changes import DeviceChanges
from agent.runtime.journal import Journal
from agent.runtime.workloads import WorkloadError
from agent.runtime.workloads.hashing.handle import HashingProcess
from agent.runtime.workloads.hashing.probe import probe
from agent.runtime.workloads.inference.runtime import RuntimeProcess
from agent.runtime.workloads.supervisor import (
    ManagedProcess,
    ProcessRecord,
    StopReport,
    end_leftovers,
)
from hal.device import Capability, Device, DeviceKind, Health, HealthState
from rigapi.model import (
    IDLE,
    HashingSpec,
    Reading,
    WorkloadKind,
    WorkloadSpec,
    WorkloadState,
    WorkloadStatus,
)

log = structlog.get_logger("rigd.workloads")

SUPERVISE_INTERVAL_S = 1.0
RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 15.0, 60.0)
VERIFY_POLL_S = 0.1


class Workload(Protocol):
    kind: WorkloadKind
    process: ManagedProcess | None

    @property
    def stop_grace_s(self) -> float: ...

    async def start(self) -> None: ...

    async def drain(self) -> str: ...

    async def stop(self) -> StopReport | None: ...

    def status(self) -> WorkloadStatus: ...


class WorkloadManager:
    def __init__(self, devices: Mapping[str, Device], config: Config, journal: Journal,
                 changes: DeviceChanges) -> None:
        """`changes` is told of every device whose workload changes, so that readings taken
        before the change are not served after it."""
        self.devices = dict(devices)
        self.changes = changes
        self.config = config
        self.journal = journal
        self.profiles: dict[str, RuntimeProfile] = resolve(config.inference_profiles)
        self.running: dict[str, HashingProcess | RuntimeProcess] = {}
        self.standby: dict[str, RuntimeProcess] = {}
        self.desired: dict[str, WorkloadSpec] = {}
        self.since: dict[str, float] = {}  # monotonic time the device's workload became ready
        self.unhealthy: dict[str, str] = {}  # a switch whose rollback failed leaves its reason
        self.kernel: dict[str, str] = {}  # compute facet id -> "" (kernel runs) or why not
        self.probes_done = asyncio.Event()
        self.busy: set[str] = set()  # devices an operation is changing: not supervised
        self._restarts: dict[str, tuple[int, float]] = {}  # device -> (failures, next try)
        self._task: asyncio.Task[None] | None = None

    # -- what a device can do -------------------------------------------------------------

    def facet(self, device_id: str) -> Device | None:
        device = self.devices[device_id]
        if device.kind not in (DeviceKind.GPU, DeviceKind.OPENCL):
            return None
        return device.compute_facet

    def hashing_unavailable(self, device_id: str) -> str:
        """Why the device cannot run the hashing worker; "" when it can."""
        facet = self.facet(device_id)
        if facet is None:
            return f"{device_id} has no OpenCL compute facet to run the hashing kernel on"
        reason = self.kernel.get(facet.id)
        if reason is None:
            return f"the kernel probe on {facet.id} has not finished yet"
        return reason and f"the hashing kernel does not run on {facet.id}: {reason}"

    def inference_unavailable(self, device_id: str, profile_name: str) -> str:
        """Why the profile cannot run on the device; "" when it can."""
        profile = self.profiles.get(profile_name)
        if profile is None:
            return (f"unknown inference profile {profile_name[:80]!r}; "
                    f"configured: {', '.join(self.profiles)}")
        kind = {DeviceKind.GPU: "gpu", DeviceKind.HOST: "host"}.get(self.devices[device_id].kind)
        if kind not in profile.devices:
            return f"profile {profile_name} does not run on {self.devices[device_id].kind} devices"
        reason = profile.unavailable_reason()
        return reason and f"profile {profile_name}: {reason}"

    def capabilities(self, device: Device) -> frozenset[Capability]:
        """The HAL's capabilities, with hashing and inference only where they really run."""
        caps = set(device.capabilities)
        if device.kind != DeviceKind.ASIC:  # a miner hashes by itself
            caps.discard(Capability.HASHING)
            caps.discard(Capability.INFERENCE)
            if not self.hashing_unavailable(device.id):
                caps.add(Capability.HASHING)
            if any(not self.inference_unavailable(device.id, name) for name in self.profiles):
                caps.add(Capability.INFERENCE)
        return frozenset(caps)

    async def run_probes(self) -> None:
        facets = {f.id: f for d in self.devices
                  if (f := self.facet(d)) is not None}
        results = await asyncio.gather(
            *(probe(f, self.config.state_path) for f in facets.values()))
        self.kernel.update(zip(facets, results, strict=True))
        self.probes_done.set()

    # -- specs ------------------------------------------------------------------------------

    def configured_hashing(self, device_id: str) -> HashingSpec:
        """The configured pool: the device's [[hashing]] entry, else [pool]."""
        config = self.config
        entry = next((h for h in config.hashing if h.device == device_id), None)
        pools = (entry.pools if entry and entry.pools else config.pool_urls)
        return HashingSpec(
            pool_urls=tuple(pools),
            user=(entry.user if entry and entry.user else config.pool_user),
            password=config.pool_password,
            intensity=entry.intensity if entry else 1.0,
            version_rolling=config.pool_version_rolling,
        )

    def seeds(self) -> dict[str, WorkloadSpec]:
        """The [[hashing]] entries as desired workloads (first start only)."""
        seeds: dict[str, WorkloadSpec] = {}
        for entry in self.config.hashing:
            device_id = entry.device if entry.device != "auto" else self._best_hashing_device()
            if device_id is None or device_id not in self.devices:
                log.error("hashing_seed_skipped", device=entry.device,
                          reason="no such device" if device_id else "no hashing-capable device")
                continue
            spec = self.configured_hashing(entry.device)
            seeds[device_id] = WorkloadSpec(WorkloadKind.HASHING, hashing=spec)
        return seeds

    def _best_hashing_device(self) -> str | None:
        from agent.runtime.workloads.hashing.kernel import mining_rank

        capable = [d for d in self.devices if not self.hashing_unavailable(d)]
        if not capable:
            return None
        return min(capable,
                   key=lambda d: mining_rank(self.facet(d).cl_device))  # type: ignore[union-attr]

    # -- status -----------------------------------------------------------------------------

    def status(self, device_id: str) -> WorkloadStatus | None:
        workload = self.running.get(device_id)
        if workload is not None:
            return workload.status()
        restarting = self._restarts.get(device_id)
        if restarting is not None and self.desired.get(device_id, IDLE).kind != WorkloadKind.IDLE:
            wait = max(0.0, restarting[1] - time.monotonic())
            return WorkloadStatus(self.desired[device_id].kind, WorkloadState.FAILED,
                                  detail=f"exited; restart in {wait:.0f} s")
        return None

    def set_intensity(self, device_id: str, intensity: float) -> None:
        """The hashing workload's share of device time, now (its desired spec unchanged)."""
        workload = self.running.get(device_id)
        if not isinstance(workload, HashingProcess):
            raise WorkloadError(f"{device_id}: no hashing workload runs there")
        workload.set_intensity(intensity)
        self.changes.mark(device_id)

    def health(self, device_id: str, latest: Health) -> Health:
        """The device's health as its latest reading says (success or not), or unhealthy when
        a failed switch left it running nothing it should (until supervision brings its
        workload back)."""
        reason = self.unhealthy.get(device_id)
        return Health(HealthState.UNHEALTHY, reason) if reason else latest

    def annotate(self, reading: Reading) -> Reading:
        """The device's workload in its reading (and its hashrate, where the device itself
        reports none); a device a failed switch left behind is unhealthy."""
        device_id = reading.device_id
        telemetry = reading.telemetry
        reason = self.unhealthy.get(device_id)
        if reason:
            telemetry = dataclasses.replace(telemetry,
                                            health=Health(HealthState.UNHEALTHY, reason))
        status = self.status(device_id)
        if status is not None and telemetry.hashrate_hs is None \
                and status.hashrate_hs is not None:
            telemetry = dataclasses.replace(telemetry, hashrate_hs=status.hashrate_hs)
        if telemetry is reading.telemetry and status is None:
            return reading
        return dataclasses.replace(reading, telemetry=telemetry, workload=status)

    def current_spec(self, device_id: str) -> WorkloadSpec:
        return self.desired.get(device_id, IDLE)

    def _env(self, device_id: str) -> dict[str, str]:
        """Where the workload runs: the GPU for CUDA, and on a simulated GPU the simulator."""
        return self.devices[device_id].workload_env()

    # -- the switcher's primitives ----------------------------------------------------------

    async def drain(self, device_id: str) -> str:
        workload = self.running.get(device_id)
        if workload is None:
            return "nothing running"
        return await workload.drain()

    async def stop(self, device_id: str) -> str:
        """End the device's workload; a runtime whose profile keeps a warm standby is put to
        sleep instead (its device memory released) and kept."""
        workload = self.running.pop(device_id, None)
        self.since.pop(device_id, None)
        if workload is None:
            return "nothing running"
        self.changes.mark(device_id)
        if (isinstance(workload, RuntimeProcess) and workload.profile.warm_standby
                and workload.process is not None and workload.process.running):
            try:
                await workload.sleep()
            except WorkloadError as exc:
                log.warning("standby_sleep_failed", device_id=device_id, error=str(exc))
            else:
                await self._drop_standby(device_id)
                self.standby[device_id] = workload
                self._journal_processes()
                return f"runtime asleep, kept as warm standby (pid {workload.process.pid})"
        report = await workload.stop()
        self._journal_processes()
        if report is not None and report.survivors:
            raise WorkloadError(f"processes survived SIGKILL: {report.survivors}")
        return f"process group ended ({report})" if report else "nothing running"

    async def _drop_standby(self, device_id: str) -> None:
        standby = self.standby.pop(device_id, None)
        if standby is not None:
            await standby.stop()

    def allowed_pids(self, device_id: str) -> set[int]:
        """Processes that may stay on the device after a stop: its sleeping standby."""
        standby = self.standby.get(device_id)
        if standby is None or standby.process is None:
            return set()
        return {standby.process.pid, *standby.process.descendants}

    async def verify_released(self, device_id: str, timeout_s: float,
                              waiting: Callable[[str], None] | None = None) -> str:
        """Until the device shows no process holding memory (other than its standby), as the
        device itself reports it (NVML for GPUs); `waiting` hears what it waits for.
        WorkloadError on timeout."""
        device = self.devices[device_id]
        if device.kind != DeviceKind.GPU:
            return f"process group ended; {device.kind} devices report no memory per process"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        allowed = self.allowed_pids(device_id)
        while True:
            reading = await asyncio.to_thread(device.telemetry)
            gpu = reading.gpu
            if gpu is None:
                raise WorkloadError(f"cannot read the GPU's processes: {reading.health.reason}")
            held = [p for p in gpu.processes if p.pid not in allowed]
            if not held:
                used = f"; {gpu.mem_used_bytes >> 20} MiB used" if gpu.mem_used_bytes else ""
                return f"no process holds GPU memory (NVML){used}"
            pids = ", ".join(f"pid {p.pid} holds {(p.used_mem_bytes or 0) >> 20} MiB"
                             for p in held)
            if loop.time() >= deadline:
                raise WorkloadError(f"GPU memory still held after {timeout_s:g} s: {pids}")
            if waiting is not None:
                waiting(f"waiting: {pids}")
            await asyncio.sleep(VERIFY_POLL_S)

    async def start(self, device_id: str, spec: WorkloadSpec) -> tuple[str, Workload | None]:
        """Start the spec's workload (waking a warm standby of the same profile)."""
        if spec.kind == WorkloadKind.IDLE:
            return "idle: nothing to start", None
        if spec.hashing is not None:
            facet = self.facet(device_id)
            assert facet is not None
            workload: HashingProcess | RuntimeProcess = HashingProcess(
                device_id, facet.id, spec.hashing, self._env(device_id))
            await workload.start()
            self.running[device_id] = workload
            self._journal_processes()
            self.changes.mark(device_id)
            return f"hashing worker pid {workload.process.pid if workload.process else '?'}", \
                workload
        assert spec.inference is not None
        standby = self.standby.get(device_id)
        if standby is not None and standby.spec == spec.inference and standby.process \
                and standby.process.running:
            del self.standby[device_id]
            self.running[device_id] = standby
            await standby.wake()
            self.changes.mark(device_id)
            return f"woke warm standby pid {standby.process.pid}", standby
        await self._drop_standby(device_id)
        profile = self.profiles[spec.inference.profile]
        runtime = RuntimeProcess(device_id, spec.inference, profile, self._env(device_id))
        self.running[device_id] = runtime
        await runtime.start()
        self._journal_processes()
        self.changes.mark(device_id)
        pid = runtime.process.pid if runtime.process else "?"
        return f"{spec.inference.profile} runtime pid {pid} on {runtime.endpoint}", runtime

    async def wait_ready(self, device_id: str, spec: WorkloadSpec) -> str:
        workload = self.running.get(device_id)
        if spec.kind == WorkloadKind.IDLE:
            return "idle"
        if isinstance(workload, HashingProcess):
            await workload.wait_ready(self.config.hashing_ready_timeout_s)
            return "mining: kernel built, pool authorized"
        if isinstance(workload, RuntimeProcess):
            await workload.wait_ready()
            return f"{workload.profile.ready_path} ready; serving on {workload.endpoint}"
        raise WorkloadError("the workload vanished while starting")

    def commit(self, device_id: str, spec: WorkloadSpec) -> None:
        """The device now runs `spec`: it is what a restart brings back."""
        self.desired[device_id] = spec
        self.since[device_id] = time.monotonic()
        self.unhealthy.pop(device_id, None)
        self._restarts.pop(device_id, None)
        self.journal.update(desired={d: s.to_json() for d, s in self.desired.items()})
        self.changes.mark(device_id)

    def dwell_left_s(self, device_id: str) -> float:
        since = self.since.get(device_id)
        if since is None:
            return 0.0
        return max(0.0, self.config.min_dwell_s - (time.monotonic() - since))

    # -- journal ----------------------------------------------------------------------------

    def _journal_processes(self) -> None:
        records: list[ProcessRecord] = []
        for workload in [*self.running.values(), *self.standby.values()]:
            if workload.process is not None:
                records += workload.process.records()
        self.journal.update(processes=[r.to_json() for r in records])

    # -- lifecycle --------------------------------------------------------------------------

    def recover(self) -> list[dict[str, object]]:
        """Blocking, at start: end leftovers of a crashed rigd, load the desired workloads.
        Returns the operations that were in flight (each ends as interrupted)."""
        doc = self.journal.load()
        records = [ProcessRecord.from_json(r) for r in doc.get("processes", [])]
        for ended in end_leftovers(records):
            log.warning("leftover_process_ended", process=ended)
        if "desired" in doc:
            self.desired = {d: WorkloadSpec.from_json(s) for d, s in doc["desired"].items()
                            if d in self.devices}
        interrupted = list(doc.get("operations", {}).values())
        self.journal.update(processes=[], operations={})
        return interrupted

    async def supervise(self) -> None:
        """Note descendants (they end with their workload) and restart what died on its own."""
        while True:
            await asyncio.sleep(SUPERVISE_INTERVAL_S)
            changed = False
            for device_id, workload in list(self.running.items()):
                process = workload.process
                if process is None:
                    continue
                before = len(process.descendants)
                process.note_descendants()
                changed |= len(process.descendants) != before
                if not process.running and device_id not in self.busy:
                    await self._died(device_id, workload)
                    changed = True
            for device_id, (failures, next_try) in list(self._restarts.items()):
                if device_id in self.busy or time.monotonic() < next_try:
                    continue
                await self._restart(device_id, failures)
            if changed:
                self._journal_processes()

    def schedule_restart(self, device_id: str) -> float:
        """Start the desired workload again later, waiting longer after each failure."""
        failures = self._restarts.get(device_id, (0, 0.0))[0] + 1
        wait = RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S)) - 1]
        self._restarts[device_id] = (failures, time.monotonic() + wait)
        return wait

    async def _died(self, device_id: str, workload: Workload) -> None:
        self.running.pop(device_id, None)
        self.changes.mark(device_id)
        status = workload.status()
        code = workload.process.proc.returncode if workload.process else None
        wait = self.schedule_restart(device_id)
        log.error("workload_died", device_id=device_id, kind=str(workload.kind), code=code,
                  detail=status.detail, restart_in_s=wait)
        with contextlib.suppress(WorkloadError):
            await workload.stop()  # whatever it left in its group

    async def _restart(self, device_id: str, failures: int) -> None:
        spec = self.desired.get(device_id, IDLE)
        if spec.kind == WorkloadKind.IDLE:
            self._restarts.pop(device_id, None)
            return
        try:
            await self.start(device_id, spec)
            await self.wait_ready(device_id, spec)
        except WorkloadError as exc:
            with contextlib.suppress(WorkloadError):
                await self.stop(device_id)
            wait = self.schedule_restart(device_id)
            log.error("workload_restart_failed", device_id=device_id, error=str(exc),
                      retry_in_s=wait)
            return
        self.commit(device_id, spec)
        log.info("workload_restarted", device_id=device_id, kind=str(spec.kind),
                 after_failures=failures)

    def start_supervising(self) -> None:
        self._task = asyncio.create_task(self.supervise(), name="workload-supervisor")

    def stop_grace_s(self) -> float:
        """The longest the workloads there are now may take to stop (they stop all at once).
        Called from the signal thread: a snapshot, no lock."""
        workloads = [*self.running.values(), *self.standby.values()]
        return max((w.stop_grace_s for w in workloads), default=0.0)

    async def shutdown(self) -> None:
        """Stop every workload and standby, all at once, each within its own grace."""
        if self._task is not None:
            self._task.cancel()
        workloads = [*self.running.values(), *self.standby.values()]
        self.running.clear()
        self.standby.clear()
        await asyncio.gather(*(w.stop() for w in workloads), return_exceptions=True)
        self.journal.update(processes=[])
