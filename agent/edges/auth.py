"""Who is calling, what they may do, and the audit trail of everything that changes the rig.

Identity comes from, in order: a bearer token (`authorization: Bearer <token>` metadata, checked
against SHA-256 digests in the config), the client certificate's common name under mTLS, the Unix
socket caller's credentials (uid and pid from SO_PEERCRED, see agent/edges/unixfront.py), or
anonymity on loopback TCP. Roles are ordered viewer < operator < admin; every RPC names the least
role it needs. Every mutating call is written to the audit log whatever its outcome, refusals
included, with each field and each line bounded so a caller cannot make the log grow faster than it
sends. The gate (agent/edges/gate.py) applies all this to every call."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import structlog
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from agent.config.settings import ROLES, Config
from agent.edges.status import clip

log = structlog.get_logger("rigd.audit")

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


def audit_summary(request: Any) -> dict[str, Any]:
    """A request as the audit log keeps it (secrets redacted, everything bounded)."""
    if not isinstance(request, Message):
        return {}
    summary: dict[str, Any] = _bounded(MessageToDict(request, preserving_proto_field_name=True))
    return summary
