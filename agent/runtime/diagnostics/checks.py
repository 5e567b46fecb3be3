"""Level 2: one fresh reading of a device, judged against physical ranges.

Pure functions of a reading (and a few facts from the agent), so each rule is tested without a
device. Every check answers for every device of its kinds: a value the device does not report
is SKIP with that said, never a silent PASS. Thresholds are generic on purpose (a GPU slows
itself down near 87 °C, a hash board's chips near 95 °C); they find the device that is far off,
not tune one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from hal.device import DeviceKind, HealthState, PowerSource, Telemetry
from rigapi.model import DiagnosticResult as Result
from rigapi.model import Reading, WorkloadKind, WorkloadSpec, WorkloadState, WorkloadStatus

Verdict = tuple[Result, str]

# (warn, fail) at or above, in °C, for the hottest sensor of the device.
TEMP_LIMITS_C: dict[DeviceKind, tuple[float, float]] = {
    DeviceKind.GPU: (85.0, 95.0),
    DeviceKind.ASIC: (90.0, 100.0),
    DeviceKind.HOST: (90.0, 100.0),
    DeviceKind.FPGA: (85.0, 100.0),
    DeviceKind.OPENCL: (90.0, 100.0),
}
PHYSICAL_TEMP_C = (-40.0, 150.0)  # outside: a broken sensor, not a temperature
POWER_OVER_LIMIT_WARN = 1.05  # a reading averages over a window: brief peaks pass
POWER_OVER_LIMIT_FAIL = 1.25
HASHRATE_WARN = 0.9  # of the miner's own expected hashrate
HASHRATE_FAIL = 0.5
REJECTED_WARN = 0.05  # of the shares submitted
HOST_MEM_WARN = 0.10  # available / total
HOST_MEM_FAIL = 0.02
THERMAL_THROTTLES = frozenset({"sw_thermal_slowdown", "hw_thermal_slowdown"})
MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class Facts:
    """What a check needs beyond the reading, from the agent's model."""

    desired: WorkloadSpec
    curtailed: str = ""  # the curtailment holding or having stopped the device, if any
    workload_pids: frozenset[int] = frozenset()  # rigd's own processes on the device


def si(value: float, unit: str) -> str:
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def has_values(t: Telemetry) -> bool:
    """Did the device give any reading at all (a lost GPU answers with nothing)?"""
    return any(v is not None for v in (t.power_w, t.temp_c, t.utilization_pct, t.hashrate_hs,
                                       t.energy_j)) or t.asic is not None or t.host is not None


def telemetry(reading: Reading, took_s: float, timeout_s: float) -> Verdict:
    t = reading.telemetry
    if reading.error:
        return Result.FAIL, reading.error
    took = f"answered in {took_s * 1000:.0f} ms"
    if not has_values(t):
        if t.health.state == HealthState.UNHEALTHY:  # a lost GPU answers, with nothing
            return Result.FAIL, f"answered without any reading: {t.health.reason}"
        took += "; it reports no sensor values"
    if took_s > timeout_s / 2:
        return Result.WARN, f"{took}, over half its {timeout_s:g} s timeout"
    return Result.PASS, took


def health(reading: Reading) -> Verdict:
    h = reading.telemetry.health
    if h.state == HealthState.UNHEALTHY:
        return Result.FAIL, h.reason or "unhealthy"
    if h.state == HealthState.DEGRADED:
        return Result.WARN, f"degraded: {h.reason}"
    if h.state == HealthState.UNKNOWN:
        return Result.WARN, f"health unknown: {h.reason or 'the device does not say'}"
    return Result.PASS, "healthy"


def _temperatures(t: Telemetry) -> list[tuple[str, float]]:
    temps: list[tuple[str, float]] = []
    if t.temp_c is not None:
        temps.append(("device", t.temp_c))
    if t.asic is not None:
        for board in t.asic.boards:
            for name, value in (("chip", board.temp_chip_c), ("board", board.temp_board_c)):
                if value is not None:
                    temps.append((f"board {board.index} {name}", value))
    if t.host is not None:
        temps += [(s.name, s.temp_c) for s in t.host.temps]
    return [(name, value) for name, value in temps if not math.isnan(value)]


def temperature(kind: DeviceKind, t: Telemetry) -> Verdict:
    temps = _temperatures(t)
    if not temps:
        return Result.SKIP, "no temperature sensor reported"
    low, high = PHYSICAL_TEMP_C
    broken = [(n, v) for n, v in temps if not low <= v <= high]
    if broken:
        name, value = broken[0]
        return Result.FAIL, f"{name} reads {value:g} °C: a broken sensor, not a temperature"
    name, hottest = max(temps, key=lambda item: item[1])
    warn, fail = TEMP_LIMITS_C[kind]
    where = f"{name} {hottest:.0f} °C"
    if hottest >= fail:
        return Result.FAIL, f"{where}, at or above {fail:g} °C"
    throttled = sorted(THERMAL_THROTTLES & set(t.gpu.throttle_reasons)) if t.gpu else []
    if throttled:
        return Result.WARN, f"{where}; clocks held back: {', '.join(throttled)}"
    if hottest >= warn:
        return Result.WARN, f"{where}, at or above {warn:g} °C"
    return Result.PASS, f"hottest {where}" if len(temps) > 1 else where


