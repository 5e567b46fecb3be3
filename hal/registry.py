"""Backend registry and discovery.

A backend is a module (or any callable) with `discover(options) -> list[Device]`. It raises
`Unavailable` when its library or hardware is missing; discovery records the reason and goes
on, so a rig without GPUs still reports its host and miners. `InvalidArgument` (a bad option in
the configuration) is not swallowed: a misconfigured agent should refuse to start.

A built-in backend module also has a pure `check_options(options)` that raises InvalidArgument
naming the bad key, so a configuration is checked whole (`rigd --check-config`) without touching
hardware.
"""

from __future__ import annotations

import difflib
import importlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from hal.device import Device, DeviceKind
from hal.errors import InvalidArgument, Unavailable

DiscoverFn = Callable[[Mapping[str, Any]], list[Device]]

# Built-in backends, imported only when discovery asks for them (pynvml or pyopencl may be absent).
_BUILTIN: dict[str, str] = {
    "host": "hal.host",
    "nvml": "hal.nvml",
    "opencl": "hal.opencl",
    "asic": "hal.asic",
}
_registered: dict[str, DiscoverFn] = {}

DEFAULT_BACKENDS: tuple[str, ...] = ("host", "nvml", "opencl", "asic")


@dataclass(frozen=True, slots=True)
class BackendStatus:
    name: str
    available: bool
    reason: str = ""
    device_count: int = 0
    discover_s: float = 0.0


@dataclass(slots=True)
class Discovery:
    devices: list[Device] = field(default_factory=list)
    backends: list[BackendStatus] = field(default_factory=list)

    def by_id(self) -> dict[str, Device]:
        return {d.id: d for d in self.devices}

    def close(self) -> None:
        for device in self.devices:
            device.close()


def register(name: str, discover_fn: DiscoverFn) -> None:
    """Add (or replace) a backend, e.g. a site-specific one, under `name`."""
    _registered[name] = discover_fn


def known_backends() -> list[str]:
    return sorted({*_BUILTIN, *_registered})


def _resolve(name: str) -> DiscoverFn:
    if name in _registered:
        return _registered[name]
    module_name = _BUILTIN.get(name)
    if module_name is None:
        raise InvalidArgument(_unknown_backend(name, "hal.backends"))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise Unavailable(f"{module_name} cannot be imported: {exc}") from exc
    fn: DiscoverFn = module.discover
    return fn


def check_options(
    backends: Iterable[str], options: Mapping[str, Mapping[str, Any]] | None = None
) -> None:
    """Check backend names and every backend's options without discovering anything."""
    names = list(backends)
    known = known_backends()
    for name in names:
        if name not in known:
            raise InvalidArgument(_unknown_backend(name, "hal.backends"))
    for name, backend_options in (options or {}).items():
        if name not in known:
            raise InvalidArgument(_unknown_backend(name, f"[hal.{name}]"))
        if name not in names:
            raise InvalidArgument(
                f"[hal.{name}] has no effect: {name} is not in hal.backends ({', '.join(names)})"
            )
        module = _builtin_module(name)
        if module is not None:
            module.check_options(backend_options)


def descriptors_needed(
    backends: Iterable[str], options: Mapping[str, Mapping[str, Any]] | None = None
) -> int:
    """File descriptors the configured devices may hold at once, as each built-in backend
    that talks to many devices over the network says (`descriptors_needed(options)`)."""
    total = 0
    for name in backends:
        module = _builtin_module(name)
        needs = getattr(module, "descriptors_needed", None) if module is not None else None
        if needs is not None:
            total += int(needs((options or {}).get(name) or {}))
    return total


def _builtin_module(name: str) -> ModuleType | None:
    """A built-in backend's module, None for a registered backend or one that cannot be
    imported (unavailable: discovery says why)."""
    module_name = _BUILTIN.get(name)
    if module_name is None or name in _registered:
        return None
    try:
        return importlib.import_module(module_name)
    except ImportError:
        return None


def _unknown_backend(name: str, where: str) -> str:
    hint = difflib.get_close_matches(name, known_backends(), n=1)
    suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
    return f"{where}: unknown backend {name!r}{suggestion}; known: {', '.join(known_backends())}"


def join_compute_facets(devices: list[Device], named: Mapping[str, str] | None = None
                        ) -> list[Device]:
    """One device per card: a GPU and the OpenCL device on the same PCI bus id are one card,
    so the OpenCL device becomes the GPU's compute facet and leaves the list. `named` maps a
    GPU id to the OpenCL device that computes for it where no twin exists (a simulated GPU, or
    a driver that does not report bus ids); several GPUs may name the same one."""
    by_id = {d.id: d for d in devices}
    claimed: set[str] = set()
    opencl_by_bus = {_bus_id(d): d for d in devices if d.kind == DeviceKind.OPENCL}
    opencl_by_bus.pop("", None)
    for device in devices:
        twin = opencl_by_bus.get(_bus_id(device)) if device.kind == DeviceKind.GPU else None
        if twin is not None:
            device.compute_facet = twin
            claimed.add(twin.id)
    for gpu_id, facet_id in (named or {}).items():
        gpu, facet = by_id.get(gpu_id), by_id.get(facet_id)
        if gpu is None or facet is None or facet.compute_facet is None:
            missing = gpu_id if gpu is None else facet_id
            import structlog  # here: importing the registry (BackendStatus) stays cheap

            structlog.get_logger("hal.registry").warning(
                "compute_facet_not_found", gpu=gpu_id, facet=facet_id, missing=missing)
            continue
        gpu.compute_facet = facet.compute_facet
        claimed.add(facet_id)
    return [d for d in devices if d.id not in claimed]


def _bus_id(device: Device) -> str:
    """The device's PCI address in one form ("" when it has none or an odd one)."""
    from hal.opencl import normalize_pci_bus_id

    try:
        return normalize_pci_bus_id(device.info().pci_bus_id) if device.info().pci_bus_id else ""
    except InvalidArgument:
        return ""


def discover(
    backends: Iterable[str] = DEFAULT_BACKENDS,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    compute_facets: Mapping[str, str] | None = None,
) -> Discovery:
    """Run each named backend's discovery; never raises for a missing library or device.
    GPUs are then joined with their OpenCL views (join_compute_facets)."""
    options = options or {}
    result = Discovery()
    seen: set[str] = set()
    for name in backends:
        start = time.perf_counter()
        try:
            devices = _resolve(name)(options.get(name, {}))
        except InvalidArgument:
            raise
        except Unavailable as exc:
            result.backends.append(
                BackendStatus(name, False, str(exc), 0, time.perf_counter() - start)
            )
            continue
        except Exception as exc:  # a backend bug must not take discovery down with it
            result.backends.append(
                BackendStatus(
                    name, False, f"discovery failed: {type(exc).__name__}: {exc}", 0,
                    time.perf_counter() - start,
                )
            )
            continue
        fresh = [d for d in devices if d.id not in seen]
        seen.update(d.id for d in fresh)
        result.devices.extend(fresh)
        result.backends.append(
            BackendStatus(name, True, "", len(fresh), time.perf_counter() - start)
        )
    result.devices = join_compute_facets(result.devices, compute_facets)
    return result
