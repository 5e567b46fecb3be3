"""The deployment kit: rigctl's shell completion, the systemd unit, the example rigd.toml."""

from __future__ import annotations

import shlex
import shutil
import subprocess

import pytest

from tests.agent.test_cli import RIGCTL


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
        (("rigctl", "fpga", "validate", "--run", "sha"), ["sha256d-known-answer"]),
        (("rigctl", "--ca", ""), []),  # a file name: bash's default completion
    ],
)
def test_completion_offers_commands_options_and_choices(
        completion_script: str, words: tuple[str, ...], offered: list[str]) -> None:
    assert complete(completion_script, *words) == offered


def test_completion_lists_every_command() -> None:
    from agent.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    script = subprocess.run([RIGCTL, "completion", "bash"], capture_output=True, text=True,
                            timeout=60).stdout
    assert sorted(complete(script, "rigctl", "")) == sorted(sub.choices)  # type: ignore[arg-type]
