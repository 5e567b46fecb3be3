"""The edge's gate: every call to rigd's gRPC server passes here before a servicer sees it.

In order: who calls (auth.Authenticator); the request body, decoded here (bytes that are not the
message are INVALID_ARGUMENT naming the RPC, not gRPC's own UNKNOWN); the role the RPC needs;
for a server stream (telemetry, operations, diagnostics, health Watch alike), a place in the
streams budget, per identity and in total, and its messages paced so that calls are read between
them (StreamPacer); then the servicer, given a CallContext that carries
the caller's identity explicitly. What the servicer raises becomes its status through one table
(agent/edges/status.py), with the ErrorInfo detail that names the party at fault.

Every mutating call is audited once with its outcome: OK, the status it was refused or failed
with, or CANCELLED when the caller went away, which is no error (no traceback, no INTERNAL). The
identity is not kept in a ContextVar: a stream its client cancels may be finalized in another
asyncio context, where a ContextVar token cannot be reset.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
import structlog
from google.protobuf.message import DecodeError

from agent.core.errors import Refused
from agent.edges import limits, status
from agent.edges.auth import (
    METHOD_ROLES,
    MUTATING,
    AuditLog,
    Authenticator,
    Identity,
    audit_summary,
)
from agent.edges.status import Failure

log = structlog.get_logger("rigd.gate")

_SERVICE = "/rig.v1.RigAgent/"
NOBODY = Identity("nobody", "none")


class CallContext:
    """One call as the servicer sees it: gRPC's context, plus the caller's identity and the
    status the call was ended with (read for the audit; the context itself must not be asked
    once a stream is cancelled, grpc.aio has freed it)."""

    __slots__ = ("_context", "ended", "identity", "peer")

    def __init__(self, context: Any, identity: Identity, peer: str) -> None:
        self._context = context
        self.identity = identity
        self.peer = peer
        self.ended: tuple[grpc.StatusCode, str] | None = None

    async def abort(self, code: grpc.StatusCode, details: str = "",
                    trailing_metadata: Any = ()) -> None:
        self.ended = (code, details)
        await self._context.abort(code, details, trailing_metadata)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def caller(context: Any) -> Identity:
    """Who makes this call (set by the gate; nobody, with no role, if it was not)."""
    identity = getattr(context, "identity", None)
    return identity if isinstance(identity, Identity) else NOBODY


class StreamPacer:
    """Server streams' messages go out at most `per_turn` in one turn of the event loop.

    asyncio reads its sockets once per turn and then runs every callback ready at that moment:
    the hundreds of streams one sampler tick wakes would make one long turn, and a control call
    arriving meanwhile would wait all of it. Paced, the loop reads its sockets (and so takes new
    calls and their next steps) between every `per_turn` stream messages; a stream's rate is
    unchanged, its message leaves a turn or a few later."""

    def __init__(self, per_turn: int = 16) -> None:
        self.per_turn = per_turn
        self._left = per_turn
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._refill_due = False

    async def turn(self) -> None:
        """Wait for this message's place in a turn."""
        if self._left > 0 and not self._waiting:
            self._left -= 1
            self._schedule_refill()
            return
        place: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(place)
        self._schedule_refill()
        await place

    def _schedule_refill(self) -> None:
        if not self._refill_due:
            self._refill_due = True
            asyncio.get_running_loop().call_soon(self._refill)

    def _refill(self) -> None:  # runs in the next turn, after the sockets were read
        self._refill_due = False
        self._left = self.per_turn
        while self._left > 0 and self._waiting:
            place = self._waiting.popleft()
            if not place.done():  # not cancelled with its stream
                place.set_result(None)
                self._left -= 1
        if self._waiting or self._left < self.per_turn:
            self._schedule_refill()


class StreamBudget:
    """Server streams open at once: at most `total`, at most `per_identity` for one caller."""

    def __init__(self, total: int, per_identity: int) -> None:
        self.total = total
        self.per_identity = per_identity
        self.open = 0
        self._by_identity: dict[str, int] = {}

    def take(self, identity: str) -> Failure | None:
        """A place for one more stream, or the refusal naming the limit."""
        mine = self._by_identity.get(identity, 0)
        if mine >= self.per_identity:
            return status.by_caller(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{identity} has {mine} streams open, its limit "
                f"(server.max_streams_per_identity = {self.per_identity}); close one first",
                "STREAM_LIMIT", limit="server.max_streams_per_identity")
        if self.open >= self.total:
            return Failure(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"rigd has {self.open} streams open, its limit (server.max_streams = "
                f"{self.total}); try again later", "STREAM_LIMIT", "rigd",
                extra={"limit": "server.max_streams"})
        self._by_identity[identity] = mine + 1
        self.open += 1
        return None

    def give_back(self, identity: str) -> None:
        left = self._by_identity.get(identity, 0) - 1
        if left > 0:
            self._by_identity[identity] = left
        else:
            self._by_identity.pop(identity, None)
        self.open -= 1


@dataclass(frozen=True, slots=True)
class _Method:
    name: str  # the RPC's name ("SetWorkload"), or the full path for other services
    ours: bool  # a rig.v1.RigAgent method (its string fields are checked against the limits)
    needed: str  # the least role, "" where none is needed (health)
    mutating: bool
    request_type: str
    decode: Callable[[bytes], Any] | None