def power(t: Telemetry) -> Verdict:
    watts, limit = t.power_w, t.power_limit_w
    if watts is None:
        return Result.SKIP, "no power reading"
    if not 0 <= watts < 100_000:
        return Result.FAIL, f"reads {watts:g} W: not a physical value"
    if t.power_source == PowerSource.ESTIMATED:
        return Result.PASS, f"{watts:.0f} W estimated (no sensor)"
    gpu = t.gpu
    if gpu is not None and limit is not None and gpu.power_limit_min_w is not None \
            and gpu.power_limit_max_w is not None \
            and not gpu.power_limit_min_w - 0.5 <= limit <= gpu.power_limit_max_w + 0.5:
        return Result.FAIL, (f"limit {limit:g} W outside the board's "
                             f"{gpu.power_limit_min_w:g} .. {gpu.power_limit_max_w:g} W")
    if not limit:
        return Result.PASS, f"{watts:.0f} W (no limit reported)"
    ratio = watts / limit
    text = f"{watts:.0f} W of a {limit:.0f} W limit"
    if ratio > POWER_OVER_LIMIT_FAIL:
        return Result.FAIL, f"{text}: {ratio - 1:.0%} over it"
    if ratio > POWER_OVER_LIMIT_WARN:
        return Result.WARN, f"{text}: {ratio - 1:.0%} over it"
    return Result.PASS, text


def fans(kind: DeviceKind, t: Telemetry) -> Verdict:
    if kind == DeviceKind.ASIC and t.asic is not None:
        rpm = t.asic.fans_rpm
        if not rpm:
            return Result.SKIP, "no fan reported (immersion or external cooling?)"
        stopped = [i for i, r in enumerate(rpm) if r <= 0]
        if stopped and t.asic.is_mining is not False:
            return Result.FAIL, (f"fan {', '.join(map(str, stopped))} stopped while mining "
                                 f"({'/'.join(map(str, rpm))} rpm)")
        return Result.PASS, f"{'/'.join(map(str, rpm))} rpm"
    pct = t.gpu.fan_speed_pct if t.gpu is not None else None
    if pct is None:
        return Result.SKIP, "no fan reported (passively cooled board)"
    if not 0 <= pct <= 100:
        return Result.FAIL, f"fan reads {pct:g} %: not a physical value"
    if pct == 0 and t.temp_c is not None and t.temp_c >= 60:
        return Result.WARN, f"fan at 0 % at {t.temp_c:.0f} °C"
    return Result.PASS, f"fan {pct:.0f} %"


def memory(kind: DeviceKind, t: Telemetry, facts: Facts) -> Verdict:
    if kind == DeviceKind.HOST:
        host = t.host
        if host is None or not host.mem_total_bytes or host.mem_available_bytes is None:
            return Result.SKIP, "no memory reading"
        share = host.mem_available_bytes / host.mem_total_bytes
        text = (f"{host.mem_available_bytes // MIB} MiB of {host.mem_total_bytes // MIB} MiB "
                f"available ({share:.0%})")
        if share < HOST_MEM_FAIL:
            return Result.FAIL, text
        return (Result.WARN if share < HOST_MEM_WARN else Result.PASS), text
    gpu = t.gpu
    if gpu is None or gpu.mem_total_bytes is None or gpu.mem_used_bytes is None:
        return Result.SKIP, "no memory reading"
    total, used = gpu.mem_total_bytes, gpu.mem_used_bytes
    free = gpu.mem_free_bytes or 0
    if used > total or used + free > total * 1.01:
        return Result.FAIL, (f"inconsistent: {used // MIB} MiB used + {free // MIB} MiB free "
                             f"> {total // MIB} MiB")
    foreign = [p for p in gpu.processes if p.pid not in facts.workload_pids]
    text = f"{used // MIB} of {total // MIB} MiB used, {count(len(gpu.processes), 'process')}"
    if foreign:
        who = ", ".join(f"pid {p.pid} ({(p.used_mem_bytes or 0) // MIB} MiB)"
                        for p in foreign[:3])
        return Result.WARN, f"{text}; not rigd's workloads: {who}"
    return Result.PASS, text


def xid(t: Telemetry) -> Verdict:
    last = t.gpu.last_xid if t.gpu is not None else None
    if last is None:
        return Result.PASS, "no XID since rigd started"
    return Result.WARN, (f"last XID {last}, raised by an application (a hardware XID marks "
                         f"the GPU unhealthy)")


