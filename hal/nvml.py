"""NVIDIA GPUs through NVML (nvidia-ml-py, imported as `pynvml`).

Behaviour worth knowing:
- A field NVML cannot give (NOT_SUPPORTED, or a symbol the driver lacks) is None.
- A GPU that falls off the bus (NVML_ERROR_GPU_IS_LOST) does not raise from `telemetry()`: it
  returns a Telemetry whose health is UNHEALTHY, so a caller streaming every GPU keeps going.
  Control calls on it raise DeviceLost. When NVML answers again, the same object is healthy again.
- XID events are read by one watcher thread per discovery (nvmlEventSetWait_v2). Application XIDs
  (13, 31, 43, 45, 68, 109: caused by user programs) are logged and kept as `last_xid` only; any
  other XID marks the device UNHEALTHY until NVML shows the GPU was reset: it was lost and came
  back, or the energy counter restarted (driver reload).
- Power limits, locked clocks and persistence mode set through this backend are the *desired
  state*: written to `<state_dir>/nvml-desired.json` (shared under a lock by every process using
  that state_dir) and re-applied at discovery (agent restart),
  at recovery from a lost GPU, when the energy counter restarts (driver reload), and when the
  power limit or persistence mode reads back different (GPU reset, someone else's nvidia-smi).
- Setters need root or CAP_SYS_ADMIN: NO_PERMISSION becomes PermissionDenied with that hint.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import math
import os
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pynvml
import structlog

from hal.device import (
    HEALTHY,
    Capability,
    Device,
    DeviceInfo,
    DeviceKind,
    GpuProcess,
    GpuTelemetry,
    Health,
    HealthState,
    Telemetry,
)
from hal.errors import (
    DeviceLost,
    HalError,
    InvalidArgument,
    NotSupported,
    PermissionDenied,
    Timeout,
    Unavailable,
)
from hal.units import j_from_mj, mw_from_w, w_from_mw

log = structlog.get_logger("hal.nvml")

_OPTIONS = frozenset(
    {"library_path", "sim_state_path", "state_dir", "devices", "watch_xid", "xid_poll_ms"}
)
SIM_STATE_ENV = "RIGD_NVML_SIM_STATE"
DESIRED_STATE_FILE = "nvml-desired.json"
DESIRED_STATE_LOCK = "nvml-desired.lock"
APPLICATION_XIDS = frozenset({13, 31, 43, 45, 68, 109})
XID_FALLEN_OFF_BUS = 79
_EVENT_XID_CRITICAL = 0x8
_PERMISSION_HINT = "run the agent as root or with CAP_SYS_ADMIN"
_DRIFT_RECHECK_S = 5.0

THROTTLE_REASONS: tuple[tuple[int, str], ...] = (
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks_setting"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal_slowdown"),
    (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
    (0x200, "board_limit"),
    (0x400, "reliability"),
)

T = TypeVar("T")


def throttle_reason_names(mask: int) -> tuple[str, ...]:
    names = [name for bit, name in THROTTLE_REASONS if mask & bit]
    unknown = mask & ~sum(bit for bit, _ in THROTTLE_REASONS)
    if unknown:
        names.append(f"unknown_0x{unknown:x}")
    return tuple(names)


def _is_gap(exc: pynvml.NVMLError) -> bool:
    """A per-field gap: the GPU or driver does not offer this reading."""
    return isinstance(exc, (pynvml.NVMLError_NotSupported, pynvml.NVMLError_FunctionNotFound))


def _translate(exc: pynvml.NVMLError, device_id: str, action: str) -> HalError:
    if isinstance(exc, pynvml.NVMLError_GpuIsLost):
        return DeviceLost(f"{device_id}: GPU is lost (fell off the bus) while trying to {action}")
    if isinstance(exc, pynvml.NVMLError_NoPermission):
        return PermissionDenied(
            f"{device_id}: {action} needs privileges (NVML_ERROR_NO_PERMISSION): {_PERMISSION_HINT}"
        )
    if _is_gap(exc):
        return NotSupported(f"{device_id}: {action} is not supported by this GPU or driver ({exc})")
    if isinstance(exc, pynvml.NVMLError_InvalidArgument):
        return InvalidArgument(f"{device_id}: NVML rejected {action}: {exc}")
    if isinstance(exc, pynvml.NVMLError_Timeout):
        return Timeout(f"{device_id}: NVML timed out trying to {action}")
    return HalError(f"{device_id}: {action} failed: {exc}")


# ---- desired state -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DesiredState:
    power_limit_w: float | None = None
    gpu_clocks_mhz: tuple[int, int] | None = None
    mem_clocks_mhz: tuple[int, int] | None = None
    persistence_mode: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "power_limit_w": self.power_limit_w,
            "gpu_clocks_mhz": list(self.gpu_clocks_mhz) if self.gpu_clocks_mhz else None,
            "mem_clocks_mhz": list(self.mem_clocks_mhz) if self.mem_clocks_mhz else None,
            "persistence_mode": self.persistence_mode,
        }

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> DesiredState:
        def pair(value: Any) -> tuple[int, int] | None:
            return (int(value[0]), int(value[1])) if value else None

        limit = data.get("power_limit_w")
        persistence = data.get("persistence_mode")
        return DesiredState(
            power_limit_w=float(limit) if limit is not None else None,
            gpu_clocks_mhz=pair(data.get("gpu_clocks_mhz")),
            mem_clocks_mhz=pair(data.get("mem_clocks_mhz")),
            persistence_mode=bool(persistence) if persistence is not None else None,
        )

    @property
    def empty(self) -> bool:
        return self == DesiredState()


class DesiredStateStore:
    """Per-GPU settings this backend applied, keyed by UUID, kept in one small JSON file.

    Every process using the same state_dir (rigd, a script on the HAL) shares it: a setting is
    written to the GPU and recorded under a lock on `nvml-desired.lock`, with the file read
    afresh, so the value the last writer set is the one on the GPU and in the file (a process
    starting up re-applies what is stored, never a copy it read before another's write)."""

    def __init__(self, state_dir: Path | None) -> None:
        self.path = state_dir / DESIRED_STATE_FILE if state_dir else None
        self._lock = threading.RLock()
        self._held = 0  # nesting of locked() in this process
        self._seen: tuple[int, int, int] | None = None  # the file's inode, size, mtime as read
        self._entries: dict[str, DesiredState] = {}
        self._refresh()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store against other threads and processes, read as it is on disk."""
        with self._lock:
            # the outermost hold in this process takes the file lock (None: nested, no
            # state_dir, or a read-only one, where this process is alone as before)
            fd = None if self._held or self.path is None else self._open_lock()
            self._held += 1
            try:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    self._refresh(always=True)
                yield
            finally:
                self._held -= 1
                if fd is not None:
                    os.close(fd)  # releases the flock

    def _open_lock(self) -> int | None:
        assert self.path is not None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path.with_name(DESIRED_STATE_LOCK),
                           os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            log.warning("nvml.desired_state_unlocked", path=str(self.path), error=str(exc))
            return None

    def get(self, uuid: str) -> DesiredState:
        with self._lock:
            self._refresh()
            return self._entries.get(uuid, DesiredState())

    def update(self, uuid: str, **changes: Any) -> None:
        with self.locked():
            current = self._entries.get(uuid, DesiredState())
            entry = DesiredState(**{**_asdict(current), **changes})
            if entry.empty:
                self._entries.pop(uuid, None)
            else:
                self._entries[uuid] = entry
            self._write()

    def _refresh(self, always: bool = False) -> None:
        """Read the file again if another process replaced it (or `always`, under the lock)."""
        if self.path is None:
            return
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._entries, self._seen = {}, None
            return
        except OSError as exc:
            log.warning("nvml.desired_state_unreadable", path=str(self.path), error=str(exc))
            return
        seen = _identity(st)
        if seen == self._seen and not always:
            return
        try:
            raw = json.loads(self.path.read_text())
            self._entries = {uuid: DesiredState.from_json(v) for uuid, v in raw.items()}
        except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            log.warning("nvml.desired_state_unreadable", path=str(self.path), error=str(exc))
        self._seen = seen

    def _write(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {uuid: entry.to_json() for uuid, entry in sorted(self._entries.items())}
        fd, tmp = tempfile.mkstemp(prefix=".nvml-desired.", dir=self.path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, self.path)
        self._seen = _identity(os.stat(self.path))


def _identity(st: os.stat_result) -> tuple[int, int, int]:
    """A file as last read: replaced (new inode), or rewritten (size, mtime)."""
    return st.st_ino, st.st_size, st.st_mtime_ns


def _asdict(state: DesiredState) -> dict[str, Any]:
    return {name: getattr(state, name) for name in DesiredState.__slots__}


# ---- the device ------------------------------------------------------------------------------


class NvmlGpu(Device):
    kind = DeviceKind.GPU
    # Hashing needs a compute facet (hal.registry joins the GPU's OpenCL view) and inference a
    # runtime: the agent adds those capabilities when they are really there.
    capabilities = frozenset({
        Capability.TELEMETRY,
        Capability.SET_POWER_LIMIT,
        Capability.LOCK_CLOCKS,
        Capability.PERSISTENCE_MODE,
    })

    def __init__(self, session: _Session, handle: Any, index: int) -> None:
        self._session = session
        self._handle = handle
        self.index = index
        self.uuid: str = pynvml.nvmlDeviceGetUUID(handle)
        self.id = f"gpu/{self.uuid}"
        self._lock = threading.Lock()
        self._lost_reason = ""
        self._xid_reason = ""
        self._desired_reason = ""
        self._cap_w: float | None = None  # a curtailment's bound over the desired limit
        self._last_xid: int | None = None
        self.xid_history: deque[tuple[float, int]] = deque(maxlen=64)  # (unix time, xid)
        self._next_drift_check = 0.0
        self._last_energy_mj: int | None = None
        self._closed = False
        self._info = self._read_info()
        self._note_energy(self._field(pynvml.nvmlDeviceGetTotalEnergyConsumption, handle))

    # -- inventory

    def _read_info(self) -> DeviceInfo:
        h = self._handle
        pci = pynvml.nvmlDeviceGetPciInfo(h)
        bus_id = pci.busId.decode() if isinstance(pci.busId, bytes) else str(pci.busId)
        attributes = {
            "index": str(self.index),
            "nvml_version": self._session.nvml_version,
            "cuda_version": self._session.cuda_version,
            "pci_device_id": f"0x{pci.pciDeviceId:08x}",
        }
        memory = self._field(pynvml.nvmlDeviceGetMemoryInfo, h)
        if memory is not None:
            attributes["mem_total_bytes"] = str(memory.total)
        serial = self._field(pynvml.nvmlDeviceGetSerial, h)
        name: str = pynvml.nvmlDeviceGetName(h)
        return DeviceInfo(
            id=self.id,
            kind=self.kind,
            name=name,
            vendor="NVIDIA",
            model=name,
            serial=serial or "",
            driver_version=self._session.driver_version,
            pci_bus_id=bus_id,
            simulated=self._session.simulated,
            attributes=attributes,
        )

    def info(self) -> DeviceInfo:
        return self._info

    # -- health

    def health(self) -> Health:
        """Probes NVML once, so a lost GPU that came back is seen even without telemetry reads."""
        try:
            self._field(pynvml.nvmlDeviceGetPowerUsage, self._handle)  # every driver has it
            self._seen_alive()
            self._note_energy(
                self._field(pynvml.nvmlDeviceGetTotalEnergyConsumption, self._handle)
            )
        except pynvml.NVMLError_GpuIsLost:
            self._mark_lost()
        return self._health()

    def _answers(self) -> bool:
        """Whether NVML answers for this GPU now (not GPU_IS_LOST)."""
        try:
            self._field(pynvml.nvmlDeviceGetPowerUsage, self._handle)
        except pynvml.NVMLError_GpuIsLost:
            return False
        return True

    def _health(self) -> Health:
        with self._lock:
            if self._lost_reason:
                return Health(HealthState.UNHEALTHY, self._lost_reason)
            if self._xid_reason:
                return Health(HealthState.UNHEALTHY, self._xid_reason)
            if self._desired_reason:
                return Health(HealthState.DEGRADED, self._desired_reason)
        return HEALTHY

    @property
    def last_xid(self) -> int | None:
        with self._lock:
            return self._last_xid

    def _mark_lost(self) -> None:
        with self._lock:
            if self._lost_reason:
                return
            self._lost_reason = "GPU is lost (NVML_ERROR_GPU_IS_LOST): fell off the bus"
        log.error("nvml.gpu_lost", device=self.id)

    def _seen_alive(self) -> None:
        """NVML answered: if the GPU had been lost, it is back (reset), so re-apply settings."""
        with self._lock:
            was_lost = bool(self._lost_reason)
            if was_lost:
                self._lost_reason = ""
                self._xid_reason = ""
        if was_lost:
            log.info("nvml.gpu_recovered", device=self.id)
            self._refresh_handle()
            self._session.register_events(self)
            self.reapply_desired_state("recovered from lost")

    def _refresh_handle(self) -> None:
        try:
            handle = pynvml.nvmlDeviceGetHandleByUUID(self.uuid)
        except pynvml.NVMLError as exc:
            log.warning("nvml.handle_refresh_failed", device=self.id, error=str(exc))
            return
        self._session.rebind(self, handle)
        self._handle = handle

    def on_xid(self, xid: int) -> None:
        """Called by the watcher thread for each XID event on this GPU. Fallen off the bus
        (XID 79) is GPU_IS_LOST seen from the event side: the GPU is asked at once, and an event
        that arrives after it answers again (the watcher polls) does not mark it lost anew."""
        application = xid in APPLICATION_XIDS
        lost = xid == XID_FALLEN_OFF_BUS and not self._answers()
        with self._lock:
            self._last_xid = xid
            self.xid_history.append((time.time(), xid))
            if lost:  # cleared as soon as NVML answers for this GPU again
                self._lost_reason = f"GPU is lost (XID {xid}: fallen off the bus)"
            elif not application and xid != XID_FALLEN_OFF_BUS:
                self._xid_reason = f"XID {xid} (hardware/driver fault)"
        if application:
            log.info("nvml.xid", device=self.id, xid=xid, application=True)
        else:
            log.error("nvml.xid", device=self.id, xid=xid, application=False)

    # -- telemetry

    def _field(self, fn: Callable[..., T], *args: Any) -> T | None:
        """One NVML reading; a gap is None. GPU_IS_LOST propagates: the whole read is void."""
        try:
            return fn(*args)
        except pynvml.NVMLError_GpuIsLost:
            raise
        except pynvml.NVMLError as exc:
            if not _is_gap(exc):
                log.warning("nvml.read_failed", device=self.id, call=fn.__name__, error=str(exc))
            return None

    def _newest(self, *names: str) -> Any:
        """The first of several generations of one NVML call that this driver has. Older
        drivers lack the newer symbol, and pynvml's unversioned wrappers then raise a non-NVML
        error, so the versioned wrappers are called by name."""
        for name in names:
            try:
                return getattr(pynvml, name)(self._handle)
            except pynvml.NVMLError_FunctionNotFound:
                continue
            except pynvml.NVMLError_GpuIsLost:
                raise
            except pynvml.NVMLError as exc:
                if not _is_gap(exc):
                    log.warning("nvml.read_failed", device=self.id, call=name, error=str(exc))
                return None
        return None

    def telemetry(self) -> Telemetry:
        try:
            reading = self._read()
        except pynvml.NVMLError_GpuIsLost:
            self._mark_lost()
            return Telemetry(
                device_id=self.id, kind=self.kind, health=self._health(),
                gpu=GpuTelemetry(index=self.index, last_xid=self.last_xid),
            )
        return reading

    def _read(self) -> Telemetry:
        h, f = self._handle, self._field
        power_mw = f(pynvml.nvmlDeviceGetPowerUsage, h)  # a call every driver has...
        self._seen_alive()  # ...and it answered: if the GPU had been lost, it is back
        energy_mj = f(pynvml.nvmlDeviceGetTotalEnergyConsumption, h)
        limit_mw = f(pynvml.nvmlDeviceGetPowerManagementLimit, h)
        persistence = f(pynvml.nvmlDeviceGetPersistenceMode, h)
        if self._settings_lost(energy_mj, limit_mw, persistence):
            limit_mw = f(pynvml.nvmlDeviceGetPowerManagementLimit, h)
            persistence = f(pynvml.nvmlDeviceGetPersistenceMode, h)
        constraints = f(pynvml.nvmlDeviceGetPowerManagementLimitConstraints, h)
        temp_c = f(pynvml.nvmlDeviceGetTemperature, h, pynvml.NVML_TEMPERATURE_GPU)
        utilization = f(pynvml.nvmlDeviceGetUtilizationRates, h)
        memory = f(pynvml.nvmlDeviceGetMemoryInfo, h)
        reasons = self._newest("nvmlDeviceGetCurrentClocksEventReasons",
                               "nvmlDeviceGetCurrentClocksThrottleReasons")
        processes = self._newest("nvmlDeviceGetComputeRunningProcesses_v3",
                                 "nvmlDeviceGetComputeRunningProcesses_v2")
        gpu = GpuTelemetry(
            index=self.index,
            power_limit_default_w=w_from_mw(f(pynvml.nvmlDeviceGetPowerManagementDefaultLimit, h)),
            power_limit_min_w=w_from_mw(constraints[0]) if constraints else None,
            power_limit_max_w=w_from_mw(constraints[1]) if constraints else None,
            power_limit_enforced_w=w_from_mw(f(pynvml.nvmlDeviceGetEnforcedPowerLimit, h)),
            utilization_gpu_pct=float(utilization.gpu) if utilization else None,
            utilization_mem_pct=float(utilization.memory) if utilization else None,
            mem_total_bytes=memory.total if memory else None,
            mem_used_bytes=memory.used if memory else None,
            mem_free_bytes=memory.free if memory else None,
            clock_sm_mhz=f(pynvml.nvmlDeviceGetClockInfo, h, pynvml.NVML_CLOCK_SM),
            clock_mem_mhz=f(pynvml.nvmlDeviceGetClockInfo, h, pynvml.NVML_CLOCK_MEM),
            fan_speed_pct=_float(f(pynvml.nvmlDeviceGetFanSpeed, h)),
            performance_state=f(pynvml.nvmlDeviceGetPerformanceState, h),
            throttle_reasons=throttle_reason_names(reasons) if reasons is not None else (),
            persistence_mode=bool(persistence) if persistence is not None else None,
            processes=tuple(
                GpuProcess(pid=p.pid, used_mem_bytes=p.usedGpuMemory) for p in processes or ()
            ),
            last_xid=self.last_xid,
        )
        return Telemetry(
            device_id=self.id,
            kind=self.kind,
            health=self._health(),
            power_w=w_from_mw(power_mw),
            power_limit_w=w_from_mw(limit_mw),
            energy_j=j_from_mj(energy_mj),
            temp_c=_float(temp_c),
            utilization_pct=gpu.utilization_gpu_pct,
            gpu=gpu,
        )

    # -- desired state

    def _settings_lost(
        self, energy_mj: int | None, limit_mw: int | None, persistence: int | None
    ) -> bool:
        """Detect a driver reload or GPU reset and re-apply the desired state; True if it did.

        Signs: the energy counter (counted since the driver loaded) went backwards, or a setting
        we applied reads back different (checked at most every few seconds, so a setting that
        cannot be applied is not hammered)."""
        if self._note_energy(energy_mj):
            return True
        desired = self._session.desired.get(self.uuid)
        with self._lock:
            cap_w = self._cap_w
        if (desired.empty and cap_w is None) or time.monotonic() < self._next_drift_check:
            return False
        drift = []
        limit_w = _lower(desired.power_limit_w, cap_w)
        if limit_w is not None and limit_mw is not None:
            if abs(w_from_mw(limit_mw) - limit_w) > 0.5:
                drift.append(f"power limit reads {w_from_mw(limit_mw):g} W")
        if desired.persistence_mode is not None and persistence is not None:
            if bool(persistence) != desired.persistence_mode:
                drift.append(f"persistence mode reads {bool(persistence)}")
        if not drift:
            return False
        self._next_drift_check = time.monotonic() + _DRIFT_RECHECK_S
        self.reapply_desired_state("settings reset (driver reload?): " + ", ".join(drift))
        return True

    def _note_energy(self, energy_mj: int | None) -> bool:
        """The energy counter runs since the driver loaded: if it went backwards, the driver was
        reloaded (or the GPU reset), which cleared both our settings and any XID fault."""
        if energy_mj is None:
            return False
        with self._lock:
            previous, self._last_energy_mj = self._last_energy_mj, energy_mj
            reloaded = previous is not None and energy_mj < previous
            if reloaded:
                self._xid_reason = ""
        if reloaded:
            log.warning("nvml.driver_reload_detected", device=self.id)
            self.reapply_desired_state("driver reload: energy counter restarted")
        return reloaded

    def reapply_desired_state(self, why: str) -> None:
        """Apply every stored setting again (the power limit under its cap, if one is set);
        failures leave the device DEGRADED with the reason."""
        if self._session.desired.get(self.uuid).empty and self.power_cap_w is None:
            return  # nothing stored: no need to hold the store
        with self._session.desired.locked():
            self._reapply(why)

    def _reapply(self, why: str) -> None:
        desired = self._session.desired.get(self.uuid)
        with self._lock:
            cap_w = self._cap_w
        if desired.empty and cap_w is None:
            return
        log.info("nvml.reapply_desired_state", device=self.id, why=why, cap_w=cap_w,
                 **desired.to_json())
        h = self._handle
        steps: list[tuple[str, Callable[[], object]]] = []
        limit_w = _lower(desired.power_limit_w, cap_w)
        if limit_w is not None:
            mw = mw_from_w(limit_w)
            steps.append(("set power limit",
                          lambda: pynvml.nvmlDeviceSetPowerManagementLimit(h, mw)))
        if desired.gpu_clocks_mhz is not None:
            lo, hi = desired.gpu_clocks_mhz
            steps.append(("lock GPU clocks",
                          lambda: pynvml.nvmlDeviceSetGpuLockedClocks(h, lo, hi)))
        if desired.mem_clocks_mhz is not None:
            mlo, mhi = desired.mem_clocks_mhz
            steps.append(("lock memory clocks",
                          lambda: pynvml.nvmlDeviceSetMemoryLockedClocks(h, mlo, mhi)))
        if desired.persistence_mode is not None:
            mode = int(desired.persistence_mode)
            steps.append(("set persistence mode",
                          lambda: pynvml.nvmlDeviceSetPersistenceMode(h, mode)))
        failures = []
        for action, step in steps:
            try:
                step()
            except pynvml.NVMLError as exc:
                failures.append(str(_translate(exc, self.id, action)))
        with self._lock:
            self._desired_reason = (
                "desired state not applied: " + "; ".join(failures) if failures else ""
            )
        if failures:
            log.warning("nvml.reapply_failed", device=self.id, failures=failures)

    # -- controls

    def _call(self, action: str, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(self._handle, *args)
        except pynvml.NVMLError as exc:
            if isinstance(exc, pynvml.NVMLError_GpuIsLost):
                self._mark_lost()
            raise _translate(exc, self.id, action) from exc

    def power_limit_range_w(self) -> tuple[float, float]:
        low, high = self._call("read power limit constraints",
                               pynvml.nvmlDeviceGetPowerManagementLimitConstraints)
        return w_from_mw(low), w_from_mw(high)

    def set_power_limit(self, watts: float) -> None:
        """Set the board power limit and verify it by reading it back (v1 call: the _v2 wrapper in
        nvidia-ml-py ignores the driver's return code)."""
        low, high = self.power_limit_range_w()
        if (isinstance(watts, bool) or not isinstance(watts, (int, float))
                or not math.isfinite(watts) or not low <= watts <= high):
            raise InvalidArgument(
                f"{self.id}: power limit {watts!r} W is outside the allowed range "
                f"{low:g}-{high:g} W"
            )
        with self._lock:
            cap_w = self._cap_w
        with self._session.desired.locked():
            self._write_limit(_lower(watts, cap_w))  # a cap in force keeps its hold
            self._session.desired.update(self.uuid, power_limit_w=w_from_mw(mw_from_w(watts)))
        log.info("nvml.power_limit_set", device=self.id, power_limit_w=watts, cap_w=cap_w)

    def _write_limit(self, watts: float | None) -> None:
        """Write a limit (None: the default) and verify it by reading it back."""
        if watts is None:
            watts = w_from_mw(self._call("read the default power limit",
                                         pynvml.nvmlDeviceGetPowerManagementDefaultLimit))
        mw = mw_from_w(watts)
        self._call("set the power limit", pynvml.nvmlDeviceSetPowerManagementLimit, mw)
        read_back = self._call("read the power limit", pynvml.nvmlDeviceGetPowerManagementLimit)
        if read_back != mw:
            raise HalError(
                f"{self.id}: power limit set to {watts:g} W but reads back "
                f"{w_from_mw(read_back):g} W"
            )

    @property
    def power_cap_w(self) -> float | None:
        with self._lock:
            return self._cap_w

    def workload_env(self) -> dict[str, str]:
        """CUDA sees this GPU alone, numbered as NVML numbers it; on the simulator, the
        workload also finds the simulator (hal.workload.occupy_device)."""
        env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": str(self.index)}
        if self._session.sim_files is not None:
            from hal.sim.nvml import workload_env

            env.update(workload_env(*self._session.sim_files, self.index))
        return env

    def set_power_cap(self, watts: float | None) -> None:
        """A temporary upper bound over the desired power limit (a curtailment): the GPU runs
        at the lower of the two, and the desired limit is never overwritten; None lifts the
        cap and the desired limit (or the default) applies again. Kept in memory only: its
        owner sets it again after a restart."""
        if watts is not None:
            low, high = self.power_limit_range_w()
            if not math.isfinite(watts) or not low <= watts <= high:
                raise InvalidArgument(f"{self.id}: power cap {watts!r} W is outside the allowed "
                                      f"range {low:g}-{high:g} W")
        with self._lock:
            self._cap_w = watts
        with self._session.desired.locked():
            desired = self._session.desired.get(self.uuid).power_limit_w
            self._write_limit(_lower(desired, watts))
        log.info("nvml.power_cap_set", device=self.id, cap_w=watts, desired_w=desired)

    def _clock_range(self, clock_type: int) -> int:
        return self._call("read max clocks", pynvml.nvmlDeviceGetMaxClockInfo, clock_type)

    def _check_clock_pair(self, what: str, min_mhz: int, max_mhz: int, limit_mhz: int) -> None:
        for value in (min_mhz, max_mhz):
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidArgument(f"{self.id}: {what} clocks must be integers in MHz")
        if not 0 < min_mhz <= max_mhz <= limit_mhz:
            raise InvalidArgument(
                f"{self.id}: {what} clocks {min_mhz}-{max_mhz} MHz invalid: need "
                f"0 < min <= max <= {limit_mhz} MHz"
            )

    def lock_clocks(self, min_mhz: int, max_mhz: int) -> None:
        """Lock the GPU (SM) clock between min_mhz and max_mhz (Volta and newer)."""
        self._check_clock_pair("GPU", min_mhz, max_mhz, self._clock_range(pynvml.NVML_CLOCK_SM))
        with self._session.desired.locked():
            self._call("lock GPU clocks", pynvml.nvmlDeviceSetGpuLockedClocks, min_mhz, max_mhz)
            self._session.desired.update(self.uuid, gpu_clocks_mhz=(min_mhz, max_mhz))
        log.info("nvml.clocks_locked", device=self.id, min_mhz=min_mhz, max_mhz=max_mhz)

    def reset_clocks(self) -> None:
        with self._session.desired.locked():
            self._call("reset GPU clocks", pynvml.nvmlDeviceResetGpuLockedClocks)
            self._session.desired.update(self.uuid, gpu_clocks_mhz=None)

    def lock_memory_clocks(self, min_mhz: int, max_mhz: int) -> None:
        self._check_clock_pair("memory", min_mhz, max_mhz,
                               self._clock_range(pynvml.NVML_CLOCK_MEM))
        with self._session.desired.locked():
            self._call("lock memory clocks", pynvml.nvmlDeviceSetMemoryLockedClocks, min_mhz,
                       max_mhz)
            self._session.desired.update(self.uuid, mem_clocks_mhz=(min_mhz, max_mhz))
        log.info("nvml.memory_clocks_locked", device=self.id, min_mhz=min_mhz, max_mhz=max_mhz)

    def reset_memory_clocks(self) -> None:
        with self._session.desired.locked():
            self._call("reset memory clocks", pynvml.nvmlDeviceResetMemoryLockedClocks)
            self._session.desired.update(self.uuid, mem_clocks_mhz=None)

    def set_persistence_mode(self, enabled: bool) -> None:
        if not isinstance(enabled, bool):
            raise InvalidArgument(f"{self.id}: persistence mode must be true or false")
        with self._session.desired.locked():
            self._call("set persistence mode", pynvml.nvmlDeviceSetPersistenceMode, int(enabled))
            self._session.desired.update(self.uuid, persistence_mode=enabled)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._session.release(self)


def _lower(a: float | None, b: float | None) -> float | None:
    """The lower of two optional limits (None: no limit from that side)."""
    if a is None or b is None:
        return a if b is None else b
    return min(a, b)


def _float(value: int | None) -> float | None:
    return float(value) if value is not None else None


# ---- one NVML initialisation shared by the devices of one discovery ---------------------------


class _Session:
    def __init__(self, desired: DesiredStateStore, watch_xid: bool, xid_poll_ms: int) -> None:
        self.desired = desired
        self.simulated = hasattr(pynvml.nvmlLib, "rigdSimVersion")
        # A simulated driver's files, which a workload process needs to show on its GPU.
        self.sim_files: tuple[str, str] | None = None
        self.driver_version = _text(pynvml.nvmlSystemGetDriverVersion)
        self.nvml_version = _text(pynvml.nvmlSystemGetNVMLVersion)
        cuda = _optional(pynvml.nvmlSystemGetCudaDriverVersion_v2)
        self.cuda_version = f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else ""
        self._lock = threading.Lock()
        self._by_handle: dict[int, NvmlGpu] = {}
        self._open = 0
        self._watch_xid = watch_xid
        self._xid_poll_ms = xid_poll_ms
        self._event_set: Any = None
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def adopt(self, device: NvmlGpu) -> None:
        with self._lock:
            self._by_handle[_address(device._handle)] = device
            self._open += 1
        self.register_events(device)

    def rebind(self, device: NvmlGpu, handle: Any) -> None:
        with self._lock:
            self._by_handle.pop(_address(device._handle), None)
            self._by_handle[_address(handle)] = device

    def register_events(self, device: NvmlGpu) -> None:
        if not self._watch_xid:
            return
        try:
            if self._event_set is None:
                self._event_set = pynvml.nvmlEventSetCreate()
            supported = pynvml.nvmlDeviceGetSupportedEventTypes(device._handle)
            if not supported & _EVENT_XID_CRITICAL:
                log.warning("nvml.xid_events_unsupported", device=device.id)
                return
            pynvml.nvmlDeviceRegisterEvents(device._handle, _EVENT_XID_CRITICAL, self._event_set)
        except pynvml.NVMLError as exc:
            log.warning("nvml.xid_register_failed", device=device.id, error=str(exc))
            return
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="nvml-xid-watcher",
                                             daemon=True)
            self._watcher.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                data = pynvml.nvmlEventSetWait_v2(self._event_set, self._xid_poll_ms)
            except pynvml.NVMLError_Timeout:
                continue
            except pynvml.NVMLError as exc:
                log.warning("nvml.event_wait_failed", error=str(exc))
                self._stop.wait(1.0)
                continue
            with self._lock:
                device = self._by_handle.get(_address(data.device))
            if device is not None and data.eventType & _EVENT_XID_CRITICAL:
                device.on_xid(int(data.eventData))

    def release(self, device: NvmlGpu) -> None:
        with self._lock:
            self._by_handle.pop(_address(device._handle), None)
            self._open -= 1
            last = self._open == 0
        if not last:
            return
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5 + self._xid_poll_ms / 1000)
            self._watcher = None
        if self._event_set is not None:
            _optional(pynvml.nvmlEventSetFree, self._event_set)
            self._event_set = None
        _optional(pynvml.nvmlShutdown)


