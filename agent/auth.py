"""Who is calling, what they may do, and the audit trail of everything that changes the rig.

Identity comes from, in order: a bearer token (`authorization: Bearer <token>` metadata, checked
against SHA-256 digests in the config), the client certificate's common name under mTLS, the Unix
socket (local callers; the socket's file mode is the guard), or anonymity on loopback TCP. Roles
are ordered viewer < operator < admin; every RPC names the least role it needs. Every mutating
call is written to the audit log whatever its outcome, including refusals.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import grpc
import structlog
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from agent.config import ROLES, Config

log = structlog.get_logger("rigd.audit")

_SERVICE = "/rig.v1.RigAgent/"
# The least role each RPC needs. Anything not listed (health, reflection) is open to all.
METHOD_ROLES: dict[str, str] = {
    "GetInventory": "viewer",
    "GetTelemetry": "viewer",
    "StreamTelemetry": "viewer",
    "GetOperation": "viewer",
    "WatchOperation": "viewer",
    "RunDiagnostics": "operator",
    "AcquireLease": "operator",
    "RenewLease": "operator",
    "ReleaseLease": "operator",
    "SetWorkload": "operator",
    "SetPowerLimit": "operator",
    "Curtail": "operator",
    "CancelCurtailment": "operator",
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
        "RunDiagnostics",  # diagnostics load the hardware
    }
)
_REDACT = frozenset({"password", "token"})


@dataclass(frozen=True, slots=True)
class Identity:
    name: str  # e.g. "token:controller-1", "unix", "cert:ctrl-a", "anonymous"
    role: str  # one of ROLES, or "none"

    def at_least(self, role: str) -> bool:
        return self.role in ROLES and ROLES.index(self.role) >= ROLES.index(role)


_current: contextvars.ContextVar[Identity] = contextvars.ContextVar("rigd_identity")


def current_identity() -> Identity:
    """The caller of the RPC being served (set by the interceptor)."""
    return _current.get(Identity("internal", "admin"))


class AuditLog:
    """Writes one JSON line per mutating call to the log stream and, if configured, a file."""

    def __init__(self, path: str = "") -> None:
        self._lock = threading.Lock()
        self._file: IO[str] | None = open(path, "a", encoding="utf-8") if path else None

    def record(self, **event: Any) -> None:
        event = {"time_unix_s": round(time.time(), 6), **event}
        log.info("audit", **event)
        if self._file is not None:
            line = json.dumps(event, sort_keys=True, default=str)
            with self._lock:
                self._file.write(line + "\n")
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class Authenticator:
    def __init__(self, config: Config) -> None:
        self._tokens = [(bytes.fromhex(g.sha256), g) for g in config.tokens]
        self._unix_role = config.unix_socket_role
        self._anonymous_role = config.anonymous_role
        self._cert_roles = dict(config.certificate_roles)

    def identify(
        self, metadata: tuple[tuple[str, Any], ...], context: grpc.ServicerContext
    ) -> Identity:
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
        peer = context.peer()
        if peer.startswith("unix:"):
            return Identity("unix", self._unix_role)
        names = context.auth_context().get("x509_common_name")
        if names:
            common_name = names[0].decode()
            return Identity(f"cert:{common_name}", self._cert_roles.get(common_name, "viewer"))
        return Identity("anonymous", self._anonymous_role)


def _text(value: str | bytes | None) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value or ""


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "<redacted>" if k in _REDACT else _redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def _summary(request: Any) -> dict[str, Any]:
    """The request as audit-friendly JSON, secrets (at any depth) replaced."""
    if not isinstance(request, Message):
        return {}
    redacted: dict[str, Any] = _redact(MessageToDict(request, preserving_proto_field_name=True))
    return redacted


class AuthInterceptor(grpc.ServerInterceptor):
    def __init__(self, authenticator: Authenticator, audit: AuditLog) -> None:
        self._auth = authenticator
        self._audit = audit

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        full_method: str = handler_call_details.method
        if handler is None or not full_method.startswith(_SERVICE):
            return handler
        method = full_method[len(_SERVICE) :]
        needed = METHOD_ROLES.get(method, "admin")
        metadata = tuple(handler_call_details.invocation_metadata or ())
        mutating = method in MUTATING

        def admit(request: Any, context: grpc.ServicerContext) -> Identity:
            identity = self._auth.identify(metadata, context)
            if identity.at_least(needed):
                return identity
            if mutating:
                self._audit.record(
                    method=method, identity=identity.name, role=identity.role,
                    peer=context.peer(), request=_summary(request),
                    outcome="PERMISSION_DENIED" if identity.role != "none" else "UNAUTHENTICATED",
                )
            if identity.role == "none":
                context.abort(grpc.StatusCode.UNAUTHENTICATED, f"{method} needs a valid token")
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{method} needs role {needed}; {identity.name} has {identity.role}",
            )
            raise AssertionError("unreachable")

        def audit(identity: Identity, request: Any, context: grpc.ServicerContext,
                  started: float, error: BaseException | None) -> None:
            if not mutating:
                return
            code = context.code() if error is not None else None
            outcome = "OK" if error is None else (code.name if code else type(error).__name__)
            self._audit.record(
                method=method, identity=identity.name, role=identity.role,
                peer=context.peer(), request=_summary(request), outcome=outcome,
                detail=_text(context.details()) if error is not None else "",
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )

        if handler.unary_unary is not None:
            inner_unary = handler.unary_unary

            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                identity = admit(request, context)
                token = _current.set(identity)
                started = time.perf_counter()
                try:
                    response = inner_unary(request, context)
                except BaseException as exc:
                    audit(identity, request, context, started, exc)
                    raise
                finally:
                    _current.reset(token)
                audit(identity, request, context, started, None)
                return response

            return grpc.unary_unary_rpc_method_handler(
                unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                identity = admit(request, context)
                started = time.perf_counter()
                token = _current.set(identity)
                try:
                    yield from inner_stream(request, context)
                except BaseException as exc:
                    audit(identity, request, context, started, exc)
                    raise
                finally:
                    _current.reset(token)
                audit(identity, request, context, started, None)

            return grpc.unary_stream_rpc_method_handler(
                stream, handler.request_deserializer, handler.response_serializer
            )
        return handler