def hashrate(t: Telemetry, facts: Facts) -> Verdict:
    """A miner's hashrate against its own expected figure, and its hash boards."""
    asic = t.asic
    if asic is None:
        return Result.SKIP, "no miner reading"
    if asic.is_mining is False:
        if facts.curtailed:
            return Result.PASS, f"not mining: curtailment {facts.curtailed} holds it"
        return Result.WARN, "not mining (asleep, or no pool job)"
    if t.hashrate_hs is None:
        return Result.FAIL, "reports no hashrate"
    dead = [b.index for b in asic.boards if b.hashrate_hs is not None and b.hashrate_hs <= 0]
    if dead and len(dead) < len(asic.boards):
        return Result.FAIL, f"board {', '.join(map(str, dead))} hashes nothing"
    short = [f"board {b.index}: {b.chips} of {b.expected_chips} chips" for b in asic.boards
             if b.chips is not None and b.expected_chips and b.chips < b.expected_chips]
    if short:
        return Result.FAIL, "; ".join(short)
    rate = si(t.hashrate_hs, "H/s")
    if not asic.expected_hashrate_hs:
        return Result.PASS, f"{rate} (the firmware gives no expected hashrate)"
    ratio = t.hashrate_hs / asic.expected_hashrate_hs
    text = f"{rate}, {ratio:.0%} of the expected {si(asic.expected_hashrate_hs, 'H/s')}"
    if ratio < HASHRATE_FAIL:
        return Result.FAIL, text
    return (Result.WARN if ratio < HASHRATE_WARN else Result.PASS), text


def _rejected(accepted: int | None, rejected: int | None) -> float:
    done = (accepted or 0) + (rejected or 0)
    return (rejected or 0) / done if done else 0.0


def pool(t: Telemetry) -> Verdict:
    asic = t.asic
    if asic is None:
        return Result.SKIP, "no miner reading"
    if not asic.pools:
        return Result.FAIL, "no pool configured on the miner"
    alive = [p for p in asic.pools if p.status.lower() in ("alive", "active", "ok")]
    active = [p for p in asic.pools if p.active] or alive
    if not alive:
        return Result.FAIL, f"no pool alive: {', '.join(p.url for p in asic.pools[:3])}"
    main = active[0]
    ratio = _rejected(main.accepted, main.rejected)
    text = f"{main.url} {main.status or 'up'}, {main.accepted or 0} accepted, " \
           f"{main.rejected or 0} rejected"
    return (Result.WARN if ratio > REJECTED_WARN else Result.PASS), text


def workload(spec: WorkloadSpec, status: WorkloadStatus | None, facts: Facts) -> Verdict:
    """Does the device run what rigd means it to run, and does that work?"""
    if status is None:
        if spec.kind == WorkloadKind.IDLE:
            return Result.PASS, "idle"
        if facts.curtailed:
            return Result.PASS, f"{spec.describe()} stopped by curtailment {facts.curtailed}"
        return Result.FAIL, f"should run {spec.describe()}; nothing runs"
    what = f"{status.kind} {status.state}"
    if status.state == WorkloadState.FAILED:
        return Result.FAIL, f"{what}: {status.detail}"
    if status.state != WorkloadState.RUNNING:
        return Result.PASS, f"{what}" + (f": {status.detail}" if status.detail else "")
    if status.kind == WorkloadKind.INFERENCE:
        return Result.PASS, f"{status.profile} serving on {status.endpoint}"
    shares = f"shares {status.shares_accepted or 0}/{status.shares_rejected or 0} a/r"
    if not status.hashrate_hs:
        return Result.WARN, f"hashing without a hashrate yet; {shares}"
    ratio = _rejected(status.shares_accepted, status.shares_rejected)
    text = f"{si(status.hashrate_hs, 'H/s')}, {shares}"
    return (Result.WARN if ratio > REJECTED_WARN else Result.PASS), text


Check = Callable[[DeviceKind, Reading, Facts], Verdict]

# The level-2 checks after "telemetry" and "health", by device kind, in the order reported.
CHECKS: dict[str, Check] = {
    "temperature": lambda kind, r, f: temperature(kind, r.telemetry),
    "power": lambda kind, r, f: power(r.telemetry),
    "fans": lambda kind, r, f: fans(kind, r.telemetry),
    "memory": lambda kind, r, f: memory(kind, r.telemetry, f),
    "xid": lambda kind, r, f: xid(r.telemetry),
    "hashrate": lambda kind, r, f: hashrate(r.telemetry, f),
    "pool": lambda kind, r, f: pool(r.telemetry),
    "workload": lambda kind, r, f: workload(f.desired, r.workload, f),
}
PER_KIND: Mapping[DeviceKind, Collection[str]] = {
    DeviceKind.GPU: ("temperature", "power", "fans", "memory", "xid", "workload"),
    DeviceKind.ASIC: ("temperature", "power", "fans", "hashrate", "pool"),
    DeviceKind.HOST: ("temperature", "power", "memory", "workload"),
    DeviceKind.OPENCL: ("temperature", "power", "workload"),
    DeviceKind.FPGA: ("temperature", "power"),
}


def level2_tests(kind: DeviceKind) -> list[str]:
    return ["telemetry", "health", *PER_KIND.get(kind, ())]
