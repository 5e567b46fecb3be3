"""OpenCL devices through pyopencl: compute devices for the hashing kernel, and FPGA cards.

Every OpenCL device becomes one hal Device carrying its `pyopencl.Device` as `cl_device`. Devices
whose OpenCL type is listed in the option `fpga_device_types` (default: accelerator, which is how
Xilinx and Intel FPGA cards enumerate) become `FpgaCard`s that can be programmed with a bitstream
(hal.bitstream). On a machine without an FPGA, `fpga_device_types=["cpu"]` lets PoCL's CPU device
stand in for a card, so the same programming code runs in tests.

Ids are stable across discoveries: `opencl/<pci-bdf>` (or `fpga/<pci-bdf>`) when the driver
tells us the PCI address (cl_khr_pci_bus_info, NVIDIA or AMD extensions; the same address NVML
reports, so both views of a GPU can be matched), otherwise `opencl/<platform-slug>/<index>`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hal import bitstream as bits
from hal.device import Capability, Device, DeviceInfo, DeviceKind, Health, HealthState, Telemetry
from hal.errors import DeviceLost, InvalidArgument, NotSupported, Unavailable

if TYPE_CHECKING:
    import pyopencl as cl

_OPTIONS = frozenset({"fpga_device_types", "bitstream_dir", "state_dir", "platforms"})
DEVICE_TYPE_NAMES = ("gpu", "accelerator", "cpu", "custom")
DEFAULT_FPGA_DEVICE_TYPES = ("accelerator",)

_CL_DEVICE_PCI_BUS_INFO_KHR = 0x410F  # not (yet) wrapped by pyopencl


@dataclass(frozen=True, slots=True)
class LoadedBitstream:
    """What a card holds: shown in inventory as `bitstream_*` attributes."""

    name: str
    version: str
    algorithm: str
    sha256: str
    size_bytes: int
    loaded_at: str  # ISO 8601 UTC
    source_path: str

    def attributes(self) -> dict[str, str]:
        return {
            "bitstream_name": self.name,
            "bitstream_version": self.version,
            "bitstream_algorithm": self.algorithm,
            "bitstream_sha256": self.sha256,
            "bitstream_size_bytes": str(self.size_bytes),
            "bitstream_loaded_at": self.loaded_at,
            "bitstream_source": self.source_path,
        }


@dataclass(frozen=True, slots=True)
class ProgramReport:
    device_id: str
    dry_run: bool
    checks: tuple[bits.Check, ...]
    action: str  # what was done, or what would be done
    previous: LoadedBitstream | None
    loaded: LoadedBitstream | None  # after the call (unchanged on dry run)


@dataclass(frozen=True, slots=True)
class SearchResult:
    nonces: tuple[int, ...]  # candidates re-checked with hashlib, ascending
    candidates: int  # what the kernel reported (may exceed what fitted in the found buffer)
    rejected: int  # kernel candidates that failed the hashlib check: a broken bitstream
    nonce_count: int
    elapsed_s: float

    @property
    def hashrate_hs(self) -> float:
        return self.nonce_count / self.elapsed_s if self.elapsed_s > 0 else 0.0


class OpenClDevice(Device):
    """An OpenCL compute device that is not claimed as an FPGA card (GPU, CPU, ...)."""

    kind = DeviceKind.OPENCL
    # Whether the hashing kernel builds here is for the agent to find out (a compile probe).
    capabilities = frozenset({Capability.TELEMETRY})
    id_prefix = "opencl"

    def __init__(self, cl_device: cl.Device, platform_slug: str, index: int) -> None:
        self.cl_device = cl_device
        self.compute_facet = self
        self.platform_slug = platform_slug
        self.index = index
        self.pci_bus_id = pci_bus_id(cl_device)
        suffix = self.pci_bus_id or f"{platform_slug}/{index}"
        self.id = f"{self.id_prefix}/{suffix}"
        self._info = self._read_info()
        self._context: cl.Context | None = None

    def context(self) -> cl.Context:
        import pyopencl as cl

        if self._context is None:
            self._context = cl.Context([self.cl_device])
        return self._context

    def _read_info(self) -> DeviceInfo:
        dev = self.cl_device
        attributes = {
            "device_type": device_type_name(dev.type),
            "platform": dev.platform.name,
            "platform_version": dev.platform.version,
            "opencl_version": dev.version,
            "opencl_c_version": dev.opencl_c_version,
            "compute_units": str(dev.max_compute_units),
            "max_clock_mhz": str(dev.max_clock_frequency),
            "global_mem_bytes": str(dev.global_mem_size),
            "local_mem_bytes": str(dev.local_mem_size),
            "max_work_group_size": str(dev.max_work_group_size),
            "preferred_vector_width_int": str(dev.preferred_vector_width_int),
            "native_vector_width_int": str(dev.native_vector_width_int),
            "platform_slug": self.platform_slug,
            "device_index": str(self.index),
        }
        return DeviceInfo(
            id=self.id,
            kind=self.kind,
            name=dev.name.strip(),
            vendor=dev.vendor.strip(),
            model=dev.name.strip(),
            driver_version=dev.driver_version,
            pci_bus_id=self.pci_bus_id,
            attributes=attributes,
        )

    def info(self) -> DeviceInfo:
        return self._info

    def health(self) -> Health:
        try:
            available = bool(self.cl_device.available)
        except Exception as exc:  # the driver lost the device
            return Health(HealthState.UNHEALTHY, f"device query failed: {exc}")
        if not available:
            return Health(HealthState.UNHEALTHY, "driver reports the device unavailable")
        return Health(HealthState.HEALTHY)

    def telemetry(self) -> Telemetry:
        """OpenCL has no sensors; power and temperature come from NVML or the card's own tools."""
        return Telemetry(device_id=self.id, kind=self.kind, health=self.health())


