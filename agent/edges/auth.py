"""Who is calling, what they may do, and the audit trail of everything that changes the rig.

Identity comes from, in order: a bearer token (`authorization: Bearer <token>` metadata, checked
against SHA-256 digests in the config), the client certificate's common name under mTLS, the Unix
socket caller's credentials (uid and pid from SO_PEERCRED, see agent/edges/unixfront.py), or
anonymity on loopback TCP. Roles are ordered viewer < operator < admin; every RPC names the least
role it needs. Every mutating call is written to the audit log whatever its outcome, refusals
included, with each field and each line bounded so a caller cannot make the log grow faster than it
sends."""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import grpc
import structlog
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from agent.config.settings import ROLES, Config

log = structlog.get_logger("rigd.audit")

_SERVICE = "/rig.v1.RigAgent/"
# The least role each RPC needs. Anything not listed (health, reflection) is open to all.
METHOD_ROLES: dict[str, str] = {
    "GetInventory": "viewer",
    "GetTelemetry": "viewer",
    "StreamTelemetry": "viewer",
    "GetOperation": "viewer",
    "WatchOperation": "viewer",
    "ListOperations": "viewer",
    "RunDiagnostics": "operator",
    "AcquireLease": "operator",
    "RenewLease": "operator",
    "ReleaseLease": "operator",
    "SetWorkload": "operator",
    "SetPowerLimit": "operator",
    "Curtail": "operator",
    "CancelCurtailment": "operator",
    "DeviceAction": "operator",
}
MUTATING = frozenset(
    {
        "AcquireLease",
        "RenewLease",
        "ReleaseLease",
        "SetWorkload",
        "SetPowerLimit",
        "Curtail",
        "CancelCurtailment",
        "DeviceAction",
        "RunDiagnostics",  # diagnostics load the hardware
    }
)
_REDACT = frozenset({"password", "token"})
MAX_FIELD_CHARS = 256  # per string in an audit line
MAX_LIST_ITEMS = 32
MAX_LINE_BYTES = 8192


@dataclass(frozen=True, slots=True)
class Identity:
    name: str  # e.g. "token:controller-1", "unix:uid=0:pid=4242", "cert:ctrl-a", "anonymous"
    role: str  # one of ROLES, or "none"

    def at_least(self, role: str) -> bool:
        return self.role in ROLES and ROLES.index(self.role) >= ROLES.index(role)


_current: contextvars.ContextVar[Identity] = contextvars.ContextVar("rigd_identity")


def current_identity() -> Identity:
    """The caller of the RPC being served (set by the interceptor)."""
    return _current.get(Identity("internal", "admin"))


