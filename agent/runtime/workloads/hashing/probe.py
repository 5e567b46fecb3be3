"""Can the SHA-256d kernel run on this OpenCL device? Found out once, in a child process.

A device is advertised as hashing-capable only after the kernel built on it and found the
genesis block's nonce (PyPI's PoCL, for one, lists CPUs it cannot compile for). The build runs
in its own process, so rigd never holds an OpenCL context and a crashing driver cannot take it
down; the answer is cached per device, driver and kernel source in the state directory.

    python -m agent.runtime.workloads.hashing.probe OPENCL_DEVICE_ID
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from pathlib import Path

import structlog

from hal.device import Device

log = structlog.get_logger("rigd.hashing")

PROBE_TIMEOUT_S = 300.0
CACHE_NAME = "kernel-probe.json"
_WINDOW = 1 << 16


def _cache_key(facet: Device) -> str:
    from agent.runtime.workloads.hashing.kernel import _kernel_source

    info = facet.info()
    source = hashlib.sha256(_kernel_source().encode()).hexdigest()[:16]
    return "|".join((facet.id, info.attributes.get("platform_version", ""),
                     info.driver_version, source))


async def probe(facet: Device, state_dir: Path) -> str:
    """"" if the kernel runs on `facet`, else why not (cached)."""
    cache_path = state_dir / CACHE_NAME
    key = _cache_key(facet)
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    if isinstance(cache, dict) and isinstance(cache.get(key), str):
        return str(cache[key])
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.runtime.workloads.hashing.probe", facet.id,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), PROBE_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return f"kernel build did not finish within {PROBE_TIMEOUT_S:g} s"
    reason = "" if proc.returncode == 0 else (
        out.decode(errors="replace").strip() or err.decode(errors="replace").strip()[-300:]
        or f"probe exited with code {proc.returncode}")
    cache = cache if isinstance(cache, dict) else {}
    cache[key] = reason
    state_dir.mkdir(parents=True, exist_ok=True)
    cache_path.write_text(json.dumps(cache, indent=1, sort_keys=True))
    log.info("kernel_probe", device_id=facet.id, runs=not reason, reason=reason or None)
    return reason


def main(argv: list[str]) -> int:
    from agent.core.job import GENESIS_HEADER, GENESIS_NONCE
    from agent.runtime.workloads.hashing.kernel import Sha256dKernel
    from hal.opencl import find_device

    try:
        kernel = Sha256dKernel(find_device(argv[0]).cl_device)
        start = GENESIS_NONCE - _WINDOW // 2
        found = kernel.scan(GENESIS_HEADER[:76], start, _WINDOW, 0xFFFF << 208)
    except Exception as exc:  # any failure means: no hashing here, and why
        print(str(exc).splitlines()[0][:300] if str(exc) else repr(exc))
        return 1
    if found != [GENESIS_NONCE]:
        print(f"kernel found {found} where the genesis nonce is {GENESIS_NONCE}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