class FpgaCard(OpenClDevice):
    """An FPGA card reached through OpenCL: programmed with a bitstream, then runs its kernels.

    The loaded bitstream lives in this object and, when `state_dir` is set, in a copy of the
    image plus a record on disk, so a later process (the next `rigctl fpga` call) sees the card
    as programmed, as a real card would stay programmed.
    """

    kind = DeviceKind.FPGA
    capabilities = frozenset({Capability.TELEMETRY, Capability.PROGRAM_BITSTREAM})
    id_prefix = "fpga"

    def __init__(
        self,
        cl_device: cl.Device,
        platform_slug: str,
        index: int,
        bitstream_dir: Path | None,
        state_dir: Path | None,
    ) -> None:
        super().__init__(cl_device, platform_slug, index)
        self.compute_facet = None  # a card runs its bitstream, not the OpenCL C kernel
        self.bitstream_dir = bitstream_dir
        self.state_dir = state_dir
        self._lock = threading.RLock()
        self._program: cl.Program | None = None
        self._image: bytes | None = None  # the bytes the card was programmed with
        self._manifest: bits.Manifest | None = None
        self._loaded: LoadedBitstream | None = None
        self._last_hashrate_hs: float | None = None
        self._load_state_record()

    @property
    def target(self) -> bits.Target:
        return bits.Target(self.cl_device.name, self.cl_device.platform.version)

    @property
    def loaded(self) -> LoadedBitstream | None:
        return self._loaded

    @property
    def loaded_manifest(self) -> bits.Manifest | None:
        return self._manifest

    def info(self) -> DeviceInfo:
        base = self._info
        attributes = dict(base.attributes)
        if self._loaded is not None:
            attributes.update(self._loaded.attributes())
        else:
            attributes["bitstream_name"] = ""
        return DeviceInfo(
            id=base.id,
            kind=base.kind,
            name=base.name,
            vendor=base.vendor,
            model=base.model,
            driver_version=base.driver_version,
            pci_bus_id=base.pci_bus_id,
            firmware_version=self._loaded.version if self._loaded else "",
            # A device of another OpenCL type standing in for a card (PoCL's CPU in tests).
            simulated=attributes["device_type"] != "accelerator",
            attributes=attributes,
        )

    def telemetry(self) -> Telemetry:
        return Telemetry(
            device_id=self.id,
            kind=self.kind,
            health=self.health(),
            hashrate_hs=self._last_hashrate_hs,
        )

    # --- programming ---------------------------------------------------------------------

    def program(self, path: str | os.PathLike[str], dry_run: bool = False) -> ProgramReport:
        """Check a bitstream against this card and load it with clCreateProgramWithBinary.

        Every refusal raises InvalidArgument before anything changes, and the bitstream loaded
        before stays loaded. `dry_run` makes every check but touches neither the card nor the
        state: on an FPGA creating the program object *is* the reconfiguration.
        """
        import pyopencl as cl

        with self._lock:
            previous = self._loaded
            bitstream, checks = bits.load_bitstream(path, self.bitstream_dir)
            checks.append(bits.check_target(bitstream.manifest, self.target))
            manifest = bitstream.manifest
            replacing = f", replacing {previous.name} {previous.version}" if previous else ""
            action = (
                f"program {self.id} with {manifest.name} {manifest.version} "
                f"({manifest.algorithm}, {manifest.binary_size_bytes} bytes){replacing}"
            )
            if dry_run:
                return ProgramReport(
                    self.id, True, tuple(checks), f"would {action}", previous, previous
                )
            try:
                program = cl.Program(self.context(), [self.cl_device], [bitstream.binary])
                program.build()
            except cl.Error as exc:
                raise InvalidArgument(
                    f"{self.id}: the driver rejected {bitstream.path.name}: {exc}"
                ) from exc
            present = set(program.kernel_names.split(";"))
            missing = [k for k in manifest.kernels if k not in present]
            if missing:
                raise InvalidArgument(
                    f"{self.id}: {bitstream.path.name} lacks kernel(s) {missing} its manifest lists"
                )
            checks.append(bits.Check("kernels", ", ".join(sorted(present))))
            loaded = LoadedBitstream(
                name=manifest.name,
                version=manifest.version,
                algorithm=manifest.algorithm,
                sha256=manifest.binary_sha256,
                size_bytes=manifest.binary_size_bytes,
                loaded_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                source_path=str(bitstream.path),
            )
            self._save_state_record(bitstream, loaded)
            self._program, self._image = program, bitstream.binary
            self._manifest, self._loaded = manifest, loaded
            self._last_hashrate_hs = None
            return ProgramReport(self.id, False, tuple(checks), action, previous, loaded)

    def loaded_program(self) -> cl.Program:
        """The program object of the loaded bitstream (rebuilt from the saved image if needed)."""
        import pyopencl as cl

        with self._lock:
            if self._loaded is None or self._manifest is None:
                raise NotSupported(f"{self.id}: no bitstream is loaded")
            if self._program is None:
                image = self._read_image()
                if hashlib.sha256(image).hexdigest() != self._loaded.sha256:
                    raise DeviceLost(
                        f"{self.id}: the saved image of {self._loaded.name} no longer matches "
                        "its checksum; program the card again"
                    )
                try:
                    program = cl.Program(self.context(), [self.cl_device], [image])
                    program.build()
                except cl.Error as exc:
                    raise DeviceLost(f"{self.id}: reloading {self._loaded.name}: {exc}") from exc
                self._program, self._image = program, image
            return self._program

    def loaded_image_sha256(self) -> str:
        """SHA-256 of the image the card holds now (what `validate` compares to the manifest)."""
        with self._lock:
            if self._loaded is None:
                raise NotSupported(f"{self.id}: no bitstream is loaded")
            image = self._image if self._image is not None else self._read_image()
            return hashlib.sha256(image).hexdigest()

    def _read_image(self) -> bytes:
        if self.state_dir is None or self._loaded is None:
            return b""
        try:
            return self._state_path(f"{self._loaded.sha256}.bin").read_bytes()
        except OSError:
            return b""

    # --- running the sha256d search ABI --------------------------------------------------

    def search(
        self,
        header: bytes,
        nonce_start: int,
        nonce_count: int,
        lanes: int | None = None,
        found_capacity: int = 64,
    ) -> SearchResult:
        """Run the loaded bitstream's nonce search over [nonce_start, nonce_start+nonce_count).

        Returns candidates whose double hash ends in 32 zero bits, each re-checked with hashlib;
        the caller compares them with the share target.
        """
        import numpy as np
        import pyopencl as cl

        if not 0 <= nonce_start <= 0xFFFFFFFF:
            raise InvalidArgument(f"nonce_start {nonce_start} is not a 32-bit nonce")
        if not 1 <= nonce_count <= 0xFFFFFFFF:
            raise InvalidArgument(f"nonce_count {nonce_count} must be 1..2^32-1")
        if not 1 <= found_capacity <= 1 << 16:
            raise InvalidArgument(f"found_capacity {found_capacity} must be 1..65536")
        job = np.array(bits.sha256d_job_words(header), dtype=np.uint32)
        with self._lock:
            program = self.loaded_program()
            assert self._manifest is not None
            if self._manifest.abi != bits.SHA256D_ABI:
                raise NotSupported(f"{self.id}: loaded bitstream does not implement the search ABI")
            kernel = cl.Kernel(program, "sha256d_search")
            lanes = lanes or 4 * self.cl_device.max_compute_units
            if not 1 <= lanes <= 4096:
                raise InvalidArgument(f"lanes {lanes} must be 1..4096")
            context = self.context()
            queue = cl.CommandQueue(context, self.cl_device)
            flags = cl.mem_flags
            found = np.zeros(1 + found_capacity, dtype=np.uint32)
            job_buf = cl.Buffer(context, flags.READ_ONLY | flags.COPY_HOST_PTR, hostbuf=job)
            found_buf = cl.Buffer(context, flags.READ_WRITE | flags.COPY_HOST_PTR, hostbuf=found)
            kernel.set_args(
                job_buf, np.uint32(nonce_start), np.uint32(nonce_count), found_buf,
                np.uint32(found_capacity),
            )
            start = time.perf_counter()
            cl.enqueue_nd_range_kernel(queue, kernel, (lanes,), (1,))
            cl.enqueue_copy(queue, found, found_buf)
            queue.finish()
            elapsed_s = time.perf_counter() - start
        candidates = int(found[0])
        reported = [int(n) for n in found[1 : 1 + min(candidates, found_capacity)]]
        prefix = header[:76]
        verified = sorted(
            {n for n in reported if bits.is_sha256d_candidate(prefix + n.to_bytes(4, "little"))}
        )
        result = SearchResult(
            tuple(verified), candidates, len(reported) - len(verified), nonce_count, elapsed_s
        )
        self._last_hashrate_hs = result.hashrate_hs
        return result

    # --- the card's memory across processes ----------------------------------------------

    def _state_path(self, suffix: str) -> Path:
        assert self.state_dir is not None
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", self.id)
        return self.state_dir / f"{safe}.{suffix}"

    def _save_state_record(self, bitstream: bits.Bitstream, loaded: LoadedBitstream) -> None:
        """Image first (named by its checksum), then the record that points at it, then drop
        older images: a crash at any point leaves a record whose image is intact."""
        if self.state_dir is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        record = {"loaded": _as_dict(loaded), "manifest": bitstream.manifest.to_json()}
        with open(self._state_path("lock"), "w") as lock:  # one programmer per card at a time
            fcntl.flock(lock, fcntl.LOCK_EX)
            image = self._state_path(f"{loaded.sha256}.bin")
            bits._atomic_write(image, bitstream.binary)
            bits._atomic_write(self._state_path("json"), json.dumps(record, indent=2).encode())
            for old in self.state_dir.glob(f"{self._state_path('').name}*.bin"):
                if old != image:
                    old.unlink(missing_ok=True)

    def _load_state_record(self) -> None:
        if self.state_dir is None:
            return
        path = self._state_path("json")
        if not path.is_file():
            return
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            self._manifest = bits.Manifest.from_json(record["manifest"])
            self._loaded = LoadedBitstream(**record["loaded"])
        except (OSError, ValueError, KeyError, TypeError, InvalidArgument):
            self._manifest = self._loaded = None  # an unreadable record: the card is blank


