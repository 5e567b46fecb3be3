"""Errors blamed on the right party (issue 21, item 7), from the library to rigctl's one line.

rigd's structured status details (google.rpc.Status with a rig.v1 ErrorInfo) are read into the
error's party, device and firmware's words; without them, whether rigd answered at all decides
"rigd unreachable", never the message's text. The simulated rigs attach the details as rig.v1
specifies them; real rigd is checked with a miner that refuses connections and one that hangs:
rigd answered, so rigctl must not say it could not reach rigd or that rigd did not answer."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import Endpoint, Rig
from client.errors import Refused, Unavailable
from client.sim import Fault, SimRigProcess
from hal.sim.asic import Fault as MinerFault
from tests.client.conftest import RealRig

RIGCTL = str(Path(sys.executable).with_name("rigctl"))


def rigctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RIGCTL, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def sims() -> Iterator[SimRigProcess]:
    with SimRigProcess(3) as rigs:
        rigs.set_fault([1], Fault.DEVICE_DOWN)
        rigs.set_fault([2], Fault.FIRMWARE_REFUSES)
        yield rigs


def test_status_details_name_the_party_the_device_and_the_firmwares_words(
        sims: SimRigProcess) -> None:
    async def body() -> None:
        async with Rig(sims.rigs[1][1]) as down, Rig(sims.rigs[2][1]) as refusing:
            with pytest.raises(Unavailable) as device:
                await down.set_power_limit("asic/sim-00001-m0", 2000)
            error = device.value
            assert (error.party, error.device_id, error.reason) == (
                "device", "asic/sim-00001-m0", "DEVICE_UNREACHABLE")
            assert error.answered and error.detailed
            assert error.status is not None and len(error.status.details) == 1, "all kept"
            with pytest.raises(Refused) as firmware:
                await refusing.device_action("asic/sim-00002-m0", "sleep")
            error = firmware.value
            assert (error.party, error.firmware_says) == (
                "firmware", "Invalid pool id 5 - range is 0 - 0")
            assert error.metadata["device_id"] == "asic/sim-00002-m0"
            # The rig's other miner answers: only the failing device is blamed.
            applied = await refusing.set_power_limit("asic/sim-00002-m1", 2000)
            assert applied.power_limit_w == 2000

    asyncio.run(body())


def test_rigctl_names_the_device_or_firmware_that_failed(sims: SimRigProcess) -> None:
    down = rigctl("--address", sims.rigs[1][1], "power-limit", "sim-00001-m0", "2000")
    assert down.returncode == 1, down.stderr
    assert down.stderr.strip() == ("rigctl: asic/sim-00001-m0 is unavailable: "
                                   "asic/sim-00001-m0: connection refused")
    refused = rigctl("--address", sims.rigs[2][1], "sleep", "sim-00002-m0")
    assert refused.returncode == 1
    assert refused.stdout.strip() == ("asic/sim-00002-m0: the firmware of asic/sim-00002-m0 "
                                      "refused: Invalid pool id 5 - range is 0 - 0")
    fine = rigctl("--address", sims.rigs[0][1], "power-limit", "sim-00000-m0", "2000")
    assert fine.returncode == 0 and "applied 2000 W" in fine.stdout


def test_rigctl_never_blames_rigd_for_a_miner_that_refuses_or_hangs(rig: RealRig) -> None:
    """rigd answered both calls: exit 1 (refused or failed), not 3 (rigd unreachable)."""
    miners = rig.miners
    socket = ("--socket", rig.rigd.socket_path, "--timeout", "30")
    rig.fleet.power_off(1)
    try:
        refused = rigctl(*socket, "sleep", miners[1])
    finally:
        rig.fleet.power_on(1)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "cannot reach rigd" not in refused.stdout + refused.stderr
    assert refused.stdout.startswith(f"{miners[1]}: ")
    rig.fleet.set_fault(2, MinerFault.HANG)
    try:
        hung = rigctl(*socket, "power-limit", miners[2], "1000")
    finally:
        rig.fleet.set_fault(2, MinerFault.NONE)
    assert hung.returncode == 1, hung.stdout + hung.stderr
    assert "no answer from rigd" not in hung.stderr and "cannot reach rigd" not in hung.stderr
    assert hung.stderr.startswith("rigctl: ") and miners[2].removeprefix("asic/") in hung.stderr


def test_rigctl_says_rigd_is_unreachable_only_when_it_is(tmp_path: Path) -> None:
    gone = rigctl("--socket", str(tmp_path / "none.sock"), "--timeout", "2", "inventory")
    assert gone.returncode == 3 and gone.stderr.startswith("rigctl: cannot reach rigd at unix:")
    assert Endpoint(socket=str(tmp_path / "x.sock")).where == f"unix:{tmp_path}/x.sock"


def test_details_survive_a_clipped_message_and_are_refused_with_another_code() -> None:
    """A server may clip the text it aborts with but attach the whole Status: the party is
    still read. Details whose code contradicts the call's are not believed."""
    import grpc
    from google.rpc import error_details_pb2, status_pb2

    from client.errors import Failed
    from rigapi import SERVICE_NAME, pb

    def details(code: grpc.StatusCode, message: str) -> bytes:
        status = status_pb2.Status(code=code.value[0], message=message)
        status.details.add().Pack(error_details_pb2.ErrorInfo(
            reason="DEVICE_UNREACHABLE", domain="rig.v1",
            metadata={"party": "device", "device_id": "asic/x"}))
        return status.SerializeToString()

    async def clipped(request: object, context: grpc.aio.ServicerContext) -> None:
        context.set_trailing_metadata((("grpc-status-details-bin", details(
            grpc.StatusCode.UNAVAILABLE, "asic/x: " + "refused " * 50)),))
        await context.abort(grpc.StatusCode.UNAVAILABLE, "asic/x: refused refused…")

    async def contradicting(request: object, context: grpc.aio.ServicerContext) -> None:
        context.set_trailing_metadata((("grpc-status-details-bin", details(
            grpc.StatusCode.UNAVAILABLE, "oops")),))
        await context.abort(grpc.StatusCode.INTERNAL, "oops")

    async def body() -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, {
            "GetInventory": grpc.unary_unary_rpc_method_handler(
                clipped, pb.GetInventoryRequest.FromString),
            "GetTelemetry": grpc.unary_unary_rpc_method_handler(
                contradicting, pb.GetTelemetryRequest.FromString)}),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with Rig(f"127.0.0.1:{port}") as client:
                with pytest.raises(Unavailable) as read:
                    await client.inventory()
                assert read.value.party == "device" and read.value.device_id == "asic/x"
                with pytest.raises(Failed) as ignored:
                    await client.telemetry()
                assert not ignored.value.detailed and ignored.value.party == "rigd"
        finally:
            await server.stop(0)

    asyncio.run(body())
