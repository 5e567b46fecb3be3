"""`rigctl fpga examine|validate|program|sim-run`: FPGA card administration, modelled on Xilinx
`xbutil`, and a search job on the simulated SHA-256d core.

These commands talk to the cards locally through hal (as xbutil talks to the driver), not to
the agent over gRPC, so they work on a rig whose agent is down. Exit codes are rigctl's: 0 ok,
1 refused (one line on stderr, no traceback), 2 a bad command line, 4 a validation test failed
(or the simulated core reported a nonce hashlib rejects).

    rigctl fpga examine  [--device ID] [--json]
    rigctl fpga validate [--device ID] [--run TEST ...] [--report PATH] [--json]
    rigctl fpga program  --bitstream PATH [--dry-run] [--device ID] [--json]
    rigctl fpga sim-run  [--fold N] [--header HEX] [--first N] [--count N] [--target HEX]
                         [--fifo-log2 N] [--simulator verilator|icarus] [--build-dir DIR]
                         [--json]

Common options: --fpga-device-types (default accelerator; `cpu` makes PoCL's CPU a card),
--bitstream-dir (only bitstreams inside it are accepted), --state-dir (where a card's loaded
image is kept between calls), --platform (filter).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.cli.exitcodes import EXIT_FAILED, EXIT_OK, EXIT_TESTS_FAILED, EXIT_USAGE
from agent.core.job import DIFF1_TARGET, GENESIS_HEADER, GENESIS_NONCE
from hal import opencl
from hal.errors import HalError, Unavailable
from hal.sha256d_core import Job
from hal.sha256d_sim import FOLDS as SIM_FOLDS

VALIDATE_TESTS = ("bitstream-checksum", "kernel-present", "sha256d-known-answer", "throughput")


class CliError(Exception):
    """A refusal (exit code 1) or a job the command line cannot describe (2): one line."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def default_state_dir() -> str:
    explicit = os.environ.get("RIGD_FPGA_STATE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local/state")
    return os.path.join(base, "rigd", "fpga")


def _device_types(text: str) -> list[str]:
    types = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in types if t not in opencl.DEVICE_TYPE_NAMES]
    if not types or bad:
        raise argparse.ArgumentTypeError(
            f"device types must be a comma-separated subset of {','.join(opencl.DEVICE_TYPE_NAMES)}"
        )
    return types


def default_sim_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "rigd", "fpga-sim")