def _address(handle: Any) -> int:
    return ctypes.cast(handle, ctypes.c_void_p).value or 0


def _optional(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except pynvml.NVMLError:
        return None


def _text(fn: Callable[[], Any]) -> str:
    value = _optional(fn)
    return str(value) if value is not None else ""


# ---- discovery ---------------------------------------------------------------------------------


def _load_library(library_path: Any) -> None:
    """Load a given libnvidia-ml.so.1 first: pynvml's own dlopen by soname then finds it."""
    path = Path(library_path)
    if not path.is_file():
        raise Unavailable(f"libnvidia-ml.so.1 not found: {path} does not exist")
    try:
        ctypes.CDLL(str(path.absolute()))
    except OSError as exc:
        raise Unavailable(f"libnvidia-ml.so.1 not found: cannot load {path}: {exc}") from exc


def _init() -> None:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError_LibraryNotFound as exc:
        raise Unavailable(
            "libnvidia-ml.so.1 not found: no NVIDIA driver installed "
            "(or set the nvml backend's library_path)"
        ) from exc
    except pynvml.NVMLError_DriverNotLoaded as exc:
        raise Unavailable("NVIDIA driver not loaded (nvmlInit: Driver Not Loaded)") from exc
    except pynvml.NVMLError as exc:
        raise Unavailable(f"nvmlInit failed: {exc}") from exc


def check_options(options: Mapping[str, Any]) -> None:
    unknown = set(options) - _OPTIONS
    if unknown:
        raise InvalidArgument(
            f"nvml backend: unknown option(s) {sorted(unknown)}; known: {sorted(_OPTIONS)}"
        )
    for key in ("library_path", "sim_state_path", "state_dir"):
        if key in options and not isinstance(options[key], (str, os.PathLike)):
            raise InvalidArgument(f"nvml backend: {key} must be a path")
    devices = options.get("devices")
    if devices is not None and (
        isinstance(devices, str) or not all(isinstance(d, str) for d in devices)
    ):
        raise InvalidArgument("nvml backend: devices must be a list of gpu ids or UUIDs")
    if not isinstance(options.get("watch_xid", True), bool):
        raise InvalidArgument("nvml backend: watch_xid must be true or false")
    poll = options.get("xid_poll_ms", 500)
    if isinstance(poll, bool) or not isinstance(poll, int) or not 10 <= poll <= 10_000:
        raise InvalidArgument("nvml backend: xid_poll_ms must be an integer in 10..10000")


def discover(options: Mapping[str, Any]) -> list[Device]:
    """Every GPU NVML can see (or those named in `devices`), with desired state re-applied.

    Options: library_path (a libnvidia-ml.so.1 to load, e.g. the simulator), sim_state_path (sets
    RIGD_NVML_SIM_STATE for the simulator), state_dir (where desired state is kept), devices
    (gpu ids or UUIDs to claim; unknown ones are an error), watch_xid (default true),
    xid_poll_ms (watcher wake-up, default 500)."""
    check_options(options)
    if "sim_state_path" in options:
        os.environ[SIM_STATE_ENV] = str(Path(options["sim_state_path"]).absolute())
    if "library_path" in options:
        _load_library(options["library_path"])
    _init()
    state_dir = options.get("state_dir")
    session = _Session(
        DesiredStateStore(Path(state_dir) if state_dir else None),
        watch_xid=bool(options.get("watch_xid", True)),
        xid_poll_ms=int(options.get("xid_poll_ms", 500)),
    )
    if session.simulated and "sim_state_path" in options and "library_path" in options:
        session.sim_files = (str(Path(options["sim_state_path"]).absolute()),
                             str(Path(options["library_path"]).absolute()))
    try:
        gpus = _open_devices(session)
        wanted = options.get("devices")
        if wanted is not None:
            gpus = _select(gpus, list(wanted))
    except Exception:
        _optional(pynvml.nvmlShutdown)
        raise
    if not gpus:
        _optional(pynvml.nvmlShutdown)
        return []
    for gpu in gpus:
        session.adopt(gpu)
        gpu.reapply_desired_state("discovery")
    return list(gpus)


def _open_devices(session: _Session) -> list[NvmlGpu]:
    gpus = []
    for index in range(pynvml.nvmlDeviceGetCount()):
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            gpus.append(NvmlGpu(session, handle, index))
        except pynvml.NVMLError as exc:
            # A GPU lost at start-up has no readable UUID: it is reported, not invented.
            log.error("nvml.gpu_unreadable", index=index, error=str(exc))
    return gpus


def _select(gpus: list[NvmlGpu], wanted: list[str]) -> list[NvmlGpu]:
    by_key = {key: gpu for gpu in gpus for key in (gpu.id, gpu.uuid)}
    unknown = [w for w in wanted if w not in by_key]
    if unknown:
        raise InvalidArgument(
            f"nvml backend: unknown GPU id(s) {unknown}; present: {sorted(g.id for g in gpus)}"
        )
    chosen = {id(by_key[w]) for w in wanted}
    return [gpu for gpu in gpus if id(gpu) in chosen]


__all__ = [
    "APPLICATION_XIDS",
    "DesiredState",
    "DesiredStateStore",
    "NvmlGpu",
    "discover",
    "throttle_reason_names",
]
