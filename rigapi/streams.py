"""Reading StreamTelemetry so that its freshness promise holds whatever the transport buffers.

rigd sends each stream the newest readings when the transport has taken the previous message,
and counts what it replaced meanwhile. What the transport then holds (the reader's HTTP/2
window, which gRPC grows to megabytes by default) it cannot take back: a reader that paused
finds older messages waiting. `fresh()` skips each message that waited in the transport longer
than one interval, or holds a reading older than two, judged by its `sent_time` and reading
times against this reader's clock (the offset between the two clocks is learnt as the least lag
seen, so they need not agree), and counts it in `dropped_count`. It never skips a message it had
to wait for: that one is the newest there is. So the reader sees only readings younger than two
intervals plus its own pause, and after any silence its first message is fresh; `dropped_count`
stays `sequence` minus the messages it got.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator

from rigapi import pb

Clock = Callable[[], float]


class Freshness:
    """The judgement for one stream: keep or skip each message as it is read."""

    def __init__(self) -> None:
        self.offset_s: float | None = None  # least (arrival - sent_time) seen: clock offset
        self.skipped = 0

    def keep(self, message: pb.StreamTelemetryResponse, asked_at: float,
             arrived_at: float) -> bool:
        """Whether to hand `message` to the reader (asked for at `asked_at`, read at
        `arrived_at`, both on the reader's wall clock); a kept message's dropped_count is
        raised by the messages skipped so far."""
        if message.HasField("sent_time") and message.interval_ms:
            interval_s = message.interval_ms / 1000
            sent_s = message.sent_time.ToNanoseconds() / 1e9
            lag_s = arrived_at - sent_s
            self.offset_s = lag_s if self.offset_s is None else min(self.offset_s, lag_s)
            now_s = arrived_at - self.offset_s  # on rigd's clock
            oldest_s = min((d.time.ToNanoseconds() / 1e9 for d in message.devices
                            if d.HasField("time")), default=sent_s)
            stale = now_s - sent_s > interval_s or now_s - oldest_s > 2 * interval_s
            buffered = arrived_at - asked_at < interval_s / 2  # there before it was asked for
            if buffered and stale:
                self.skipped += 1
                return False
        message.dropped_count += self.skipped
        return True


def fresh(messages: Iterable[pb.StreamTelemetryResponse],
          clock: Clock = time.time) -> Iterator[pb.StreamTelemetryResponse]:
    """The stream's messages without those that went stale in the transport (a sync stub's
    stream, or any iterable of messages)."""
    judge = Freshness()
    iterator = iter(messages)
    while True:
        asked_at = clock()
        try:
            message = next(iterator)
        except StopIteration:
            return
        if judge.keep(message, asked_at, clock()):
            yield message


async def fresh_async(messages: AsyncIterable[pb.StreamTelemetryResponse],
                      clock: Clock = time.time) -> AsyncIterator[pb.StreamTelemetryResponse]:
    """fresh() for an asyncio stub's stream."""
    judge = Freshness()
    iterator = aiter(messages)
    while True:
        asked_at = clock()
        try:
            message = await anext(iterator)
        except StopAsyncIteration:
            return
        if judge.keep(message, asked_at, clock()):
            yield message
