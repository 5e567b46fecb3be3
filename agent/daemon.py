"""rigd: discover the rig's devices and serve rig.v1.RigAgent on a Unix socket and, optionally, TCP.

Everything runs on one asyncio event loop (grpc.aio); blocking HAL calls run in thread pools.
Shutdown on the first SIGTERM or SIGINT, however busy the process is: health turns NOT_SERVING so
load balancers and controllers stop sending, the listeners stay open for `drain_s`, streams and
health watches end, in-flight calls get `shutdown_grace_s`, then workloads stop and devices close.
A watchdog ends the process if all that overruns drain + grace + the longest stop grace of the
workloads running then + 2 s (a hung driver call cannot hold it). Start-up errors are one line
on stderr and exit code 2.
"""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import shutil
import signal
import socket
import stat
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from agent import __version__
from agent.config.settings import (
    Config,
    parse_address,
)
from agent.core.power import PowerModel
from agent.edges.auth import AuditLog, Authenticator
from agent.edges.gate import Gate, StreamBudget
from agent.edges.health import SERVING, HealthService
from agent.edges.metrics import MetricsError, MetricsListener, OperationTally
from agent.edges.openadr import OpenleadrMissing, Ven, load_openleadr
from agent.edges.service import RigAgentService, rpc_handler
from agent.edges.unixfront import MAX_SOCKET_PATH_BYTES, UnixFront
from agent.runtime.changes import DeviceChanges
from agent.runtime.curtail import Curtailer, WorkingDraw
from agent.runtime.diagnostics import Diagnostics
from agent.runtime.journal import Journal
from agent.runtime.leases import LeaseManager
from agent.runtime.operations import Operations
from agent.runtime.parts import Runtime
from agent.runtime.powerwrite import PowerWriter
from agent.runtime.sampler import Sampler
from agent.runtime.switcher import Switcher
from agent.runtime.workloads.manager import WorkloadManager
from hal import errors as hal_errors
from hal.device import DeviceKind
from hal.registry import Discovery, descriptors_needed, discover
from rigapi import SERVICE_NAME

log = structlog.get_logger("rigd")
WATCHDOG_SLACK_S = 2.0
# asyncio.to_thread's pool: blocking device calls (a curtailment turns down a hundred miners at
# once); Python's default is cpu_count + 4 threads, which would queue them six at a time here.
DEVICE_CALL_THREADS = 64
# File descriptors rigd holds besides its devices' readings: listeners and their clients, logs,
# GPUs, workloads' pipes, and the device calls in flight (DEVICE_CALL_THREADS at once, a
# control holding up to two connections).
OWN_DESCRIPTORS = 256 + 2 * DEVICE_CALL_THREADS
# The cyclic garbage collector's first threshold (Python's is 700): a miner's reading allocates
# hundreds of objects, and with the default a fleet of thousands spent 7% of rigd's CPU in
# collections (bench/asic.py), 1% with this.
GC_THRESHOLD = 50_000


class StartupError(Exception):
    """rigd cannot start; the message is one line an operator can act on."""


def _os_reason(path: Path, exc: OSError) -> str:
    """The OS's reason, naming the regular file that stands where a directory must be."""
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        for p in (path, *path.parents):
            if p.exists() and not p.is_dir():
                return f"{p} is a file, not a directory"
    return exc.strerror or str(exc)


def _make_dir(path: Path, what: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o750)
    except OSError as exc:
        raise StartupError(f"cannot create {path} for {what}: {_os_reason(path, exc)}") from None


