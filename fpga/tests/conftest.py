"""pytest fixtures for the FPGA testbenches: each core configuration is built
once per session per simulator, then shared by every test that needs it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    # The cocotb test module and the model are imported by name, here and in
    # the simulator (the runner hands sys.path to it as PYTHONPATH).
    sys.path.insert(0, str(TESTS_DIR))

from simbuild import SimBuilds  # noqa: E402


@pytest.fixture(scope="session")
def sim_builds(tmp_path_factory: pytest.TempPathFactory) -> SimBuilds:
    return SimBuilds(tmp_path_factory.mktemp("sha256d_sim"))
