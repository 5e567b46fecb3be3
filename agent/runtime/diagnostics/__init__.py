"""RunDiagnostics: named tests at three levels, like `dcgmi diag -r 1/2/3`.

Level 1 (quick) checks the rig's configuration and software (rig.py); level 2 (medium) reads every
device afresh and judges the reading (checks.py); level 3 (long) makes each device do real work in
a child process (load.py). A level runs the levels below it first.

The whole plan is made before the first test, so each result carries its progress (done of
total); results stream as tests end. Load tests never push a workload aside: a device keeps
what it runs. They are skipped on a device that failed level 2, that an operation is changing,
whose GPU memory has no room for them, or while a curtailment is in force (they would add the
load it sheds); a running hashing worker keeps hashing beside the 65 536-nonce kernel test, a
serving runtime is asked one request at its own endpoint. One level-3 run at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

import structlog

from agent.config.settings import Config
from agent.core.pool_url import parse_pool_url
from agent.runtime.curtail import Curtailer
from agent.runtime.diagnostics import checks, load, rig
from agent.runtime.diagnostics.checks import MIB, Facts, Result, Verdict
from agent.runtime.operations import Operations
from agent.runtime.sampler import Sampler
from agent.runtime.workloads.manager import WorkloadManager
from hal.device import Capability, Device, DeviceKind
from hal.errors import InvalidArgument
from hal.registry import BackendStatus
from rigapi.model import DiagnosticOutcome, Reading, WorkloadKind, WorkloadState

log = structlog.get_logger("rigd.diagnostics")

QUICK, MEDIUM, LONG = 1, 2, 3
LEVEL_NAMES = {QUICK: "quick", MEDIUM: "medium", LONG: "long"}
POOL_CONNECT_TIMEOUT_S = 3.0
KERNEL_NEEDS_BYTES = 256 * MIB  # an OpenCL context and the kernel's buffers
BUILTIN_NEEDS_BYTES = 1536 * MIB  # the builtin runtime's weights, activations and context
INFERENCE_AT_ONCE = 2  # builtin runtimes loading at the same time (CPU and host memory)


class DiagnosticsBusy(Exception):
    """A level-3 run is already under way."""


class Diagnostics:
    """The tests of one rigd; `run` streams one run's outcomes."""

    def __init__(self, config: Config, devices: Mapping[str, Device],
                 backends: Sequence[BackendStatus], sampler: Sampler, manager: WorkloadManager,
                 curtailer: Curtailer, operations: Operations) -> None:
        self.config = config
        self.devices = dict(devices)
        self.backends = list(backends)
        self.sampler = sampler
        self.manager = manager
        self.curtailer = curtailer
        self.operations = operations
        self.wall_minus_monotonic_s = time.time() - time.monotonic()  # to see clock steps
        self.long_run = ""  # who runs level 3 now, and since when

    async def run(self, level: int, device_ids: Sequence[str], who: str
                  ) -> AsyncIterator[DiagnosticOutcome]:
        """Every planned test's outcome, as each ends. DiagnosticsBusy (before any outcome)
        if a level-3 run is under way and this is one too."""
        if level >= LONG:
            if self.long_run:
                raise DiagnosticsBusy(f"a level-3 run is under way ({self.long_run}); "
                                      f"wait for it to end")
            self.long_run = f"started by {who} at {time.strftime('%H:%M:%S')}"
        try:
            scope = [self.devices[d] for d in dict.fromkeys(device_ids)] if device_ids \
                else list(self.devices.values())
            run = _Run(self, level, scope)
            log.info("diagnostics_started", level=level, devices=len(scope), tests=run.total,
                     by=who)
            async for outcome in run.outcomes():
                yield outcome
            log.info("diagnostics_ended", level=level, **run.counts())
        finally:
            if level >= LONG:
                self.long_run = ""


