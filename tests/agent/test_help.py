"""Help an operator can work from: every option of rigd and rigctl says what it does and its
default, and every command shows examples; checked on the parsers and through the entry points."""

from __future__ import annotations

import argparse
import subprocess

import pytest

from agent import main as rigd_main
from agent.cli import build_parser
from agent.cli.completion import parsers
from tests.agent.test_cli import rigctl
from tests.agent.test_startup import RIGD

# `rigctl fpga` is agent/cli/fpga.py's, whose own tests and exit codes are kept with it.
NOT_HERE = ("fpga",)


def problems(parser: argparse.ArgumentParser, program: str) -> list[str]:
    found = []
    for path, p in parsers(parser, skip=NOT_HERE):
        where = " ".join((program, *path))
        commands = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if not commands and "example" not in (p.epilog or ""):
            found.append(f"{where}: no examples")
        for action in p._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction,
                                   argparse._SubParsersAction)):
                continue
            name = "/".join(action.option_strings) or action.dest
            if not action.help:
                found.append(f"{where} {name}: no help")
            elif action.default not in (None, False, "", [], argparse.SUPPRESS) \
                    and "default" not in action.help:
                found.append(f"{where} {name}: default {action.default!r} not shown")
    return found


def test_every_option_has_help_with_its_default_and_every_command_examples() -> None:
    assert problems(build_parser(), "rigctl") == []
    assert problems(rigd_main.build_parser(), "rigd") == []


@pytest.mark.processes
def test_help_through_the_entry_points() -> None:
    top = rigctl("--help")
    assert top.returncode == 0 and "examples:" in top.stdout and "Exit codes:" in top.stdout
    assert "(default: 825)" in rigctl("certs", "init", "--help").stdout
    assert "the limit in watts (W)" in rigctl("power-limit", "--help").stdout
    assert "(default: list)" in rigctl("ops", "--help").stdout
    rigd = subprocess.run([RIGD, "--help"], capture_output=True, text=True, timeout=60)
    assert rigd.returncode == 0
    assert "examples:" in rigd.stdout and "RIGD_CONFIG" in rigd.stdout
    assert "(default: None)" not in rigd.stdout
