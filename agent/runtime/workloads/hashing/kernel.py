"""The host side of the SHA-256d OpenCL kernel (sha256d.cl): per-job precomputation, device
choice, launches and the hashlib check of every candidate.

    device = default_cl_device()
    kernel = Sha256dKernel(device)                  # vector width measured per device
    nonces = kernel.scan(header76, 0, 1 << 24, target)

`scan` returns only nonces whose full double SHA-256 meets the target (checked here with
hashlib), in the header's little-endian nonce convention of job.py.
"""

from __future__ import annotations

import threading
from importlib import resources

import numpy as np
import pyopencl as cl

from agent.core.job import hash_value
from hal.errors import InvalidArgument, Unavailable
from hal.sha256 import MASK, HeaderPrecompute

NONCE_LIMIT = 1 << 32
VECTOR_WIDTHS = (1, 2, 4, 8, 16)

# Defaults measured with bench/hashrate.py (2-core AMD EPYC, AVX-512): on Debian's PoCL 3.1
# (LLVM 15) uint16 runs at ~85 MH/s, uint8 ~42, uint4 ~21, uint ~7; nonces per work-item and
# work-group size made no measurable difference. PyPI's PoCL 3.0 crashed on uint16 (notes), so
# other CPU platforms get uint8; GPUs run one nonce per work-item.
_DEBIAN_POCL_VECTOR_WIDTH = 16
_CPU_DEFAULT_VECTOR_WIDTH = 8
_GPU_DEFAULT_VECTOR_WIDTH = 1
_DEFAULT_ITERATIONS = 4  # nonce vectors per work-item
# PoCL compiles one binary per work-group size it meets: a fixed size means one build per width
# (a free choice would cost ~2 s of LLVM time for every new launch geometry).
_DEFAULT_LOCAL_SIZE = 64

def kernel_args(header76: bytes) -> list[np.uint32]:
    """The kernel's per-job arguments: the midstate, then the 16 precomputed words."""
    constants = HeaderPrecompute.from_header(header76)
    return [np.uint32(v) for v in (*constants.midstate, *constants.words())]


# ---- device choice -------------------------------------------------------------------------


def list_cl_devices() -> list[cl.Device]:
    """Every OpenCL device of every platform, in platform order; [] when there is no ICD."""
    try:
        platforms = cl.get_platforms()
    except cl.Error:
        return []
    devices: list[cl.Device] = []
    for platform in platforms:
        try:
            devices.extend(platform.get_devices())
        except cl.Error:
            continue
    return devices


def describe_cl_device(device: cl.Device) -> str:
    return f"{device.platform.name} {device.platform.version.split()[3]} / {device.name}"


def _is_debian_pocl(device: cl.Device) -> bool:
    return "debian" in device.platform.version.lower()


def mining_rank(device: cl.Device) -> int:
    """Lower runs the kernel faster: GPUs, then Debian's PoCL, then any other device."""
    if device.type & cl.device_type.GPU:
        return 0
    if _is_debian_pocl(device):
        return 1  # PoCL 3.1 with LLVM 15: several times faster on vector code than PyPI's 3.0
    return 2


def default_cl_device() -> cl.Device:
    """The best OpenCL device for mining: a GPU, else Debian's PoCL CPU device, else any."""
    devices = list_cl_devices()
    if not devices:
        raise Unavailable("no OpenCL device (install pocl-opencl-icd or pocl-binary-distribution)")
    return min(devices, key=mining_rank)


def select_cl_device(spec: str | None) -> cl.Device:
    """A device by "platform:device" indices, by a case-insensitive substring of its
    platform name, version or device name, or the default when spec is None or empty."""
    if not spec:
        return default_cl_device()
    try:
        platforms = cl.get_platforms()
    except cl.Error as exc:
        raise Unavailable(f"no OpenCL platform: {exc}") from exc
    if ":" in spec and all(part.isdigit() for part in spec.split(":", 1)):
        p_index, d_index = (int(part) for part in spec.split(":", 1))
        try:
            return platforms[p_index].get_devices()[d_index]
        except IndexError:
            raise InvalidArgument(f"no OpenCL device {spec!r}") from None
    needle = spec.lower()
    for device in list_cl_devices():
        haystack = f"{device.platform.name} {device.platform.version} {device.name}".lower()
        if needle in haystack:
            return device
    raise InvalidArgument(f"no OpenCL device matches {spec!r}")


def default_vector_width(device: cl.Device) -> int:
    """The measured best width (bench/hashrate.py): GPUs run one nonce per work-item."""
    if device.type & cl.device_type.GPU:
        return _GPU_DEFAULT_VECTOR_WIDTH
    if _is_debian_pocl(device):
        return _DEBIAN_POCL_VECTOR_WIDTH
    return _CPU_DEFAULT_VECTOR_WIDTH


def _is_power_of_two(value: int) -> bool:
    return isinstance(value, int) and value >= 1 and value & (value - 1) == 0


def _kernel_source() -> str:
    return resources.files("agent.runtime.workloads.hashing").joinpath("sha256d.cl").read_text()


# ---- the kernel ----------------------------------------------------------------------------