class Gate(grpc.aio.ServerInterceptor):
    def __init__(self, authenticator: Authenticator, audit: AuditLog,
                 streams: StreamBudget) -> None:
        self._auth = authenticator
        self._audit = audit
        self.streams = streams
        self.pacer = StreamPacer()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming:
            return handler  # reflection's bidirectional stream: served as gRPC serves it
        full_method: str = handler_call_details.method
        ours = full_method.startswith(_SERVICE)
        name = full_method[len(_SERVICE):] if ours else full_method
        decode = handler.request_deserializer
        message_class = getattr(decode, "__self__", None)
        method = _Method(
            name, ours, METHOD_ROLES.get(name, "admin") if ours else "",
            ours and name in MUTATING, getattr(message_class, "__name__", "request"), decode)
        metadata = tuple(handler_call_details.invocation_metadata or ())
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, metadata, handler.unary_unary), None,
                handler.response_serializer)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, metadata, handler.unary_stream), None,
                handler.response_serializer)
        return handler

    # -- one call -------------------------------------------------------------------------

    async def _begin(self, method: _Method, metadata: tuple[tuple[str, Any], ...], raw: Any,
                     context: Any) -> tuple[CallContext, Any, dict[str, Any]]:
        """The caller identified and admitted, the request decoded; refusals are audited."""
        peer = context.peer()  # now: once a stream is cancelled the context must not be asked
        call = CallContext(context, self._auth.identify(metadata, context), peer)
        request, summary, malformed = raw, {}, ""
        if method.decode is not None and isinstance(raw, bytes):
            try:
                request = method.decode(raw)
                summary = audit_summary(request)
            except (DecodeError, ValueError, TypeError) as exc:
                malformed = str(exc) or type(exc).__name__
                summary = {"malformed_bytes": len(raw)}
        identity = call.identity
        refusal: Failure | None = None
        if method.needed and not identity.at_least(method.needed):
            if identity.role == "none":
                refusal = status.by_caller(grpc.StatusCode.UNAUTHENTICATED,
                                        f"{method.name} needs a valid token", "UNAUTHENTICATED")
            else:
                refusal = status.by_caller(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"{method.name} needs role {method.needed}; {identity.name} has "
                    f"{identity.role}", "ROLE_TOO_LOW")
        elif malformed:
            refusal = status.by_caller(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{method.name}: the request body is not a {method.request_type} message "
                f"({status.clip(malformed, 120)})", "MALFORMED_REQUEST")
        elif method.ours:
            try:
                limits.check(request)
            except Refused as exc:
                refusal = status.refused(exc)
        if refusal is not None:
            self._record(method, call, summary, refusal.code.name, refusal.message, None)
            await status.abort(call, refusal)
        return call, request, summary

    async def _fail(self, call: CallContext, exc: Exception) -> NoReturn:
        """An exception from the servicer, said as its status (AbortError: already said)."""
        if isinstance(exc, grpc.aio.AbortError):
            raise exc
        failure = status.failure_of(exc)
        if failure.code == grpc.StatusCode.INTERNAL:
            log.exception("rpc_crashed", error=repr(exc))
        await status.abort(call, failure)

    def _record(self, method: _Method, call: CallContext, summary: dict[str, Any],
                outcome: str, detail: str, started: float | None) -> None:
        if not method.mutating:
            return
        identity = call.identity
        event: dict[str, Any] = {
            "method": method.name, "identity": identity.name, "role": identity.role,
            "peer": status.clip(call.peer, 128), "request": summary,
            "outcome": outcome, "detail": status.clip(detail, 512),
        }
        if started is not None:
            event["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
        self._audit.record(**event)

    def _finished(self, method: _Method, call: CallContext, summary: dict[str, Any],
                  started: float, error: BaseException | None) -> None:
        if error is None:
            outcome, detail = "OK", ""
        elif call.ended is not None:
            outcome, detail = call.ended[0].name, call.ended[1]
        elif isinstance(error, (asyncio.CancelledError, GeneratorExit)):
            outcome, detail = "CANCELLED", "the caller cancelled the call or went away"
        else:
            outcome, detail = "INTERNAL", f"internal error in rigd: {type(error).__name__}"
        self._record(method, call, summary, outcome, detail, started)

    def _unary(self, method: _Method, metadata: tuple[tuple[str, Any], ...],
               inner: Callable[[Any, Any], Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def unary(raw: Any, context: Any) -> Any:
            call, request, summary = await self._begin(method, metadata, raw, context)
            started = time.perf_counter()
            try:
                try:
                    response = await inner(request, call)
                except Exception as exc:
                    await self._fail(call, exc)
            except BaseException as exc:
                self._finished(method, call, summary, started, exc)
                raise
            self._finished(method, call, summary, started, None)
            return response

        return unary

    def _stream(self, method: _Method, metadata: tuple[tuple[str, Any], ...],
                inner: Callable[[Any, Any], AsyncIterator[Any]]
                ) -> Callable[..., AsyncIterator[Any]]:
        async def stream(raw: Any, context: Any) -> AsyncIterator[Any]:
            call, request, summary = await self._begin(method, metadata, raw, context)
            name = call.identity.name
            refusal = self.streams.take(name)
            if refusal is not None:
                self._record(method, call, summary, refusal.code.name, refusal.message, None)
                await status.abort(call, refusal)
            started = time.perf_counter()
            try:
                try:
                    async for item in inner(request, call):
                        await self.pacer.turn()
                        yield item
                except Exception as exc:
                    await self._fail(call, exc)
            except BaseException as exc:
                self._finished(method, call, summary, started, exc)
                raise
            finally:
                self.streams.give_back(name)
            self._finished(method, call, summary, started, None)

        return stream
