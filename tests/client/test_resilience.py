"""What a controller's connection to a rig goes through, against a real rigd: a switch awaited
to its end while its WatchOperation stream is broken under it; telemetry streams across a rigd
restart, a network blip and a stalled path, never going back in time and saying how long they
were blind."""

from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client import Endpoint, Rig
from client.errors import NotFound, RigError, Unavailable, Unreachable
from client.model import StreamUpdate
from client.streams import TelemetryStream
from hal.device import DeviceKind
from rigapi import convert, pb
from rigapi.model import InferenceSpec, OperationState, Phase, WorkloadKind, WorkloadSpec
from tests.agent.conftest import OPERATOR_TOKEN
from tests.client.conftest import RealRig
from tests.client.proxy import Proxy

SLOWSTOP = WorkloadSpec(WorkloadKind.INFERENCE, inference=InferenceSpec("slowstop"))


def test_a_switch_is_awaited_to_its_end_across_a_broken_watch_stream(rig: RealRig) -> None:
    """The host's runtime takes 2 s to stop; the stream following the switch is reset twice
    while it does. The switch is still followed to its end, every phase of it."""
    async def body(proxy: Proxy) -> None:
        async with Rig(Endpoint(address=proxy.address, token=OPERATOR_TOKEN)) as client:
            host = next(d.id for d in (await client.inventory()).devices
                        if d.kind is DeviceKind.HOST)
            started = await client.switch([host], SLOWSTOP)
            assert started.state is OperationState.SUCCEEDED, started.error
            updates = []
            broken = 0

            def on_update(op: object) -> None:
                nonlocal broken
                updates.append(op)
                if broken < 2 and not op.done:  # type: ignore[attr-defined]
                    proxy.reset()  # the connection carrying the watch dies
                    broken += 1

            op = await client.switch([host], WorkloadKind.IDLE, on_update=on_update)
            assert broken == 2 and proxy.resets >= 2 and proxy.connections >= 3
            assert op.done and op.state is OperationState.SUCCEEDED, op.error
            phases = [p.phase for p in op.phases]
            assert phases[0] is Phase.REQUESTED and phases[-1] is Phase.READY
            assert Phase.STOPPING in phases
            stopping = next(p for p in op.phases if p.phase is Phase.STOPPING)
            assert stopping.duration_s is not None and stopping.duration_s >= 1.5, \
                "the slow stop really ran while the stream was down"
            assert updates[-1] is op or updates[-1].operation_id == op.operation_id
            # rigd agrees: the operation it keeps is the one the client awaited.
            kept = await client.operation(op.operation_id)
            assert kept.state is OperationState.SUCCEEDED and len(kept.phases) == len(op.phases)

    with Proxy(rig.rigd.tcp_address) as proxy:
        asyncio.run(body(proxy))


def test_an_operation_that_does_not_exist_ends_the_wait(rig: RealRig) -> None:
    async def body() -> None:
        async with Rig(rig.endpoint()) as client:
            with pytest.raises(NotFound):
                await client.wait("op-none")

    asyncio.run(body())


def never_back_in_time(updates: list[StreamUpdate]) -> None:
    newest: dict[str, float] = {}
    power = float("-inf")
    for update in updates:
        for reading in update.readings:
            at = reading.telemetry.timestamp_unix_s
            assert at >= newest.get(reading.device_id, float("-inf")), reading.device_id
            newest[reading.device_id] = at
        if update.rig_power is not None:
            assert update.rig_power.time_unix_s >= power
            power = update.rig_power.time_unix_s


def test_a_telemetry_stream_survives_a_restart_of_rigd(own_rig: RealRig) -> None:
    async def body() -> None:
        async with Rig(own_rig.endpoint(tcp=False)) as client:
            updates: list[StreamUpdate] = []
            stopped = restarted = 0.0
            async for update in client.stream_telemetry(interval_s=0.2):
                updates.append(update)
                if len(updates) == 3:
                    stopped = time.time()
                    assert own_rig.rigd.stop() == 0
                    gone = time.time()  # no reading can be newer than this...
                    own_rig.rigd = own_rig.rigd.restart()
                    restarted = time.time()  # ...until a new rigd reads again
                if update.gap is not None or len(updates) > 200:
                    break
            resumed = updates[-1]
            assert resumed.gap is not None, "the break is reported"
            assert resumed.reconnects >= 1 and resumed.blind_s is not None
            def times(update: StreamUpdate) -> list[float]:
                power = [update.rig_power.time_unix_s] if update.rig_power else []
                return [r.telemetry.timestamp_unix_s for r in update.readings] + power

            before = [t for u in updates[:-1] for t in times(u)]
            after = times(resumed)
            assert resumed.gap.last_unix_s == max(before) <= gone
            assert resumed.gap.resumed_unix_s == max(after) > gone
            # Blind from the newest reading before the stop to the newest after the restart:
            # at least the span no rigd ran, at most that plus a backoff and a few intervals.
            assert resumed.blind_s >= gone - max(before) >= 0
            assert resumed.blind_s <= restarted - stopped + 6.0, resumed.blind_s
            assert resumed.sequence >= 1 and resumed.rig_power is not None
            never_back_in_time(updates)

    asyncio.run(body())