def _prepare_socket_path(path: str) -> None:
    """Refuse a path another live process serves or that is not a socket; clear a stale one."""
    p = Path(path)
    if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
        raise StartupError(
            f"unix socket path {path} is too long (at most {MAX_SOCKET_PATH_BYTES} bytes)")
    _make_dir(p.parent, "the unix socket")
    try:
        mode = p.lstat().st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StartupError(f"unix socket path {path} is unusable: {exc.strerror}") from None
    if not stat.S_ISSOCK(mode):
        raise StartupError(f"unix socket path {path} exists and is not a socket; not touching it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        p.unlink(missing_ok=True)  # stale: its server is gone
        return
    except OSError as exc:
        raise StartupError(f"unix socket path {path} is unusable: {exc.strerror}") from None
    finally:
        probe.close()
    raise StartupError(f"unix socket path {path} is in use by another running process")


def _check_port_free(host: str, port: int, address: str) -> None:
    """gRPC's own bind failure is a C-core log line plus a bare RuntimeError; say it plainly."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise StartupError(f"cannot listen on {address}: {exc.strerror}") from None


def check_descriptors(devices_need: int) -> None:
    """The configured devices' readings may hold `devices_need` file descriptors at once (every
    miner, when all of them hang): with rigd's own, that is the `ulimit -n` it needs. A lower
    soft limit is raised to the hard limit where that is enough; else rigd refuses to start."""
    if not devices_need:
        return
    need = devices_need + OWN_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        log.info("file_descriptors", needed=need, limit=soft)
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        raise StartupError(
            f"the configured devices need `ulimit -n` {need} ({devices_need} for their "
            f"readings + {OWN_DESCRIPTORS} for rigd itself), and this process may open at most "
            f"{hard} (its hard limit): raise it (systemd: LimitNOFILE={need}) or configure "
            f"fewer miners")
    raised = hard if hard != resource.RLIM_INFINITY else need
    resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
    log.info("file_descriptor_limit_raised", needed=need, soft_limit_was=soft, limit=raised)


def build_runtime(config: Config, discovery: Discovery, operations: Operations) -> Runtime:
    """The runtime's parts, each given what it uses when it is made: the one place they meet."""
    devices = discovery.by_id()
    journal = Journal(config.state_path)
    changes = DeviceChanges()
    manager = WorkloadManager(devices, config, journal, changes)
    power_model = PowerModel(config.host_power_w, config.opencl_power_w)
    draws = WorkingDraw()
    sampler = Sampler(discovery.devices, config.telemetry_interval_s, config.device_timeout_s,
                      changes, lambda reading: draws.observe(
                          power_model.estimate(manager.annotate(reading))))
    power = PowerWriter(journal, changes)
    curtailer = Curtailer(config, devices, sampler, manager, operations, power, draws)
    switcher = Switcher(manager, operations, curtailer)
    diagnostics = Diagnostics(config, devices, discovery.backends, sampler, manager, curtailer,
                              operations)
    return Runtime(discovery, operations, manager, sampler, power, curtailer, switcher,
                   LeaseManager(), diagnostics)


