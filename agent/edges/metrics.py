"""Prometheus /metrics: the agent's model, read at scrape time, on a listener of its own.

Nothing polls for it: a scrape takes the sampler's latest readings by the rule GetTelemetry uses
(a reading at most two sampling intervals old), the workload of each device, curtailment, rig
power and the operations in flight, so the numbers are the ones the API serves. Counts of ended
operations and their latency come from Operations as each operation ends (a scrape would miss
those that ended and were forgotten between two scrapes).

GPU metrics carry dcgm-exporter's names and labels (DCGM_FI_DEV_GPU_TEMP{gpu, UUID, pci_bus_id,
device, modelName, Hostname}), so dashboards and alerts written for dcgm-exporter work on rigd's
GPUs; everything else is rigd_*, with units in the names. DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION
keeps dcgm-exporter's series name, so it is typed gauge here (prometheus_client's text format
appends _total to every counter); rate() works on it as on dcgm-exporter's.

The listener is served on rigd's event loop (asyncio, TLS with a handshake timeout), not by
prometheus_client's threaded server: that one makes its TLS handshakes on the thread that
accepts, so one silent client stalls every scrape, and its collector would read the model from
another thread than the one that changes it. Exposition and content negotiation (text format or
OpenMetrics) are prometheus_client's.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import ssl
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
    StateSetMetricFamily,
)

from agent import __version__
from agent.config.settings import Config, parse_address
from agent.core.power import rig_power
from agent.runtime.curtail import Curtailment
from agent.runtime.parts import Runtime
from hal.device import DeviceInfo, DeviceKind, GpuTelemetry, HealthState, PowerSource, Telemetry
from hal.registry import BackendStatus
from rigapi.model import IDLE, Operation, Reading, WorkloadKind, WorkloadSpec

log = structlog.get_logger("rigd.metrics")

MIB = 1 << 20
REQUEST_TIMEOUT_S = 10.0
MAX_REQUEST_HEAD_BYTES = 16 * 1024
INFO_RETRY_S = 60.0  # a device whose facts never came is asked again this often
# Seconds: a switch takes seconds to a minute, a curtailment up to its deadline.
DURATION_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
DCGM_LABELS = ("gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname",
               "DCGM_FI_DRIVER_VERSION")
DEVICE_LABELS = ("device_id", "kind")
HEALTH_STATES = tuple(str(s) for s in HealthState)
CURTAILMENT_STATES = ("shedding", "confirmed", "target_not_met")


class MetricsError(Exception):
    """The listener cannot be set up; the message is one line for the operator."""


class Model(Protocol):
    """What the collector reads of the agent (agent.daemon.Agent): its runtime, None until
    discovery ends (a scrape answers rigd_ready 0 meanwhile)."""

    @property
    def runtime(self) -> Runtime | None: ...

# ---- operations, counted as they end -------------------------------------------------------


@dataclass(slots=True)
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS_S))
    total: int = 0
    sum_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.total += 1
        self.sum_s += seconds
        for i, bound in enumerate(DURATION_BUCKETS_S):
            if seconds <= bound:
                self.counts[i] += 1

    def buckets(self) -> list[tuple[str, float]]:
        return [*((f"{b:g}", float(c)) for b, c in zip(DURATION_BUCKETS_S, self.counts,
                                                       strict=True)),
                ("+Inf", float(self.total))]


class OperationTally:
    """Ended operations by kind and outcome, their durations and their phases' durations, and
    each device's switch outcomes (Operations calls `ended` as each operation ends)."""

    def __init__(self) -> None:
        self.ended_ops: Counter[tuple[str, str]] = Counter()
        self.device_switches: Counter[tuple[str, str]] = Counter()
        self.durations: dict[str, _Histogram] = {}
        self.phases: dict[tuple[str, str], _Histogram] = {}

    def ended(self, op: Operation) -> None:
        try:
            self._count(op)
        except Exception:  # counting must never stop an operation from ending
            log.exception("metrics_count_failed", operation_id=op.operation_id)

    def _count(self, op: Operation) -> None:
        self.ended_ops[(op.kind, str(op.state))] += 1
        if op.end_unix_s is not None:
            self.durations.setdefault(op.kind, _Histogram()).observe(
                max(0.0, op.end_unix_s - op.create_unix_s))
        for record in op.phases:
            if record.duration_s is not None:
                self.phases.setdefault((op.kind, str(record.phase)), _Histogram()).observe(
                    record.duration_s)
        if op.kind == "set_workload":
            for outcome in op.outcomes.values():
                self.device_switches[(outcome.device_id, str(outcome.state))] += 1

    def families(self) -> Iterator[Metric]:
        ops = CounterMetricFamily("rigd_operations", "Operations ended, by kind (set_workload "
                                  "= a switch, curtail, restore) and outcome.",
                                  labels=["kind", "state"])
        for (kind, state), count in sorted(self.ended_ops.items()):
            ops.add_metric([kind, state], count)
        yield ops
        switches = CounterMetricFamily("rigd_device_switches", "Switches of each device by "
                                       "outcome.", labels=["device_id", "state"])
        for (device_id, state), count in sorted(self.device_switches.items()):
            switches.add_metric([device_id, state], count)
        yield switches
        durations = HistogramMetricFamily("rigd_operation_duration_seconds", "Operation "
                                          "latency, from the request to its end.",
                                          labels=["kind"])
        for kind, histogram in sorted(self.durations.items()):
            durations.add_metric([kind], histogram.buckets(), histogram.sum_s)
        yield durations
        phases = HistogramMetricFamily("rigd_operation_phase_duration_seconds", "Time spent in "
                                       "each phase (draining, stopping, verifying, starting, "
                                       "shedding ...).", labels=["kind", "phase"])
        for (kind, phase), histogram in sorted(self.phases.items()):
            phases.add_metric([kind, phase], histogram.buckets(), histogram.sum_s)
        yield phases


