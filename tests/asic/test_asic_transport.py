"""cgminer RPC transport: the malformed-reply quirks, both request forms, multi-commands with
fallback, error mapping, and bad peers (hang, reset, half reply, 10 MB, garbage) on loopback."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import pytest

from hal.asic.transport import Reply, RpcClient, parse_reply, to_float
from hal.errors import DeviceLost, NotSupported, PermissionDenied, ProtocolError, Timeout
from hal.sim.asic import CgminerSim, Fault, SimFleet

LIVE = Path(__file__).with_name("data") / "captures" / "cgminer_4.11.1_live_nodevice"


# --- parsing ----------------------------------------------------------------------------------

def test_no_comma_between_objects_parses() -> None:
    raw = (b'{"STATUS":[{"STATUS":"S","Code":70}],"STATS":[{"STATS":0,"Type":"Antminer L3+"}'
           b'{"STATS":1,"GHS 5s":"504.56"}],"id":1}\x00')
    data = parse_reply(raw)
    assert [s["STATS"] for s in data["STATS"]] == [0, 1]
    assert to_float(data["STATS"][1]["GHS 5s"]) == 504.56  # number sent as a string


def test_bare_nan_and_inf_become_none() -> None:
    raw = b'{"STATUS":[{"STATUS":"S"}],"STATS":[{"GHS 5s":nan,"Temp":inf,"T2":-inf}],"id":1}'
    stats = parse_reply(raw)["STATS"][0]
    assert stats == {"GHS 5s": None, "Temp": None, "T2": None}


def test_nan_inside_a_string_is_left_alone() -> None:
    raw = b'{"STATUS":[{"STATUS":"S"}],"X":[{"Msg":"nan}{inf"}],"id":1}'
    assert parse_reply(raw)["X"][0]["Msg"] == "nan}{inf"


def test_trailing_bytes_after_final_brace_are_ignored() -> None:
    raw = b'{"STATUS":[{"STATUS":"S","Code":22}],"VERSION":[{"Type":"Antminer S9k"}],"id":1}"}\x00'
    assert parse_reply(raw)["VERSION"][0]["Type"] == "Antminer S9k"


def test_status_as_object_is_read() -> None:
    raw = b'{"STATUS":{"STATUS":"E","Code":45,"Msg":"Access denied"},"id":1}'
    reply = Reply("x", parse_reply(raw), raw)
    assert reply.status["Code"] == 45
    with pytest.raises(PermissionDenied):
        reply.raise_for_status()


def test_text_form_reply_parses() -> None:
    raw = (LIVE / "text_summary.raw").read_bytes()
    data = parse_reply(raw)
    assert data["STATUS"][0]["Msg"] == "Summary"
    assert data["SUMMARY"][0]["Elapsed"] == "8"


def test_text_form_multi_reply_parses() -> None:
    data = parse_reply((LIVE / "text_multi_summary+version.raw").read_bytes())
    assert data["version"][0]["VERSION"][0]["CGMiner"] == "4.11.1"
    assert data["summary"][0]["SUMMARY"][0]["Getworks"] == "1"


@pytest.mark.parametrize("raw", [b"\xff\xfe\x00\x01garbage", b"", b"<html>no</html>",
                                 b'{"STATUS":[{"STATUS":"S"', b"[1, 2]"])
def test_unparseable_reply_raises_with_raw(raw: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_reply(raw)
    assert info.value.raw == raw


# --- against the real cgminer captures --------------------------------------------------------

@pytest.fixture
def cgminer() -> SimFleet:
    fleet = SimFleet([CgminerSim(), CgminerSim(read_only=True)]).start()
    yield fleet
    fleet.stop()


def _client(address: str, timeout_s: float = 2.0) -> RpcClient:
    host, port = address.split(":")
    return RpcClient(host, int(port), timeout_s=timeout_s, connect_timeout_s=1.0)


def test_json_and_text_forms(cgminer: SimFleet) -> None:
    client = _client(cgminer.addresses[0])
    summary = asyncio.run(client.request("summary"))
    assert summary.raw == (LIVE / "summary.raw").read_bytes()  # byte for byte, NUL included
    assert summary.section("SUMMARY")[0]["Getworks"] == 1
    text = asyncio.run(client.request("summary", text_form=True))
    assert text.section("SUMMARY")[0]["Getworks"] == "1"


def test_multi_command_is_one_request(cgminer: SimFleet) -> None:
    client = _client(cgminer.addresses[0])
    replies = asyncio.run(client.multi(["summary", "devs", "pools"]))
    assert set(replies) == {"summary", "devs", "pools"}
    assert cgminer.miners[0].requests == ["summary+devs+pools"]
    assert replies["pools"].section("POOLS")[0]["URL"]


def test_multi_with_refused_parts_keeps_the_good_part(cgminer: SimFleet) -> None:
    client = _client(cgminer.addresses[0])
    replies = asyncio.run(client.multi(["summary", "addpool", "bogus"]))
    assert replies["summary"].ok
    with pytest.raises(PermissionDenied):
        replies["addpool"].raise_for_status()
    with pytest.raises(NotSupported):
        replies["bogus"].raise_for_status()


def test_access_denied_and_invalid_command(cgminer: SimFleet) -> None:
    readonly = _client(cgminer.addresses[1])
    with pytest.raises(PermissionDenied, match="Access denied"):
        asyncio.run(readonly.request("privileged"))
    assert asyncio.run(_client(cgminer.addresses[0]).request("privileged")).ok
    with pytest.raises(NotSupported):
        asyncio.run(readonly.request("nosuchcommand"))
    with pytest.raises(ProtocolError, match="Invalid pool id 99"):
        asyncio.run(_client(cgminer.addresses[0]).request("switchpool", "99"))


def test_multi_falls_back_to_single_commands_where_rejected(fleet_factory) -> None:
    fleet = fleet_factory(["antminer"])
    client = _client(fleet.addresses[0])
    replies = asyncio.run(client.multi(["summary", "stats"]))
    assert replies["summary"].ok and replies["stats"].ok
    assert client.multi_allowed is False
    assert fleet.miners[0].requests == ["summary+stats", "summary", "stats"]
    asyncio.run(client.multi(["summary", "stats"]))  # remembered: no second multi attempt
    assert fleet.miners[0].requests[3:] == ["summary", "stats"]


# --- bad peers --------------------------------------------------------------------------------

@pytest.mark.parametrize(("fault", "error"), [
    (Fault.HANG, Timeout),
    (Fault.RESET, DeviceLost),
    (Fault.HALF, ProtocolError),
    (Fault.HUGE, ProtocolError),
    (Fault.GARBAGE, ProtocolError),
])
def test_bad_peer_fails_within_timeout(cgminer: SimFleet, fault: Fault,
                                       error: type[Exception]) -> None:
    cgminer.set_fault(0, fault)
    client = _client(cgminer.addresses[0], timeout_s=1.0)
    start = time.monotonic()
    with pytest.raises(error) as info:
        asyncio.run(client.request("summary"))
    assert time.monotonic() - start < 1.0 + 0.5
    if isinstance(info.value, ProtocolError):
        assert info.value.raw  # the bytes are kept for diagnosis
    if fault is Fault.HUGE:
        assert "exceeds" in str(info.value)


@pytest.mark.parametrize("fault", [Fault.NO_COMMA, Fault.BARE_NAN, Fault.TRAILING,
                                   Fault.STATUS_OBJECT])
def test_quirky_replies_from_a_server_parse(fleet_factory, fault: Fault) -> None:
    fleet = fleet_factory(["antminer"])
    fleet.set_fault(0, fault)
    reply = asyncio.run(_client(fleet.addresses[0]).request("stats"))
    stats = reply.section("STATS")
    assert len(stats) == 2 and stats[0]["Type"] == "Antminer S19 Pro"
    if fault is Fault.BARE_NAN:
        assert stats[1]["GHS 5s"] is None
    else:
        assert stats[1]["GHS 5s"] == 110566.89


def test_connection_refused_is_device_lost() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DeviceLost):
        asyncio.run(RpcClient("127.0.0.1", port, timeout_s=1.0).request("summary"))


def test_reply_size_cap_is_configurable(cgminer: SimFleet) -> None:
    client = _client(cgminer.addresses[0])
    client.max_reply_bytes = 100
    with pytest.raises(ProtocolError, match="exceeds 100 bytes"):
        asyncio.run(client.request("summary"))
    assert json.loads((LIVE / "summary.raw").read_bytes().rstrip(b"\x00"))