class _Run:
    """One run: its plan, the tests, and the queue the outcomes leave by."""

    def __init__(self, diag: Diagnostics, level: int, devices: list[Device]) -> None:
        self.d = diag
        self.level = level
        self.devices = devices
        self.queue: asyncio.Queue[DiagnosticOutcome] = asyncio.Queue()
        self.pending: dict[tuple[str, str], int] = {}  # (device, test) -> level, in plan order
        self.results: list[Result] = []
        self.readings: dict[str, Reading] = {}  # level 2's fresh reading of each device
        self.failed: dict[str, str] = {}  # device -> the first level-2 test it failed
        self._plan()
        self.total = len(self.pending)

    # -- the plan --------------------------------------------------------------------------

    def _add(self, device_id: str, test: str, level: int) -> None:
        self.pending[(device_id, test)] = level

    def _pool_urls(self) -> list[str]:
        config = self.d.config
        return list(dict.fromkeys([*config.pool_urls,
                                   *(u for entry in config.hashing for u in entry.pools)]))

    def _plan(self) -> None:
        for test in ("config", "certificates", "state_dir", "audit_log", "clock", "curtailment"):
            self._add("", test, QUICK)
        for status in self.d.backends:
            self._add("", f"backend.{status.name}", QUICK)
        for name in self.d.manager.profiles:
            self._add("", f"profile.{name}", QUICK)
        for url in self._pool_urls():
            self._add("", f"pool.{url.removeprefix('stratum+tcp://')}", QUICK)
        for device in self.devices:
            if self.d.manager.facet(device.id) is not None:
                self._add(device.id, "hashing_probe", QUICK)
        if self.level >= MEDIUM:
            for device in self.devices:
                for test in checks.level2_tests(device.kind):
                    self._add(device.id, test, MEDIUM)
        if self.level >= LONG:
            for device in self.devices:
                for test in self._load_tests(device):
                    self._add(device.id, test, LONG)

    def _load_tests(self, device: Device) -> list[str]:
        if device.kind == DeviceKind.ASIC:
            return ["hashrate_sustained"]
        caps = self.d.manager.capabilities(device)
        return [test for test, cap in (("hashing_kernel", Capability.HASHING),
                                       ("inference", Capability.INFERENCE)) if cap in caps]

    # -- running -----------------------------------------------------------------------------

    def emit(self, device_id: str, test: str, verdict: Verdict, duration_s: float) -> None:
        level = self.pending.pop((device_id, test))
        self.results.append(verdict[0])
        self.queue.put_nowait(DiagnosticOutcome(device_id, test, level, verdict[0], verdict[1],
                                      duration_s, len(self.results), self.total))

    async def timed(self, device_id: str, test: str, body: Callable[[], Awaitable[Verdict]]
                    ) -> Verdict:
        started = time.monotonic()
        try:
            verdict = await body()
        except Exception as exc:  # a bug in a test must not end the run: say it, go on
            log.exception("diagnostic_crashed", device_id=device_id, test=test)
            verdict = Result.FAIL, f"internal error: {exc!r}"
        self.emit(device_id, test, verdict, time.monotonic() - started)
        return verdict

    async def outcomes(self) -> AsyncIterator[DiagnosticOutcome]:
        task = asyncio.create_task(self._all(), name="diagnostics")
        try:
            for _ in range(self.total):
                yield await self.queue.get()
        finally:
            task.cancel()  # the caller left: every test ends, child processes with them
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _all(self) -> None:
        try:
            await self._level1()
            if self.level >= MEDIUM:
                await asyncio.gather(*(self._level2(d) for d in self.devices))
            if self.level >= LONG:
                await self._level3()
        finally:
            for device_id, test in list(self.pending):  # never a silent gap in the stream
                self.emit(device_id, test, (Result.FAIL, "internal error: the test never "
                                                         "reported"), 0.0)

    def counts(self) -> dict[str, int]:
        return {str(r): self.results.count(r) for r in Result}

    # -- level 1 -----------------------------------------------------------------------------

    async def _level1(self) -> None:
        d, config = self.d, self.d.config

        def now(verdict: Verdict) -> Callable[[], Awaitable[Verdict]]:
            async def value() -> Verdict:
                return verdict
            return value

        def threaded(fn: Callable[..., Verdict], *args: object
                     ) -> Callable[[], Awaitable[Verdict]]:
            return lambda: asyncio.to_thread(fn, *args)

        urls = self._pool_urls()
        reached = asyncio.ensure_future(_reach_all(urls))

        async def pool_verdict(url: str) -> Verdict:
            return rig.pool(await asyncio.shield(reached), url)

        jobs: list[tuple[str, str, Callable[[], Awaitable[Verdict]]]] = [
            ("", "config", threaded(rig.configuration, config)),
            ("", "certificates", threaded(rig.certificates, config)),
            ("", "state_dir", threaded(rig.state_dir, config.state_path)),
            ("", "audit_log", threaded(rig.audit_log, config.audit_path)),
            ("", "clock", now(rig.clock(d.wall_minus_monotonic_s))),
            ("", "curtailment", now(rig.curtailment(d.curtailer.current))),
        ]
        jobs += [("", f"backend.{s.name}", now(rig.backend(s))) for s in d.backends]
        wanted: dict[str, set[str]] = {}
        for device_id in d.devices:
            spec = d.manager.current_spec(device_id)
            if spec.inference is not None:
                wanted.setdefault(spec.inference.profile, set()).add(device_id)
        jobs += [("", f"profile.{name}",
                  threaded(rig.profile, name, profile, wanted.get(name, ())))
                 for name, profile in d.manager.profiles.items()]
        jobs += [("", f"pool.{url.removeprefix('stratum+tcp://')}",
                  functools.partial(pool_verdict, url)) for url in urls]
        for device in self.devices:
            facet = d.manager.facet(device.id)
            if facet is not None:
                jobs.append((device.id, "hashing_probe",
                             now(rig.hashing_probe(d.manager.kernel, facet.id))))
        try:
            await asyncio.gather(*(self.timed(dev, test, job) for dev, test, job in jobs))
        finally:
            reached.cancel()

    # -- level 2 -----------------------------------------------------------------------------

    def facts(self, device_id: str) -> Facts:
        manager, curtailer = self.d.manager, self.d.curtailer
        current = curtailer.current
        curtailed = curtailer.power.held.get(device_id, "")
        if not curtailed and current is not None and device_id in current.stopped():
            curtailed = current.operation_id
        pids: set[int] = set()
        for workload in (manager.running.get(device_id), manager.standby.get(device_id)):
            process = workload.process if workload is not None else None
            if process is not None:
                pids |= {process.pid, *process.descendants}
        return Facts(manager.current_spec(device_id), curtailed, frozenset(pids))

    async def _level2(self, device: Device) -> None:
        started = time.monotonic()
        reading = (await self.d.sampler.latest([device.id], max_age_s=0.0))[device.id]
        took = time.monotonic() - started
        self.readings[device.id] = reading
        tests = checks.level2_tests(device.kind)
        verdicts: list[tuple[str, Verdict, float]] = [
            ("telemetry", checks.telemetry(reading, took, self.d.sampler.device_timeout_s),
             took),
            ("health", checks.health(reading), 0.0),
        ]
        answered = verdicts[0][1][0] != Result.FAIL
        facts = self.facts(device.id)
        for test in tests[2:]:
            verdict = (checks.CHECKS[test](device.kind, reading, facts) if answered
                       else (Result.SKIP, "no reading (telemetry failed)"))
            verdicts.append((test, verdict, 0.0))
        for test, verdict, duration in verdicts:
            if verdict[0] == Result.FAIL:
                self.failed.setdefault(device.id, test)
            self.emit(device.id, test, verdict, duration)

    # -- level 3 -----------------------------------------------------------------------------

    def gate(self, device: Device, needs_bytes: int, adds_load: bool = True) -> str:
        """Why a load test must not run on the device now; "" when it may."""
        failed = self.failed.get(device.id)
        if failed:
            return f"not run: the device failed {failed!r} at level 2"
        op = self.d.operations.running_for(device.id)
        if op is not None:
            return f"not run: operation {op.operation_id} ({op.kind}) is changing the device"
        current = self.d.curtailer.current
        if adds_load and current is not None:
            return (f"not run: curtailment {current.operation_id} is in force; the test would "
                    f"add the load it sheds")
        reading = self.readings.get(device.id)
        gpu = reading.telemetry.gpu if reading is not None else None
        if needs_bytes and gpu is not None and gpu.mem_free_bytes is not None \
                and gpu.mem_free_bytes < needs_bytes:
            return (f"not run: {gpu.mem_free_bytes // MIB} MiB free on the device, the test "
                    f"needs {needs_bytes // MIB} MiB (its workload keeps them)")
        return ""

    async def _level3(self) -> None:
        planned = {(dev, test) for dev, test in self.pending}
        kernel: dict[str, list[Device]] = {}  # facet id -> the devices it computes for
        lanes: list[Awaitable[None]] = []
        inference = asyncio.Semaphore(INFERENCE_AT_ONCE)
        for device in self.devices:
            if (device.id, "hashing_kernel") in planned:
                reason = self.gate(device, KERNEL_NEEDS_BYTES)
                if reason:
                    self.emit(device.id, "hashing_kernel", (Result.SKIP, reason), 0.0)
                else:
                    facet = self.d.manager.facet(device.id)
                    assert facet is not None
                    kernel.setdefault(facet.id, []).append(device)
            if (device.id, "inference") in planned:
                lanes.append(self._inference(device, inference))
            if (device.id, "hashrate_sustained") in planned:
                lanes.append(self._sustained(device))
        lanes += [self._kernel(devices) for devices in kernel.values()]
        await asyncio.gather(*lanes)

    async def _kernel(self, devices: list[Device]) -> None:
        """One kernel test per OpenCL device, reported for each device it computes for."""
        facet = self.d.manager.facet(devices[0].id)
        assert facet is not None
        first, *others = devices
        verdict = await self.timed(first.id, "hashing_kernel", lambda: load.hashing_kernel(facet))
        for device in others:
            self.emit(device.id, "hashing_kernel",
                      (verdict[0], f"{verdict[1]} (one run for every device it computes for)"),
                      0.0)

    async def _inference(self, device: Device, at_once: asyncio.Semaphore) -> None:
        manager = self.d.manager
        status = manager.status(device.id)
        if status is not None and status.kind == WorkloadKind.INFERENCE \
                and status.state == WorkloadState.RUNNING and status.endpoint:
            reason = self.gate(device, 0, adds_load=False)
            if reason:
                self.emit(device.id, "inference", (Result.SKIP, reason), 0.0)
                return
            spec = manager.current_spec(device.id).inference
            profile = manager.profiles.get(status.profile)
            model = (spec.model if spec is not None else "") or (profile.model if profile
                                                                 else "")
            await self.timed(device.id, "inference",
                             lambda: load.embeddings(status.endpoint, model))
            return
        reason = self.gate(device, BUILTIN_NEEDS_BYTES)
        if not reason:
            missing = manager.inference_unavailable(device.id, "builtin")
            reason = missing and f"not run: the test starts the builtin runtime, and {missing}"
        if reason:
            self.emit(device.id, "inference", (Result.SKIP, reason), 0.0)
            return
        async with at_once:
            # The environment a workload of this device gets (its GPU, or its simulator).
            env = {**manager._env(device.id)}
            await self.timed(device.id, "inference", lambda: load.builtin_runtime(
                device.id, manager.profiles["builtin"], env))

    async def _sustained(self, device: Device) -> None:
        reason = self.gate(device, 0, adds_load=False)
        if reason:
            self.emit(device.id, "hashrate_sustained", (Result.SKIP, reason), 0.0)
            return

        async def read() -> Reading:
            return (await self.d.sampler.latest([device.id], max_age_s=0.0))[device.id]

        await self.timed(device.id, "hashrate_sustained", lambda: load.sustained_hashrate(read))


async def _reach(url: str) -> str:
    """"" if a TCP connection to the pool opens, else why not."""
    try:
        address = parse_pool_url(url)
        _, writer = await asyncio.wait_for(asyncio.open_connection(address.host, address.port),
                                           POOL_CONNECT_TIMEOUT_S)
    except InvalidArgument as exc:
        return str(exc)
    except TimeoutError:
        return f"no answer within {POOL_CONNECT_TIMEOUT_S:g} s"
    except OSError as exc:
        return f"cannot connect: {exc.strerror or exc}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return ""


async def _reach_all(urls: list[str]) -> dict[str, str]:
    return dict(zip(urls, await asyncio.gather(*(_reach(u) for u in urls)), strict=True))


__all__ = ["LEVEL_NAMES", "DiagnosticOutcome", "Diagnostics", "DiagnosticsBusy", "Result"]