# ---- the model at scrape time ----------------------------------------------------------------


@dataclass(slots=True)
class Snapshot:
    """What one scrape reports, read on the event loop in one go."""

    rig_id: str
    hostname: str
    ready: bool = False
    readings: dict[str, Reading] = field(default_factory=dict)
    infos: dict[str, DeviceInfo] = field(default_factory=dict)
    desired: dict[str, WorkloadSpec] = field(default_factory=dict)
    backends: list[BackendStatus] = field(default_factory=list)
    curtailment: Curtailment | None = None
    running_ops: Counter[str] = field(default_factory=Counter)
    streams: int = 0
    sample_rounds: int = 0


def _gauge(name: str, doc: str, labels: Sequence[str] = DEVICE_LABELS) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def _mib(value: int | None) -> float | None:
    return value / MIB if value is not None else None


_DcgmRead = Callable[[Telemetry, GpuTelemetry], float | None]
# dcgm-exporter's default counters that NVML gives, and the DCGM fields beyond them that rigd
# reads too (power limit, total memory, fan, P-state), with DCGM's own units.
DCGM_FIELDS: tuple[tuple[str, str, _DcgmRead], ...] = (
    ("DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz).", lambda t, g: g.clock_sm_mhz),
    ("DCGM_FI_DEV_MEM_CLOCK", "Memory clock frequency (in MHz).",
     lambda t, g: g.clock_mem_mhz),
    ("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", lambda t, g: t.temp_c),
    ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).",
     lambda t, g: t.power_w if t.power_source == PowerSource.MEASURED else None),
    ("DCGM_FI_DEV_POWER_MGMT_LIMIT", "Power management limit (in W).",
     lambda t, g: t.power_limit_w),
    ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "Total energy consumption since boot (in mJ); "
     "typed gauge to keep dcgm-exporter's series name.",
     lambda t, g: t.energy_j * 1000 if t.energy_j is not None else None),
    ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", lambda t, g: g.utilization_gpu_pct),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", "Memory utilization (in %).",
     lambda t, g: g.utilization_mem_pct),
    ("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).",
     lambda t, g: _mib(g.mem_free_bytes)),
    ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).",
     lambda t, g: _mib(g.mem_used_bytes)),
    ("DCGM_FI_DEV_FB_TOTAL", "Total framebuffer memory (in MiB).",
     lambda t, g: _mib(g.mem_total_bytes)),
    ("DCGM_FI_DEV_FAN_SPEED", "Fan speed (in %).", lambda t, g: g.fan_speed_pct),
    ("DCGM_FI_DEV_PSTATE", "Performance state (P-State) 0-15.",
     lambda t, g: g.performance_state),
    ("DCGM_FI_DEV_XID_ERRORS", "Value of the last XID error encountered (0: none).",
     lambda t, g: g.last_xid or 0),
)