def clip(text: str, limit: int = MAX_FIELD_CHARS) -> str:
    """Caller-supplied text as it may be echoed: at most `limit` characters, with the size."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[truncated, {len(text)} chars]"


class AuditLog:
    """One JSON line per mutating call to the log stream and, if configured, a file that rotates
    at `max_bytes` keeping `backups` old files (path.1 is the newest)."""

    def __init__(self, path: str = "", max_bytes: int = 64 << 20, backups: int = 3) -> None:
        self._lock = threading.Lock()
        self._path = Path(path) if path else None
        self._max_bytes = max_bytes
        self._backups = backups
        self._file: IO[str] | None = None
        if self._path is not None:
            self._file = open(self._path, "a", encoding="utf-8")

    def record(self, **event: Any) -> None:
        event = {"time_unix_s": round(time.time(), 6), **event}
        line = json.dumps(event, sort_keys=True, default=str)
        if len(line.encode()) > MAX_LINE_BYTES:
            event["request"] = {"truncated": True, "original_bytes": len(line.encode())}
            line = json.dumps(event, sort_keys=True, default=str)
        log.info("audit", **event)
        if self._file is None:
            return
        with self._lock:
            if self._file.tell() + len(line) + 1 > self._max_bytes:
                self._rotate()
            self._file.write(line + "\n")
            self._file.flush()

    def _rotate(self) -> None:
        assert self._path is not None and self._file is not None
        self._file.close()
        if self._backups == 0:
            self._path.unlink(missing_ok=True)
        else:
            for n in range(self._backups - 1, 0, -1):
                older = self._path.with_name(f"{self._path.name}.{n}")
                if older.exists():
                    os.replace(older, self._path.with_name(f"{self._path.name}.{n + 1}"))
            os.replace(self._path, self._path.with_name(f"{self._path.name}.1"))
        self._file = open(self._path, "a", encoding="utf-8")

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


PeerLookup = Callable[[str], "tuple[int, int] | None"]


class Authenticator:
    def __init__(self, config: Config, unix_peer: PeerLookup | None = None) -> None:
        self._tokens = [(bytes.fromhex(g.sha256), g) for g in config.tokens]
        self._unix_role = config.unix_socket_role
        self._anonymous_role = config.anonymous_role
        self._cert_roles = dict(config.certificate_roles)
        self._unix_peer = unix_peer

    def identify(self, metadata: tuple[tuple[str, Any], ...], context: Any) -> Identity:
        bearer = next((v for k, v in metadata if k == "authorization"), None)
        if bearer is not None:
            scheme, _, token = str(bearer).partition(" ")
            if scheme.lower() != "bearer" or not token:
                return Identity("malformed-token", "none")
            digest = hashlib.sha256(token.encode()).digest()
            for expected, grant in self._tokens:
                if hmac.compare_digest(digest, expected):
                    return Identity(f"token:{grant.name}", grant.role)
            return Identity("unknown-token", "none")
        peer: str = context.peer()
        if peer.startswith("unix:"):
            cred = self._unix_peer(peer) if self._unix_peer is not None else None
            if cred is None:  # reached the private socket without the front: not ours
                return Identity("unix:unknown", "none")
            uid, pid = cred
            return Identity(f"unix:uid={uid}:pid={pid}", self._unix_role)
        names = context.auth_context().get("x509_common_name")
        if names:
            common_name = names[0].decode()
            return Identity(f"cert:{common_name}", self._cert_roles.get(common_name, "viewer"))
        return Identity("anonymous", self._anonymous_role)


def _bounded(value: Any) -> Any:
    """Secrets (at any depth) replaced, strings clipped, long lists cut: an audit line stays
    small whatever the request held."""
    if isinstance(value, dict):
        return {clip(str(k), 64): "<redacted>" if k in _REDACT else _bounded(v)
                for k, v in value.items()}
    if isinstance(value, list):
        items = [_bounded(v) for v in value[:MAX_LIST_ITEMS]]
        if len(value) > MAX_LIST_ITEMS:
            items.append(f"…[{len(value) - MAX_LIST_ITEMS} more]")
        return items
    if isinstance(value, str):
        return clip(value)
    return value


def _summary(request: Any) -> dict[str, Any]:
    if not isinstance(request, Message):
        return {}
    summary: dict[str, Any] = _bounded(MessageToDict(request, preserving_proto_field_name=True))
    return summary


def _text(value: str | bytes | None) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value or ""


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, authenticator: Authenticator, audit: AuditLog) -> None:
        self._auth = authenticator
        self._audit = audit

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        full_method: str = handler_call_details.method
        if handler is None or not full_method.startswith(_SERVICE):
            return handler
        method = full_method[len(_SERVICE):]
        needed = METHOD_ROLES.get(method, "admin")
        metadata = tuple(handler_call_details.invocation_metadata or ())
        mutating = method in MUTATING
        audit_log = self._audit

        def audit(identity: Identity, request: Any, peer: str, outcome: str, detail: str,
                  started: float | None) -> None:
            if not mutating:
                return
            event: dict[str, Any] = {
                "method": method, "identity": identity.name, "role": identity.role,
                "peer": clip(peer, 128), "request": _summary(request),
                "outcome": outcome, "detail": clip(detail, 512),
            }
            if started is not None:
                event["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
            audit_log.record(**event)

        async def admit(request: Any, context: Any) -> Identity:
            identity = self._auth.identify(metadata, context)
            if identity.at_least(needed):
                return identity
            unauthenticated = identity.role == "none"
            code = grpc.StatusCode.UNAUTHENTICATED if unauthenticated else \
                grpc.StatusCode.PERMISSION_DENIED
            audit(identity, request, context.peer(), code.name, "", None)
            if unauthenticated:
                await context.abort(code, f"{method} needs a valid token")
            await context.abort(
                code, f"{method} needs role {needed}; {identity.name} has {identity.role}")
            raise AssertionError("unreachable")

        def finished(identity: Identity, request: Any, context: Any, peer: str,
                     started: float, error: BaseException | None) -> None:
            if error is None:
                audit(identity, request, peer, "OK", "", started)
                return
            code = context.code()
            if isinstance(code, grpc.StatusCode):
                outcome = code.name
            elif isinstance(error, asyncio.CancelledError):
                outcome = "CANCELLED"
            else:
                outcome = "INTERNAL"
            audit(identity, request, peer, outcome, _text(context.details()), started)

        if handler.unary_unary is not None:
            inner_unary = handler.unary_unary

            async def unary(request: Any, context: Any) -> Any:
                identity = await admit(request, context)
                peer = context.peer()
                token = _current.set(identity)
                started = time.perf_counter()
                try:
                    response = await inner_unary(request, context)
                except BaseException as exc:
                    finished(identity, request, context, peer, started, exc)
                    raise
                finally:
                    _current.reset(token)
                finished(identity, request, context, peer, started, None)
                return response

            return grpc.unary_unary_rpc_method_handler(
                unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
                identity = await admit(request, context)
                # The peer is read now: once a stream is cancelled, grpc.aio frees the call,
                # and context.peer() on it crashes the process (seen: SIGSEGV on a cancelled
                # RunDiagnostics).
                peer = context.peer()
                started = time.perf_counter()
                token = _current.set(identity)
                try:
                    async for item in inner_stream(request, context):
                        yield item
                except BaseException as exc:
                    finished(identity, request, context, peer, started, exc)
                    raise
                finally:
                    _current.reset(token)
                finished(identity, request, context, peer, started, None)

            return grpc.unary_stream_rpc_method_handler(
                stream, handler.request_deserializer, handler.response_serializer
            )
        return handler
