"""Telemetry streams that survive: a rigd restart or a network blip costs a gap, never the
stream, and never a reading that goes back in time.

    async for update in rig.stream_telemetry(interval_s=1.0):
        if update.gap is not None:
            print(f"blind for {update.blind_s:.1f} s: {update.gap.error}")
        for reading in update.readings: ...

When the stream breaks (an error that may pass: rigd unreachable or unavailable; rigd ending the
stream as it stops; no message for `stall_s`), it reconnects after a jittered backoff and goes
on. The first update after the break carries the Gap: from the newest reading delivered before
it to the newest of this update, both by rigd's clock (so a consumer that was slow to take the
updates around the break does not shrink it). A reading is delivered only if it is newer than
every reading already delivered for its device (one repeated unchanged, same time, still is: a
slow device's reading stays the latest);
the rig's power likewise. An error before the first message (no rigd there, a refusal) or an
answer that will not change (NOT_FOUND, INVALID_ARGUMENT, not allowed) ends the stream with it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

import grpc

from client.backoff import Backoff
from client.errors import RETRYABLE
from client.model import Gap, StreamUpdate
from rigapi import convert, pb
from rigapi.model import Reading, RigPower

if TYPE_CHECKING:
    from client.rig import Rig

DEFAULT_INTERVAL_S = 1.0


class Stalled(Exception):
    pass


class TelemetryStream:
    """Made by Rig.stream_telemetry(); iterate it (once) for StreamUpdates."""

    def __init__(self, rig: Rig, device_ids: Sequence[str], interval_s: float | None, *,
                 stall_s: float | None = None, backoff: Backoff | None = None) -> None:
        self.rig = rig
        self.device_ids = list(device_ids)
        self.interval_s = interval_s
        every = interval_s or DEFAULT_INTERVAL_S
        self.stall_s = stall_s if stall_s is not None else max(10.0, 5 * every)
        self.backoff = backoff or Backoff(0.1, 5.0)
        self.gaps: list[Gap] = []
        self.reconnects = 0
        self.delivered = 0
        self.skipped_readings = 0  # older than one delivered for the same device
        self._newest: dict[str, float] = {}
        self._newest_power = float("-inf")
        self._newest_any = float("-inf")  # the newest time delivered, any device or the rig

    def __aiter__(self) -> AsyncIterator[StreamUpdate]:
        return self._run()

    def _request(self) -> pb.StreamTelemetryRequest:
        interval_ms = round(self.interval_s * 1000) if self.interval_s else 0
        return pb.StreamTelemetryRequest(device_ids=self.device_ids, interval_ms=interval_ms)

    def _fresh(self, message: pb.StreamTelemetryResponse
               ) -> tuple[list[Reading], RigPower | None]:
        readings = []
        for device in message.devices:
            at = convert.unix_s(device.time)
            if at < self._newest.get(device.device_id, float("-inf")):
                self.skipped_readings += 1
                continue
            self._newest[device.device_id] = at
            readings.append(convert.reading_from(device))
        power = None
        if message.HasField("rig_power"):
            at = convert.unix_s(message.rig_power.time)
            if at >= self._newest_power:
                self._newest_power = at
                power = convert.rig_power_from(message.rig_power)
        return readings, power

    async def _run(self) -> AsyncIterator[StreamUpdate]:
        opened = time.time()
        dropped_before = 0
        broke: str | None = None
        attempts = 0
        while True:
            started = time.monotonic()
            call = self.rig._rpc().StreamTelemetry(self._request(), metadata=self.rig._metadata,
                                                   timeout=self.rig._stream_timeout())
            dropped = 0
            try:
                while True:
                    try:
                        message = await asyncio.wait_for(call.read(), self.stall_s)
                    except TimeoutError:
                        raise Stalled(f"no message for {self.stall_s:g} s") from None
                    if message is grpc.aio.EOF:
                        broke = "rigd ended the stream"
                        break
                    dropped = int(message.dropped_count)
                    readings, power = self._fresh(message)
                    if not readings and power is None:
                        continue
                    newest = max([r.telemetry.timestamp_unix_s for r in readings]
                                 + ([power.time_unix_s] if power is not None else []))
                    gap = None
                    if broke is not None:
                        before = self._newest_any if self._newest_any > float("-inf") \
                            else opened
                        gap = Gap(before, newest, broke, attempts)
                        self.gaps.append(gap)
                        broke, attempts = None, 0
                        self.backoff.reset()
                    self._newest_any = max(self._newest_any, newest)
                    self.delivered += 1
                    yield StreamUpdate(
                        readings=tuple(readings), rig_power=power,
                        sequence=int(message.sequence), dropped_count=dropped,
                        dropped_total=dropped_before + dropped, reconnects=self.reconnects,
                        blind_s=gap.blind_s if gap else None, gap=gap)
            except grpc.aio.AioRpcError as exc:
                error = self.rig.error(exc, started, None)
                if (self.delivered == 0 and self.reconnects == 0) or \
                        not isinstance(error, RETRYABLE):
                    raise error from None
                broke = broke or f"{type(error).__name__}: {error}"
            except Stalled as exc:
                broke = broke or str(exc)
            finally:
                call.cancel()
            dropped_before += dropped
            attempts += 1
            await asyncio.sleep(self.backoff.next())
            self.reconnects += 1

