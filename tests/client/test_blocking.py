"""The blocking facade for scripts: the same calls without asyncio, a lease that keeps being
renewed while the script does something else, streams as plain iterators."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from client import BlockingFleet, BlockingRig, Endpoint
from client.errors import LeaseLost, Refused
from client.sim import SimRigProcess
from tests.agent.conftest import ADMIN_TOKEN, OPERATOR_TOKEN
from tests.client.conftest import RealRig, wait_for


@pytest.fixture(scope="module")
def sims() -> Iterator[SimRigProcess]:
    with SimRigProcess(5) as rigs:
        yield rigs


def test_a_script_holds_a_lease_while_it_does_other_things(rig: RealRig) -> None:
    with BlockingRig(rig.endpoint()) as client, BlockingRig(rig.endpoint(ADMIN_TOKEN)) as boss:
        assert client.inventory().rig_id == "test-rig"
        lost: list[str] = []
        lease = client.acquire_lease("script", 1, on_lost=lambda lease: lost.append("lost"))
        started = time.monotonic()
        wait_for(lambda: lease.renewals >= 6, what="renewals with no call from the script")
        assert time.monotonic() - started > 2.0 and not lost, "kept past two TTLs"
        assert client.set_power_limit(rig.miners[0], 1900).requested_w == 1900
        taken = boss.acquire_lease("boss", 10, preempt=True, keep=False)
        wait_for(lambda: lost == ["lost"], timeout_s=5, what="the takeover noticed")
        with pytest.raises(LeaseLost):
            client.set_power_limit(rig.miners[0], 1800)
        boss.release_lease(taken.lease_id)


def test_streams_and_operations_are_iterators(rig: RealRig) -> None:
    with BlockingRig(Endpoint(socket=rig.rigd.socket_path)) as client:
        sequences = []
        for update in client.stream_telemetry(interval_s=0.2):
            sequences.append(update.sequence)
            if len(sequences) == 3:
                break  # closes the stream on the loop's thread
        assert sequences == [1, 2, 3]
        assert len(client.run_diagnostics(1)) > 3
        assert client.health()[""] == "serving"


def test_a_blocking_fleet(sims: SimRigProcess, rig: RealRig) -> None:
    members = [*sims.rigs, ("real", rig.rigd.tcp_address)]
    with BlockingFleet(members, deadline_s=2, template=Endpoint(token=OPERATOR_TOKEN)) as fleet:
        results = fleet.telemetry()
        assert len(results.ok) == 6 and results.values()["real"].rig_power is not None
        assert fleet.curtail({name: 1000.0 for name, _ in sims.rigs}, deadline_s=5
                             ).summary() == "5 of 5 rigs answered"
        cancelled = fleet.cancel_curtailment(deadline_s=5)
        assert len(cancelled.ok) == 5, "the real rig had none to cancel"
        assert isinstance(cancelled.errors()["real"], Refused)


def test_a_bad_endpoint_raises_before_a_thread_starts() -> None:
    import threading

    from client.errors import EndpointError

    before = threading.active_count()
    with pytest.raises(EndpointError):
        BlockingRig(Endpoint(address="127.0.0.1:1", cert="/nope"))
    assert threading.active_count() == before
