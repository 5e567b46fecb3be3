"""`rigctl fpga` as a real subprocess (python -m agent.cli.fpga) against PoCL cards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

GENESIS_NONCE = 2083236893
TESTS = ["bitstream-checksum", "kernel-present", "sha256d-known-answer", "throughput"]


def rigctl(rig: Any, *args: str, device: bool = True) -> subprocess.CompletedProcess[str]:
    command, *rest = args
    argv = [
        sys.executable, "-m", "agent.cli.fpga", "fpga", command,
        "--fpga-device-types", "cpu",
        "--bitstream-dir", str(rig.bitstream_dir),
        "--state-dir", str(rig.state_dir),
        *(["--device", rig.card_id] if device else []),
        *rest,
    ]
    repo = Path(__file__).resolve().parents[2]
    return subprocess.run(argv, cwd=repo, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(repo)})


def examine_json(rig: Any) -> dict[str, Any]:
    proc = rigctl(rig, "examine", "--json")
    assert proc.returncode == 0, proc.stderr
    (card,) = json.loads(proc.stdout)["cards"]
    assert isinstance(card, dict)
    return card


def assert_one_line_error(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rigctl fpga ") and fragment in lines[0], lines


def test_examine_program_validate_pass_with_a_json_report(rig: Any, tmp_path: Path) -> None:
    card = examine_json(rig)
    assert card["id"] == rig.card_id and card["kind"] == "fpga" and card["bitstream"] is None
    assert int(card["attributes"]["compute_units"]) >= 1

    proc = rigctl(rig, "program", "--bitstream", "sha256d-search.bin")
    assert proc.returncode == 0, proc.stderr
    assert "Programmed: program " + rig.card_id in proc.stdout
    manifest = json.loads((rig.bitstream_dir / "sha256d-search.json").read_text())
    card = examine_json(rig)
    assert card["bitstream"]["sha256"] == manifest["binary_sha256"]
    assert card["bitstream"]["name"] == "sha256d-search"

    human = rigctl(rig, "examine")
    assert human.returncode == 0 and "sha256d-search 1.0.0 (sha256d)" in human.stdout

    report_path = tmp_path / "validate.json"
    proc = rigctl(rig, "validate", "--report", str(report_path), "--throughput-nonces", "65536")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in TESTS:
        assert any(line.split()[:2] == [name, "PASS"] for line in proc.stdout.splitlines()), name
    report = json.loads(report_path.read_text())
    assert report["result"] == "PASS" and report["card"]["id"] == rig.card_id
    assert [t["name"] for t in report["tests"]] == TESTS
    assert all(t["result"] == "PASS" for t in report["tests"])
    (throughput,) = [t for t in report["tests"] if t["name"] == "throughput"]
    assert throughput["metrics"]["nonces"] == 65536 and throughput["metrics"]["nonces_per_s"] > 0
    (kat,) = [t for t in report["tests"] if t["name"] == "sha256d-known-answer"]
    assert str(GENESIS_NONCE) in kat["detail"]


def test_validate_fails_when_the_bitstream_is_the_wrong_kernel(rig: Any, tmp_path: Path) -> None:
    assert rigctl(rig, "program", "--bitstream", "null-search.bin").returncode == 0
    report_path = tmp_path / "validate.json"
    proc = rigctl(rig, "validate", "--report", str(report_path), "--json",
                  "--throughput-nonces", "4096")
    assert proc.returncode == 4, proc.stderr
    report = json.loads(report_path.read_text())
    assert json.loads(proc.stdout) == report
    results = {t["name"]: t["result"] for t in report["tests"]}
    assert results == {
        "bitstream-checksum": "PASS",
        "kernel-present": "PASS",  # the name is right: only running it shows it is wrong
        "sha256d-known-answer": "FAIL",
        "throughput": "PASS",
    }
    assert report["result"] == "FAIL"


def test_validate_runs_only_the_named_tests(rig: Any) -> None:
    assert rigctl(rig, "program", "--bitstream", "lying-search.bin").returncode == 0
    proc = rigctl(rig, "validate", "--run", "sha256d-known-answer", "--json")
    assert proc.returncode == 4
    (test,) = json.loads(proc.stdout)["tests"]
    assert test["name"] == "sha256d-known-answer" and test["result"] == "FAIL"
    assert "1 failed the hashlib check" in test["detail"]


def test_validate_fails_the_checksum_of_a_corrupted_card_image(rig: Any) -> None:
    assert rigctl(rig, "program", "--bitstream", "sha256d-search.bin").returncode == 0
    (image,) = rig.state_dir.glob("*.bin")
    image.write_bytes(b"\0" * image.stat().st_size)
    proc = rigctl(rig, "validate", "--json", "--run", "bitstream-checksum", "--run",
                  "sha256d-known-answer")
    assert proc.returncode == 4, proc.stderr
    results = {t["name"]: (t["result"], t["detail"]) for t in json.loads(proc.stdout)["tests"]}
    assert results["bitstream-checksum"][0] == "FAIL"
    assert "differs from manifest" in results["bitstream-checksum"][1]
    assert results["sha256d-known-answer"] == (
        "FAIL", f"DeviceLost: {rig.card_id}: the saved image of sha256d-search no longer matches "
        "its checksum; program the card again",
    )


def test_validate_without_a_bitstream_fails_every_test(rig: Any) -> None:
    proc = rigctl(rig, "validate", "--json", "--run", "kernel-present")
    assert proc.returncode == 4
    (test,) = json.loads(proc.stdout)["tests"]
    assert test["result"] == "FAIL" and test["detail"] == "no bitstream is loaded"


def test_dry_run_reports_and_changes_nothing(rig: Any) -> None:
    proc = rigctl(rig, "program", "--bitstream", "sha256d-search.bin", "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["dry_run"] and out["action"].startswith("would program") and out["loaded"] is None
    assert [c["name"] for c in out["checks"]][-1] == "target"
    assert examine_json(rig)["bitstream"] is None


def test_refusal_is_one_line_and_keeps_the_loaded_bitstream(rig: Any) -> None:
    assert rigctl(rig, "program", "--bitstream", "sha256d-search.bin").returncode == 0
    before = examine_json(rig)["bitstream"]
    with (rig.bitstream_dir / "null-search.bin").open("r+b") as f:
        f.truncate(100)
    assert_one_line_error(rigctl(rig, "program", "--bitstream", "null-search.bin"), "truncated")
    assert_one_line_error(
        rigctl(rig, "program", "--bitstream", "../../etc/passwd"), "outside the bitstream directory"
    )
    assert examine_json(rig)["bitstream"] == before


def test_usage_errors_exit_2(rig: Any, fpga_cards: Any) -> None:
    proc = rigctl(rig, "program", "--bitstream", "x.bin", device=False)
    if len(fpga_cards()) > 1:  # both PoCL platforms: the CLI asks which card
        assert_one_line_error(proc, "choose one with --device")
    else:
        assert_one_line_error(proc, "no such bitstream")
    assert_one_line_error(rigctl(rig, "examine", "--device", "fpga/nope/0"), "no FPGA card")
    bad_type = rigctl(rig, "examine", "--fpga-device-types", "fpga")
    assert bad_type.returncode == 2 and "Traceback" not in bad_type.stderr
    missing = rigctl(rig, "program")
    assert missing.returncode == 2 and "--bitstream" in missing.stderr
    report = rigctl(
        rig, "validate", "--report", "/nonexistent-dir/r.json", "--run", "kernel-present"
    )
    assert_one_line_error(report, "does not exist")


def test_installed_rigctl_runs_fpga_commands(rig: Any) -> None:
    """`rigctl fpga ...` through the installed entry point (agent/cli.py) runs the command (it
    used to stop with "no attribute 'func'")."""
    argv = [
        str(Path(sys.executable).parent / "rigctl"), "fpga", "examine", "--json",
        "--fpga-device-types", "cpu", "--state-dir", str(rig.state_dir), "--device", rig.card_id,
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    (card,) = json.loads(proc.stdout)["cards"]
    assert card["id"] == rig.card_id


def test_add_fpga_parser_plugs_into_another_argparse() -> None:
    import argparse

    from agent.cli.fpga import add_fpga_parser

    parser = argparse.ArgumentParser(prog="rigctl")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("inventory")
    add_fpga_parser(sub)
    args = parser.parse_args(["fpga", "program", "--bitstream", "a.bin", "--dry-run", "-d", "x"])
    assert (args.command, args.fpga_command, args.bitstream, args.dry_run, args.device) == (
        "fpga", "program", "a.bin", True, "x",
    )