def _header(text: str) -> bytes:
    try:
        header = bytes.fromhex(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not hex: {text!r}") from exc
    if len(header) not in (76, 80):
        raise argparse.ArgumentTypeError(f"a block header is 76 or 80 bytes, got {len(header)}")
    return header


def _target(text: str) -> int:
    try:
        value = int(text, 16)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a hex number: {text!r}") from exc
    if not 0 <= value < 1 << 256:
        raise argparse.ArgumentTypeError("the target is a 256-bit number (at most 64 hex digits)")
    return value


def _int_from(text: str, low: int, high: int, what: str) -> int:
    try:
        value = int(text, 0)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from exc
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{value} is not {what}")
    return value


def _nonce(text: str) -> int:
    return _int_from(text, 0, 0xFFFFFFFF, "a 32-bit nonce")


def _positive_int(text: str) -> int:
    return _int_from(text, 1, 0xFFFFFFFF, "in 1..2^32-1")


def add_fpga_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `fpga` and its subcommands to an argparse subparsers object (rigctl's)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--fpga-device-types", type=_device_types, default=["accelerator"], metavar="TYPES",
        help="OpenCL device types that count as FPGA cards (default: accelerator)",
    )
    common.add_argument(
        "--bitstream-dir", default=os.environ.get("RIGD_BITSTREAM_DIR"),
        help="directory bitstreams must live in (default: $RIGD_BITSTREAM_DIR)",
    )
    common.add_argument(
        "--state-dir", default=default_state_dir(),
        help="where a card's loaded image is kept between calls (default: %(default)s)",
    )
    common.add_argument(
        "--platform", action="append", default=[], help="only platforms matching this (repeatable)"
    )
    common.add_argument("--device", "-d", help="card id, as `examine` lists it")
    common.add_argument("--json", action="store_true", help="print JSON instead of a report")

    fpga = subparsers.add_parser("fpga", help="examine, validate and program FPGA cards")
    sub = fpga.add_subparsers(dest="fpga_command", required=True, metavar="COMMAND")
    sub.add_parser("examine", parents=[common], help="report cards and their loaded bitstream")
    validate = sub.add_parser("validate", parents=[common], help="run validation tests")
    validate.add_argument(
        "--run", "-r", action="append", choices=VALIDATE_TESTS, metavar="TEST",
        help=f"test to run (repeatable; default all: {', '.join(VALIDATE_TESTS)})",
    )
    validate.add_argument("--report", "-o", type=Path, help="write a JSON report here")
    validate.add_argument(
        "--throughput-nonces", type=_positive_int, default=1 << 20,
        help="nonces hashed by the throughput test (default: 2^20)",
    )
    program = sub.add_parser("program", parents=[common], help="load a bitstream onto a card")
    program.add_argument("--bitstream", "-u", required=True, help="bitstream binary (.bin)")
    program.add_argument(
        "--dry-run", "-n", action="store_true", help="make every check, change nothing"
    )
    sim = sub.add_parser(
        "sim-run", help="run a search job through the host driver on the simulated core",
        description="Build the SHA-256d core (hal/sha256d_rtl) for a simulator, program a job "
        "through the host driver (hal/sha256d_core.py) and check every reported nonce with "
        "hashlib. Defaults: the genesis header around its nonce, at difficulty 1.",
    )
    sim.add_argument("--fold", type=int, choices=SIM_FOLDS, default=64,
                     help="rounds per stage: one nonce every FOLD clocks (default: %(default)s)")
    sim.add_argument("--header", type=_header, default=GENESIS_HEADER,
                     help="block header, 76 or 80 bytes in hex (default: the genesis block)")
    sim.add_argument("--first", type=_nonce, default=GENESIS_NONCE - 2048,
                     help="first nonce (default: %(default)s)")
    sim.add_argument("--count", type=_positive_int, default=4096,
                     help="nonces to search (default: %(default)s)")
    sim.add_argument("--target", type=_target, default=DIFF1_TARGET,
                     help="256-bit target in hex (default: difficulty 1)")
    sim.add_argument("--fifo-log2", type=int, choices=range(1, 13), default=4, metavar="N",
                     help="result FIFO of 2**N entries (default: %(default)s)")
    sim.add_argument("--simulator", choices=("verilator", "icarus"), default="verilator")
    sim.add_argument("--build-dir", type=Path, default=Path(default_sim_dir()),
                     help="where models are built and kept (default: %(default)s)")
    sim.add_argument("--json", action="store_true", help="print JSON instead of a report")
    return fpga


def run_fpga(args: argparse.Namespace) -> int:
    """Run a parsed `rigctl fpga ...` command; returns the exit code."""
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "examine": _examine,
        "validate": _validate,
        "program": _program,
        "sim-run": _sim_run,
    }
    try:
        return handlers[args.fpga_command](args)
    except (CliError, HalError, OSError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"rigctl fpga {args.fpga_command}: error: {message}", file=sys.stderr)
        return exc.exit_code if isinstance(exc, CliError) else EXIT_FAILED


# --- discovery and selection ---------------------------------------------------------------


def _cards(args: argparse.Namespace) -> list[opencl.FpgaCard]:
    options: dict[str, Any] = {
        "fpga_device_types": args.fpga_device_types,
        "state_dir": args.state_dir,
    }
    if args.bitstream_dir:
        options["bitstream_dir"] = args.bitstream_dir
    if args.platform:
        options["platforms"] = args.platform
    try:
        devices = opencl.discover(options)
    except Unavailable as exc:
        raise CliError(f"OpenCL unavailable: {exc}") from exc
    cards = [d for d in devices if isinstance(d, opencl.FpgaCard)]
    if args.device:
        cards = [c for c in cards if c.id == args.device]
        if not cards:
            raise CliError(f"no FPGA card {args.device!r} (see `rigctl fpga examine`)")
    return cards


def _one_card(args: argparse.Namespace) -> opencl.FpgaCard:
    cards = _cards(args)
    if not cards:
        raise CliError(
            f"no FPGA card found (OpenCL device types counted as cards: "
            f"{','.join(args.fpga_device_types)})"
        )
    if len(cards) > 1:
        raise CliError(
            f"{len(cards)} cards found, choose one with --device: {', '.join(c.id for c in cards)}"
        )
    return cards[0]


# --- examine -------------------------------------------------------------------------------


def card_summary(card: opencl.FpgaCard) -> dict[str, Any]:
    info = card.info()
    loaded = card.loaded
    return {
        "id": info.id,
        "kind": str(info.kind),
        "name": info.name,
        "vendor": info.vendor,
        "driver_version": info.driver_version,
        "pci_bus_id": info.pci_bus_id,
        "simulated": info.simulated,
        "health": str(card.health().state),
        "attributes": {k: v for k, v in info.attributes.items() if not k.startswith("bitstream_")},
        "bitstream": None
        if loaded is None
        else {
            "name": loaded.name,
            "version": loaded.version,
            "algorithm": loaded.algorithm,
            "sha256": loaded.sha256,
            "size_bytes": loaded.size_bytes,
            "loaded_at": loaded.loaded_at,
            "source": loaded.source_path,
        },
    }


