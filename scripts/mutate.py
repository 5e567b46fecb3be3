"""`make mutate`: write each curated bug into a copy of the tree and run the tests that should
catch it; print killed or SURVIVED per mutant.

The mutants (scripts/mutants.toml) are one-line bugs in the control paths (curtailment,
switching, leases, auth, OpenADR, telemetry freshness, the firmware parsers), each with the tests
that must fail when it is in. Every bug found from outside belongs there too, so the suite keeps
catching it. The tree is copied (the working tree as it is, uncommitted changes included) to a
temporary directory and mutated there: the developer's checkout is never touched, and an
interrupted run leaves nothing behind.

    python scripts/mutate.py [--only ID ...] [--list] [--keep]

Exit code 0 when every mutant was killed, 1 when one survived (or its test could not run).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = ROOT / "scripts" / "mutants.toml"
COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", "__pycache__", ".pytest_cache",
                                     ".mypy_cache", ".ruff_cache", "*.egg-info", "sim_build",
                                     ".build", "build")
TIMEOUT_S = 1800


@dataclass(frozen=True)
class Mutant:
    id: str
    why: str  # the bug, as a reviewer would describe it
    file: str
    old: str  # exact text, found exactly once
    new: str
    tests: tuple[str, ...]  # pytest node ids or paths that must fail with the bug in


def load(path: Path = MUTANTS) -> list[Mutant]:
    data = tomllib.loads(path.read_text())
    mutants = []
    for entry in data["mutant"]:
        mutants.append(Mutant(entry["id"], entry["why"], entry["file"], entry["old"],
                              entry["new"], tuple(entry["tests"])))
    ids = [m.id for m in mutants]
    if len(set(ids)) != len(ids):
        raise SystemExit(f"{path}: mutant ids repeat")
    return mutants


def check(mutant: Mutant, root: Path) -> str:
    """Why the mutant cannot be applied to the tree at `root` ("" if it can)."""
    path = root / mutant.file
    if not path.is_file():
        return f"{mutant.file} does not exist"
    count = path.read_text().count(mutant.old)
    return "" if count == 1 else f"its text is found {count} times in {mutant.file}, not once"


def pytest(tests: tuple[str, ...], tree: Path, python: str) -> tuple[int, str]:
    """pytest's exit code on these tests in the copy, and its last lines."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        proc = subprocess.run(
            [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
            cwd=tree, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return 1, f"the tests did not finish within {TIMEOUT_S} s"
    return proc.returncode, "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])


def run_one(mutant: Mutant, tree: Path, python: str) -> tuple[str, float, str]:
    """(killed | SURVIVED | ERROR, seconds, the tests' last lines)."""
    path = tree / mutant.file
    original = path.read_text()
    path.write_text(original.replace(mutant.old, mutant.new, 1))
    started = time.monotonic()
    try:
        code, tail = pytest(mutant.tests, tree, python)
    finally:
        path.write_text(original)
    # 1: a test failed; 0: all passed; else the check did not run (usage, no tests collected)
    verdict = {1: "killed", 0: "SURVIVED"}.get(code, "ERROR")
    return verdict, time.monotonic() - started, tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="ID", help="run these mutants only")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--keep", action="store_true", help="keep the mutated copy's directory")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the first run of the tests without any mutant (a kill is "
                             "then not checked against a passing baseline)")
    args = parser.parse_args(argv)
    mutants = load()
    if args.only:
        unknown = set(args.only) - {m.id for m in mutants}
        if unknown:
            parser.error(f"unknown mutant(s): {', '.join(sorted(unknown))}")
        mutants = [m for m in mutants if m.id in args.only]
    if args.list:
        for m in mutants:
            print(f"{m.id:<32} {m.file}: {m.why}")
        return 0
    broken = [(m.id, why) for m in mutants if (why := check(m, ROOT))]
    if broken:
        for mutant_id, why in broken:
            print(f"{mutant_id}: {why}: update scripts/mutants.toml", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="rigd-mutate-"))
    tree = tmp / "tree"
    shutil.copytree(ROOT, tree, ignore=COPY_IGNORE, symlinks=True)
    results = []
    try:
        if not args.no_baseline:  # a kill counts only where the same tests pass without it
            tests = tuple(dict.fromkeys(test for m in mutants for test in m.tests))
            code, tail = pytest(tests, tree, sys.executable)
            print(f"baseline: the mutants' tests without any mutant: "
                  f"{'pass' if code == 0 else 'FAIL'}", flush=True)
            if code != 0:
                print("          " + tail.replace("\n", "\n          "))
                return 1
        for mutant in mutants:
            verdict, seconds, tail = run_one(mutant, tree, sys.executable)
            results.append((mutant, verdict))
            print(f"{verdict:<9} {mutant.id:<32} {seconds:6.0f} s  {mutant.why}", flush=True)
            if verdict != "killed":
                print("          " + tail.replace("\n", "\n          "), flush=True)
    finally:
        if args.keep:
            print(f"the copy: {tree}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    killed = sum(v == "killed" for _, v in results)
    print(f"\n{killed} of {len(results)} mutants killed")
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
