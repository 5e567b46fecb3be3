"""The test tiers of conftest.py, in a pytest session of their own (pytester, a subprocess) over
a small tree laid out like this repository: markers from a test's path and fixtures, `unit` for
the rest, a unit test that starts a process failing with its command line, and `-m unit`
leaving the files of other tiers uncollected."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

MARKERS_OF = '''
import json, sys
import pytest

@pytest.fixture
def rigd():
    return None

def test_plain(request):
    print("MARKS", json.dumps(sorted(m.name for m in request.node.iter_markers())))

def test_with_a_rigd(request, rigd):
    print("MARKS", json.dumps(sorted(m.name for m in request.node.iter_markers())))
'''

STARTS_A_PROCESS = '''
import ctypes.util, subprocess, sys
import pytest

def test_unit_that_looks_a_library_up():
    ctypes.util.find_library("no-such-library-here")  # ldconfig, gcc, ld: a lookup

def test_unit_that_starts_one():
    subprocess.run([sys.executable, "-c", "pass"], check=True)

@pytest.mark.processes
def test_marked_that_starts_one():
    subprocess.run([sys.executable, "-c", "pass"], check=True)
'''


@pytest.fixture
def tree(pytester: pytest.Pytester) -> pytest.Pytester:
    """The repository's conftest.py and markers over test files of our own."""
    pytester.makeconftest((REPO / "conftest.py").read_text())
    markers = re.search(r"^markers = \[.*?^\]", (REPO / "pyproject.toml").read_text(),
                        re.MULTILINE | re.DOTALL)
    assert markers, "pyproject.toml declares the markers"
    pytester.makepyprojecttoml(f"[tool.pytest.ini_options]\naddopts = '--strict-markers'\n"
                               f"{markers[0]}\n")
    for folder in ("tests/e2e", "tests/unitish"):
        (pytester.path / folder).mkdir(parents=True)
    (pytester.path / "tests/e2e/test_story.py").write_text(MARKERS_OF)
    (pytester.path / "tests/unitish/test_plain.py").write_text(MARKERS_OF)
    (pytester.path / "tests/unitish/test_spawn.py").write_text(STARTS_A_PROCESS)
    return pytester


def test_markers_come_from_the_path_and_the_fixtures(tree: pytest.Pytester) -> None:
    result = tree.runpytest_subprocess("-v", "-s", "tests/e2e", "tests/unitish/test_plain.py")
    result.assert_outcomes(passed=4)
    lines = "\n".join(result.outlines)
    printed = dict(re.findall(r"^(tests/\S+::test_\w+) MARKS (\[.*?\])$", lines, re.MULTILINE))
    assert printed == {
        # tests/e2e/: its folder's markers; the rigd fixture adds nothing new there
        "tests/e2e/test_story.py::test_plain": '["e2e", "model", "processes"]',
        "tests/e2e/test_story.py::test_with_a_rigd": '["e2e", "model", "processes"]',
        # no path marker, no fixture: the unit tier; the rigd fixture: processes
        "tests/unitish/test_plain.py::test_plain": '["unit"]',
        "tests/unitish/test_plain.py::test_with_a_rigd": '["processes"]',
    }, lines


def test_a_unit_test_that_starts_a_process_fails_and_names_it(tree: pytest.Pytester) -> None:
    result = tree.runpytest_subprocess("tests/unitish/test_spawn.py")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([
        "*_ test_unit_that_starts_one _*",
        "a unit test started 1 process(es) in its call (*python -c pass): give it its tier*",
    ])
    assert "test_marked_that_starts_one" not in "\n".join(
        line for line in result.outlines if "FAILED" in line)


def test_the_unit_tier_leaves_other_tiers_uncollected(tree: pytest.Pytester) -> None:
    unit = tree.runpytest_subprocess("-m", "unit", "--collect-only", "-q")
    collected = [line for line in unit.outlines if "::" in line]
    assert collected == ["tests/unitish/test_plain.py::test_plain",
                         "tests/unitish/test_spawn.py::test_unit_that_looks_a_library_up",
                         "tests/unitish/test_spawn.py::test_unit_that_starts_one"]
    # of the 7 tests, the 2 of tests/e2e/ were not even collected
    unit.stdout.fnmatch_lines(["3/5 tests collected (2 deselected)*"])
    # Any other expression sees every file that may hold a match.
    e2e = tree.runpytest_subprocess("-m", "e2e", "--collect-only", "-q")
    assert [line for line in e2e.outlines if "::" in line] == [
        "tests/e2e/test_story.py::test_plain", "tests/e2e/test_story.py::test_with_a_rigd"]