def _as_dict(loaded: LoadedBitstream) -> dict[str, Any]:
    return {name: getattr(loaded, name) for name in LoadedBitstream.__slots__}


def device_type_name(type_bits: int) -> str:
    """The option-style name of an OpenCL device type bit field ("gpu", "cpu", ...)."""
    import pyopencl as cl

    names = [n for n in DEVICE_TYPE_NAMES if type_bits & getattr(cl.device_type, n.upper())]
    return ",".join(names) or f"0x{type_bits:x}"


# --- PCI addresses -------------------------------------------------------------------------


def format_bdf(domain: int, bus: int, device: int, function: int) -> str:
    """`dddd:bb:dd.f`, lowercase, as lspci prints it."""
    return f"{domain:04x}:{bus:02x}:{device:02x}.{function:x}"


def normalize_pci_bus_id(bus_id: str) -> str:
    """NVML says `00000000:01:00.0`, lspci `0000:01:00.0`: compare both as the latter."""
    match = re.fullmatch(r"(?:([0-9a-fA-F]{1,8}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])",
                         bus_id.strip())
    if match is None:
        raise InvalidArgument(f"not a PCI bus id: {bus_id!r}")
    domain, bus, device, function = (int(g, 16) if g else 0 for g in match.groups())
    return format_bdf(domain, bus, device, function)