class Sha256dKernel:
    """One compiled SHA-256d scanner on one OpenCL device; concurrent scan() calls take turns."""

    def __init__(
        self,
        cl_device: cl.Device,
        vector_width: int | None = None,
        iterations: int = _DEFAULT_ITERATIONS,
        local_size: int = _DEFAULT_LOCAL_SIZE,
        capacity: int = 1024,
        source: str | None = None,
    ) -> None:
        """`source`: another kernel with sha256d.cl's interface (a vendor-tuned one); whatever
        it reports, scan() returns only nonces that hashlib confirms."""
        width = default_vector_width(cl_device) if vector_width is None else vector_width
        if width not in VECTOR_WIDTHS:
            raise InvalidArgument(f"vector_width must be one of {VECTOR_WIDTHS}, got {width!r}")
        if not _is_power_of_two(iterations):
            raise InvalidArgument(f"iterations must be a power of two >= 1, got {iterations!r}")
        if not _is_power_of_two(local_size):
            raise InvalidArgument(f"local_size must be a power of two, got {local_size!r}")
        if not 1 <= capacity <= 1 << 20:
            raise InvalidArgument(f"capacity must be in 1..2^20, got {capacity!r}")
        self.device = cl_device
        self.vector_width = width
        self.iterations = iterations
        self.local_size = min(local_size, cl_device.max_work_group_size)
        self.capacity = capacity
        self.hashes_done = 0  # nonces hashed by scan(), rescans not counted
        self._lock = threading.Lock()
        self._context = cl.Context([cl_device])
        self._queue = cl.CommandQueue(self._context)
        try:
            program = cl.Program(self._context, source or _kernel_source()).build(
                options=[f"-DVW={width}"])
        except cl.Error as exc:  # e.g. PyPI's PoCL 3.0 does not know newer CPUs ("generic")
            errors = [line for line in str(exc).splitlines() if line.startswith("error")]
            reason = "; ".join(errors[:3]) or str(exc).strip().splitlines()[0]
            where = describe_cl_device(cl_device)
            raise Unavailable(
                f"cannot build the SHA-256d kernel on {where}: {reason[:400]}"
            ) from exc
        self._kernel = cl.Kernel(program, "sha256d_scan")
        self._found_host = np.zeros(1 + capacity, dtype=np.uint32)
        self._found = cl.Buffer(self._context, cl.mem_flags.READ_WRITE, self._found_host.nbytes)
        self._zero = np.zeros(1, dtype=np.uint32)

    @property
    def nonces_per_work_item(self) -> int:
        return self.vector_width * self.iterations

    def scan(self, header: bytes, start_nonce: int, count: int, target: int) -> list[int]:
        """Nonces in [start_nonce, start_nonce + count) whose header hash is <= target, sorted.

        header is 76 bytes (or 80, its nonce field ignored); the range must not pass 2^32.
        """
        if len(header) not in (76, 80):
            raise InvalidArgument(f"header must be 76 or 80 bytes, got {len(header)}")
        if not 0 <= start_nonce < NONCE_LIMIT:
            raise InvalidArgument(f"start_nonce must be in 0..2^32-1, got {start_nonce!r}")
        if count < 1:
            raise InvalidArgument(f"count must be >= 1, got {count!r}")
        if start_nonce + count > NONCE_LIMIT:
            raise InvalidArgument(
                f"nonce range {start_nonce}+{count} passes 2^32: split it or take a new job"
            )
        if not 0 <= target < 1 << 256:
            raise InvalidArgument("target must be in 0..2^256-1")
        header76 = bytes(header[:76])
        args = kernel_args(header76)
        target_top = np.uint32(min(target >> 224, MASK))
        with self._lock:
            candidates = self._candidates(args, target_top, start_nonce, count)
            self.hashes_done += count
        end = start_nonce + count
        found = [
            nonce
            for nonce in sorted(set(candidates))
            if start_nonce <= nonce < end
            and hash_value(header76 + nonce.to_bytes(4, "little")) <= target
        ]
        return found

    def _candidates(
        self, args: list[np.uint32], target_top: np.uint32, start: int, count: int
    ) -> list[int]:
        """Raw kernel reports over a range; a full found buffer means: split and go again."""
        step = self.nonces_per_work_item
        first = start - start % step
        work_items = -(-(start + count - first) // step)
        work_items = -(-work_items // self.local_size) * self.local_size
        # Work-items padding the launch past the range hash too, but the kernel reports only
        # nonces inside [start, start + count), so a full buffer is the range's own doing.
        cl.enqueue_copy(self._queue, self._found, self._zero)
        self._kernel.set_args(
            np.uint32(first),
            np.uint32(self.iterations),
            target_top,
            *args,
            self._found,
            np.uint32(self.capacity),
            np.uint32(start),
            np.uint32(count - 1),  # inclusive, so a whole 2^32 range fits in a uint
        )
        cl.enqueue_nd_range_kernel(self._queue, self._kernel, (work_items,), (self.local_size,))
        cl.enqueue_copy(self._queue, self._found_host, self._found)
        reported = int(self._found_host[0])
        if reported <= self.capacity:
            return [int(n) for n in self._found_host[1 : 1 + reported]]
        if count == 1:  # cannot happen (one nonce, one slot) but never loop forever
            return [start]
        half = count // 2
        return self._candidates(args, target_top, start, half) + self._candidates(
            args, target_top, start + half, count - half
        )
