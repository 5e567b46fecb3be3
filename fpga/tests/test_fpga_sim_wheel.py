"""`rigctl fpga sim-run` from a built wheel, as a user who installed rigd gets it: the wheel is
built from this source tree (pip, in a copy of the tree, with setuptools from the package
index), installed into a fresh virtualenv and the command run there from another directory,
with neither the source tree nor this environment on its path. The RTL must come from the
wheel (package data). The wheel's dependencies come from the package index, pinned to the
versions of the environment running the tests, so the check is of the wheel, not of a newer
release of a dependency.

The sequence: the wheel alone refuses in one line naming the extra to install; with the
fpga-sim extra the simulated core finds the genesis nonce."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import sha256d_model as model

REPO = Path(__file__).resolve().parents[2]
# What a checkout may hold besides its sources: never part of a build.
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", ".build", "build", "dist", "*.egg-info", "__pycache__", ".*_cache",
    ".hypothesis",
)
PIP_TIMEOUT_S = 600  # downloads, on a first run with an empty pip cache

pytestmark = pytest.mark.timeout(1200)


def run(argv: list[str], cwd: Path, timeout_s: float = PIP_TIMEOUT_S
        ) -> subprocess.CompletedProcess[str]:
    """A command with neither this environment's PYTHONPATH nor its virtualenv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout_s, check=False)


def build_wheel(tmp: Path) -> Path:
    source = tmp / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCES)  # the build writes build/ and egg-info
    out = tmp / "wheelhouse"
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(source)],
                tmp)
    assert built.returncode == 0, built.stdout + built.stderr
    wheels = list(out.glob("rigd-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def constraints(path: Path) -> Path:
    """The versions installed here, for pip's --constraint."""
    pins = {
        dist.metadata["Name"].lower(): dist.version
        for dist in importlib.metadata.distributions()
        if dist.metadata["Name"] and dist.metadata["Name"].lower() != "rigd"
    }
    path.write_text("".join(f"{name}=={version}\n" for name, version in sorted(pins.items())))
    return path


def pip_install(python: Path, requirement: str, pins: Path, cwd: Path) -> None:
    result = run([str(python), "-m", "pip", "install", "--constraint", str(pins), requirement],
                 cwd)
    assert result.returncode == 0, result.stdout + result.stderr


def sim_run(rigctl: Path, build_dir: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    first = model.GENESIS_NONCE - 16
    return run([str(rigctl), "fpga", "sim-run", "--first", str(first), "--count", "32",
                "--build-dir", str(build_dir), "--json"], cwd, timeout_s=600)


def test_sim_run_from_a_wheel_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python, rigctl = env_dir / "bin" / "python", env_dir / "bin" / "rigctl"
    pins = constraints(tmp_path / "constraints.txt")
    elsewhere = tmp_path / "elsewhere"  # not the source tree: nothing importable from the cwd
    elsewhere.mkdir()

    pip_install(python, str(wheel), pins, elsewhere)
    where = run([str(python), "-c", "import hal, hal.sha256d_sim as s; print(hal.__file__); "
                 "print(s.RTL_DIR); print(sorted(p.name for p in s.RTL_DIR.iterdir()))"],
                elsewhere, timeout_s=60)
    assert where.returncode == 0, where.stderr
    hal_file, rtl_dir, rtl_files = where.stdout.splitlines()
    site = env_dir / "lib"
    assert Path(hal_file).is_relative_to(site) and Path(rtl_dir).is_relative_to(site), where.stdout
    assert not Path(hal_file).is_relative_to(REPO)
    assert "sha256d_top.v" in rtl_files and "sha256d_functions.vh" in rtl_files

    # The wheel alone: no simulator, one line saying which extra brings it.
    bare = sim_run(rigctl, tmp_path / "build", elsewhere)
    assert bare.returncode != 0, bare.stdout
    assert "Traceback" not in bare.stderr
    assert "pip install 'rigd[fpga-sim]'" in bare.stderr, bare.stderr

    pip_install(python, f"rigd[fpga-sim] @ {wheel.as_uri()}", pins, elsewhere)
    proc = sim_run(rigctl, tmp_path / "build", elsewhere)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["nonces"] == [model.GENESIS_NONCE]
    assert report["wrong"] == [] and report["nonces_done"] == 32
    assert report["simulator"] == "verilator" and report["fold"] == 64
