"""pytest fixtures for the FPGA testbenches: each core configuration is built once per session
per simulator, then shared by every test that needs it. When the first test asks for a build,
every Verilator model the session will simulate starts compiling, in the background, while the
tests run (a pytest-xdist worker that runs no simulation compiles nothing)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    # The cocotb test module and the model are imported by name, here and in the simulator
    # (the runner hands sys.path to it as PYTHONPATH).
    sys.path.insert(0, str(TESTS_DIR))

from simbuild import SimBuilds  # noqa: E402

from hal.sha256d_sim import SimConfig  # noqa: E402

_verilator_configs: list[SimConfig] = []


def pytest_collection_finish(session: pytest.Session) -> None:
    """Remember the Verilator configurations the selected tests will simulate."""
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        config = callspec.params.get("config") if callspec else None
        if "sim_builds" in getattr(item, "fixturenames", ()) and isinstance(config, SimConfig):
            if config not in _verilator_configs:
                _verilator_configs.append(config)


@pytest.fixture(scope="session")
def sim_builds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimBuilds]:
    builds = SimBuilds(tmp_path_factory.mktemp("sha256d_sim"))
    builds.prebuild("verilator", _verilator_configs)
    yield builds
    builds.close()