def _dcgm_families(snap: Snapshot) -> Iterator[Metric]:
    """The GPUs under dcgm-exporter's names, units and labels."""
    gpus: list[tuple[Telemetry, GpuTelemetry, list[str]]] = []
    for device_id, reading in snap.readings.items():
        t, g = reading.telemetry, reading.telemetry.gpu
        if t.kind != DeviceKind.GPU or g is None:
            continue
        info = snap.infos.get(device_id)
        index = "" if g.index is None else str(g.index)
        gpus.append((t, g, [index, device_id.removeprefix("gpu/"),
                            info.pci_bus_id if info else "", f"nvidia{index}",
                            info.name if info else "", snap.hostname,
                            info.driver_version if info else ""]))
    for name, doc, read in DCGM_FIELDS:
        family = _gauge(name, doc, DCGM_LABELS)
        for t, g, labels in gpus:
            value = read(t, g)
            if value is not None:
                family.add_metric(labels, float(value))
        yield family


def _device_families(snap: Snapshot) -> Iterator[Metric]:
    info = InfoMetricFamily("rigd_device", "A device rigd found, with its facts.",
                            labels=list(DEVICE_LABELS))
    up = _gauge("rigd_device_up", "1 when the device's latest reading answered, 0 when it "
                "failed (timeout, lost).")
    health = StateSetMetricFamily("rigd_device_health", "The device's health state.",
                                  labels=list(DEVICE_LABELS))
    watts = _gauge("rigd_device_power_watts", "Power draw, measured or estimated (source).",
                   [*DEVICE_LABELS, "source"])
    limit = _gauge("rigd_device_power_limit_watts", "Power limit in force.")
    energy = CounterMetricFamily("rigd_device_energy_joules", "Energy the device counted "
                                 "(since its driver or firmware started).",
                                 labels=list(DEVICE_LABELS))
    temp = _gauge("rigd_device_temperature_celsius", "The device's main temperature.")
    util = _gauge("rigd_device_utilization_ratio", "Busy share of the device, 0 .. 1.")
    rate = _gauge("rigd_device_hashrate_hashes_per_second", "Hashrate, of the algorithm "
                  "named.", [*DEVICE_LABELS, "algorithm"])
    for device_id, reading in snap.readings.items():
        t = reading.telemetry
        labels = [device_id, str(t.kind)]
        facts = snap.infos.get(device_id)
        if facts is not None:
            info.add_metric(labels, {"name": facts.name, "model": facts.model,
                                     "firmware_version": facts.firmware_version,
                                     "driver_version": facts.driver_version,
                                     "simulated": str(facts.simulated).lower()})
        up.add_metric(labels, 0 if reading.error else 1)
        health.add_metric(labels, {s: s == str(t.health.state) for s in HEALTH_STATES})
        if t.power_w is not None:
            watts.add_metric([*labels, str(t.power_source)], t.power_w)
        for family, value in ((limit, t.power_limit_w), (energy, t.energy_j),
                              (temp, t.temp_c)):
            if value is not None:
                family.add_metric(labels, value)
        if t.utilization_pct is not None:
            util.add_metric(labels, t.utilization_pct / 100)
        if t.hashrate_hs is not None:
            algorithm = (t.asic.algorithm if t.asic is not None else "") or "sha256d"
            rate.add_metric([*labels, algorithm], t.hashrate_hs)
    yield from (info, up, health, watts, limit, energy, temp, util, rate)


