"""The deployment kit: rigctl's shell completion, the systemd unit, the example rigd.toml."""

from __future__ import annotations

import importlib
import os
import re
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.agent.test_cli import RIGCTL
from tests.agent.test_startup import RIGD


@pytest.fixture(scope="module")
def completion_script() -> str:
    result = subprocess.run([RIGCTL, "completion", "bash"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def complete(script: str, *words: str) -> list[str]:
    """What bash offers for the last word, as the completion function is called by bash
    (COMP_WORDS split at COMP_WORDBREAKS, so host:port arrives as three words)."""
    program = (f"{script}\nCOMP_WORDS=({' '.join(shlex.quote(w) for w in words)})\n"
               f"COMP_CWORD={len(words) - 1}\n_rigctl\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n"
               "complete -p rigctl\n")
    result = subprocess.run(["bash", "--norc", "--noprofile", "-c", program],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    *offered, registered = result.stdout.splitlines()
    assert registered == "complete -o default -F _rigctl rigctl"
    return [w for w in offered if w]


@pytest.mark.processes
@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
@pytest.mark.parametrize(
    ("words", "offered"),
    [
        (("rigctl", "inv"), ["inventory"]),
        (("rigctl", "c"), ["curtail", "certs", "completion"]),
        (("rigctl", "lease", ""), ["acquire", "renew", "release"]),
        (("rigctl", "--socket", "/run/rigd/rigd.sock", "le"), ["lease"]),
        (("rigctl", "--address", "10.0.0.5", ":", "50051", "tele"), ["telemetry"]),
        (("rigctl", "telemetry", "--wa"), ["--watch"]),
        (("rigctl", "switch", "0", "1", ""), ["idle", "hashing", "inference"]),
        (("rigctl", "certs", ""), ["init"]),
        (("rigctl", "certs", "init", "/etc/rigd/pki", "--cl"), ["--client-name"]),
        (("rigctl", "--ca", ""), []),  # a file name: bash's default completion
        # `fpga` parses its own arguments, loaded only when asked for: offered all the same
        (("rigctl", "fpga", ""), ["examine", "validate", "program", "sim-run"]),
        (("rigctl", "fpga", "program", "--dry"), ["--dry-run"]),
        (("rigctl", "fpga", "sim-run", "--simulator", ""), ["verilator", "icarus"]),
    ],
)
def test_completion_offers_commands_options_and_choices(
        completion_script: str, words: tuple[str, ...], offered: list[str]) -> None:
    assert complete(completion_script, *words) == offered


@pytest.mark.processes
def test_completion_offers_an_options_choices(completion_script: str) -> None:
    """Every option with choices, wherever it is (today `telemetry --format`)."""
    from agent.cli import build_parser
    from agent.cli.completion import parsers

    found = [(path, action.option_strings[-1], [str(c) for c in action.choices or ()])
             for path, p in parsers(build_parser()) for action in p._actions
             if action.option_strings and action.choices]
    assert found, "the completion's choices branch has nothing to complete"
    for path, option, choices in found:
        assert complete(completion_script, "rigctl", *path, option, "") == choices, option


@pytest.mark.processes
def test_completion_lists_every_command() -> None:
    from agent.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    script = subprocess.run([RIGCTL, "completion", "bash"], capture_output=True, text=True,
                            timeout=60).stdout
    assert sorted(complete(script, "rigctl", "")) == sorted(sub.choices)  # type: ignore[arg-type]


# ---- the example configuration -------------------------------------------------------------

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.mark.processes
def test_example_config_lists_every_setting_and_is_valid() -> None:
    printed = subprocess.run([RIGD, "--print-config"], capture_output=True, text=True,
                             timeout=60).stdout.splitlines()
    example = (DEPLOY / "rigd.toml").read_text().splitlines()
    position = 0
    for line in filter(None, printed):  # each line of --print-config, in its order
        assert line in example[position:], f"deploy/rigd.toml lacks or misorders: {line}"
        position = example.index(line, position) + 1
    checked = subprocess.run([RIGD, "--check-config", "-c", str(DEPLOY / "rigd.toml")],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    for backend in ("host", "nvml", "opencl", "asic"):  # each backend's own option list
        start = next(i for i, line in enumerate(example)
                     if line.split("  #")[0] == f"# [hal.{backend}]")
        block = example[start:example.index("", start)]
        for key in importlib.import_module(f"hal.{backend}")._OPTIONS:
            assert any(line.startswith(f"# {key} = ") for line in block), \
                f"[hal.{backend}] {key} is not in deploy/rigd.toml"


@pytest.mark.processes
def test_print_config_uncommented_is_a_valid_configuration(tmp_path: Path) -> None:
    """Every default --print-config shows is a value rigd accepts for that key."""
    printed = subprocess.run([RIGD, "--print-config"], capture_output=True, text=True,
                             timeout=60).stdout
    lines, in_array = [], False
    for line in printed.splitlines():
        if line.startswith("# [["):
            in_array = True  # entries need their required keys: left out
        elif line.startswith("["):
            in_array = False
        match = re.fullmatch(r"# (\w+ = .*?)  # .*", line)
        lines.append(match.group(1) if match and not in_array else line)
    path = tmp_path / "all.toml"
    path.write_text("\n".join(lines).replace('"<hostname>"', '"rig-1"') + "\n")
    checked = subprocess.run([RIGD, "--check-config", "-c", str(path)], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr


# ---- the systemd unit -------------------------------------------------------------------------


def unit_keys(text: str) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


def test_unit_is_hardened_and_outlasts_rigds_own_shutdown() -> None:
    from agent.config.profiles import resolve
    from agent.config.settings import Config
    from agent.daemon import WATCHDOG_SLACK_S
    from agent.runtime.workloads.hashing.handle import STOP_GRACE_S

    service = unit_keys((DEPLOY / "rigd.service").read_text())["Service"]
    one = {key: values[-1] for key, values in service.items()}
    assert one["ProtectSystem"] == "strict" and one["ProtectHome"] == "yes"
    assert one["PrivateTmp"] == "yes" and one["NoNewPrivileges"] == "yes"
    assert one["CapabilityBoundingSet"] == one["AmbientCapabilities"] == "CAP_SYS_ADMIN"
    assert set(one["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6",
                                                           "AF_NETLINK"}
    assert one["StateDirectory"] == one["RuntimeDirectory"] == one["LogsDirectory"] == "rigd"
    assert one["KillMode"] == "mixed" and one["Restart"] == "on-failure"
    assert one["RestartPreventExitStatus"] == "2", "a configuration error is not retried"
    assert "ProtectClock" not in one and "PrivateDevices" not in one, "GPUs stay reachable"
    defaults = Config()
    longest_grace_s = max(STOP_GRACE_S, *(p.grace_s for p in resolve({}).values()))
    own_limit = defaults.drain_s + defaults.shutdown_grace_s + longest_grace_s + WATCHDOG_SLACK_S
    assert float(one["TimeoutStopSec"].removesuffix("s")) > own_limit
    assert one["ExecStart"].split()[0].endswith("/rigd") and "-c" not in one["ExecStart"], \
        "rigd reads /etc/rigd/rigd.toml by itself"


@pytest.mark.processes
@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    """systemd's own parser: no unknown key, no bad value (ExecStart pointed at this rigd),
    and its exposure score."""
    unit = tmp_path / "rigd.service"
    unit.write_text(re.sub(r"(?m)^ExecStart=\S+", f"ExecStart={RIGD}",
                           (DEPLOY / "rigd.service").read_text()))
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60)
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)],
                              capture_output=True, text=True, timeout=60)
    score = re.search(r"Overall exposure level for rigd.service: ([\d.]+)", security.stdout)
    if security.returncode != 0 and score is None:
        pytest.skip(f"systemd-analyze security --offline: {security.stderr.strip()[:200]}")
    assert score is not None and float(score.group(1)) < 4.0, security.stdout[-400:]


@pytest.mark.processes
def test_rigd_under_systemd_uses_the_directories_it_is_given(tmp_path: Path) -> None:
    """RuntimeDirectory=/StateDirectory= as systemd passes them: the socket and the journal go
    there without unix_socket or state_dir in rigd.toml, whatever the uid."""
    runtime, state = tmp_path / "run", tmp_path / "state"
    runtime.mkdir()
    config = tmp_path / "rigd.toml"
    config.write_text('rig_id = "unit-rig"\n[hal]\nbackends = ["host"]\n')
    env = {**os.environ, "RUNTIME_DIRECTORY": str(runtime), "STATE_DIRECTORY": str(state)}
    proc = subprocess.Popen([RIGD, "-c", str(config)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if b'"event": "serving"' in line:
                break
        else:
            pytest.fail(f"rigd ended with {proc.wait()}")
        health = subprocess.run([RIGCTL, "--socket", str(runtime / "rigd.sock"), "health"],
                                capture_output=True, text=True, timeout=60)
        assert health.returncode == 0, health.stderr
        assert (state / "journal.json").is_file()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert proc.stderr is not None
        proc.stderr.close()


def test_rigctl_finds_the_system_rigds_socket(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    from agent.cli import connect

    system = tmp_path / "system.sock"
    monkeypatch.setattr(connect, "SYSTEM_SOCKET", str(system))
    monkeypatch.setattr(connect, "default_socket_path", lambda: str(tmp_path / "own.sock"))
    assert connect.local_socket() == str(tmp_path / "own.sock"), "neither: the user's own"
    system.touch()
    assert connect.local_socket() == str(system), "only the system rigd's"
    (tmp_path / "own.sock").touch()
    assert connect.local_socket() == str(tmp_path / "own.sock"), "the user's own first"
