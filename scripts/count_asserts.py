"""Count the tests and the assert statements of a checkout, so that a change to the suite can
show it removed none.

    python scripts/count_asserts.py [ROOT] [--by-file] [--collect] [--nodeids FILE]

From the source (ast, no import): test functions (`test_*` at module level or in a `Test*`
class, in tests/ and fpga/tests), assert statements in every Python file there (tests,
conftests, helpers, cocotb testbenches) and pytest.raises/pytest.fail calls. With --collect,
pytest also collects ROOT (with PYTHONPATH=ROOT) and the count of collected items (each
parametrized case is one) and of those in the unit tier (`-m unit`, where it is declared)
are printed; --nodeids FILE writes the collected node ids, one a line, to diff two checkouts.
"""

from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

TEST_DIRS = ("tests", "fpga/tests")


@dataclass
class Counts:
    tests: int = 0
    asserts: int = 0
    raises: int = 0  # pytest.raises(...) and pytest.fail(...)

    def add(self, other: Counts) -> None:
        self.tests += other.tests
        self.asserts += other.asserts
        self.raises += other.raises


def is_test(node: ast.AST) -> bool:
    return isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")


def count_file(path: Path) -> Counts:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    counts = Counts()
    if path.name.startswith("test_"):
        for statement in tree.body:
            if is_test(statement):
                counts.tests += 1
            elif isinstance(statement, ast.ClassDef) and statement.name.startswith("Test"):
                counts.tests += sum(1 for item in statement.body if is_test(item))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert):
            counts.asserts += 1
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and isinstance(node.func.value, ast.Name) and node.func.value.id == "pytest"
              and node.func.attr in ("raises", "fail")):
            counts.raises += 1
    return counts


def collect(root: Path, *args: str) -> list[str]:
    """Node ids pytest collects in root (exit 5, nothing selected, is an empty list)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=root, env=env, capture_output=True, text=True, check=False,
    )
    if proc.returncode not in (0, 5):
        raise SystemExit(f"pytest --collect-only failed in {root}:\n{proc.stdout}\n{proc.stderr}")
    return [line for line in proc.stdout.splitlines() if "::" in line]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, default=Path(__file__).parents[1])
    parser.add_argument("--by-file", action="store_true", help="a line per file")
    parser.add_argument("--collect", action="store_true", help="also count collected items")
    parser.add_argument("--nodeids", type=Path, help="write the collected node ids here")
    args = parser.parse_args()
    root: Path = args.root.resolve()

    total, files = Counts(), 0
    for directory in TEST_DIRS:
        for path in sorted((root / directory).rglob("*.py")):
            counts = count_file(path)
            total.add(counts)
            files += 1
            if args.by_file and (counts.tests or counts.asserts or counts.raises):
                print(f"{counts.tests:5d} tests {counts.asserts:5d} asserts "
                      f"{counts.raises:4d} raises/fail  {path.relative_to(root)}")
    print(f"test functions: {total.tests}")
    print(f"assert statements: {total.asserts}")
    print(f"pytest.raises/pytest.fail calls: {total.raises}")
    print(f"python files read: {files} (in {', '.join(TEST_DIRS)})")
    if args.collect or args.nodeids:
        nodeids = collect(root)
        print(f"collected test items: {len(nodeids)}")
        declared = subprocess.run([sys.executable, "-m", "pytest", "--markers"], cwd=root,
                                  capture_output=True, text=True, check=False).stdout
        if "@pytest.mark.unit:" in declared:
            print(f"  of which in the unit tier (-m unit): {len(collect(root, '-m', 'unit'))}")
        if args.nodeids:
            args.nodeids.write_text("".join(f"{n}\n" for n in sorted(nodeids)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