def _miner_families(snap: Snapshot) -> Iterator[Metric]:
    expected = _gauge("rigd_miner_expected_hashrate_hashes_per_second",
                      "The miner's own expected hashrate.", ["device_id"])
    mining = _gauge("rigd_miner_mining", "1 while the miner hashes, 0 asleep or idle.",
                    ["device_id"])
    fans = _gauge("rigd_miner_fan_speed_rpm", "Fan speed.", ["device_id", "fan"])
    temps = _gauge("rigd_miner_board_temperature_celsius", "Hash board temperatures.",
                   ["device_id", "board", "sensor"])
    board_rate = _gauge("rigd_miner_board_hashrate_hashes_per_second", "Each board's hashrate.",
                        ["device_id", "board"])
    chips = _gauge("rigd_miner_board_chips", "Chips answering on each board.",
                   ["device_id", "board"])
    for device_id, reading in snap.readings.items():
        asic = reading.telemetry.asic
        if asic is None:
            continue
        if asic.expected_hashrate_hs is not None:
            expected.add_metric([device_id], asic.expected_hashrate_hs)
        if asic.is_mining is not None:
            mining.add_metric([device_id], 1 if asic.is_mining else 0)
        for i, rpm in enumerate(asic.fans_rpm):
            fans.add_metric([device_id, str(i)], rpm)
        for board in asic.boards:
            where = [device_id, str(board.index)]
            for sensor, value in (("chip", board.temp_chip_c), ("board", board.temp_board_c)):
                if value is not None:
                    temps.add_metric([*where, sensor], value)
            if board.hashrate_hs is not None:
                board_rate.add_metric(where, board.hashrate_hs)
            if board.chips is not None:
                chips.add_metric(where, board.chips)
    yield from (expected, mining, fans, temps, board_rate, chips)


def _workload_families(snap: Snapshot) -> Iterator[Metric]:
    running = _gauge("rigd_device_workload", "What the device runs now (value 1): idle, "
                     "hashing or inference, with its state and runtime profile.",
                     ["device_id", "workload", "state", "profile"])
    desired = _gauge("rigd_device_desired_workload", "What rigd means the device to run "
                     "(value 1); a curtailment may hold it from running.",
                     ["device_id", "workload"])
    intensity = _gauge("rigd_workload_intensity_ratio", "Hashing intensity, 0 .. 1.",
                       ["device_id"])
    accepted = CounterMetricFamily("rigd_shares_accepted", "Shares the pool accepted (rigd's "
                                   "hashing workers and the miners' own pools).",
                                   labels=["device_id", "pool_url", "pool_index"])
    rejected = CounterMetricFamily("rigd_shares_rejected", "Shares the pool rejected.",
                                   labels=["device_id", "pool_url", "pool_index"])
    for device_id, reading in snap.readings.items():
        t, status = reading.telemetry, reading.workload
        if t.kind != DeviceKind.ASIC:
            spec = snap.desired.get(device_id, IDLE)
            desired.add_metric([device_id, str(spec.kind)], 1)
            if status is None:
                running.add_metric([device_id, str(WorkloadKind.IDLE), "", ""], 1)
            else:
                running.add_metric([device_id, str(status.kind), str(status.state),
                                    status.profile], 1)
        if status is not None and status.kind == WorkloadKind.HASHING:
            if status.intensity is not None:
                intensity.add_metric([device_id], status.intensity)
            for family, count in ((accepted, status.shares_accepted),
                                  (rejected, status.shares_rejected)):
                if count is not None:
                    family.add_metric([device_id, status.pool_url, "0"], count)
        for i, pool in enumerate(t.asic.pools if t.asic is not None else ()):
            for family, count in ((accepted, pool.accepted), (rejected, pool.rejected)):
                if count is not None:
                    family.add_metric([device_id, pool.url, str(i)], count)
    yield from (running, desired, intensity, accepted, rejected)