class Agent:
    """One rigd: listeners, discovery, the sampler and the servicer, on the running loop."""

    def __init__(self, config: Config, extra_backend_options: dict[str, Any] | None = None) -> None:
        self.config = config
        self.extra_backend_options = extra_backend_options or {}
        self.socket_path = config.socket_path
        self.tcp_port: int | None = None
        self.front = UnixFront(self.socket_path, config.unix_socket_mode)
        try:
            self.audit = AuditLog(config.audit_path, config.audit_max_bytes,
                                  config.audit_backups)
        except OSError as exc:
            raise StartupError(f"cannot open the audit log {config.audit_path}: "
                               f"{_os_reason(Path(config.audit_path), exc)}") from None
        self.server = grpc.aio.server(
            interceptors=[Gate(Authenticator(config, self.front.lookup), self.audit,
                               StreamBudget(config.max_streams,
                                            config.max_streams_per_identity))],
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", config.max_request_bytes),
                ("grpc.max_metadata_size", 16 * 1024),
            ],
        )
        self.health = HealthService((SERVICE_NAME,))
        self.tally = OperationTally()
        self.operations = Operations(ended=self.tally.ended)
        self.runtime: Runtime | None = None  # once discovery has found the devices
        self.service: RigAgentService | None = None
        self.ven: Ven | None = None
        try:  # before anything listens: a missing library is a start-up error
            self._openleadr = load_openleadr() if config.openadr_vtn_url else None
        except OpenleadrMissing as exc:
            raise StartupError(str(exc)) from None
        self._bring_up: asyncio.Task[None] | None = None
        self._public_socket: socket.socket | None = None
        self.metrics = (MetricsListener(config, self.tally, self)
                        if config.metrics_address else None)

    # -- start-up -------------------------------------------------------------------------

    def bind(self) -> None:
        """Listeners first: a taken socket or port is reported before anything else happens
        (the state directory is made first: it is rigd's, and an unusable one stops it)."""
        _make_dir(self.config.state_path, "rigd's state (workloads.state_dir)")
        _prepare_socket_path(self.socket_path)
        try:
            self.front.prepare()
            self._public_socket = self.front.listen_socket()
        except OSError as exc:
            raise StartupError(f"cannot listen on unix:{self.socket_path}: "
                               f"{_os_reason(Path(self.socket_path), exc)}") from None
        try:
            bound = self.server.add_insecure_port(f"unix:{self.front.internal_path}")
        except RuntimeError:
            bound = 0
        if not bound:
            self.release_listeners()
            raise StartupError(f"cannot listen on unix:{self.front.internal_path}")
        if self.config.tcp_address:
            try:
                self._bind_tcp()
            except StartupError:
                self.release_listeners()
                raise
        if self.metrics is not None:
            try:
                self.metrics.bind()
            except MetricsError as exc:
                self.release_listeners()
                raise StartupError(str(exc)) from None

    def _bind_tcp(self) -> None:
        host, port = parse_address(self.config.tcp_address)
        _check_port_free(host, port, self.config.tcp_address)
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            if self.config.tls_cert_file:
                credentials = grpc.ssl_server_credentials(
                    [(Path(self.config.tls_key_file).read_bytes(),
                      Path(self.config.tls_cert_file).read_bytes())],
                    root_certificates=Path(self.config.tls_client_ca_file).read_bytes(),
                    require_client_auth=True,
                )
                self.tcp_port = self.server.add_secure_port(target, credentials)
            else:
                self.tcp_port = self.server.add_insecure_port(target)
        except RuntimeError:
            self.tcp_port = 0
        if not self.tcp_port:
            raise StartupError(f"cannot listen on {self.config.tcp_address}: gRPC refused it "
                               "(its log line above says why)")

    def release_listeners(self) -> None:
        """Start-up failed after binding: free the port and the socket path for the next try."""
        if self._public_socket is not None:
            self._public_socket.close()
        if self.metrics is not None:
            self.metrics.release()
        Path(self.socket_path).unlink(missing_ok=True)
        shutil.rmtree(self.front.private_dir, ignore_errors=True)

    def discover(self) -> Discovery:
        """Blocking: run it in a thread."""
        try:
            discovery = discover(self.config.backends, self.backend_options,
                                 self.config.compute_facets)
        except hal_errors.InvalidArgument as exc:
            raise StartupError(f"configuration: {exc}") from None
        self._check_hashing_devices(discovery)
        return discovery

    @property
    def backend_options(self) -> dict[str, Any]:
        return {**self.config.backend_options, **self.extra_backend_options}

    def _check_hashing_devices(self, discovery: Discovery) -> None:
        """A [[hashing]] entry must name a device that can carry the kernel: a typo stops
        start-up (whether the kernel builds there is found out afterwards)."""
        capable = sorted(d.id for d in discovery.devices
                         if d.compute_facet is not None and d.kind != DeviceKind.FPGA)
        for entry in self.config.hashing:
            if entry.device != "auto" and entry.device not in capable:
                discovery.close()
                raise StartupError(
                    f"configuration: hashing device {entry.device!r} is not a device rigd "
                    f"found with an OpenCL compute facet; candidates: "
                    f"{', '.join(capable) or 'none'}")

    async def start(self, discovery: Discovery) -> None:
        for status in discovery.backends:
            log.info(
                "backend", name=status.name, available=status.available,
                reason=status.reason or None, devices=status.device_count,
            )
        config = self.config
        runtime = self.runtime = build_runtime(config, discovery, self.operations)
        interrupted = await asyncio.to_thread(runtime.manager.recover)
        runtime.switcher.interrupted(interrupted)
        runtime.curtailer.recover()
        if self._openleadr is not None:
            self.ven = Ven(config, runtime.curtailer, self.audit, self._openleadr)
        self.service = RigAgentService(
            config.rig_id, discovery, runtime.sampler, runtime.manager, runtime.operations,
            runtime.switcher, runtime.curtailer, runtime.power, runtime.leases,
            runtime.diagnostics,
        )
        self.server.add_generic_rpc_handlers((rpc_handler(self.service),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME),
            self.server,
        )
        await runtime.sampler.start()
        await self.server.start()
        assert self._public_socket is not None
        await self.front.start(self._public_socket)
        await self.health.set_all(SERVING)
        log.info(
            "serving", version=__version__, rig_id=config.rig_id,
            unix_socket=self.socket_path, tcp_port=self.tcp_port,
            devices=len(discovery.devices), state_dir=str(config.state_path),
        )
        self._bring_up = asyncio.create_task(self._bring_up_workloads(runtime), name="bring-up")

    async def _bring_up_workloads(self, runtime: Runtime) -> None:
        """After serving starts: resume a journaled curtailment, probe the kernel on each
        compute facet, bring every device back to its desired workload (but what the
        curtailment holds), then supervise. Grid events are taken only then, so that a new
        curtailment never races the bring-up."""
        try:
            await runtime.curtailer.resume()  # a journaled curtailment watches the rig at once
            await runtime.manager.run_probes()
            await runtime.switcher.restore(runtime.manager.seeds(), runtime.curtailer.adjust)
            runtime.manager.start_supervising()
        finally:
            task = asyncio.current_task()
            if self.ven is not None and not (task is not None and task.cancelling()):
                self.ven.start()

    # -- shutdown -------------------------------------------------------------------------

    async def shutdown(self) -> None:
        config = self.config
        log.info("shutting_down", drain_s=config.drain_s)
        await self.health.set_all(health_pb2.HealthCheckResponse.NOT_SERVING)
        await asyncio.sleep(config.drain_s)  # listeners open: NOT_SERVING reaches the watchers
        if self.service is not None:
            self.service.stopping = True
        if self.ven is not None:
            await self.ven.stop()  # bounded; its curtailment, if any, holds to its expiry
        if self.metrics is not None:
            await self.metrics.close()  # scraped through the drain, closed before the sampler
        runtime = self.runtime
        if runtime is not None:
            await runtime.sampler.stop()  # ends every telemetry stream
        self.operations.close()  # ends every operation watch
        await self.health.close()  # ends every health watch
        await self.server.stop(config.shutdown_grace_s)
        await self.front.close()
        if self._bring_up is not None:
            self._bring_up.cancel()
        if runtime is not None:
            await runtime.manager.shutdown()
            await asyncio.to_thread(runtime.discovery.close)
        self.audit.close()
        log.info("stopped")