def bdf_from_nv_slot(domain: int, bus: int, slot: int) -> str:
    """CL_DEVICE_PCI_SLOT_ID_NV packs device (bits 3..7) and function (bits 0..2)."""
    return format_bdf(domain, bus, (slot >> 3) & 0x1F, slot & 0x7)


def pci_bus_id(dev: cl.Device) -> str:
    """The device's PCI address from whichever extension its driver offers, or ""."""
    extensions = set(dev.extensions.split())
    if "cl_khr_pci_bus_info" in extensions:
        raw = _raw_device_info(dev, _CL_DEVICE_PCI_BUS_INFO_KHR, 16)
        if raw is not None:
            domain, bus, device, function = (
                int.from_bytes(raw[i : i + 4], "little") for i in range(0, 16, 4)
            )
            return format_bdf(domain, bus, device, function)
    if "cl_nv_device_attribute_query" in extensions:
        try:
            domain = _optional_int(dev, "pci_domain_id_nv")
            return bdf_from_nv_slot(domain, dev.pci_bus_id_nv, dev.pci_slot_id_nv)
        except Exception:
            pass
    if "cl_amd_device_attribute_query" in extensions:
        try:
            topology = dev.topology_amd
            return format_bdf(0, topology.bus, topology.device, topology.function)
        except Exception:
            pass
    return ""