def _rig_families(snap: Snapshot) -> Iterator[Metric]:
    info = InfoMetricFamily("rigd", "This rigd.", {"version": __version__,
                                                   "rig_id": snap.rig_id})
    ready = _gauge("rigd_ready", "1 once discovery ended and rigd serves devices.", [])
    ready.add_metric([], 1 if snap.ready else 0)
    yield from (info, ready)
    available = _gauge("rigd_backend_available", "1 when the backend found its library or "
                       "hardware.", ["backend"])
    devices = _gauge("rigd_backend_devices", "Devices the backend found.", ["backend"])
    for status in snap.backends:
        available.add_metric([status.name], 1 if status.available else 0)
        devices.add_metric([status.name], status.device_count)
    yield from (available, devices)
    if not snap.ready:
        return
    power = rig_power(snap.readings.values())
    rig_w = _gauge("rigd_rig_power_watts", "What the rig draws: measured where devices report "
                   "power, estimated where they do not.", ["source"])
    rig_w.add_metric(["measured"], power.measured_w)
    rig_w.add_metric(["estimated"], power.estimated_w)
    unknown = _gauge("rigd_rig_power_unknown_devices", "Devices with neither a power reading "
                     "nor an estimate.", [])
    unknown.add_metric([], len(power.unknown_device_ids))
    yield from (rig_w, unknown)
    c = snap.curtailment
    active = _gauge("rigd_curtailment_active", "1 while a curtailment is in force.", [])
    active.add_metric([], 0 if c is None else 1)
    yield active
    if c is not None:
        for name, doc, value in (
                ("rigd_curtailment_target_watts", "The rig power target.", c.target_w),
                ("rigd_curtailment_expiry_timestamp_seconds", "When it lifts itself (Unix "
                 "time).", c.expire_unix_s),
                ("rigd_curtailment_power_before_watts", "The rig's power when it began.",
                 c.power_before_w),
                ("rigd_curtailment_below_target_after_seconds", "From the command to the first "
                 "reading below target.", c.below_target_after_s),
                ("rigd_curtailment_shortfall_watts", "How far above target the rig stayed.",
                 c.shortfall_w)):
            if value is not None:
                family = _gauge(name, doc, [])
                family.add_metric([], value)
                yield family
        state = StateSetMetricFamily("rigd_curtailment_state", "Where the curtailment is.",
                                     labels=[])
        state.add_metric([], {s: s == c.state for s in CURTAILMENT_STATES})
        yield state
    in_flight = _gauge("rigd_operations_running", "Operations in flight.", ["kind"])
    for kind, count in sorted(snap.running_ops.items()):
        in_flight.add_metric([kind], count)
    streams = _gauge("rigd_telemetry_streams", "Open StreamTelemetry calls.", [])
    streams.add_metric([], snap.streams)
    rounds = CounterMetricFamily("rigd_telemetry_sample_rounds", "Rounds of device reads the "
                                 "sampler made.", labels=[])
    rounds.add_metric([], snap.sample_rounds)
    yield from (in_flight, streams, rounds)


def families(snap: Snapshot, tally: OperationTally) -> list[Metric]:
    """Every metric family of one scrape (a pure function of the snapshot)."""
    out = [*_rig_families(snap), *tally.families()]
    if snap.ready:
        out += [*_device_families(snap), *_workload_families(snap), *_miner_families(snap),
                *_dcgm_families(snap)]
    return [family for family in out if family.samples]  # no GPU, no DCGM_* at all


class _Families:
    """A fixed list of families in the shape prometheus_client's encoders read."""

    def __init__(self, metrics: Iterable[Metric]) -> None:
        self._metrics = list(metrics)

    def collect(self) -> Iterable[Metric]:
        return self._metrics


# ---- the listener ------------------------------------------------------------------------------


