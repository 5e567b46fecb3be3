"""One line describing the machine, printed by every benchmark beside its figures; and the end
of the processes a benchmark started."""

from __future__ import annotations

import os
import platform
import signal
import subprocess
from typing import Any


def describe() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            lines = [line for line in f if line.startswith("model name")]
        model = lines[0].split(":", 1)[1].strip()
    except (OSError, IndexError):
        pass
    python = platform.python_version()
    return f"{model}, {os.cpu_count()} cores, Python {python}, {platform.system()}"


def end_process(proc: subprocess.Popen[Any], grace_s: float) -> None:
    """SIGTERM, then SIGKILL after `grace_s`; returns once the process has ended."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