class SignalWatcher:
    """SIGTERM and SIGINT, received by one thread that waits for nothing else.

    The signals are blocked in every other thread (threads inherit the mask of their creator,
    and this is set first thing in main), so the kernel always delivers them here, and the event
    loop is woken through call_soon_threadsafe: the first signal is never lost however busy or
    idle the loop is, and one that arrives during start-up (demo rig, discovery) is kept until
    the loop runs. The first signal also arms a watchdog that ends the process if the orderly
    shutdown overruns: a hung driver call cannot hold it. Child processes must unblock these
    signals for themselves (the mask is inherited across exec)."""

    SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})

    def __init__(self, watchdog_s: float) -> None:
        self.watchdog_s = watchdog_s
        # plus the longest stop grace of the workloads running when the signal comes (an
        # inference server may have 30 s to finish its requests); see watch_workloads
        self._grace_of_workloads: Callable[[], float] | None = None
        self.received = threading.Event()
        self._lock = threading.Lock()
        self._notify: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        signal.pthread_sigmask(signal.SIG_BLOCK, self.SIGNALS)
        threading.Thread(target=self._wait, name="signals", daemon=True).start()

    def _wait(self) -> None:
        while True:
            signum = signal.sigwait(self.SIGNALS)
            first = not self.received.is_set()
            self.received.set()
            if first:
                limit_s = self.watchdog_s + self._workloads_grace_s()
                log.info("signal", signal=signal.Signals(signum).name, shutdown_limit_s=limit_s)
                _arm_watchdog(limit_s)
            with self._lock:
                if self._notify is not None:
                    loop, event = self._notify
                    loop.call_soon_threadsafe(event.set)

    def watch_workloads(self, stop_grace_s: Callable[[], float]) -> None:
        """Once workloads can run: the watchdog adds their longest stop grace."""
        with self._lock:
            self._grace_of_workloads = stop_grace_s

    def _workloads_grace_s(self) -> float:
        with self._lock:
            grace = self._grace_of_workloads
        if grace is None:
            return 0.0
        try:
            return grace()
        except Exception:  # this thread must live on: the next signal still counts
            log.exception("shutdown_grace_unknown")
            return 0.0

    def notify(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        with self._lock:
            self._notify = (loop, event)
        if self.received.is_set():
            event.set()


def _arm_watchdog(seconds: float) -> None:
    def fire() -> None:
        log.error("shutdown_overran", limit_s=seconds)
        sys.stderr.flush()
        os._exit(0)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()


async def serve(config: Config, signals: SignalWatcher,
                extra_backend_options: dict[str, Any] | None = None) -> None:
    """Run rigd until SIGTERM or SIGINT. Raises StartupError before serving."""
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(DEVICE_CALL_THREADS, thread_name_prefix="device-call"))
    stop = asyncio.Event()
    signals.notify(asyncio.get_running_loop(), stop)
    check_descriptors(descriptors_needed(
        config.backends, {**config.backend_options, **(extra_backend_options or {})}))
    agent = Agent(config, extra_backend_options)
    agent.bind()
    try:
        if agent.metrics is not None:  # scrapes answer (rigd_ready 0) while discovery runs
            await agent.metrics.start()
        discovering = asyncio.ensure_future(asyncio.to_thread(agent.discover))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({discovering, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            log.info("stopped", during="discovery")
            return
        stopping.cancel()
        # What discovery made (devices, their clients) lives as long as rigd: collections
        # need not look at it again.
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
        await agent.start(discovering.result())
        assert agent.runtime is not None
        signals.watch_workloads(agent.runtime.manager.stop_grace_s)
    except BaseException:
        agent.release_listeners()
        raise
    await stop.wait()
    await agent.shutdown()
