"""Static checks of the RTL: Verilator -Wall lint for every FOLD, strict Verilog-2005 parsing by
Icarus, and refusal of unsupported parameters."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from hal.sha256d_sim import FOLDS, RTL_DIR, RTL_SOURCES, TOPLEVEL, verilator_binary, verilator_env

pytestmark = pytest.mark.timeout(300)


def run_verilator_lint(*params: str) -> subprocess.CompletedProcess[str]:
    argv = [verilator_binary(), "--lint-only", "-Wall", f"-I{RTL_DIR}", "--top-module", TOPLEVEL]
    argv += [*params, *(str(p) for p in RTL_SOURCES)]
    env = {**os.environ, **verilator_env()}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=240, check=False)


# Every FOLD elaborates a different datapath; the debug port is the same logic in the core
# whatever the datapath, so it is linted off once.
LINT_CONFIGS = [(fold, 1) for fold in FOLDS] + [(64, 0)]


@pytest.mark.parametrize(("fold", "debug"), LINT_CONFIGS)
def test_verilator_lint_clean(fold: int, debug: int) -> None:
    result = run_verilator_lint(f"-GFOLD={fold}", f"-GDEBUG_DIGEST={debug}", "-GFIFO_DEPTH_LOG2=3")
    assert result.returncode == 0, result.stderr
    assert "%Warning" not in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("param", "needle"),
    [
        ("-GFOLD=3", "FOLD_must_be_1_2_4_8_16_32_or_64"),
        ("-GFIFO_DEPTH_LOG2=13", "FIFO_DEPTH_LOG2_must_be_1_to_12"),
        ("-GTAG_BITS=25", "TAG_BITS_must_be_1_to_24"),
    ],
)
def test_unsupported_parameters_refused(param: str, needle: str) -> None:
    result = run_verilator_lint(param)
    assert result.returncode != 0
    assert needle in result.stderr


@pytest.mark.parametrize("fold", FOLDS)
def test_icarus_parses_as_verilog_2005(fold: int, tmp_path: Path) -> None:
    out = str(tmp_path / "core.vvp")
    argv = ["iverilog", "-g2005", "-Wall", f"-I{RTL_DIR}", "-o", out, "-s", TOPLEVEL]
    argv += ["-P", f"{TOPLEVEL}.FOLD={fold}", "-P", f"{TOPLEVEL}.DEBUG_DIGEST=1"]
    argv += [str(p) for p in RTL_SOURCES]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr.lower(), result.stderr
