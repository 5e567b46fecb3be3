"""Where rigd listens by default: kept apart so rigctl finds it without loading the agent."""

from __future__ import annotations

import os


def default_socket_path() -> str:
    if os.geteuid() == 0:
        return "/run/rigd/rigd.sock"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "rigd", "rigd.sock")
    return f"/tmp/rigd-{os.getuid()}/rigd.sock"
