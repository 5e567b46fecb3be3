"""FPGA bitstreams for OpenCL cards: the manifest, the checks made before programming, and a
builder that produces a "bitstream" for PoCL.

An OpenCL FPGA flow (Intel `.aocx`, Xilinx `.xclbin`) loads a bitstream with
clCreateProgramWithBinary. The binary alone says little we can trust, so every bitstream travels
with a JSON manifest beside it (`<name>.bin` + `<name>.json`) saying what it is, which board and
shell it was built for, which kernels it holds, and the binary's size and SHA-256. Like
`xbutil program` (xclbin platform VBNV / interface UUID) and OPAE `fpgaconf` (GBS interface id),
we refuse anything that does not match the card *before* the driver sees a byte: a driver handed
a truncated binary may crash the process (PoCL 3.1 does, with SIGSEGV).

This module knows nothing of devices: it reads files and compares strings. hal.opencl does the
programming.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hal.errors import InvalidArgument
from hal.sha256 import midstate

MANIFEST_FORMAT = "rigd-bitstream/1"
MAX_BITSTREAM_BYTES = 1 << 30  # real xclbin/aocx files are tens to hundreds of MB
MAX_MANIFEST_BYTES = 1 << 20
BINARY_SUFFIX = ".bin"
MANIFEST_SUFFIX = ".json"

# Algorithms this HAL can drive: the host-side ABI the kernel must implement, and its kernels.
SHA256D_ABI = "rigd-sha256d-search/1"
KNOWN_ALGORITHMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "sha256d": (SHA256D_ABI, ("sha256d_search",)),
}

DEFAULT_KERNEL_SOURCE = Path(__file__).resolve().parent.parent / "fpga/opencl/sha256d_search.cl"

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


@dataclass(frozen=True, slots=True)
class Target:
    """What a bitstream was built for: the board (OpenCL device name) and its shell (platform)."""

    device_name: str
    platform_version: str


@dataclass(frozen=True, slots=True)
class Manifest:
    name: str
    version: str
    algorithm: str
    abi: str
    kernels: tuple[str, ...]
    target: Target
    binary_file: str  # file name only, beside the manifest
    binary_sha256: str
    binary_size_bytes: int
    built_at: str = ""
    format: str = MANIFEST_FORMAT

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["kernels"] = list(self.kernels)
        return data

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        """Parse and validate; every problem is an InvalidArgument naming the field."""
        if not isinstance(data, dict):
            raise InvalidArgument("manifest: top level must be a JSON object")
        if data.get("format") != MANIFEST_FORMAT:
            raise InvalidArgument(
                f"manifest: format is {data.get('format')!r}, expected {MANIFEST_FORMAT!r}"
            )
        target = data.get("target")
        if not isinstance(target, dict):
            raise InvalidArgument("manifest: 'target' must be an object")
        kernels = data.get("kernels")
        if not isinstance(kernels, list) or not kernels or not all(
            isinstance(k, str) and k.isidentifier() for k in kernels
        ):
            raise InvalidArgument("manifest: 'kernels' must be a non-empty list of kernel names")
        size = data.get("binary_size_bytes")
        if type(size) is not int or not 0 < size <= MAX_BITSTREAM_BYTES:
            raise InvalidArgument(f"manifest: binary_size_bytes {size!r} is not a sane size")
        digest = data.get("binary_sha256")
        if not isinstance(digest, str) or not _SHA256_HEX.match(digest):
            raise InvalidArgument("manifest: binary_sha256 must be 64 lowercase hex digits")
        binary_file = data.get("binary_file")
        if not isinstance(binary_file, str) or Path(binary_file).name != binary_file:
            raise InvalidArgument("manifest: binary_file must be a bare file name")
        return cls(
            name=_text(data, "name", pattern=_NAME),
            version=_text(data, "version", pattern=_NAME),
            algorithm=_text(data, "algorithm"),
            abi=_text(data, "abi"),
            kernels=tuple(kernels),
            target=Target(_text(target, "device_name"), _text(target, "platform_version")),
            binary_file=binary_file,
            binary_sha256=digest,
            binary_size_bytes=size,
            built_at=str(data.get("built_at", "")),
        )


def _text(data: dict[str, Any], key: str, pattern: re.Pattern[str] | None = None) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"manifest: {key!r} must be a non-empty string")
    if pattern is not None and not pattern.match(value):
        raise InvalidArgument(f"manifest: {key!r} has unexpected characters: {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Bitstream:
    """A bitstream whose file checks passed: `binary` is exactly the bytes that were hashed."""

    path: Path
    manifest: Manifest
    binary: bytes


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    detail: str


def resolve_in_dir(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> Path:
    """The real path of `path`, refused unless it lies inside `root` (symlinks resolved)."""
    root_real = Path(root).resolve(strict=False)
    candidate = Path(path)
    if not candidate.is_absolute():
        candidate = root_real / candidate
    real = candidate.resolve(strict=False)
    if not real.is_relative_to(root_real):
        raise InvalidArgument(
            f"bitstream {str(path)!r} resolves to {str(real)!r}, outside the bitstream directory "
            f"{str(root_real)!r}"
        )
    return real


def load_bitstream(
    path: str | os.PathLike[str], bitstream_dir: str | os.PathLike[str] | None
) -> tuple[Bitstream, list[Check]]:
    """Read a bitstream and its manifest, and check everything that does not need the device:
    location, manifest, algorithm, size, checksum. Raises InvalidArgument on the first failure."""
    checks: list[Check] = []
    if bitstream_dir is None:
        raise InvalidArgument("no bitstream directory is configured (option bitstream_dir)")
    binary_path = resolve_in_dir(path, bitstream_dir)
    if binary_path.suffix == MANIFEST_SUFFIX:
        raise InvalidArgument(f"{binary_path}: give the binary, not its manifest")
    if not binary_path.is_file():
        raise InvalidArgument(f"{binary_path}: no such bitstream file")
    manifest_path = resolve_in_dir(binary_path.with_suffix(MANIFEST_SUFFIX), bitstream_dir)
    if not manifest_path.is_file():
        raise InvalidArgument(f"{binary_path}: manifest {manifest_path.name} is missing")
    checks.append(Check("location", f"{binary_path} is inside {Path(bitstream_dir).resolve()}"))

    if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
        raise InvalidArgument(f"{manifest_path}: manifest larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        manifest = Manifest.from_json(json.loads(manifest_path.read_text(encoding="utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgument(f"{manifest_path}: not valid JSON: {exc}") from exc
    if manifest.binary_file != binary_path.name:
        raise InvalidArgument(
            f"{manifest_path}: describes {manifest.binary_file!r}, not {binary_path.name!r}"
        )
    checks.append(Check("manifest", f"{manifest.name} {manifest.version} ({manifest_path.name})"))

    known = KNOWN_ALGORITHMS.get(manifest.algorithm)
    if known is None:
        raise InvalidArgument(
            f"{binary_path.name}: unknown algorithm {manifest.algorithm!r}; "
            f"known: {', '.join(sorted(KNOWN_ALGORITHMS))}"
        )
    abi, required_kernels = known
    if manifest.abi != abi:
        raise InvalidArgument(
            f"{binary_path.name}: ABI {manifest.abi!r} is not the {manifest.algorithm} ABI {abi!r}"
        )
    missing = [k for k in required_kernels if k not in manifest.kernels]
    if missing:
        raise InvalidArgument(f"{binary_path.name}: manifest lacks required kernel(s) {missing}")
    checks.append(Check("algorithm", f"{manifest.algorithm} ({abi})"))

    size = binary_path.stat().st_size
    if size > MAX_BITSTREAM_BYTES:
        raise InvalidArgument(f"{binary_path.name}: {size} bytes is larger than any bitstream")
    binary = binary_path.read_bytes()
    if len(binary) != manifest.binary_size_bytes:
        state = "truncated" if len(binary) < manifest.binary_size_bytes else "oversized"
        raise InvalidArgument(
            f"{binary_path.name}: {state}: {len(binary)} bytes, manifest says "
            f"{manifest.binary_size_bytes}"
        )
    checks.append(Check("size", f"{len(binary)} bytes"))

    digest = hashlib.sha256(binary).hexdigest()
    if digest != manifest.binary_sha256:
        raise InvalidArgument(
            f"{binary_path.name}: checksum mismatch: sha256 {digest}, manifest says "
            f"{manifest.binary_sha256}"
        )
    checks.append(Check("checksum", f"sha256 {digest}"))
    return Bitstream(binary_path, manifest, binary), checks


def check_target(manifest: Manifest, card: Target) -> Check:
    """Refuse a bitstream built for another board or another shell (driver/platform)."""
    if manifest.target.device_name != card.device_name:
        raise InvalidArgument(
            f"bitstream {manifest.name} targets board {manifest.target.device_name!r}, "
            f"this card is {card.device_name!r}"
        )
    if manifest.target.platform_version != card.platform_version:
        raise InvalidArgument(
            f"bitstream {manifest.name} targets shell {manifest.target.platform_version!r}, "
            f"this card runs {card.platform_version!r}"
        )
    return Check("target", f"board {card.device_name!r}, shell {card.platform_version!r}")


def write_bitstream(out_dir: Path, name: str, binary: bytes, manifest: Manifest) -> Path:
    """Write `<name>.bin` and `<name>.json` atomically (temp file + rename); returns the binary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    binary_path = out_dir / f"{name}{BINARY_SUFFIX}"
    _atomic_write(binary_path, binary)
    text = json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n"
    _atomic_write(binary_path.with_suffix(MANIFEST_SUFFIX), text.encode())
    return binary_path


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def build_bitstream(
    device: Any,
    out_dir: str | os.PathLike[str],
    *,
    source_path: str | os.PathLike[str] = DEFAULT_KERNEL_SOURCE,
    name: str = "sha256d-search",
    version: str = "1.0.0",
    algorithm: str = "sha256d",
) -> Path:
    """Compile an OpenCL kernel for `device` (a pyopencl.Device, or a hal device carrying one as
    `cl_device`) and write its program binary plus manifest: PoCL's stand-in for an FPGA compile.
    Returns the path of the binary."""
    import pyopencl as cl

    cl_device = getattr(device, "cl_device", device)
    if not isinstance(cl_device, cl.Device):
        raise InvalidArgument(f"build_bitstream: {device!r} is not an OpenCL device")
    if not _NAME.match(name) or not _NAME.match(version):
        raise InvalidArgument(f"build_bitstream: bad name or version: {name!r} {version!r}")
    if algorithm not in KNOWN_ALGORITHMS:
        raise InvalidArgument(f"build_bitstream: unknown algorithm {algorithm!r}")
    source = Path(source_path).read_text(encoding="utf-8")
    context = cl.Context([cl_device])
    program = cl.Program(context, source).build()
    (binary,) = program.binaries
    manifest = Manifest(
        name=name,
        version=version,
        algorithm=algorithm,
        abi=KNOWN_ALGORITHMS[algorithm][0],
        kernels=tuple(sorted(program.kernel_names.split(";"))),
        target=Target(cl_device.name, cl_device.platform.version),
        binary_file=f"{name}{BINARY_SUFFIX}",
        binary_sha256=hashlib.sha256(binary).hexdigest(),
        binary_size_bytes=len(binary),
        built_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    return write_bitstream(Path(out_dir), name, bytes(binary), manifest)


# --- the sha256d search ABI: what the host hands the kernel -------------------------------

def sha256d_job_words(header: bytes) -> tuple[int, ...]:
    """The 11 words the search kernel takes: midstate of header[:64], then header[64:76]."""
    if len(header) not in (76, 80):
        raise InvalidArgument(f"block header must be 76 or 80 bytes, got {len(header)}")
    return midstate(header[:64]) + struct.unpack(">3I", header[64:76])


def is_sha256d_candidate(header80: bytes) -> bool:
    """The kernel's candidate test re-done with hashlib: the double hash ends in 32 zero bits."""
    digest = hashlib.sha256(hashlib.sha256(header80).digest()).digest()
    return digest[28:] == b"\0\0\0\0"
