"""Every captured response has an expected outcome (data/capture_expected.json: ProtocolError, or
the telemetry's key values); pinned values per family were read by hand from the capture files.

capture_expected.json was written from the parser's output and then read against each capture
by hand; a change in any file's outcome fails here and must be justified in review."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hal.asic import FAMILIES
from hal.asic.transport import Reply, parse_reply, split_multi
from hal.device import Telemetry
from hal.errors import ProtocolError

CAPTURES = Path(__file__).with_name("data") / "captures"

FAMILY_OF_DIR = {
    "antminer_s19pro_stock_bmminer_49.0.1.3": "antminer",
    "mskminer_s19_fw2.6.0.39": "antminer",
    "hammer_d10_fw2023-05-28": "antminer",
    "avalon_1566_cgminer4.11.1": "avalon",
    "avalon_asicrs": "avalon",
    "braiins_os_v21_09_asicrs": "braiins",
    "braiins_os_v25_11_asicrs": "braiins",
    "braiins_os_v26_04_asicrs": "braiins",
    "cgminer_4.11.1_live_nodevice": "cgminer",
    "luxos_antminer_s19kpro_asicrs": "luxos",
    "luxos_luxos_tooling": "luxos",
    "whatsminer_api_v1_asicrs": "whatsminer",
    "whatsminer_api_v2_asicrs": "whatsminer",
    "whatsminer_api_v3_asicrs": "whatsminer",
    "whatsminer_m21s_simulator_messages": "whatsminer",
}
NOT_RESPONSES = {"api_command_logon_requirements.json"}  # a command list, per the MANIFEST


def _response_files() -> list[Path]:
    files = []
    for path in sorted(CAPTURES.rglob("*")):
        if path.is_file() and path.parent != CAPTURES and path.name not in NOT_RESPONSES \
                and not path.name.endswith("_parsed.json"):
            files.append(path)
    return files


def _command(path: Path) -> str:
    name = path.name.rsplit(".", 1)[0].removesuffix("_with_errors")
    for prefix in ("rpc_", "text_multi_", "text_", "multi_"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def _replies(path: Path, raw: bytes) -> dict[str, Reply]:
    data = parse_reply(raw, path.name)
    command = _command(path)
    if "+" in command:
        return split_multi(data, command.split("+"), raw)
    if command == "with_invalid":  # summary+addpool+bogus
        return split_multi(data, ["summary", "addpool", "bogus"], raw)
    return {command: Reply(command, data, raw)}


def test_every_capture_directory_is_mapped() -> None:
    dirs = {p.name for p in CAPTURES.iterdir() if p.is_dir()}
    assert dirs == set(FAMILY_OF_DIR)
    assert len(_response_files()) > 120


EXPECTED = json.loads((Path(__file__).with_name("data") / "capture_expected.json").read_text())


def test_every_capture_has_an_expected_outcome() -> None:
    assert sorted(EXPECTED) == sorted(str(p.relative_to(CAPTURES)) for p in _response_files())


@pytest.mark.parametrize("path", _response_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_capture_gives_its_expected_outcome(path: Path) -> None:
    raw = path.read_bytes()
    family = FAMILIES[FAMILY_OF_DIR[path.parent.name]]
    expected = EXPECTED[str(path.relative_to(CAPTURES))]
    try:
        replies = _replies(path, raw)
        telemetry = family.parse_replies("asic/test:4028", replies)
    except ProtocolError as exc:
        assert expected["outcome"] == "protocol_error", f"{path.name}: {exc}"
        assert exc.raw == raw
        return
    assert expected["outcome"] == "telemetry"
    assert isinstance(telemetry, Telemetry)
    asic = telemetry.asic
    assert asic is not None
    got = {"hashrate_hs": telemetry.hashrate_hs, "power_w": telemetry.power_w,
           "power_limit_w": telemetry.power_limit_w, "temp_c": telemetry.temp_c,
           "boards": len(asic.boards), "fans_rpm": list(asic.fans_rpm), "pools": len(asic.pools),
           "is_mining": asic.is_mining, "errors": len(asic.errors)}
    assert got == {k: v for k, v in expected.items() if k != "outcome"}
    assert telemetry.asic is not None and telemetry.asic.firmware_family == family.family
    for command, reply in replies.items():
        if not reply.ok:  # a refused command shows up as an error, not as silence
            assert any(e.startswith(f"{command}:") for e in telemetry.asic.errors)


def _load(*parts: str) -> dict[str, Reply]:
    out = {}
    for part in parts:
        directory, name, command = part.split(":")
        raw = (CAPTURES / directory / name).read_bytes()
        out[command] = Reply(command, parse_reply(raw), raw)
    return out


def test_antminer_s19pro_pinned() -> None:
    d = "antminer_s19pro_stock_bmminer_49.0.1.3"
    t = FAMILIES["antminer"].parse_telemetry("asic/x", _load(
        f"{d}:rpc_summary.json:summary", f"{d}:rpc_stats.json:stats", f"{d}:rpc_pools.json:pools"))
    assert t.hashrate_hs == pytest.approx(110566.89e9)  # SUMMARY "GHS 5s"
    assert t.asic is not None
    assert t.asic.expected_hashrate_hs == pytest.approx(110000.0e9)  # total_rateideal
    assert [b.hashrate_hs for b in t.asic.boards] == pytest.approx(
        [37603.30e9, 35536.22e9, 37427.38e9])  # chain_rate1..3; slot 4 empty
    assert [b.chips for b in t.asic.boards] == [114, 114, 114]
    assert [b.temp_chip_c for b in t.asic.boards] == [78, 71, 69]  # max of temp_chipN
    assert [b.temp_board_c for b in t.asic.boards] == [73, 66, 64]  # max of temp_pcbN
    assert t.asic.fans_rpm == (6000, 5880, 5040, 5040)
    # Stock firmware measures no power: the S19 Pro nameplate (3250 W at 110 TH/s) x hashrate.
    assert t.power_w == pytest.approx(3250 / 110e12 * 110566.89e9, abs=0.1)
    assert t.power_source == "estimated"
    assert t.asic.uptime_s == 50474
    assert t.asic.pools[0].url == "stratum+tcp://btc.global.luxor.tech:700"
    assert t.asic.pools[0].active is True and t.asic.pools[0].accepted == 4057


def test_luxos_s19kpro_pinned() -> None:
    d = "luxos_antminer_s19kpro_asicrs"
    t = FAMILIES["luxos"].parse_telemetry("asic/x", _load(
        f"{d}:summary.json:summary", f"{d}:stats.json:stats", f"{d}:power.json:power",
        f"{d}:fans.json:fans", f"{d}:temps.json:temps", f"{d}:config.json:config",
        f"{d}:profiles.json:profiles", f"{d}:pools.json:pools"))
    assert t.hashrate_hs == pytest.approx(59756.06e9)
    assert t.power_w == 1051
    assert t.power_limit_w == 1188  # rated watts of the active profile "290MHz"
    assert t.asic is not None
    assert t.asic.fans_rpm == (1920, 1920, 2340, 2340)
    assert [b.temp_board_c for b in t.asic.boards] == [47.0, 47.0, 47.0]
    assert [b.chips for b in t.asic.boards] == [77, 77, 77]
    assert t.asic.expected_hashrate_hs == pytest.approx(61954.2e9)
    assert t.asic.is_mining is True


def test_whatsminer_v2_pinned() -> None:
    d = "whatsminer_api_v2_asicrs"
    t = FAMILIES["whatsminer"].parse_telemetry("asic/x", _load(
        f"{d}:summary.json:summary", f"{d}:devs.json:devs", f"{d}:status.json:status",
        f"{d}:get_error_code_with_errors.json:get_error_code"))
    assert t.hashrate_hs == pytest.approx(124500000.0e6)  # "HS RT" in MH/s
    assert t.power_w == 3200 and t.power_limit_w == 3300
    assert t.asic is not None
    assert t.asic.expected_hashrate_hs == pytest.approx(126000e9)
    assert t.asic.fans_rpm == (5400, 5280)
    assert [b.chips for b in t.asic.boards] == [135, 135, 135]
    assert [b.temp_chip_c for b in t.asic.boards] == [80.0, 81.0, 81.0]
    assert [b.temp_board_c for b in t.asic.boards] == [65.0, 66.0, 67.0]
    assert t.temp_c == 81.0
    assert "error 218 at 2024-06-15 10:30:00" in t.asic.errors


def test_whatsminer_v3_pinned() -> None:
    d = "whatsminer_api_v3_asicrs"
    t = FAMILIES["whatsminer"].parse_telemetry("asic/x", _load(
        f"{d}:get_miner_status_summary.json:summary", f"{d}:get_miner_status_edevs.json:edevs"))
    assert t.hashrate_hs == pytest.approx(171.259e12)
    assert t.power_w == 3156.0 and t.power_limit_w == 3600
    assert t.asic is not None and t.asic.fans_rpm == (5400, 5280)
    assert [b.temp_board_c for b in t.asic.boards] == [41.1, 40.1, 41.5]
    assert [b.chips for b in t.asic.boards] == [75, 75, 75]


def test_avalon_1566_pinned() -> None:
    d = "avalon_1566_cgminer4.11.1"
    t = FAMILIES["avalon"].parse_telemetry("asic/x", _load(
        f"{d}:rpc_stats.json:stats", f"{d}:rpc_pools.json:pools"))
    assert t.hashrate_hs == pytest.approx(199241.07e9)  # GHSspd in the MM ID0 blob
    assert t.power_w == 3731  # WALLPOWER
    assert t.asic is not None
    assert t.asic.fans_rpm == (4275, 4282)
    assert [b.hashrate_hs for b in t.asic.boards] == pytest.approx(
        [59459.52e9, 61407.83e9, 63139.66e9])
    assert [b.temp_chip_c for b in t.asic.boards] == [77, 78, 77]
    assert t.temp_c == 78
    assert t.asic.is_mining is True


def test_avalon_q_idle_capture_reads_as_not_mining() -> None:
    t = FAMILIES["avalon"].parse_telemetry("asic/x", _load("avalon_asicrs:stats.json:stats"))
    assert t.asic is not None and t.asic.is_mining is False
    assert t.power_w == 146  # last PS field: no WALLPOWER on the Avalon Q


def test_braiins_grpc_pinned() -> None:
    d = CAPTURES / "braiins_os_v25_11_asicrs"
    data = {name: json.loads((d / f"{name}.json").read_text())
            for name in ("miner_stats", "miner_hw_hashboards", "cooling_state")}
    from hal.asic.braiins import parse_grpc_json

    t = parse_grpc_json("asic/x", data)
    assert t.power_w == 2472
    assert t.asic is not None and t.asic.fans_rpm == (5879, 5819, 5909, 5909)
    assert t.asic.boards[0].chips == 110 and t.asic.boards[0].temp_board_c == 56.5
    assert t.asic.boards[0].temp_chip_c == 71.5


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=12,
)
_KEYS = ["STATUS", "SUMMARY", "STATS", "DEVS", "POOLS", "POWER", "FANS", "TEMPS", "CONFIG",
         "PROFILES", "Msg", "Code", "msg", "code", "GHS 5s", "MHS av", "chain_rate1", "MM ID0"]


@settings(max_examples=150, deadline=None)
@given(family=st.sampled_from(sorted(FAMILIES)),
       data=st.dictionaries(st.sampled_from(_KEYS), _JSON, max_size=5),
       command=st.sampled_from(["summary", "stats", "devs", "pools", "power", "config",
                                "status", "edevs", "fans", "temps", "profiles"]))
def test_any_reply_shape_gives_telemetry_or_protocol_error(family: str, data: dict,
                                                           command: str) -> None:
    raw = json.dumps(data).encode()
    try:
        telemetry = FAMILIES[family].parse_replies("asic/x", {command: Reply(command, data, raw)})
    except ProtocolError as exc:
        assert exc.raw == raw
        return
    assert isinstance(telemetry, Telemetry)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_parse_reply_never_crashes(raw: bytes) -> None:
    try:
        assert isinstance(parse_reply(raw), dict)
    except ProtocolError as exc:
        assert exc.raw == raw
