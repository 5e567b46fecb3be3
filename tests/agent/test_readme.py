"""The README documents what rigd and rigctl are: every setting with its default and meaning as
`rigd --print-config` gives them, every [hal.*] option, and the commands an operator needs."""

from __future__ import annotations

import importlib
import subprocess
from pathlib import Path

import pytest

import agent.config.settings as cfg
from tests.agent.test_startup import RIGD

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def section(title: str, level: str = "##") -> str:
    """The README's text under a `## title` heading (or `###`), up to the next heading of that
    level or above."""
    start = README.index(f"\n{level} {title}\n")
    ends = [README.find(f"\n{'#' * n} ", start + 1) for n in range(2, len(level) + 1)]
    end = min((e for e in ends if e != -1), default=len(README))
    return README[start:end]


def setting_rows() -> list[str]:
    """The rows "Every setting" must hold, derived from the declarations as --print-config is."""
    rows = []
    for cls, array in ((cfg.Config, ""), (cfg.TokenGrant, "auth.tokens"),
                       (cfg.HashingConfig, "hashing")):
        for s in cfg.declarations(cls):
            if s.name in ("tokens", "hashing", "backend_options"):
                continue
            key = f"`[[{array}]]` `{s.key}`" if array else f"`{s.path}`"
            meaning = s.help.replace("|", "\\|").replace("<", "&lt;")
            rows.append(f"| {key} | `{cfg._toml_default(s)}` | {meaning} |")
    return rows


@pytest.mark.processes
def test_every_setting_is_documented_as_print_config_says() -> None:
    table = section("Every setting", "###")
    missing = [row for row in setting_rows() if row not in table]
    assert not missing, "README's 'Every setting' table differs:\n" + "\n".join(missing)
    printed = subprocess.run([RIGD, "--print-config"], capture_output=True, text=True,
                             timeout=60).stdout
    keys = [line.split(" = ")[0].removeprefix("# ") for line in printed.splitlines()
            if line.startswith("# ") and " = " in line]
    assert len(keys) == len(setting_rows()), "one row per key --print-config prints"


def test_every_backend_option_is_documented() -> None:
    table = section("Every setting", "###")
    for backend in ("host", "nvml", "opencl", "asic"):
        for key in importlib.import_module(f"hal.{backend}")._OPTIONS:
            assert f"| `hal.{backend}.{key}` |" in table, f"[hal.{backend}] {key}"


def test_the_way_to_a_real_rig_is_written_down() -> None:
    real = section("From the demo to a real rig")
    for needed in ("/etc/rigd/rigd.toml", "deploy/rigd.service", "rigctl certs init",
                   "certificate_roles", "[[auth.tokens]]", "--ca", "--cert", "--key",
                   "RIGCTL_CA", "systemctl", "CAP_SYS_ADMIN", "rigctl completion bash"):
        assert needed in real, needed
    assert "--count" in section("rigctl") and "[[hashing]]" in section("Configuration")


def readme_timeline() -> list[str]:
    """The lines of the captured demo timeline README.md opens with."""
    text = section("What the demo shows")
    return text.split("```text\n", 1)[1].split("```", 1)[0].splitlines()


def test_the_readme_timeline_has_the_storys_steps_in_order() -> None:
    from agent.demo.story import STEPS

    headers = [line.split("] ", 1)[1] for line in readme_timeline() if line.startswith("[t+")]
    assert headers == [f"{n}. {title}" for n, title in enumerate(STEPS, 1)]