def _optional_int(dev: cl.Device, name: str) -> int:
    try:
        return int(getattr(dev, name))
    except Exception:
        return 0


def _raw_device_info(dev: cl.Device, param: int, size: int) -> bytes | None:
    """clGetDeviceInfo for a query pyopencl does not wrap, through the loaded ICD loader."""
    lib = _opencl_library()
    if lib is None:
        return None
    buffer = ctypes.create_string_buffer(size)
    returned = ctypes.c_size_t(0)
    status = lib.clGetDeviceInfo(
        ctypes.c_void_p(dev.int_ptr), ctypes.c_uint32(param), ctypes.c_size_t(size), buffer,
        ctypes.byref(returned),
    )
    if status != 0 or returned.value != size:
        return None
    return buffer.raw


_opencl_lib: ctypes.CDLL | None = None


def _opencl_library() -> ctypes.CDLL | None:
    global _opencl_lib
    if _opencl_lib is None:
        candidates: list[str] = []
        try:  # the loader pyopencl itself uses, if it bundles one
            with open("/proc/self/maps", encoding="utf-8") as maps:
                mapped = re.findall(r"(/\S*/libOpenCL[^/\s]*\.so[^/\s]*)", maps.read())
            candidates += sorted(set(mapped))
        except OSError:
            pass
        found = ctypes.util.find_library("OpenCL")
        if found:
            candidates.append(found)
        for name in candidates:
            try:
                _opencl_lib = ctypes.CDLL(name)
                break
            except OSError:
                continue
    return _opencl_lib


# --- discovery -----------------------------------------------------------------------------


