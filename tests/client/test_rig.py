"""The client against a real rigd: every RPC, each answer a dataclass; switches, curtailments and
diagnostics followed to their end; errors that name the party that failed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from client import Endpoint, Rig
from client.errors import (
    EndpointError,
    InvalidArgument,
    NotAllowed,
    NotFound,
    Refused,
    RigError,
    Timeout,
    Unavailable,
    Unreachable,
)
from client.model import Device, Inventory, Snapshot
from hal.device import DeviceInfo, DeviceKind, Telemetry
from hal.sim.asic import Fault
from rigapi.model import (
    CurtailmentState,
    InferenceSpec,
    OperationState,
    Phase,
    Reading,
    RigPower,
    WorkloadKind,
    WorkloadSpec,
)
from tests.client.conftest import RealRig, wait_for

FAKE = WorkloadSpec(WorkloadKind.INFERENCE, inference=InferenceSpec("fake"))


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_reads_are_dataclasses_with_every_device(rig: RealRig) -> None:
    async def body() -> None:
        async with Rig(rig.endpoint(tcp=False)) as client:
            inventory = await client.inventory()
            assert isinstance(inventory, Inventory) and inventory.rig_id == "test-rig"
            assert {d.id for d in inventory.devices} >= set(rig.miners)
            miner = inventory.device(rig.miners[0])
            assert isinstance(miner, Device) and isinstance(miner.info, DeviceInfo)
            assert miner.kind is DeviceKind.ASIC and miner.info.simulated
            assert "set_power_limit" in miner.capabilities
            assert inventory.backends[0].name == "host" and inventory.backends[0].available
            assert inventory.curtailment is None

            snapshot = await client.telemetry(max_age_s=0.5)
            assert isinstance(snapshot, Snapshot) and isinstance(snapshot.rig_power, RigPower)
            readings = snapshot.by_id()
            assert set(readings) == {d.id for d in inventory.devices}
            reading = readings[rig.miners[0]]
            assert isinstance(reading, Reading) and isinstance(reading.telemetry, Telemetry)
            assert reading.telemetry.power_w is not None and reading.telemetry.asic is not None
            assert reading.telemetry.gpu is None, "absent stays None"
            assert snapshot.rig_power.total_w >= reading.telemetry.power_w
            assert abs(reading.telemetry.timestamp_unix_s - time.time()) < 30

            one = await client.telemetry([rig.miners[1]])
            assert [r.device_id for r in one.readings] == [rig.miners[1]]
            assert one.rig_power is None, "rig power only when every device is asked for"
            assert await client.health() == {"": "serving", "rig.v1.RigAgent": "serving"}
            assert isinstance(await client.operations(limit=5), list)

    run(body())


def test_power_limits_and_device_actions(rig: RealRig) -> None:
    async def body() -> None:
        async with Rig(rig.endpoint()) as client:
            miner = rig.miners[0]  # LuxOS: picks its nearest profile
            applied = await client.set_power_limit(miner, 1900)
            assert applied.device_id == miner and applied.requested_w == 1900
            assert applied.power_limit_w > 0 and "nearest" in applied.detail
            with pytest.raises(InvalidArgument) as refused:
                await client.set_power_limit(miner, 900_000)
            assert refused.value.party == "caller" and refused.value.answered
            assert "sleep sent" in await client.device_action(miner, "sleep")
            wait_for(lambda: rig.fleet.miners[0].state.sleeping, what="the miner asleep")
            assert "wake sent" in await client.device_action(miner, "wake")
            wait_for(lambda: not rig.fleet.miners[0].state.sleeping, what="the miner awake")
            with pytest.raises(NotFound):
                await client.set_power_limit("asic/nowhere:1", 100)

    run(body())


def test_a_switch_is_awaited_to_its_end_with_every_phase(rig: RealRig) -> None:
    async def body() -> None:
        async with Rig(rig.endpoint()) as client:
            host = next(d.id for d in (await client.inventory()).devices
                        if d.kind is DeviceKind.HOST)
            seen: list[tuple[str, int]] = []
            op = await client.switch([host], FAKE, request_id="client-switch-1",
                                     on_update=lambda o: seen.append((o.state, len(o.phases))))
            assert op.done and op.state is OperationState.SUCCEEDED, op.error
            assert [p.phase for p in op.phases][-1] is Phase.READY
            assert all(p.duration_s is not None for p in op.phases)
            assert seen[0][0] is OperationState.RUNNING and seen[-1][0] is op.state
            assert [n for _, n in seen] == sorted(n for _, n in seen), "phases only grow"
            # The same request id is the same switch, not a second one.
            again = await client.start_switch([host], FAKE, request_id="client-switch-1")
            assert again.operation_id == op.operation_id
            assert (await client.operation(op.operation_id)).state is OperationState.SUCCEEDED
            listed = await client.operations(limit=10)
            assert op.operation_id in [o.operation_id for o in listed]
            back = await client.switch([host], WorkloadKind.IDLE)
            assert back.state is OperationState.SUCCEEDED, back.error

    run(body())


def test_a_curtailment_and_its_cancel_are_awaited(rig: RealRig) -> None:
    async def body() -> None:
        async with Rig(rig.endpoint()) as client:
            before = (await client.telemetry()).rig_power
            assert before is not None
            op = await client.curtail(before.total_w / 2, deadline_s=30, expiry_s=600,
                                      reason="client test")
            assert op.done and op.kind == "curtail" and op.detail
            curtailment = (await client.inventory()).curtailment
            assert curtailment is not None and curtailment.operation_id == op.operation_id
            assert curtailment.state in (CurtailmentState.CONFIRMED,
                                         CurtailmentState.TARGET_NOT_MET)
            assert curtailment.reason == "client test"
            restore = await client.cancel_curtailment()
            assert restore.done and restore.state is OperationState.SUCCEEDED, restore.error
            assert (await client.inventory()).curtailment is None
            with pytest.raises(Refused):
                await client.start_cancel_curtailment()

    run(body())


def test_diagnostics_stream_to_their_end(rig: RealRig) -> None:
    async def body() -> None:
        async with Rig(rig.endpoint()) as client:
            seen = []
            results = await client.run_diagnostics(1, on_result=seen.append)
            assert results == seen and len(results) == results[-1].total
            assert [r.done for r in results] == list(range(1, len(results) + 1))
            assert {r.test for r in results} >= {"config", "backend.host"}
            with pytest.raises(NotFound):
                await client.run_diagnostics(1, ["gpu/none"])

    run(body())


def test_leases_by_hand(rig: RealRig) -> None:
    """acquire (without renewal), renew, release: what `rigctl lease` does."""
    async def body() -> None:
        async with Rig(rig.endpoint(tcp=False)) as client:
            lease = await client.acquire_lease("by-hand", 30, keep=False)
            assert lease.fencing_token > 0 and lease.info.holder == "by-hand (token:controller)"
            renewed = await client.renew_lease(lease.lease_id, 60)
            assert renewed.fencing_token == lease.fencing_token
            assert renewed.expire_unix_s > lease.info.expire_unix_s
            await client.release_lease(lease.lease_id)
            assert client.lease is None
            with pytest.raises(NotFound):
                await client.renew_lease(lease.lease_id, 60)

    run(body())


def test_who_failed_is_said_by_the_error(rig: RealRig, tmp_path: Path) -> None:
    async def body() -> None:
        async with Rig(Endpoint(socket=str(tmp_path / "none.sock")), timeout_s=2) as nobody:
            with pytest.raises(Unreachable) as nothing:
                await nobody.inventory()
            assert nothing.value.party == "rigd" and not nothing.value.answered
        async with Rig(rig.endpoint(token="")) as viewer:  # anonymous TCP: a viewer
            with pytest.raises(NotAllowed) as denied:
                await viewer.set_power_limit(rig.miners[0], 1000)
            assert denied.value.party == "caller"
            assert str(denied.value) == "SetPowerLimit needs role operator; anonymous has viewer"
        # A miner that refuses connections or never answers: rigd answered, so the error is
        # never "rigd unreachable" (issue 21, item 7), whatever detail rigd attaches.
        miners = rig.miners
        async with Rig(rig.endpoint(), timeout_s=20) as client:
            rig.fleet.power_off(1)
            try:
                with pytest.raises(RigError) as down:
                    await client.device_action(miners[1], "sleep")
                assert not isinstance(down.value, Unreachable)
                assert down.value.answered and client.connected()
                assert isinstance(down.value, Unavailable | Refused)
                if down.value.detailed:
                    assert down.value.party == "device"
                    assert down.value.device_id == miners[1]
            finally:
                rig.fleet.power_on(1)
            rig.fleet.set_fault(2, Fault.HANG)
            try:
                started = time.monotonic()
                with pytest.raises(RigError) as hung:
                    await client.device_action(miners[2], "sleep")
                assert time.monotonic() - started < 15, "rigd answered before our deadline"
                assert hung.value.answered, "rigd answered; the miner did not"
                if isinstance(hung.value, Timeout):
                    assert hung.value.party != "rigd"
            finally:
                rig.fleet.set_fault(2, Fault.NONE)

    run(body())


def test_a_bad_endpoint_fails_before_any_call(tmp_path: Path) -> None:
    with pytest.raises(EndpointError) as half:
        Rig(Endpoint(address="127.0.0.1:1", ca=str(tmp_path / "ca.pem")))
    assert half.value.missing == ("cert", "key")
    with pytest.raises(EndpointError) as unreadable:
        Rig(Endpoint(address="127.0.0.1:1", ca="/nope/ca", cert="/nope/c", key="/nope/k"))
    assert unreadable.value.path.startswith("/nope/")
    with pytest.raises(EndpointError):
        Endpoint.parse("rig12")
    assert Endpoint.parse("unix:/run/x.sock").socket == "/run/x.sock"
    env = Endpoint.from_env({"RIGD_ADDRESS": "10.0.0.5:50051", "RIGCTL_TOKEN": "t"})
    assert env.address == "10.0.0.5:50051" and env.metadata() == (("authorization",
                                                                    "Bearer t"),)


def test_health_of_a_service_rigd_does_not_serve_is_not_found(rig: RealRig) -> None:
    async def body() -> None:
        async with Rig(rig.endpoint()) as client:
            await client.health(("", "no.such.Service"))

    with pytest.raises(NotFound):
        run(body())
