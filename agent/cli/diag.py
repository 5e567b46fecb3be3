"""rigctl diag: rigd's diagnostics, like `dcgmi diag -r 1/2/3`.

Each result is printed as it arrives (progress, result, device, test, detail, time), then a
table in dcgmi's shape: one row per test, the devices that passed counted, each failure and
warning with its reason. Exit 4 when a test failed.
"""

from __future__ import annotations

import argparse
import textwrap
from collections import defaultdict
from typing import Any

from agent.cli.connect import Rig
from agent.cli.exitcodes import EXIT_TESTS_FAILED
from agent.cli.output import emit_json, enum_names, short_id, word
from rigapi import convert, pb
from rigapi.model import DiagnosticOutcome

LEVEL = enum_names(pb.DiagnosticLevel)
_LEVELS = {"1": 1, "2": 2, "3": 3, "quick": 1, "short": 1, "medium": 2, "long": 3}
_ORDER = ("fail", "warn", "pass", "skip")
NAME_WIDTH = 26
CELL_WIDTH = 72


def _level(text: str) -> int:
    try:
        return _LEVELS[text.lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(
            f"invalid level {text!r}: 1 (quick), 2 (medium) or 3 (long)") from None


def _device(device_id: str) -> str:
    return short_id(device_id) if device_id else "(rig)"


def format_result(r: DiagnosticOutcome) -> str:
    width = len(str(r.total))
    return (f"[{r.done:>{width}}/{r.total}] {word(r.result).upper():<4}  "
            f"{_device(r.device_id):<22} {r.test:<20} {r.detail}  "
            f"({round(r.duration_s * 1000)} ms)")


def _cell(results: list[DiagnosticOutcome]) -> list[str]:
    """One test's results as dcgmi words them: Pass/Skip counted, Fail/Warn each with why."""
    by: dict[str, list[DiagnosticOutcome]] = defaultdict(list)
    for r in results:
        by[word(r.result)].append(r)
    lines: list[str] = []
    for verdict in _ORDER:
        found = by.get(verdict, [])
        if not found:
            continue
        if len(results) == 1 and not results[0].device_id:  # a rig-wide test
            lines.append(verdict.capitalize()
                         + (f" - {found[0].detail}" if verdict != "pass" else ""))
        elif verdict in ("fail", "warn"):
            lines += [f"{verdict.capitalize()} - {_device(r.device_id)}: {r.detail}"
                      for r in found]
        else:
            names = ", ".join(_device(r.device_id) for r in found)
            lines.append(f"{verdict.capitalize()} - " + (names if len(names) <= 48
                                                         else f"{len(found)} devices"))
    wrapped: list[str] = []
    for line in lines:
        wrapped += textwrap.wrap(line, CELL_WIDTH, subsequent_indent="  ") or [""]
    return wrapped


def format_summary(results: list[DiagnosticOutcome]) -> str:
    """The dcgmi-like table: a band per level, a row per test."""
    border = f"+{'-' * (NAME_WIDTH + 2)}+{'-' * (CELL_WIDTH + 2)}+"
    lines = [border, f"| {'Diagnostic':<{NAME_WIDTH}} | {'Result':<{CELL_WIDTH}} |",
             border.replace("-", "=")]
    tests: dict[int, dict[str, list[DiagnosticOutcome]]] = defaultdict(dict)
    for r in results:
        tests[r.level].setdefault(r.test, []).append(r)
    for level in sorted(tests):
        band = f"-----  {LEVEL[level].capitalize()} (level {level})  "
        lines.append(f"|{band:-<{NAME_WIDTH + 2}}+{'-' * (CELL_WIDTH + 2)}|")
        for name, found in tests[level].items():
            for i, text in enumerate(_cell(found)):
                label = name[:NAME_WIDTH] if i == 0 else ""
                lines.append(f"| {label:<{NAME_WIDTH}} | {text:<{CELL_WIDTH}} |")
    lines.append(border)
    return "\n".join(lines)


def _counts(results: list[DiagnosticOutcome]) -> dict[str, int]:
    return {name: sum(1 for r in results if word(r.result) == name) for name in _ORDER}


def cmd_diag(rig: Rig, args: argparse.Namespace) -> int:
    ids = rig.resolve(args.device) if args.device else []
    results: list[DiagnosticOutcome] = []

    def follow() -> None:
        for r in rig.client.diagnostics(args.run, ids):
            if not results and not args.json:
                scope = f"{len(ids)} devices" if ids else "every device"
                print(f"rigctl diag -r {args.run} ({LEVEL[args.run]}): {r.total} tests, "
                      f"{scope}", flush=True)
            results.append(r)
            if args.json:
                emit_json("diagnostic", convert.diagnostic(r), stream=True)
            else:
                print(format_result(r), flush=True)

    rig.call(lambda c: follow())
    counts = _counts(results)
    if args.json:
        emit_json("diagnostics_summary", {"level": LEVEL[args.run], "tests_total": len(results),
                                          **counts, "failed": counts["fail"] > 0}, stream=True)
    else:
        print()
        print(format_summary(results))
        print(f"{counts['fail']} failed, {counts['warn']} warnings, {counts['pass']} passed, "
              f"{counts['skip']} skipped of {len(results)} tests")
    return EXIT_TESTS_FAILED if counts["fail"] else 0


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "diag", parents=[common], help="run diagnostics: -r 1 quick, 2 medium, 3 long",
        description="Run rigd's diagnostics and print each result as it arrives, then a "
                    "summary. Level 1 checks the configuration and backends (seconds); 2 also "
                    "reads every device and checks its values (temperatures, power against "
                    "its limit, fans, memory, XIDs, a miner's hashrate against its expected); "
                    "3 also runs known-answer tests in child processes (the hashing kernel "
                    "finds a known nonce, the inference runtime returns real embeddings). "
                    "Running workloads are left running.",
        epilog="examples:\n  rigctl diag -r 1\n  rigctl diag -r 3 -d 0 -d 127.0.0.1:4028\n"
               "  rigctl diag -r 2 --json | jq 'select(.result == \"fail\")'\n\n"
               "exit codes: 0 no test failed (warnings allowed), 4 a test failed, "
               "1 rigd refused the run, 3 rigd unreachable.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-r", "--run", type=_level, default=1, metavar="LEVEL",
                   help="1 | quick, 2 | medium, 3 | long (default: 1)")
    p.add_argument("-d", "--device", action="append", default=[], metavar="DEVICE",
                   help="only this device (id, GPU index, short id or unique prefix); "
                        "repeatable; the rig-wide tests run either way")
    p.set_defaults(func=cmd_diag)
