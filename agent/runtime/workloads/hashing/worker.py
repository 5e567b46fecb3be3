"""The hashing worker: one process per device, holding the OpenCL context, the SHA-256d kernel
and the Stratum client. When it ends, the device's memory is free: a context dies with its
process, one held by rigd itself never would.

    python -m agent.runtime.workloads.hashing.worker --device opencl/... --pool stratum+tcp://h:p
        [--pool ...] [--user U] [--intensity 0.5] [--version-rolling auto|on|off]

The pool password comes from $RIGD_POOL_PASSWORD (never on a command line others can read).
Every STATUS_INTERVAL_S it prints one JSON line of status on stdout; it reads JSON lines of
commands on stdin: {"intensity": 0.3} and {"drain": true} (stop taking work and exit). End of
stdin means rigd is gone: it exits. On a simulated GPU it registers its memory with the NVML
simulator, as a real OpenCL context would hold memory on the card.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Any

STATUS_INTERVAL_S = 0.5
CHECK_INTERVAL_S = 0.05
CONTEXT_MEM_BYTES = 300 << 20  # what an OpenCL context and the kernel's buffers hold on a GPU
PASSWORD_ENV = "RIGD_POOL_PASSWORD"


def _emit(status: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(status, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rigd-hashing-worker")
    parser.add_argument("--device", required=True, help="OpenCL device id (hal.opencl)")
    parser.add_argument("--pool", action="append", required=True)
    parser.add_argument("--user", default="rigd")
    parser.add_argument("--intensity", type=float, default=1.0)
    parser.add_argument("--version-rolling", choices=("auto", "on", "off"), default="auto")
    args = parser.parse_args(argv)

    from agent.core.logs import configure_logging

    configure_logging("info", "json")  # rigd reads these lines and logs them as its own
    from agent.runtime.workloads.hashing.miner import HashingWorkload
    from agent.runtime.workloads.hashing.stratum import StratumClient
    from hal.errors import HalError
    from hal.opencl import find_device
    from hal.workload import occupy_device

    rolling: bool | str = {"on": True, "off": False}.get(args.version_rolling, "auto")
    try:
        device = find_device(args.device)
        client = StratumClient(args.pool, args.user, os.environ.get(PASSWORD_ENV, "x"),
                               version_rolling=rolling)
        miner = HashingWorkload(client, device.cl_device, intensity=args.intensity)
        client.start()
        miner.start()  # builds the kernel: a device that cannot compile it fails here
    except Exception as exc:  # reported to rigd, then exit
        _emit({"state": "failed", "error": str(exc) or repr(exc)})
        return 1
    occupy_device(CONTEXT_MEM_BYTES, round(100 * args.intensity))
    stop = threading.Event()

    def commands() -> None:
        for line in sys.stdin:
            try:
                command = json.loads(line)
                if "intensity" in command:
                    miner.set_intensity(float(command["intensity"]))
                    occupy_device(CONTEXT_MEM_BYTES, round(100 * float(command["intensity"])))
                if command.get("drain"):
                    break
            except (ValueError, TypeError, HalError) as exc:
                _emit({"state": "running", "warning": f"bad command {line.strip()[:80]!r}: {exc}"})
        stop.set()  # drained, or stdin closed: rigd is gone

    threading.Thread(target=commands, name="commands", daemon=True).start()
    code = 0
    last_ready, last_emit = False, 0.0
    while not stop.wait(CHECK_INTERVAL_S):
        stats, connection = miner.stats(), client.status()
        if stats.error:
            _emit({"state": "failed", "error": stats.error})
            code = 1
            break
        ready = connection.pool_url is not None and connection.authorized
        now = time.monotonic()
        if ready == last_ready and now - last_emit < STATUS_INTERVAL_S:
            continue  # a change of state is told at once, the counters every interval
        last_ready, last_emit = ready, now
        _emit({
            "state": "running" if ready else "starting",
            "detail": "" if ready else "connecting to pool",
            "hashrate_hs": stats.hashrate_hs,
            "shares_accepted": stats.shares_accepted,
            "shares_rejected": stats.shares_rejected,
            "pool_url": connection.pool_url or "",
            "intensity": stats.intensity,
        })
    miner.stop(5.0)
    client.stop(5.0)
    return code


if __name__ == "__main__":
    sys.exit(main())