class MetricsListener:
    """`/metrics` over HTTP (HTTPS with cert_file) on [metrics] address. Bound with the other
    listeners at start-up (a taken port stops rigd there), served once the agent starts."""

    def __init__(self, config: Config, tally: OperationTally, model: Model) -> None:
        """`tally` counts the operations as they end (the agent's Operations tells it)."""
        self.model = model
        self.config = config
        self.tally = tally
        self._socket: socket.socket | None = None
        self._ssl: ssl.SSLContext | None = None
        self._server: asyncio.Server | None = None
        self._infos: dict[str, DeviceInfo] = {}
        self._infos_asked = -INFO_RETRY_S
        self.hostname = socket.gethostname()

    @property
    def address(self) -> str:
        """Where it listens ("host:port", the port the kernel gave for port 0)."""
        if self._socket is None:
            return ""
        host, port = self._socket.getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def bind(self) -> None:
        """Open the listening socket and load TLS; MetricsError says why not."""
        config = self.config
        host, port = parse_address(config.metrics_address, "metrics.address")
        if config.metrics_cert_file:
            try:
                context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                context.load_cert_chain(config.metrics_cert_file, config.metrics_key_file)
                if config.metrics_client_ca_file:
                    context.load_verify_locations(config.metrics_client_ca_file)
                    context.verify_mode = ssl.CERT_REQUIRED
            except (OSError, ssl.SSLError) as exc:
                raise MetricsError(f"metrics TLS: cannot load {config.metrics_cert_file} / "
                                   f"{config.metrics_key_file}: {exc}") from None
            self._ssl = context
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(64)
        except OSError as exc:
            sock.close()
            raise MetricsError(f"cannot listen on {config.metrics_address} for /metrics: "
                               f"{exc.strerror or exc}") from None
        sock.setblocking(False)
        self._socket = sock

    async def start(self) -> None:
        assert self._socket is not None
        self._server = await asyncio.start_server(
            self._serve, sock=self._socket, ssl=self._ssl, limit=MAX_REQUEST_HEAD_BYTES,
            ssl_handshake_timeout=REQUEST_TIMEOUT_S if self._ssl else None)
        log.info("metrics_serving", address=self.address, tls=self._ssl is not None)

    def release(self) -> None:
        """Start-up failed: free the port now."""
        if self._server is not None:
            self._server.close()
        elif self._socket is not None:
            self._socket.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
        elif self._socket is not None:
            self._socket.close()

    # -- one scrape ------------------------------------------------------------------------

    async def snapshot(self) -> Snapshot:
        snap = Snapshot(self.config.rig_id, self.hostname)
        runtime = self.model.runtime
        if runtime is None:
            return snap
        sampler, manager, curtailer = runtime.sampler, runtime.manager, runtime.curtailer
        snap.backends = list(runtime.discovery.backends)
        snap.ready = True
        snap.readings = await sampler.latest()
        now = time.monotonic()
        if len(self._infos) < len(snap.readings) and now - self._infos_asked >= INFO_RETRY_S:
            self._infos_asked = now
            for device_id, info in (await sampler.infos()).items():
                if isinstance(info, DeviceInfo):
                    self._infos[device_id] = info
        snap.infos = dict(self._infos)
        snap.desired = {d: manager.current_spec(d) for d in snap.readings}
        snap.curtailment = curtailer.current
        snap.running_ops = Counter(op.kind for op in runtime.operations.all() if not op.done)
        snap.streams = sampler.stream_count
        snap.sample_rounds = sampler.samples_taken
        return snap

    async def render(self, accept: str) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept)
        metrics = families(await self.snapshot(), self.tally)
        return encoder(_Families(metrics)), content_type

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
            await self._answer(head.decode("latin-1"), writer)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError, ssl.SSLError):
            pass  # a client that went away or never spoke HTTP: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), REQUEST_TIMEOUT_S)

    async def _answer(self, head: str, writer: asyncio.StreamWriter) -> None:
        request_line, *lines = head.split("\r\n")
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (line.partition(":") for line in lines if line)}
        parts = request_line.split(" ")
        status, content_type, body = "200 OK", "text/plain; charset=utf-8", b""
        if len(parts) != 3:
            status, body = "400 Bad Request", b"malformed request line\n"
        elif parts[0] not in ("GET", "HEAD"):
            status, body = "405 Method Not Allowed", b"GET /metrics\n"
        elif urllib.parse.urlsplit(parts[1]).path == "/metrics":
            try:
                body, content_type = await self.render(headers.get("accept", ""))
            except Exception as exc:  # a scrape must fail visibly, never take rigd down
                log.exception("metrics_scrape_failed")
                status, body = "500 Internal Server Error", f"scrape failed: {exc!r}\n".encode()
        elif urllib.parse.urlsplit(parts[1]).path == "/":
            body = b"rigd: Prometheus metrics at /metrics\n"
        else:
            status, body = "404 Not Found", b"only /metrics is served here\n"
        extra = ""
        if "gzip" in headers.get("accept-encoding", "") and len(body) > 1024:
            body, extra = gzip.compress(body, compresslevel=5), "Content-Encoding: gzip\r\n"
        writer.write((f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                      f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
                      ).encode("latin-1"))
        if parts[0] != "HEAD":
            writer.write(body)
        await writer.drain()


__all__ = ["MetricsError", "MetricsListener", "OperationTally", "Snapshot", "families"]
