"""Simulated miners in a process of their own, for the benchmarks that poll or curtail them:
a real fleet does not share the benchmark's interpreter (nor its GIL).

`hal.sim.asic.fleet.fleet_process` is the function to reuse (families, `--fault` specs such as
"hang:10%", standard ports); `fleet_process(*args)` here passes raw command-line arguments."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hal.sim.asic.fleet import FleetRun
from hal.sim.asic.fleet import fleet_process as start_fleet

REPO = Path(__file__).resolve().parents[1]

__all__ = ["FleetRun", "fleet_process", "start_fleet"]


@contextlib.contextmanager
def fleet_process(*args: str) -> Iterator[dict[str, Any]]:
    """Run `hal.sim.asic.fleet` with `args`; yield its discovery options ([hal.asic]); the
    fleet stops when the block ends."""
    fleet = subprocess.Popen(
        [sys.executable, "-c", "import sys; from hal.sim.asic.fleet import main; "
         "sys.exit(main(sys.argv[1:]))", *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert fleet.stdout is not None
        yield json.loads(fleet.stdout.readline())
    finally:
        if fleet.stdin is not None:
            fleet.stdin.close()  # the fleet stops at the end of its standard input
        fleet.wait(timeout=60)
