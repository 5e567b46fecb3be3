"""The simulated rigs answer the calls a fleet makes as rigd does: the same client code gets the
same kinds of answers and the same refusals from both (checked side by side against a real
rigd), so fleet tests and benchmarks on simulated rigs measure what real ones would."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from client import Endpoint, Rig
from client.errors import InvalidArgument, NotFound, Refused
from client.sim import SimRigProcess
from rigapi.model import OperationState
from tests.agent.conftest import ADMIN_TOKEN, OPERATOR_TOKEN
from tests.client.conftest import RealRig


@pytest.fixture(scope="module")
def sim() -> Iterator[SimRigProcess]:
    with SimRigProcess(1, gpus=1) as rigs:
        yield rigs


@pytest.fixture(params=["rigd", "sim"])
def target(request: pytest.FixtureRequest, rig: RealRig, sim: SimRigProcess
           ) -> tuple[str, str]:
    """(address, a miner on it) of a real rigd, then of a simulated rig."""
    if request.param == "rigd":
        return rig.rigd.tcp_address, rig.miners[0]
    return sim.rigs[0][1], "asic/sim-00000-m0"


def test_reads_and_refusals_are_alike(target: tuple[str, str]) -> None:
    address, miner = target

    async def body() -> None:
        async with Rig(Endpoint(address=address, token=OPERATOR_TOKEN)) as client:
            inventory = await client.inventory()
            assert miner in {d.id for d in inventory.devices}
            assert "set_power_limit" in inventory.device(miner).capabilities
            snapshot = await client.telemetry()
            assert snapshot.rig_power is not None and snapshot.rig_power.time_unix_s > 0
            assert snapshot.by_id()[miner].telemetry.power_w is not None
            assert (await client.telemetry([miner])).rig_power is None
            with pytest.raises(NotFound):
                await client.telemetry(["asic/none"])
            with pytest.raises(InvalidArgument):
                await client.set_power_limit(miner, -5)
            with pytest.raises(NotFound):
                await client.operation("op-none")
            with pytest.raises(Refused):
                await client.start_cancel_curtailment()
            assert await client.health() == {"": "serving", "rig.v1.RigAgent": "serving"}

    asyncio.run(body())


def test_leases_follow_the_same_rules(target: tuple[str, str]) -> None:
    address, miner = target

    async def body() -> None:
        async with Rig(Endpoint(address=address, token=OPERATOR_TOKEN)) as a, \
                Rig(Endpoint(address=address, token=ADMIN_TOKEN)) as b:
            lease = await a.acquire_lease("a", 30)
            with pytest.raises(Refused):
                await b.acquire_lease("b", 30)
            with pytest.raises(Refused):  # no token while a lease is live
                await b.set_power_limit(miner, 2000)
            assert (await a.set_power_limit(miner, 2000)).requested_w == 2000
            taken = await b.acquire_lease("b", 30, preempt=True, keep=False)
            assert taken.fencing_token > lease.fencing_token
            with pytest.raises(Refused):
                await a.set_power_limit(miner, 1900)
            assert lease.is_lost
            with pytest.raises(NotFound):
                await a.renew_lease(lease.lease_id, 30)
            await b.release_lease(taken.lease_id)
            with pytest.raises(NotFound):
                await b.release_lease(taken.lease_id)

    asyncio.run(body())


def test_a_curtailment_runs_to_its_end_and_is_undone(target: tuple[str, str]) -> None:
    address, _ = target

    async def body() -> None:
        async with Rig(Endpoint(address=address, token=OPERATOR_TOKEN)) as client:
            before = (await client.telemetry()).rig_power
            assert before is not None
            op = await client.curtail(before.total_w / 2, deadline_s=30, reason="alike")
            assert op.done and op.kind == "curtail" and op.phases
            status = (await client.inventory()).curtailment
            assert status is not None and status.reason == "alike"
            assert status.operation_id == op.operation_id
            with pytest.raises(InvalidArgument):
                await client.start_curtailment(-1)
            undo = await client.cancel_curtailment()
            assert undo.state is OperationState.SUCCEEDED
            assert (await client.inventory()).curtailment is None
            listed = [o.operation_id for o in await client.operations(limit=10)]
            assert undo.operation_id in listed and op.operation_id in listed

    asyncio.run(body())