def _examine(args: argparse.Namespace) -> int:
    cards = _cards(args)
    summaries = [card_summary(c) for c in cards]
    if args.json:
        print(json.dumps({"cards": summaries}, indent=2))
        return EXIT_OK
    print(f"FPGA cards (OpenCL types counted as cards: {','.join(args.fpga_device_types)})")
    if not summaries:
        print("  none found")
    for s in summaries:
        a = s["attributes"]
        stand_in = f"  [{a['device_type']} device standing in for a card]" if s["simulated"] else ""
        print(f"[{s['id']}] {s['name']}{stand_in}")
        rows = [
            ("platform", f"{a['platform']} ({a['platform_slug']})"),
            ("vendor / driver", f"{s['vendor']} / {s['driver_version']}"),
            ("pci bus id", s["pci_bus_id"] or "-"),
            ("compute units", f"{a['compute_units']} @ {a['max_clock_mhz']} MHz"),
            ("global memory", _mib(a["global_mem_bytes"])),
            ("local memory", _mib(a["local_mem_bytes"])),
            ("opencl", f"{a['opencl_version']}; {a['opencl_c_version']}"),
            ("health", s["health"]),
        ]
        bitstream = s["bitstream"]
        if bitstream is None:
            rows.append(("bitstream", "none loaded"))
        else:
            title = f"{bitstream['name']} {bitstream['version']} ({bitstream['algorithm']})"
            rows += [
                ("bitstream", title),
                ("  sha256", bitstream["sha256"]),
                ("  loaded at", bitstream["loaded_at"]),
            ]
        for label, value in rows:
            print(f"  {label:<16}: {value}")
    return EXIT_OK


def _mib(text: str) -> str:
    return f"{int(text) / 2**20:.1f} MiB"


# --- validate ------------------------------------------------------------------------------


@dataclass
class TestResult:
    name: str
    passed: bool
    detail: str
    duration_s: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "result": "PASS" if self.passed else "FAIL",
            "detail": self.detail,
            "duration_s": round(self.duration_s, 4),
            "metrics": self.metrics,
        }


def _test_checksum(card: opencl.FpgaCard, args: argparse.Namespace) -> TestResult:
    manifest = card.loaded_manifest
    assert manifest is not None
    actual = card.loaded_image_sha256()
    if actual != manifest.binary_sha256:
        return TestResult(
            "bitstream-checksum", False,
            f"loaded image sha256 {actual} differs from manifest {manifest.binary_sha256}",
        )
    return TestResult("bitstream-checksum", True, f"sha256 {actual} matches the manifest")


def _test_kernels(card: opencl.FpgaCard, args: argparse.Namespace) -> TestResult:
    manifest = card.loaded_manifest
    assert manifest is not None
    present = set(card.loaded_program().kernel_names.split(";"))
    missing = sorted(set(manifest.kernels) - present)
    if missing:
        return TestResult("kernel-present", False, f"missing kernel(s): {', '.join(missing)}")
    return TestResult("kernel-present", True, ", ".join(sorted(present)))


def _test_known_answer(card: opencl.FpgaCard, args: argparse.Namespace) -> TestResult:
    window = 1 << 16
    start = GENESIS_NONCE - window // 2
    result = card.search(GENESIS_HEADER, start, window)
    span = f"[{start}, {start + window})"
    if result.nonces != (GENESIS_NONCE,) or result.rejected:
        return TestResult(
            "sha256d-known-answer", False,
            f"genesis block nonce {GENESIS_NONCE} not found in {span}: kernel reported "
            f"{result.candidates} candidate(s), {result.rejected} failed the hashlib check, "
            f"verified {list(result.nonces)}",
        )
    return TestResult(
        "sha256d-known-answer", True, f"found genesis nonce {GENESIS_NONCE} in {span}"
    )


def _test_throughput(card: opencl.FpgaCard, args: argparse.Namespace) -> TestResult:
    count = args.throughput_nonces
    result = card.search(GENESIS_HEADER, 0, count)
    metrics = {"nonces": float(count), "elapsed_s": result.elapsed_s,
               "nonces_per_s": result.hashrate_hs}
    if result.rejected:
        return TestResult(
            "throughput", False, f"{result.rejected} kernel candidate(s) were wrong", 0.0, metrics
        )
    return TestResult(
        "throughput", True,
        f"{count} nonces in {result.elapsed_s:.3f} s: {result.hashrate_hs / 1e6:.2f} Mnonce/s",
        0.0, metrics,
    )


_TESTS: dict[str, Callable[[opencl.FpgaCard, argparse.Namespace], TestResult]] = {
    "bitstream-checksum": _test_checksum,
    "kernel-present": _test_kernels,
    "sha256d-known-answer": _test_known_answer,
    "throughput": _test_throughput,
}