def platform_slug(name: str, version: str) -> str:
    """A short stable name for a platform that tells side-by-side runtimes apart.

    "OpenCL 3.0 PoCL 3.1+debian  Linux, None+Asserts, ..." -> "pocl-3-1-debian". The version is
    part of it because two versions of one runtime (Debian's and PyPI's PoCL) can coexist.
    """
    product = version.split(",", 1)[0]
    product = re.sub(r"^\s*OpenCL\s+\d+(\.\d+)*\s*", "", product)
    product = re.sub(r"\s+Linux\s*$", "", product)
    slug = re.sub(r"[^a-z0-9]+", "-", product.lower()).strip("-")
    if not slug:
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "platform"
    return slug[:48].rstrip("-")


@dataclass(frozen=True, slots=True)
class Options:
    fpga_device_types: tuple[str, ...] = DEFAULT_FPGA_DEVICE_TYPES
    bitstream_dir: Path | None = None
    state_dir: Path | None = None
    platforms: tuple[str, ...] = ()  # case-insensitive substrings of platform name or slug


def check_options(options: Mapping[str, Any]) -> None:
    parse_options(options)


def parse_options(options: Mapping[str, Any]) -> Options:
    unknown = set(options) - _OPTIONS
    if unknown:
        raise InvalidArgument(
            f"opencl backend: unknown option(s) {sorted(unknown)}; known: {sorted(_OPTIONS)}"
        )
    types = options.get("fpga_device_types", DEFAULT_FPGA_DEVICE_TYPES)
    if isinstance(types, str) or not isinstance(types, (list, tuple)):
        raise InvalidArgument("opencl backend: fpga_device_types must be a list of type names")
    bad = [t for t in types if t not in DEVICE_TYPE_NAMES]
    if bad:
        raise InvalidArgument(
            f"opencl backend: fpga_device_types {bad} not in {list(DEVICE_TYPE_NAMES)}"
        )
    platforms = options.get("platforms", ())
    if isinstance(platforms, str) or not isinstance(platforms, (list, tuple)) or not all(
        isinstance(p, str) and p for p in platforms
    ):
        raise InvalidArgument("opencl backend: platforms must be a list of non-empty strings")
    return Options(
        fpga_device_types=tuple(types),
        bitstream_dir=_directory(options, "bitstream_dir"),
        state_dir=_directory(options, "state_dir"),
        platforms=tuple(platforms),
    )


def _directory(options: Mapping[str, Any], key: str) -> Path | None:
    value = options.get(key)
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise InvalidArgument(f"opencl backend: {key} must be a path")
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise InvalidArgument(f"opencl backend: {key} {str(path)!r} is not a directory")
    return path


def discover(options: Mapping[str, Any]) -> list[Device]:
    opts = parse_options(options)
    try:
        import pyopencl as cl
    except ImportError as exc:
        raise Unavailable(f"pyopencl is not installed: {exc}") from exc
    try:
        platforms = cl.get_platforms()
    except cl.Error as exc:  # PLATFORM_NOT_FOUND_KHR: no ICD installed
        raise Unavailable(f"no OpenCL platform (is an ICD installed?): {exc}") from exc
    if not platforms:
        raise Unavailable("no OpenCL platform (is an ICD installed?)")
    fpga_mask = 0
    for name in opts.fpga_device_types:
        fpga_mask |= getattr(cl.device_type, name.upper())

    devices: list[Device] = []
    for platform in platforms:
        slug = platform_slug(platform.name, platform.version)
        if opts.platforms and not any(
            f.lower() in platform.name.lower() or f.lower() in slug for f in opts.platforms
        ):
            continue
        try:
            cl_devices = platform.get_devices()
        except cl.Error:  # DEVICE_NOT_FOUND: a platform with nothing attached
            continue
        for index, cl_device in enumerate(cl_devices):
            if cl_device.type & fpga_mask:
                devices.append(
                    FpgaCard(cl_device, slug, index, opts.bitstream_dir, opts.state_dir)
                )
            else:
                devices.append(OpenClDevice(cl_device, slug, index))
    return devices


def find_device(device_id: str, options: Mapping[str, Any] | None = None) -> OpenClDevice:
    """The OpenCL device with this id, enumerated afresh (a workload process looks up the
    device rigd told it to use)."""
    for device in discover(options or {}):
        if device.id == device_id and isinstance(device, OpenClDevice):
            return device
    raise DeviceLost(f"OpenCL device {device_id} not found")
