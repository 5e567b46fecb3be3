"""Bitstreams on PoCL: build, program, inventory, dry run, and every refusal leaving the card as
it was. The "card" is PoCL's CPU device (fpga_device_types=["cpu"]); the bitstream is a program
binary PoCL itself produced, loaded with clCreateProgramWithBinary."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest

from hal import bitstream as bits
from hal.errors import DeviceLost, InvalidArgument, NotSupported
from hal.sha256 import midstate

GENESIS_HEADER = bytes.fromhex(
    "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b27ac7"
    "2c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a29ab5f49ffff001d1dac2b7c"
)
GENESIS_NONCE = 2083236893
BIN = "sha256d-search.bin"


def _manifest(directory: Path, name: str = "sha256d-search") -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / f"{name}.json").read_text())
    return data


def _write_manifest(directory: Path, data: dict[str, Any], name: str = "sha256d-search") -> None:
    (directory / f"{name}.json").write_text(json.dumps(data))


def _state_files(state_dir: Path) -> dict[str, bytes]:
    if not state_dir.exists():
        return {}
    return {p.name: p.read_bytes() for p in sorted(state_dir.iterdir())}


def test_built_bitstream_has_a_truthful_manifest(built: Any) -> None:
    binary = (built.directory / BIN).read_bytes()
    manifest = bits.Manifest.from_json(_manifest(built.directory))
    assert binary.startswith(b"poclbin")  # PoCL's own program binary format
    assert manifest.binary_size_bytes == len(binary)
    assert manifest.binary_sha256 == hashlib.sha256(binary).hexdigest()
    assert manifest.algorithm == "sha256d" and manifest.abi == bits.SHA256D_ABI
    assert manifest.kernels == ("sha256d_search",)
    assert manifest.binary_file == BIN


def test_program_loads_the_bitstream_and_inventory_shows_it(rig: Any) -> None:
    card = rig.card()
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    report = card.program(rig.bitstream_dir / BIN)
    assert not report.dry_run and report.previous is None
    assert [c.name for c in report.checks] == [
        "location", "manifest", "algorithm", "size", "checksum", "target", "kernels",
    ]
    manifest = _manifest(rig.bitstream_dir)
    attrs = card.info().attributes
    assert attrs["bitstream_name"] == "sha256d-search"
    assert attrs["bitstream_version"] == "1.0.0"
    assert attrs["bitstream_sha256"] == manifest["binary_sha256"]
    assert dt.datetime.fromisoformat(attrs["bitstream_loaded_at"]) >= before
    assert card.info().firmware_version == "1.0.0"

    # The loaded kernel really is the search: it finds the genesis block's nonce.
    result = card.search(GENESIS_HEADER, GENESIS_NONCE - 5000, 10_000)
    assert result.nonces == (GENESIS_NONCE,) and result.rejected == 0
    assert card.telemetry().hashrate_hs == pytest.approx(result.hashrate_hs)


def test_a_later_discovery_sees_the_card_still_programmed(rig: Any) -> None:
    rig.card().program(BIN)  # relative to the bitstream directory
    again = rig.card()
    assert again.info().attributes["bitstream_sha256"] == _manifest(rig.bitstream_dir)[
        "binary_sha256"
    ]
    assert again.loaded_image_sha256() == again.info().attributes["bitstream_sha256"]
    assert again.search(GENESIS_HEADER, GENESIS_NONCE - 100, 200).nonces == (GENESIS_NONCE,)


def test_the_saved_image_is_the_cards_memory_not_the_source_file(rig: Any) -> None:
    rig.card().program(BIN)
    (rig.bitstream_dir / BIN).write_bytes(b"overwritten after programming")
    again = rig.card()
    assert again.search(GENESIS_HEADER, GENESIS_NONCE - 100, 200).nonces == (GENESIS_NONCE,)


def test_dry_run_checks_everything_and_changes_nothing(rig: Any) -> None:
    card = rig.card()
    report = card.program(BIN, dry_run=True)
    assert report.dry_run and report.action.startswith("would program")
    assert [c.name for c in report.checks] == [
        "location", "manifest", "algorithm", "size", "checksum", "target",
    ]
    assert card.loaded is None and card.info().attributes["bitstream_name"] == ""
    assert _state_files(rig.state_dir) == {}
    with pytest.raises(NotSupported):
        card.search(GENESIS_HEADER, 0, 16)

    card.program(BIN)
    loaded = card.loaded
    state = _state_files(rig.state_dir)
    report = card.program("null-search.bin", dry_run=True)
    assert "replacing sha256d-search 1.0.0" in report.action
    assert card.loaded == loaded and _state_files(rig.state_dir) == state
    assert card.search(GENESIS_HEADER, GENESIS_NONCE - 100, 200).nonces == (GENESIS_NONCE,)


def test_dry_run_refuses_what_programming_would_refuse(rig: Any) -> None:
    with (rig.bitstream_dir / BIN).open("r+b") as f:
        f.truncate(1000)
    with pytest.raises(InvalidArgument, match="truncated"):
        rig.card().program(BIN, dry_run=True)


def test_programming_again_replaces_and_reports_the_previous(rig: Any) -> None:
    card = rig.card()
    card.program(BIN)
    report = card.program("null-search.bin")
    assert report.previous is not None and report.previous.name == "sha256d-search"
    assert report.loaded is not None and report.loaded.name == "null-search"
    assert rig.card().info().attributes["bitstream_name"] == "null-search"
    (image,) = rig.state_dir.glob("*.bin")  # the replaced image is gone, the new one kept
    assert image.read_bytes() == (rig.bitstream_dir / "null-search.bin").read_bytes()


def test_a_corrupted_card_image_is_detected_not_run(rig: Any) -> None:
    rig.card().program(BIN)
    (image,) = rig.state_dir.glob("*.bin")
    data = bytearray(image.read_bytes())
    data[100] ^= 0x01
    image.write_bytes(bytes(data))
    card = rig.card()
    assert card.loaded is not None  # the record survives: the card says what it should hold
    assert card.loaded_image_sha256() != card.loaded.sha256
    with pytest.raises(DeviceLost, match="no longer matches its checksum"):
        card.search(GENESIS_HEADER, 0, 16)


# --- refusals: each leaves the loaded bitstream loaded and unchanged -----------------------


def _truncate(d: Path) -> str:
    with (d / BIN).open("r+b") as f:
        f.truncate(os.path.getsize(d / BIN) // 2)
    return BIN


def _append(d: Path) -> str:
    with (d / BIN).open("ab") as f:
        f.write(b"\0" * 16)
    return BIN


def _flip_byte(d: Path) -> str:
    data = bytearray((d / BIN).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (d / BIN).write_bytes(bytes(data))
    return BIN


def _other_board(d: Path) -> str:
    data = _manifest(d)
    data["target"]["device_name"] = "xilinx_u250_gen3x16_xdma_shell_4_1"
    _write_manifest(d, data)
    return BIN


def _other_shell(d: Path) -> str:
    data = _manifest(d)
    data["target"]["platform_version"] += " (another driver)"
    _write_manifest(d, data)
    return BIN


def _unknown_algorithm(d: Path) -> str:
    data = _manifest(d)
    data["algorithm"] = "scrypt"
    _write_manifest(d, data)
    return BIN


def _missing_manifest(d: Path) -> str:
    (d / "sha256d-search.json").unlink()
    return BIN


def _garbled_manifest(d: Path) -> str:
    (d / "sha256d-search.json").write_text('{"format": "rigd-bitstream/1", ')
    return BIN


def _manifest_for_another_file(d: Path) -> str:
    data = _manifest(d)
    data["binary_file"] = "null-search.bin"
    _write_manifest(d, data)
    return BIN


def _dot_dot_escape(d: Path) -> str:
    (d.parent / "outside.bin").write_bytes((d / BIN).read_bytes())
    (d.parent / "outside.json").write_text((d / "sha256d-search.json").read_text())
    return "../outside.bin"


def _absolute_outside(d: Path) -> str:
    _dot_dot_escape(d)
    return str(d.parent / "outside.bin")


def _symlink_escape(d: Path) -> str:
    _dot_dot_escape(d)
    (d / "link.bin").symlink_to(d.parent / "outside.bin")
    (d / "link.json").symlink_to(d.parent / "outside.json")
    return "link.bin"


def _missing_file(d: Path) -> str:
    return "no-such.bin"


REFUSALS = {
    "truncated": (_truncate, "truncated"),
    "oversized": (_append, "oversized"),
    "wrong checksum": (_flip_byte, "checksum mismatch"),
    "another board": (_other_board, "targets board 'xilinx_u250"),
    "another shell": (_other_shell, "targets shell"),
    "unknown algorithm": (_unknown_algorithm, "unknown algorithm 'scrypt'"),
    "missing manifest": (_missing_manifest, "manifest sha256d-search.json is missing"),
    "garbled manifest": (_garbled_manifest, "not valid JSON"),
    "manifest of another file": (_manifest_for_another_file, "describes 'null-search.bin'"),
    "dot-dot escape": (_dot_dot_escape, "outside the bitstream directory"),
    "absolute path outside": (_absolute_outside, "outside the bitstream directory"),
    "symlink escape": (_symlink_escape, "outside the bitstream directory"),
    "missing file": (_missing_file, "no such bitstream"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_bad_bitstream_is_refused_and_the_loaded_one_stays(rig: Any, case: str) -> None:
    damage, message = REFUSALS[case]
    card = rig.card()
    card.program(BIN)
    loaded, info, state = card.loaded, card.info(), _state_files(rig.state_dir)
    # The card holds its own copy of the image, so damaging the source files must not matter.
    target = damage(rig.bitstream_dir)
    for dry_run in (True, False):
        with pytest.raises(InvalidArgument, match=message):
            card.program(target, dry_run=dry_run)
    assert card.loaded == loaded and card.info() == info
    assert _state_files(rig.state_dir) == state
    assert rig.card().loaded == loaded  # what the next process sees
    assert card.search(GENESIS_HEADER, GENESIS_NONCE - 100, 200).nonces == (GENESIS_NONCE,)


def test_bitstream_built_on_another_pocl_is_refused_as_another_board(rig: Any, built: Any) -> None:
    if not built.other_card_ids:
        pytest.fail("expected both PoCL platforms (Debian 3.1 and PyPI 3.0) on the test machine")
    other = rig.card(built.other_card_ids[0])
    with pytest.raises(InvalidArgument, match="targets board"):
        other.program(BIN)
    assert other.loaded is None


def test_no_bitstream_dir_configured_is_refused(built: Any, fpga_cards: Any) -> None:
    (card,) = [c for c in fpga_cards() if c.id == built.card_id]
    with pytest.raises(InvalidArgument, match="no bitstream directory"):
        card.program(built.directory / BIN)
    assert card.loaded is None


def test_wrong_kernels_are_caught_by_the_host_side_check(rig: Any) -> None:
    card = rig.card()
    card.program("lying-search.bin")
    result = card.search(GENESIS_HEADER, 1000, 4096)
    assert result.candidates == 1 and result.rejected == 1 and result.nonces == ()
    card.program("null-search.bin")
    result = card.search(GENESIS_HEADER, GENESIS_NONCE - 100, 200)
    assert result.candidates == 0 and result.nonces == ()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((GENESIS_HEADER[:70], 0, 16), "76 or 80 bytes"),
        ((GENESIS_HEADER, -1, 16), "32-bit nonce"),
        ((GENESIS_HEADER, 0, 0), "nonce_count"),
        ((GENESIS_HEADER, 0, 2**32), "nonce_count"),
    ],
)
def test_search_arguments_are_validated(rig: Any, args: tuple[Any, ...], message: str) -> None:
    card = rig.card()
    card.program(BIN)
    with pytest.raises(InvalidArgument, match=message):
        card.search(*args)


# Headers ground for the wrap test: over the window each has exactly one nonce whose double hash
# ends in 32 zero bits (hashlib scanned the whole window), one just below 2^32, one after the wrap.
WRAP_START = 2**32 - 2**20
WRAP_COUNT = 2**20 + 2**17
WRAP_CASES = [
    (
        "a3c203c559962d47ad340bd429bae8cd3a1b5dbff3f97bf460f49f2e3a385685a3c203c559962d47ad340bd4"
        "29bae8cd3a1b5dbff3f97bf460f49f2e3a385685a3c203c559962d47ad340bd4",
        4294097852,
    ),
    (
        "9f05a863db44dc5b6341e424f2687268c2327c7afa0dcc8872830c1e47e1ce839f05a863db44dc5b6341e4"
        "24f2687268c2327c7afa0dcc8872830c1e47e1ce839f05a863db44dc5b6341e424",
        68596,
    ),
]


@pytest.mark.parametrize(("header_hex", "nonce"), WRAP_CASES, ids=["below-2^32", "after-wrap"])
def test_search_range_wraps_at_two_to_the_32(rig: Any, header_hex: str, nonce: int) -> None:
    """A range from below 2^32 through 0: the search finds the one nonce in it, on either side."""
    header = bytes.fromhex(header_hex)
    assert bits.is_sha256d_candidate(header + nonce.to_bytes(4, "little"))
    card = rig.card()
    card.program(BIN)
    result = card.search(header, WRAP_START, WRAP_COUNT)
    assert result.nonces == (nonce,) and result.rejected == 0


# --- the manifest and the search ABI helpers -----------------------------------------------


def test_manifest_round_trips_and_rejects_bad_fields(built: Any) -> None:
    data = _manifest(built.directory)
    assert bits.Manifest.from_json(data).to_json() == data
    for key, value, message in [
        ("format", "xclbin2", "format"),
        ("binary_sha256", "ABC", "64 lowercase hex"),
        ("binary_size_bytes", True, "sane size"),
        ("binary_size_bytes", -1, "sane size"),
        ("binary_file", "../x.bin", "bare file name"),
        ("kernels", [], "kernel names"),
        ("name", "bad name/../", "unexpected characters"),
        ("target", "u250", "'target'"),
    ]:
        with pytest.raises(InvalidArgument, match=message):
            bits.Manifest.from_json({**data, key: value})
    with pytest.raises(InvalidArgument):
        bits.Manifest.from_json([data])


def test_midstate_matches_hashlib_on_a_one_block_message() -> None:
    message = b"abc"
    block = message + b"\x80" + b"\0" * (55 - len(message)) + struct.pack(">Q", 8 * len(message))
    digest = struct.pack(">8I", *midstate(block))
    assert digest == hashlib.sha256(message).digest()
    words = bits.sha256d_job_words(GENESIS_HEADER)
    assert len(words) == 11 and words[8:] == struct.unpack(">3I", GENESIS_HEADER[64:76])
