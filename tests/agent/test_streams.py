"""Telemetry streams through a real rigd: many streams cost no thread (health and unary calls keep
answering), a stream's interval is honoured, and a slow reader gets the newest readings and a
true count of what it lost, whatever the transport holds."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hal.sim.nvml import demo_setup
from rigapi import FRESH_STREAM_OPTIONS, pb, pb_grpc
from rigapi.streams import fresh
from tests.agent.conftest import DRAIN_OBSERVED_S, RigdProcess, start_rigd

SILENCE_S = 15.0


@pytest.fixture
def gpu16_rigd(tmp_path: Path) -> Iterator[RigdProcess]:
    """Sixteen simulated GPUs and the host: a stream message of a few kilobytes, as on a rig."""
    options = demo_setup(tmp_path / "nvml", count=16)
    nvml = "\n".join(f'{key} = "{value}"' for key, value in options.items())
    rigd = start_rigd(tmp_path, f"[hal.nvml]\n{nvml}\nwatch_xid = false\n",
                      backends=("host", "nvml"))
    yield rigd
    rigd.stop()


def test_fifty_open_streams_leave_health_and_unary_calls_answering(rigd: RigdProcess) -> None:
    channel = grpc.insecure_channel(rigd.tcp_address)
    stub = pb_grpc.RigAgentStub(channel)
    streams = [stub.StreamTelemetry(pb.StreamTelemetryRequest(interval_ms=1000), timeout=60)
               for _ in range(50)]
    try:
        for stream in streams:  # every stream is open and delivering
            assert next(stream).devices
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(rigd.tcp_address))
        for _ in range(20):
            reply = health.Check(health_pb2.HealthCheckRequest(service="rig.v1.RigAgent"),
                                 timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            assert rigd.stub().GetTelemetry(pb.GetTelemetryRequest(), timeout=5).devices
            assert rigd.stub().GetInventory(pb.GetInventoryRequest(), timeout=5).devices
        for stream in streams:  # and they are still delivering
            assert next(stream).sequence >= 2
    finally:
        for stream in streams:
            stream.cancel()
        channel.close()


def test_a_stream_interval_below_the_sampling_interval_is_honoured(tmp_path: Path) -> None:
    """The rig samples every 2 s; a 100 ms stream gets a new reading every 100 ms."""
    rigd = start_rigd(tmp_path, settings={"telemetry": {"interval_s": 2.0}})
    try:
        stream = rigd.stub().StreamTelemetry(pb.StreamTelemetryRequest(interval_ms=100),
                                             timeout=60)
        try:
            stamps = [next(stream).devices[0].time.ToNanoseconds() / 1e9 for _ in range(21)]
        finally:
            stream.cancel()
    finally:
        rigd.stop()
    span = stamps[-1] - stamps[1]  # the first message is the reading already at hand
    assert len(set(stamps[1:])) == 20, "each message carries a new reading"
    assert span < 20, f"20 readings took {span:.1f} s: the 2 s sampler won (40 s)"


def test_the_floor_is_named_when_an_interval_is_too_short(rigd: RigdProcess) -> None:
    with pytest.raises(grpc.RpcError) as info:
        next(iter(rigd.stub().StreamTelemetry(pb.StreamTelemetryRequest(interval_ms=50),
                                              timeout=5)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "100 .. 3600000" in (info.value.details() or "")


def oldest_reading_age_s(message: pb.StreamTelemetryResponse) -> float:
    """How old the message's oldest reading is now (rigd runs on this host: one clock)."""
    return time.time() - min(d.time.ToNanoseconds() for d in message.devices) / 1e9


@pytest.mark.parametrize("options", [[], FRESH_STREAM_OPTIONS], ids=["grpc-default", "small"])
def test_a_slow_reader_gets_fresh_readings_and_a_true_drop_count(
        gpu16_rigd: RigdProcess, options: list[tuple[str, int]]) -> None:
    """The freshness promise, whatever the transport buffers: gRPC's default windows hold
    megabytes of messages unread (what went stale there is skipped by the reader); small ones
    hold a few, and then rigd's writes wait (what went stale in rigd is replaced). Silent for
    SILENCE_S, the reader's first message is fresh; reading one message per two intervals, each
    is younger than two intervals plus its pause; every dropped_count is what it missed."""
    interval_s = 1.0
    channel = grpc.insecure_channel(gpu16_rigd.tcp_address, options=options)
    stream = pb_grpc.RigAgentStub(channel).StreamTelemetry(
        pb.StreamTelemetryRequest(interval_ms=round(interval_s * 1000)), timeout=120)
    reader = fresh(stream)
    received = [next(reader)]
    assert received[0].ByteSize() > 3000, "the message is a rig's worth of readings"
    pauses = [SILENCE_S] + [2 * interval_s] * 6
    ages = []
    try:
        for pause in pauses:
            time.sleep(pause)  # the reader is busy elsewhere: this is what is tested
            message = next(reader)
            ages.append(oldest_reading_age_s(message))
            received.append(message)
    finally:
        stream.cancel()
        channel.close()
    assert ages[0] < 2 * interval_s, (
        f"silent for {SILENCE_S:g} s, the first message holds readings {ages[0]:.1f} s old")
    for pause, age in zip(pauses[1:], ages[1:], strict=True):
        assert age < 2 * interval_s + pause, f"a reading {age:.1f} s old after a {pause} s pause"
    for count, message in enumerate(received, start=1):
        assert message.dropped_count == message.sequence - count, (
            f"message #{message.sequence}, the reader's {count}th, counts "
            f"{message.dropped_count} dropped")
    assert received[-1].dropped_count > 0, "what the silence missed is counted"
    sequences = [m.sequence for m in received]
    assert sequences == sorted(set(sequences)), "newer each time"


def test_shutdown_is_not_held_by_open_streams_or_health_watches(tmp_path: Path) -> None:
    rigd = start_rigd(tmp_path, settings={"server": {"shutdown_grace_s": 60.0,
                                                     "drain_s": DRAIN_OBSERVED_S}})
    channel = grpc.insecure_channel(rigd.tcp_address)
    watch = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service=""), timeout=60)
    stream = pb_grpc.RigAgentStub(channel).StreamTelemetry(
        pb.StreamTelemetryRequest(interval_ms=1000), timeout=60)
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    next(stream)
    ends: list[str] = []
    waiter = threading.Thread(target=lambda: ends.extend(
        m.status for m in watch), daemon=True)  # type: ignore[misc]
    waiter.start()
    started = time.monotonic()
    assert rigd.stop() == 0
    took = time.monotonic() - started
    # drain_s and the time to end the streams, not the 60 s grace.
    assert took < 30, f"shutdown took {took:.1f} s"
    waiter.join(timeout=10)
    assert health_pb2.HealthCheckResponse.NOT_SERVING in ends
    channel.close()
