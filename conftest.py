"""The test tiers. Every test gets its markers here, from its path or from the fixtures it
uses; a test that matches none of them is in the `unit` tier, which `make test-fast` runs
(`make test` runs every tier). The markers are declared in pyproject.toml (--strict-markers).

Under `-m EXPR`, a file or folder that PATH_MARKERS gives markers none of whose tests can match
EXPR is not collected at all: `make test-fast` then imports none of the heavy test modules.

A unit test may not start a process: one that does fails and names it, so the fast tier stays
fast and a new test that starts rigd, rigctl or any other program is put in its tier (here by
its path or fixture, or with `@pytest.mark.processes` where its file mixes both kinds).

`make test` runs on several pytest-xdist workers, a file's tests on one (`--dist loadfile`).
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["pytester"]  # tests/test_tiers.py runs these hooks in sessions of its own

# The markers that take a test out of the unit tier (a test may have several).
TIERS = ("processes", "nvml_sim", "opencl", "hdl", "model", "e2e", "wheel")

# Path prefixes (from the repository root; a folder, a file) and the markers of their tests.
PATH_MARKERS: dict[str, tuple[str, ...]] = {
    # every scenario runs in a Python subprocess against the C library built with gcc
    "tests/nvml/": ("nvml_sim", "processes"),
    "tests/opencl/": ("opencl",),
    "tests/hashing_kernel/": ("opencl",),
    "tests/mining_e2e/": ("opencl", "e2e"),
    "tests/e2e/": ("e2e", "processes", "model"),
    # cocotb's runner compiles with Verilator or Icarus and runs the simulator as a process
    "fpga/tests/test_fpga_sim.py": ("hdl", "processes"),
    "fpga/tests/test_fpga_sim_cli.py": ("hdl", "processes"),
    "fpga/tests/test_fpga_lint.py": ("hdl", "processes"),
    "fpga/tests/test_fpga_sim_wheel.py": ("hdl", "processes", "wheel"),
    # every test of these files starts rigd, rigctl or another program
    "tests/test_tiers.py": ("processes",),  # pytest sessions of its own
    # the client library against real rigd processes and simulated rigs, rigctl as a command
    "tests/client/": ("processes",),
    "tests/agent/test_asic_rigd.py": ("processes",),
    "tests/agent/test_miners_at_scale.py": ("processes",),
    "tests/agent/test_cli.py": ("processes", "nvml_sim", "opencl"),
    "tests/agent/test_crash.py": ("processes",),
    "tests/agent/test_curtail.py": ("processes", "nvml_sim", "opencl"),
    "tests/agent/test_curtail_property.py": ("processes", "nvml_sim", "opencl"),
    "tests/agent/test_curtail_sequences.py": ("processes", "nvml_sim", "opencl"),
    "tests/agent/test_daemon.py": ("processes",),
    "tests/agent/test_fuzz.py": ("processes", "nvml_sim"),
    "tests/agent/test_gpu_rigd.py": ("processes", "nvml_sim"),
    "tests/agent/test_hashing_workload.py": ("processes", "opencl"),
    "tests/agent/test_launch.py": ("processes",),
    "tests/agent/test_mtls.py": ("processes",),
    "tests/agent/test_observe.py": ("processes", "nvml_sim", "opencl"),
    "tests/agent/test_rigctl_mtls.py": ("processes",),
    "tests/agent/test_rpc.py": ("processes",),
    "tests/agent/test_runtime_profiles.py": ("processes",),
    "tests/agent/test_startup.py": ("processes",),
    "tests/agent/test_streams.py": ("processes", "nvml_sim"),
    "tests/agent/test_switch.py": ("processes", "nvml_sim", "opencl"),
    "tests/agent/test_builtin_metrics.py": ("processes", "model"),
    # the live site controller: real etcd members, rigds, replicas (and the builtin runtime)
    "tests/controller/test_etcd.py": ("processes",),
    "tests/controller/test_live_site.py": ("processes", "nvml_sim", "opencl", "model"),
    "tests/controller/test_replay_vs_live.py": ("processes", "nvml_sim", "opencl"),
}

assert all(set(marks) & set(TIERS) for marks in PATH_MARKERS.values())  # none is in `unit`

# Fixtures and the markers of the tests that use them (directly or through other fixtures): by
# name, or by "path::name" for a fixture of one file.
FIXTURE_MARKERS: dict[str, tuple[str, ...]] = {
    "rigd": ("processes",),  # tests/agent/conftest.py: a rigd subprocess
    "shared_rigd": ("processes",),  # ... one for a module's read-only tests
    "nvml_library": ("nvml_sim", "processes"),
    "legacy_nvml_library": ("nvml_sim", "processes"),
    "cl_device": ("opencl",),
    "kernel_for": ("opencl",),
    "built": ("opencl",),
    "fpga_cards": ("opencl",),
    "tests/agent/test_observe.py::rig": ("model",),  # the host serves the builtin runtime
    "tests/agent/test_openadr.py::rig": ("processes", "nvml_sim", "opencl"),
}


def path_markers(path: str) -> set[str]:
    """The markers of the tests under a path (a folder's ends with "/")."""
    return {m for prefix, marks in PATH_MARKERS.items() if path.startswith(prefix) for m in marks}


def tier_markers(item: pytest.Item) -> set[str]:
    """The markers the path and fixtures of a test give it."""
    path = item.nodeid.split("::", 1)[0]
    found = path_markers(path)
    for fixture in getattr(item, "fixturenames", ()):
        found.update(FIXTURE_MARKERS.get(fixture, ()))
        found.update(FIXTURE_MARKERS.get(f"{path}::{fixture}", ()))
    return found


def could_match(markexpr: str, marks: set[str]) -> bool:
    """Whether a test that has `marks`, maybe others, and not `unit` can match `-m markexpr`."""
    try:
        from _pytest.mark.expression import Expression  # pytest's own parser of -m

        expression = Expression.compile(markexpr)
    except Exception:  # another pytest, or a bad expression that pytest itself reports
        return True
    free = sorted(set(re.findall(r"[A-Za-z_][\w.]*", markexpr)) - {"and", "or", "not", "unit"}
                  - marks)
    if len(free) > 10:
        return True
    for values in itertools.product((False, True), repeat=len(free)):
        given = {name for name, value in zip(free, values, strict=True) if value}
        if expression.evaluate(matcher_of(marks | given)):
            return True
    return False


def matcher_of(present: set[str]) -> Callable[..., bool]:
    return lambda name, **_: name in present


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    markexpr = config.getoption("markexpr", "")
    if not markexpr or not collection_path.is_relative_to(config.rootpath):
        return None
    path = collection_path.relative_to(config.rootpath).as_posix()
    marks = path_markers(path + "/" if collection_path.is_dir() else path)
    if marks and not could_match(markexpr, marks):
        return True
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for name in sorted(tier_markers(item)):
            item.add_marker(name)
        if not any(item.get_closest_marker(name) for name in TIERS):
            item.add_marker("unit")


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, a short temporary directory for the session: each worker's tmp_path
    is below basetemp/popen-gwN/, and the Unix sockets tests put in their tmp_path must stay
    within rigd's limit (MAX_SOCKET_PATH_BYTES in agent/edges/unixfront.py). Removed after a
    session that passed."""
    if (config.getoption("numprocesses", None) and config.option.basetemp is None
            and not hasattr(config, "workerinput")):
        config.option.basetemp = tempfile.mkdtemp(prefix="rigdt-")
        config.stash[_SHORT_BASETEMP] = config.option.basetemp


def pytest_unconfigure(config: pytest.Config) -> None:
    basetemp = config.stash.get(_SHORT_BASETEMP, None)
    if basetemp is not None and config.stash.get(_PASSED, False):
        shutil.rmtree(basetemp, ignore_errors=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_PASSED] = exitstatus == 0


_SHORT_BASETEMP = pytest.StashKey[str]()
_PASSED = pytest.StashKey[bool]()


@contextmanager
def started_processes() -> Iterator[list[str]]:
    """The command lines of the processes started meanwhile by this thread or by a thread begun
    meanwhile (not by the background threads of session fixtures, such as fpga/tests' builds)."""
    started: list[str] = []
    earlier = set(threading.enumerate()) - {threading.main_thread()}
    real_init = subprocess.Popen.__init__

    def init(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        if threading.current_thread() not in earlier and not finding_a_library():
            single = isinstance(args, str | bytes | os.PathLike)
            started.append(str(args) if single else shlex.join(map(str, args)))
        real_init(self, args, *rest, **kwargs)

    subprocess.Popen.__init__ = init  # type: ignore[method-assign]
    try:
        yield started
    finally:
        subprocess.Popen.__init__ = real_init  # type: ignore[method-assign]


def finding_a_library() -> bool:
    """Whether ctypes.util.find_library is the caller (it runs ldconfig, gcc or ld to look a
    library up, as imports of pyasic's dependencies do): a lookup, not a program under test."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_globals.get("__name__") == "ctypes.util":
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    return (yield from _unit_starts_no_process(item, "setup"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    return (yield from _unit_starts_no_process(item, "call"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    return (yield from _unit_starts_no_process(item, "teardown"))


def _unit_starts_no_process(item: pytest.Item, phase: str) -> Iterator[None]:
    if item.get_closest_marker("unit") is None:
        return (yield)
    with started_processes() as started:
        result = yield
    if started:
        pytest.fail(
            f"a unit test started {len(started)} process(es) in its {phase} "
            f"({'; '.join(started)[:300]}): give it its tier in conftest.py (PATH_MARKERS or "
            "FIXTURE_MARKERS) or mark it @pytest.mark.processes", pytrace=False)
    return result