def test_a_stream_rides_out_a_network_blip_and_a_stalled_path(rig: RealRig) -> None:
    async def body(proxy: Proxy) -> None:
        async with Rig(Endpoint(address=proxy.address)) as client:
            updates: list[StreamUpdate] = []
            stream = client.stream_telemetry(interval_s=0.2, stall_s=1.0)
            async for update in stream:
                updates.append(update)
                if len(updates) == 3:
                    proxy.reset()  # a blip: every connection ends
                if update.gap is not None and len(stream.gaps) == 1:
                    proxy.hold()  # then the path stalls: no error, no bytes
                    held = time.monotonic()
                    asyncio.get_running_loop().call_later(2.0, proxy.release)
                if len(stream.gaps) == 2:
                    break
            blip, stall = stream.gaps
            assert "Unreachable" in blip.error or "Unavailable" in blip.error or \
                "ended" in blip.error, blip.error
            assert blip.blind_s < 6.0
            assert "no message for 1 s" in stall.error
            assert stall.blind_s >= 1.0 and time.monotonic() - held >= 1.0
            assert updates[-1].gap is stall and updates[-1].dropped_total >= 0
            never_back_in_time(updates)

    with Proxy(rig.rigd.tcp_address) as proxy:
        asyncio.run(body(proxy))


def test_a_stream_that_never_started_raises(tmp_path: object) -> None:
    async def body() -> None:
        async with Rig(Endpoint(socket=f"{tmp_path}/none.sock")) as client:
            with pytest.raises(Unreachable):
                async for _ in client.stream_telemetry():
                    pass

    asyncio.run(body())


def _message(times: list[tuple[str, float]], power_at: float | None) -> pb.StreamTelemetryResponse:
    message = pb.StreamTelemetryResponse()
    for device_id, at in times:
        message.devices.add(device_id=device_id, time=convert.timestamp(at))
    if power_at is not None:
        message.rig_power.time.CopyFrom(convert.timestamp(power_at))
    return message


@given(st.lists(st.tuples(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]),
                                             st.floats(1e9, 1e9 + 100)), max_size=3),
                          st.none() | st.floats(1e9, 1e9 + 100)), max_size=30))
def test_a_stream_delivers_no_reading_older_than_one_it_delivered(
        messages: list[tuple[list[tuple[str, float]], float | None]]) -> None:
    """Whatever order messages arrive in (a resumed stream, a replica behind a balancer):
    per device, what is delivered never goes back in time, and nothing else is withheld (a
    reading as new as the newest delivered, the same one repeated, still is)."""
    stream = TelemetryStream(Rig(Endpoint(socket="/nonexistent")), (), None)
    newest: dict[str, float] = {}
    newest_power = float("-inf")
    skipped = 0
    for times, power_at in messages:
        readings, power = stream._fresh(_message(times, power_at))
        expected = []
        for device_id, at in times:
            if at >= newest.get(device_id, float("-inf")):
                newest[device_id] = at
                expected.append((device_id, at))
        assert [(r.device_id, r.telemetry.timestamp_unix_s) for r in readings] == expected
        skipped += len(times) - len(expected)
        if power_at is not None and power_at >= newest_power:
            newest_power = power_at
            assert power is not None and power.time_unix_s == power_at
        else:
            assert power is None
    assert stream.skipped_readings == skipped


def test_diagnostics_broken_midway_raise_instead_of_looking_complete(rig: RealRig) -> None:
    """A run cannot be resumed (rigd ends what a departed caller's run started): a stream that
    breaks before its last result raises, so a partial run never passes for a whole one."""
    async def body(proxy: Proxy) -> None:
        async with Rig(Endpoint(address=proxy.address, token=OPERATOR_TOKEN)) as client:
            seen = []
            with pytest.raises(RigError) as broken:
                async for outcome in client.diagnostics(2):
                    seen.append(outcome)
                    if len(seen) == 1:
                        proxy.reset()
            assert 1 <= len(seen) < seen[0].total
            assert isinstance(broken.value, Unreachable | Unavailable)

    with Proxy(rig.rigd.tcp_address) as proxy:
        asyncio.run(body(proxy))