def run_validation(
    card: opencl.FpgaCard, names: list[str], args: argparse.Namespace
) -> list[TestResult]:
    results = []
    for name in names:
        start = time.perf_counter()
        if card.loaded is None:
            result = TestResult(name, False, "no bitstream is loaded")
        else:
            try:
                result = _TESTS[name](card, args)
            except Exception as exc:  # a broken bitstream may fail in any way: report, go on
                result = TestResult(name, False, f"{type(exc).__name__}: {exc}")
        result.duration_s = time.perf_counter() - start
        results.append(result)
    return results


def _validate(args: argparse.Namespace) -> int:
    card = _one_card(args)
    names = list(dict.fromkeys(args.run or VALIDATE_TESTS))
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    results = run_validation(card, names, args)
    passed = all(r.passed for r in results)
    report = {
        "schema": "rigd-fpga-validate/1",
        "started_at": started_at,
        "card": card_summary(card),
        "result": "PASS" if passed else "FAIL",
        "tests": [r.to_json() for r in results],
    }
    if args.report:
        _write_json(args.report, report)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        loaded = card.loaded
        what = f"{loaded.name} {loaded.version}" if loaded else "no bitstream"
        print(f"Validate {card.id} ({what})")
        for r in results:
            print(f"  {r.name:<22} {'PASS' if r.passed else 'FAIL'}  {r.detail}")
        print(f"Validation {'PASSED' if passed else 'FAILED'}")
        if args.report:
            print(f"Report written to {args.report}")
    return EXIT_OK if passed else EXIT_TESTS_FAILED


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path = path.expanduser()
    if not path.parent.is_dir():
        raise CliError(f"cannot write report {path}: directory {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# --- program -------------------------------------------------------------------------------


def _program(args: argparse.Namespace) -> int:
    card = _one_card(args)
    report = card.program(args.bitstream, dry_run=args.dry_run)
    if args.json:
        print(json.dumps({
            "device": report.device_id,
            "dry_run": report.dry_run,
            "checks": [{"name": c.name, "detail": c.detail} for c in report.checks],
            "action": report.action,
            "previous": None if report.previous is None else report.previous.attributes(),
            "loaded": None if report.loaded is None else report.loaded.attributes(),
        }, indent=2))
        return EXIT_OK
    for check in report.checks:
        print(f"  [ok] {check.name:<10} {check.detail}")
    if report.dry_run:
        print(f"Dry run: {report.action}; nothing changed")
    else:
        print(f"Programmed: {report.action}")
    return EXIT_OK


# --- sim-run -------------------------------------------------------------------------------


def _sim_run(args: argparse.Namespace) -> int:
    from hal.sha256d_sim import SimConfig, run_job  # needs the test extras (cocotb, verilator)

    last = args.first + args.count - 1
    if last > 0xFFFFFFFF:
        raise CliError(f"--first {args.first} + --count {args.count} runs past nonce 0xFFFFFFFF",
                       EXIT_USAGE)
    config = SimConfig(fold=args.fold, fifo_log2=args.fifo_log2)
    job = Job(args.header, args.first, last, args.target)
    build_dir = args.build_dir.expanduser() / f"{args.simulator}_{config.key}"
    run = run_job(config, job, build_dir, args.simulator)
    report = run.report
    summary = {
        "simulator": args.simulator,
        "fold": config.fold,
        "fifo_depth": 1 << config.fifo_log2,
        "nonce_first": job.nonce_first,
        "nonce_last": job.nonce_last,
        "target": f"{job.target:064x}",
        "nonces": list(report.nonces),
        "above_target": list(report.above_target),
        "wrong": list(report.wrong),
        "nonces_done": report.counters.nonces_done,
        "replays": report.counters.replays,
        "clocks": run.clocks,
        "nonces_per_clock": report.counters.nonces_done / run.clocks,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"Simulated SHA-256d core ({args.simulator}): FOLD={config.fold}, "
              f"FIFO {summary['fifo_depth']} entries, model in {build_dir}")
        print(f"  nonces {job.nonce_first}..{job.nonce_last} ({job.nonce_count}), "
              f"target {summary['target']}")
        print(f"  found          : {_nonce_list(report.nonces)} (meet the target, hashlib)")
        print(f"  dropped        : {_nonce_list(report.above_target)} "
              "(top word passes, the full target does not)")
        print(f"  wrong          : {_nonce_list(report.wrong)}")
        print(f"  compared       : {report.counters.nonces_done} nonces in {run.clocks} clocks "
              f"({summary['nonces_per_clock']:.4f}/clock), {report.counters.replays} replays")
    return EXIT_TESTS_FAILED if report.wrong else EXIT_OK


def _nonce_list(nonces: tuple[int, ...]) -> str:
    return ", ".join(str(n) for n in nonces) or "none"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rigctl")
    add_fpga_parser(parser.add_subparsers(dest="command", required=True))
    return run_fpga(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
