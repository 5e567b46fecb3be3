"""One line describing the machine, printed by every benchmark beside its figures."""

from __future__ import annotations

import os
import platform


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
